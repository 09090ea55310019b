//! The schema contract: parsing, defaults, every validation error with its
//! exact message, and TOML → Town → JSON → Town round trips.

use nuketown_town::{parse, Format, Town, TownError};

const EXAMPLE: &str = include_str!("../../../examples/town.toml");

fn toml(text: &str) -> Result<Town, TownError> {
    parse(text, Format::Toml, "town.toml", "forge")
}

fn err(text: &str) -> String {
    toml(text).expect_err("must be rejected").to_string()
}

#[test]
fn example_town_parses_with_defaults() {
    let town = toml(EXAMPLE).unwrap();
    assert_eq!(town.domain(), "forge.local");
    assert_eq!(town.agents_dir.to_str(), Some("/agents"));
    assert_eq!(town.persist_dir.to_str(), Some("/persist"));
    assert_eq!(town.project_dirs, vec!["~/dev"]);
    let ada = &town.agents["ada"];
    assert_eq!(ada.uid, 1100);
    assert_eq!(ada.role, "software");
    assert!(ada.git.signing);
    assert!(ada.sudo.enable);
    assert_eq!(ada.sudo.timeout, 120);
    assert_eq!(ada.devices[0].action, "add|bind");
    assert_eq!(ada.devices[0].permission, "rw");
    assert_eq!(ada.devices[0].group, "plugdev");
    let vox = &town.agents["vox"];
    assert_eq!(vox.uid, 1101);
    assert_eq!(vox.role, "research");
    assert!(!vox.sudo.enable);
    assert_eq!(vox.portal.layout, "75/25");
    assert_eq!(town.approvers(), vec!["josh"]);
    let id = town.identity("ada");
    assert_eq!(id.email, "ada@forge.local");
    assert_eq!(id.git_name, "ada");
    assert_eq!(id.home.to_str(), Some("/agents/ada"));
}

#[test]
fn round_trip_toml_town_json_town() {
    let town = toml(EXAMPLE).unwrap();
    let json = serde_json::to_string_pretty(&town).unwrap();
    let again = parse(&json, Format::Json, "town.json", "elsewhere").unwrap();
    assert_eq!(town, again, "JSON projection must read back identically");
    // and back to TOML
    let text = toml::to_string(&again).unwrap();
    assert_eq!(toml(&text).unwrap(), town);
}

#[test]
fn minimal_town_is_valid() {
    let town = toml("[agents.a]\nuid = 1100\n").unwrap();
    assert_eq!(town.agents["a"].role, "software");
    assert!(town.enable);
}

#[test]
fn unknown_top_level_key() {
    assert_eq!(
        err("humanUsr = \"josh\"\n"),
        "town.toml: humanUsr: unknown key `humanUsr`; remove it or use one of: enable, domain, agentsDir, persistDir, btrfsDevice, btrfsSubvolume, sopsFile, basePackages, projectDirs, humanUser, humanName, humanEmail, humanAsAgents, hall, rebuild, rooms, agents, sharedDirs, cloud (line 1)"
    );
}

#[test]
fn unknown_nested_key_names_its_path() {
    let e = err("[agents.ada]\nuid = 1100\nsudo.enabled = true\n");
    assert!(
        e.starts_with("town.toml: agents.ada.sudo.enabled: unknown key `enabled`; remove it or use one of: enable, autoApprove, deny, timeout"),
        "{e}"
    );
}

#[test]
fn unknown_key_in_json_names_its_path() {
    let e = parse(
        r#"{"agents":{"ada":{"uid":1100,"git":{"mail":"x@y"}}}}"#,
        Format::Json,
        "town.json",
        "h",
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("town.json: agents.ada.git.mail: unknown key `mail`; remove it or use one of: name, email, signing"), "{e}");
}

#[test]
fn wrong_type_names_its_path() {
    let e = err("[agents.ada]\nuid = \"eleven\"\n");
    assert!(
        e.starts_with("town.toml: agents.ada.uid: invalid type: string \"eleven\""),
        "{e}"
    );
}

#[test]
fn missing_uid() {
    let e = err("[agents.ada]\nrole = \"software\"\n");
    assert!(
        e.starts_with("town.toml: agents.ada: missing required key `uid`; add it"),
        "{e}"
    );
}

#[test]
fn duplicate_uid() {
    assert_eq!(
        err("[agents.ada]\nuid = 1100\n[agents.vox]\nuid = 1100\n"),
        "town.toml: the town is invalid:\n  agents.vox.uid: 1100 is already ada's uid; pick a free one"
    );
}

#[test]
fn uid_below_1000() {
    assert_eq!(
        err("[agents.ada]\nuid = 999\n"),
        "town.toml: the town is invalid:\n  agents.ada.uid: 999 is outside the range for people (1000–59999); agents conventionally start at 1100"
    );
}

#[test]
fn bad_unix_names() {
    for bad in [
        "Ada",
        "1ada",
        "ada.x",
        "a b",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ] {
        let e = err(&format!("[agents.\"{bad}\"]\nuid = 1100\n"));
        assert_eq!(
            e,
            format!("town.toml: the town is invalid:\n  agents.{bad}: {bad:?} is not a valid Unix user name; use at most 32 lowercase letters, digits, '_' or '-', starting with a letter")
        );
    }
}

#[test]
fn persist_paths_must_stay_in_the_home() {
    let e = err("[agents.ada]\nuid = 1100\npersist.directories = [\"../vox\", \"/etc\", \"~/x\", \"\", \".\"]\npersist.files = [\"a/../../b\"]\n");
    assert_eq!(
        e,
        "town.toml: the town is invalid:\n  \
agents.ada.persist.directories[0]: \"../vox\" contains '..' and would escape the home; write a path inside the home\n  \
agents.ada.persist.directories[1]: \"/etc\" is absolute; write it relative to the home, e.g. \"dev\" for ~/dev\n  \
agents.ada.persist.directories[2]: \"~/x\" is absolute; write it relative to the home, e.g. \"dev\" for ~/dev\n  \
agents.ada.persist.directories[3]: \"\" is empty\n  \
agents.ada.persist.directories[4]: \".\" is the home itself; name a directory or file inside it\n  \
agents.ada.persist.files[0]: \"a/../../b\" contains '..' and would escape the home; write a path inside the home"
    );
}

#[test]
fn persist_paths_twice_or_nested() {
    let e =
        err("[agents.ada]\nuid = 1100\npersist.directories = [\"dev\", \"./dev\", \"dev/x\"]\n");
    assert_eq!(
        e,
        "town.toml: the town is invalid:\n  \
agents.ada.persist.directories[1]: \"./dev\" is persisted twice; list it once\n  \
agents.ada.persist: \"dev/x\" lies inside persisted \"dev\"; it is persisted already, remove \"dev/x\""
    );
}

#[test]
fn persist_dir_inside_agents_dir() {
    let e = err("agentsDir = \"/srv/agents\"\npersistDir = \"/srv/agents/persist\"\n");
    assert!(
        e.contains(
            "persistDir: /srv/agents/persist and agentsDir /srv/agents must not contain each other"
        ),
        "{e}"
    );
}

#[test]
fn relative_agents_dir() {
    let e = err("agentsDir = \"agents\"\n");
    assert!(
        e.contains("agentsDir: agents must be an absolute path without '..', e.g. \"/agents\""),
        "{e}"
    );
}

#[test]
fn sudo_needs_an_approver() {
    assert_eq!(
        err("[agents.ada]\nuid = 1100\nsudo.enable = true\n"),
        "town.toml: the town is invalid:\n  humanUser: an agent has sudo.enable but nobody can approve; set humanUser (or hall.approvers)"
    );
}

#[test]
fn agent_cannot_approve() {
    let e = err("humanUser = \"josh\"\nhall.approvers = [\"ada\"]\n[agents.ada]\nuid = 1100\n");
    assert!(e.contains("hall.approvers[0]: \"ada\" is an agent; agents may never approve escalations, list humans only"), "{e}");
}

#[test]
fn human_is_not_an_agent() {
    let e = err("humanUser = \"ada\"\n[agents.ada]\nuid = 1100\n");
    assert!(
        e.contains("humanUser: \"ada\" is also declared as an agent"),
        "{e}"
    );
}

#[test]
fn device_rules_cannot_inject_udev() {
    let e = err("[agents.ada]\nuid = 1100\n[[agents.ada.devices]]\nsubsystem = \"tty\"\nattrs = { idVendor = \"0483\\\", RUN+=\\\"/bin/sh\" }\n");
    assert!(e.contains("agents.ada.devices[0].attrs.idVendor: \"0483\\\", RUN+=\\\"/bin/sh\" must be non-empty and free of quotes"), "{e}");
    let e = err("[agents.ada]\nuid = 1100\n[[agents.ada.devices]]\nsubsystem = \"tty\"\n");
    assert!(
        e.contains("agents.ada.devices[0].attrs: is empty and would match every device"),
        "{e}"
    );
    let e = err("[agents.ada]\nuid = 1100\n[[agents.ada.devices]]\nsubsystem = \"tty\"\nattrs = { idVendor = \"1\" }\npermission = \"rwz\"\n");
    assert!(
        e.contains("agents.ada.devices[0].permission: \"rwz\" must be made of r, w and x"),
        "{e}"
    );
}

#[test]
fn sudo_rules_and_timeout() {
    let e = err("humanUser = \"j\"\n[agents.ada]\nuid = 1100\nsudo = { enable = true, timeout = 0, autoApprove = [{ argv = [] }] }\n");
    assert!(
        e.contains("agents.ada.sudo.timeout: 0 must be between 1 and 86400 seconds"),
        "{e}"
    );
    assert!(
        e.contains("agents.ada.sudo.autoApprove[0].argv: is empty"),
        "{e}"
    );
}

#[test]
fn portal_layout() {
    let e = err("[agents.ada]\nuid = 1100\nportal.layout = \"80/30\"\n");
    assert!(e.contains("agents.ada.portal.layout: \"80/30\" must be agent/human percentages adding to 100, e.g. \"75/25\""), "{e}");
}

#[test]
fn a_clis_permission_mode_is_one_the_town_knows() {
    let e = err(
        "[agents.ada]\nuid = 1100\nchat = { enable = true, homeserver = \"https://m.example\", userId = \"@ada:m.example\", passwordFile = \"/run/pw\", backend = { type = \"claude-code\", permissions = \"yolo\" } }\n",
    );
    assert!(
        e.contains("agents.ada.chat.backend.permissions: \"yolo\" is not a permission mode; use \"own-tree\""),
        "{e}"
    );
    let t = toml("[agents.ada]\nuid = 1100\nchat = { enable = true, homeserver = \"https://m.example\", userId = \"@ada:m.example\", passwordFile = \"/run/pw\" }\n").unwrap();
    assert_eq!(
        t.agents["ada"].chat.backend.permissions, "own-tree",
        "own-tree by default"
    );
}

#[test]
fn chat_needs_its_settings() {
    let e = err(
        "[agents.ada]\nuid = 1100\nchat = { enable = true, backend = { type = \"command\" } }\n",
    );
    assert!(
        e.contains("agents.ada.chat.homeserver: chat needs the homeserver URL"),
        "{e}"
    );
    assert!(
        e.contains(
            "agents.ada.chat.userId: chat needs the agent's Matrix id, e.g. \"@ada:example.org\""
        ),
        "{e}"
    );
    assert!(
        e.contains("agents.ada.chat.passwordFile: chat needs passwordFile or accessTokenFile"),
        "{e}"
    );
    assert!(
        e.contains(
            "agents.ada.chat.backend.command: backend type \"command\" needs the program to run"
        ),
        "{e}"
    );
}

#[test]
fn cloud_tiers_and_names() {
    let e = err("[agents.ada]\nuid = 1100\ncloud = { enable = true, resources = \"huge\" }\n");
    assert!(e.contains("agents.ada.cloud.resources: \"huge\" is not a tier; use \"small\", \"standard\", \"large\" or \"gpu\""), "{e}");
    let e = err("[agents.ada]\nuid = 1100\ncloud = { enable = true, resources = \"gpu\" }\n");
    assert!(
        e.contains("agents.ada.cloud.gpu: the gpu tier needs gpu settings"),
        "{e}"
    );
    let e = err("[agents.a_b]\nuid = 1100\ncloud = { enable = true }\n");
    assert!(
        e.contains("agents.a_b.cloud: agent name \"a_b\" is not a valid Kubernetes name"),
        "{e}"
    );
}

#[test]
fn cloud_command_and_storage_class() {
    let town = toml("[agents.ada]\nuid = 1100\ncloud = { enable = true }\n").unwrap();
    let cloud = &town.agents["ada"].cloud;
    assert!(cloud.command.is_empty());
    assert_eq!(cloud.persist.storage_class, None);
    let town = toml("[agents.ada]\nuid = 1100\ncloud = { enable = true, command = [\"claude\"], persist.storageClass = \"standard-rwo\" }\n").unwrap();
    assert_eq!(town.agents["ada"].cloud.command, vec!["claude"]);
    assert_eq!(
        town.agents["ada"].cloud.persist.storage_class.as_deref(),
        Some("standard-rwo")
    );
    let e = err("[agents.ada]\nuid = 1100\ncloud = { enable = true, command = [\"\"] }\n");
    assert_eq!(
        e,
        "town.toml: the town is invalid:\n  agents.ada.cloud.command: starts with an empty program; name it, e.g. [\"claude\"], or leave command empty for the image's entrypoint"
    );
    let e = err("[agents.ada]\nuid = 1100\ncloud = { enable = true, persist.storageClass = \"Fast_SSD\" }\n");
    assert_eq!(
        e,
        "town.toml: the town is invalid:\n  agents.ada.cloud.persist.storageClass: \"Fast_SSD\" is not a Kubernetes StorageClass name (lowercase letters, digits, '-' and '.'); e.g. \"standard-rwo\", or leave it unset for the cluster's default class"
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let e = err("[agents.ada]\nuid = 5\npersist.files = [\"/x\"]\n[agents.Vox]\nuid = 1101\n");
    assert_eq!(e.lines().count(), 4, "{e}");
}

#[test]
fn bad_syntax_reports_the_line() {
    let e = err("[agents.ada]\nuid = 1100\nrole = \n");
    assert!(e.starts_with("town.toml: "), "{e}");
    assert!(e.contains("line 3"), "{e}");
}

#[test]
fn trailing_json_is_rejected() {
    assert!(parse("{} {}", Format::Json, "t.json", "h").is_err());
}

#[test]
fn matrix_approver_needs_its_settings() {
    let e = err("humanUser = \"josh\"\n[hall.matrix]\nenable = true\napprovers = [\"josh\"]\n");
    assert!(
        e.contains("hall.matrix.homeserver: the Matrix approver needs the homeserver URL"),
        "{e}"
    );
    assert!(
        e.contains("hall.matrix.userId: the Matrix approver needs the hall's Matrix id"),
        "{e}"
    );
    assert!(
        e.contains("hall.matrix.passwordFile: the Matrix approver needs the password file"),
        "{e}"
    );
    assert!(
        e.contains("hall.matrix.room: the Matrix approver needs the approval room"),
        "{e}"
    );
    assert!(
        e.contains(
            "hall.matrix.approvers[0]: \"josh\" is not a Matrix id like \"@josh:example.org\""
        ),
        "{e}"
    );
}

#[test]
fn shared_dirs_parse_with_defaults_and_name_bad_access() {
    let town = toml(
        "humanUser = \"josh\"\n[agents.ada]\nuid = 1100\n[agents.vox]\nuid = 1101\n\
         [sharedDirs.review]\nmembers = { ada = \"rw\", vox = \"ro\", josh = \"rw\" }\n",
    )
    .unwrap();
    assert_eq!(
        town.shared_path("review"),
        std::path::Path::new("/persist/shared/review")
    );
    assert_eq!(
        town.shared_dirs["review"].members["vox"],
        nuketown_town::SharedAccess::ReadOnly
    );
    assert!(town.human_as_agents, "on by default");
    let e = err("[agents.ada]\nuid = 1100\n[sharedDirs.review]\nmembers = { ada = \"write\" }\n");
    assert!(
        e.contains("sharedDirs.review.members.ada") && e.contains("`rw`") && e.contains("`ro`"),
        "{e}"
    );
    let e = err("[agents.ada]\nuid = 1100\n[sharedDirs.review]\npath = \"/persist/agents/ada/x\"\nmembers = { ada = \"rw\" }\n");
    assert!(
        e.contains(
            "sharedDirs.review.path: /persist/agents/ada/x is inside an agent's persist dir"
        ),
        "{e}"
    );
}

const ROOM_AGENTS: &str = "[agents.ada]\nuid = 1100\n[agents.ada.chat]\nenable = true\nhomeserver = \"https://m.example.org\"\nuserId = \"@ada:example.org\"\npasswordFile = \"/run/ada\"\nallowedHumans = [\"@josh:example.org\"]\n\
[agents.vox]\nuid = 1101\n[agents.vox.chat]\nenable = true\nhomeserver = \"https://m.example.org\"\nuserId = \"@vox:example.org\"\npasswordFile = \"/run/vox\"\n\
[agents.zed]\nuid = 1102\n";

#[test]
fn a_declared_room_gets_defaults_and_its_alias_from_the_hall_account() {
    let town = toml(&format!(
        "[hall.matrix]\nhomeserver = \"https://m.example.org\"\nuserId = \"@hall:example.org\"\npasswordFile = \"/run/hall\"\n\
[rooms.team]\ntopic = \"the team\"\nhumans = [\"@josh:example.org\"]\nagents = [\"ada\", \"vox\"]\n{ROOM_AGENTS}"
    ))
    .unwrap();
    let team = &town.rooms["team"];
    assert!(
        !team.agents_answer_agents,
        "agents answer agents only when declared"
    );
    assert_eq!(team.agent_turns, 4);
    assert!(team.encrypted);
    assert_eq!(
        town.room_alias("team").as_deref(),
        Some("#team:example.org")
    );
    let json = serde_json::to_string(&town).unwrap();
    let back: Town = serde_json::from_str(&json).unwrap();
    assert_eq!(back, town);
}

#[test]
fn room_mistakes_name_their_key_and_the_fix() {
    let e = err(&format!(
        "[rooms.Team]\nalias = \"team\"\nhumans = [\"josh\", \"@vox:example.org\"]\nagents = [\"ada\", \"zed\", \"nobody\", \"ada\"]\nagentTurns = 0\n{ROOM_AGENTS}"
    ));
    for want in [
        "hall.matrix.userId: the hall's Matrix account keeps the declared rooms",
        "hall.matrix.passwordFile: the hall's Matrix account keeps the declared rooms",
        "rooms.Team: \"Team\" is not a room name; use lowercase letters",
        "rooms.Team.alias: \"team\" is not a room alias like \"#team:example.org\"",
        "rooms.Team.humans[0]: \"josh\" is not a Matrix id",
        "rooms.Team.humans[1]: \"@vox:example.org\" is agent vox's Matrix account; list agents under agents, never as humans",
        "rooms.Team.agents[1]: agent zed has no chat account; set agents.zed.chat.enable",
        "rooms.Team.agents[2]: \"nobody\" is not an agent of this town",
        "rooms.Team.agents[3]: ada is listed twice",
        "rooms.Team.agentTurns: 0 is outside 1–100",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    // systemd hands the password to the rooms keeper: an absolute path
    // without spaces.
    let e = err(&format!(
        "[hall.matrix]\nhomeserver = \"https://m.example.org\"\nuserId = \"@hall:example.org\"\npasswordFile = \"secrets/hall matrix\"\n\
         [rooms.team]\nhumans = [\"@josh:example.org\"]\n{ROOM_AGENTS}"
    ));
    assert!(
        e.contains("hall.matrix.passwordFile: \"secrets/hall matrix\": the rooms keeper is given this file by systemd, which needs an absolute path without spaces"),
        "{e}"
    );
}

#[test]
fn an_agent_is_never_another_agents_human() {
    let e = err(&ROOM_AGENTS.replace(
        "allowedHumans = [\"@josh:example.org\"]",
        "allowedHumans = [\"@vox:example.org\"]",
    ));
    assert!(
        e.contains("agents.ada.chat.allowedHumans[0]: \"@vox:example.org\" is agent vox's Matrix account; an agent never commands another as its human"),
        "{e}"
    );
    let e = err(&ROOM_AGENTS.replace("@vox:example.org", "@ada:example.org"));
    assert!(
        e.contains("agents.vox.chat.userId: \"@ada:example.org\" is already ada's Matrix account"),
        "{e}"
    );
}

/// Red team, class 7: an agent's Matrix account (enabled or not) never
/// approves escalations, nor does the hall's own.
#[test]
fn an_agents_matrix_account_never_approves() {
    let hall = |approvers: &str| {
        format!(
            "[hall.matrix]\nenable = true\nhomeserver = \"https://m.example.org\"\nuserId = \"@hall:example.org\"\n\
             passwordFile = \"/run/hall\"\nroom = \"#approvals:example.org\"\napprovers = [{approvers}]\n{ROOM_AGENTS}"
        )
    };
    assert!(toml(&hall("\"@josh:example.org\"")).is_ok());
    let e = err(&hall("\"@josh:example.org\", \"@Ada:example.org\""));
    assert!(
        e.contains("hall.matrix.approvers[1]: \"@Ada:example.org\" is agent ada's Matrix account (agents.ada.chat.userId); agents may never approve"),
        "{e}"
    );
    // Disabled, it is still the agent's.
    let e = err(&hall("\"@vox:example.org\"").replace(
        "[agents.vox]\nuid = 1101\n",
        "[agents.vox]\nuid = 1101\nenable = false\n",
    ));
    assert!(e.contains("is agent vox's Matrix account"), "{e}");
    let e = err(&hall("\"@hall:example.org\""));
    assert!(e.contains("is the hall's own account"), "{e}");
}

/// Prefix rules in autoApprove name what may follow; a pattern that also
/// matches shell syntax is refused, naming the key and the fix.
#[test]
fn auto_approve_prefixes_name_what_may_follow() {
    let sudo = |rules: &str| {
        format!("humanUser = \"josh\"\n[agents.ada]\nuid = 1100\n[agents.ada.sudo]\nenable = true\n{rules}\n")
    };
    let e = err(&sudo(
        "autoApprove = [{ argv = [\"systemctl\", \"status\"], prefix = true }]",
    ));
    assert!(
        e.contains("agents.ada.sudo.autoApprove[0].prefix: an autoApprove rule no longer approves whatever follows its argv; say what may follow"),
        "{e}"
    );
    for bad in ["\".*\"", "\"[a-z ]+\"", "\"[a-z;]+\"", "\"[^/]+\""] {
        let e = err(&sudo(&format!(
            "autoApprove = [{{ argv = [\"systemctl\"], extra = {{ pattern = {bad} }} }}]"
        )));
        assert!(
            e.contains("agents.ada.sudo.autoApprove[0].extra.pattern:"),
            "{bad}: {e}"
        );
    }
    let e = err(&sudo(
        "autoApprove = [{ argv = [\"x\"], extra = { pattern = \"(\" } }]",
    ));
    assert!(
        e.contains("extra.pattern: is not a regular expression"),
        "{e}"
    );
    let e = err(&sudo("autoApprove = [{ argv = [\"x\"], extra = {} }]"));
    assert!(e.contains("extra: names nothing that may follow"), "{e}");
    let e = err(&sudo(
        "autoApprove = [{ argv = [\"x\"], extra = { words = [\"a\"], max = 0 } }]",
    ));
    assert!(e.contains("extra.max: 0 must be between 1 and 64"), "{e}");
    // A bare prefix still denies (deny errs towards denying); a named one approves.
    let t = toml(&sudo(
        "deny = [{ argv = [\"/bin/sh\"], prefix = true }]\nautoApprove = [{ argv = [\"systemctl\", \"status\"], extra = { pattern = \"[a-z0-9@._-]+\" } }]",
    ))
    .unwrap();
    let rule = &t.agents["ada"].sudo.auto_approve[0];
    let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(rule.matches(&argv(&["systemctl", "status", "nginx"])));
    assert!(!rule.matches(&argv(&["systemctl", "status", "nginx", "sshd"])));
    assert!(!rule.matches(&argv(&["systemctl", "status", "$(id)"])));
}

/// `host.enable` defaults to `!cloud.enable`; both set runs the agent on the
/// host and in the cluster.
#[test]
fn where_an_agent_runs() {
    let town = toml(
        "[agents.ada]\nuid = 1100\n\
         [agents.vox]\nuid = 1101\ncloud = { enable = true, image = \"busybox\" }\n\
         [agents.bo]\nuid = 1102\nhost.enable = true\ncloud = { enable = true, image = \"busybox\" }\n\
         [agents.cy]\nuid = 1103\nenable = false\ncloud = { enable = true, image = \"busybox\" }\n",
    )
    .unwrap();
    assert_eq!(town.agents["ada"].host.enable, Some(true));
    assert_eq!(town.agents["vox"].host.enable, Some(false));
    assert!(town.agents["vox"].cloud_only() && !town.agents["bo"].cloud_only());
    assert!(!town.agents["cy"].cloud_only() && !town.agents["cy"].on_host());
    let on_host: Vec<&String> = town.host_agents().map(|(n, _)| n).collect();
    assert_eq!(on_host, ["ada", "bo"]);
    assert!(town.host_agent("vox").unwrap_err().starts_with(
        "vox is declared for the cloud only (agents.vox.host.enable = false, the default with cloud.enable)"
    ));
    assert_eq!(
        town.host_agent("cy").unwrap_err(),
        "cy is not an enabled agent of this town (agents on this host: ada, bo)"
    );
    assert!(toml("[agents.a]\nuid = 1100\nhost = { enable = true, where = 1 }\n").is_err());
}

#[test]
fn agent_running_nowhere_or_chatting_from_the_cloud() {
    let e = err("[agents.ada]\nuid = 1100\nhost.enable = false\n");
    assert!(e.contains("agents.ada.host.enable: is false and cloud.enable is not set: the agent would run nowhere; set cloud.enable = true to run it in the cluster only, or enable = false to remove it"), "{e}");
    // A cloud-only agent chats from its pod: no password file on the host,
    // but the pod's command is the bridge.
    let chat = "chat = { enable = true, homeserver = \"https://m.example.org\", userId = \"@vox:example.org\" }\n";
    let town = toml(&format!(
        "[agents.vox]\nuid = 1101\ncloud = {{ enable = true, image = \"busybox\" }}\n{chat}"
    ))
    .unwrap();
    assert_eq!(
        town.bridge_of("vox").unwrap().tier.as_deref(),
        Some("standard")
    );
    let e = err(&format!("[agents.vox]\nuid = 1101\ncloud = {{ enable = true, image = \"busybox\", command = [\"sleep\", \"infinity\"] }}\n{chat}"));
    assert!(e.contains("agents.vox.cloud.command: a cloud-only agent with chat.enable runs its chat bridge as the pod's command"), "{e}");
    // On the host the bridge still needs the password's file.
    let e = err(&format!("[agents.vox]\nuid = 1101\n{chat}"));
    assert!(
        e.contains("agents.vox.chat.passwordFile: chat needs passwordFile or accessTokenFile"),
        "{e}"
    );
    let e = err("humanUser = \"josh\"\n[agents.vox]\nuid = 1101\ncloud = { enable = true, image = \"busybox\" }\n\
                 [sharedDirs.review]\nmembers = { vox = \"rw\", josh = \"rw\" }\n");
    assert!(
        e.contains("sharedDirs.review.members.vox: vox is declared for the cloud only"),
        "{e}"
    );
}
