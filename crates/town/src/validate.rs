//! The rules a parsed town must keep. Each problem names its key path and
//! says how to fix it; all problems are reported at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path};

use crate::{Agent, CommandRule, Town};

/// One broken rule: the key path and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `agents.vox.uid`.
    pub key: String,
    /// What is wrong and the fix.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The lowest uid an agent may have.
pub const MIN_UID: u32 = 1000;
/// The highest uid an agent may have (Debian's UID_MAX for normal users).
pub const MAX_UID: u32 = 59999;

struct Check {
    problems: Vec<Problem>,
}

impl Check {
    fn fail(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// Whether `name` is a portable Unix user or group name.
pub fn is_unix_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && name.len() <= 32
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
}

/// Whether `s` is a UUID as `blkid` prints a filesystem's
/// (`38b243a0-c875-4758-8998-cc6c6a4c451e`).
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Whether `s` can name a secret in a sops file as sops-nix reads it
/// (`ada/ssh-key`: the key `ssh-key` under `ada`): words of letters,
/// digits, `.`, `_` and `-` joined by `/`, none of them `.` or `..`.
pub fn is_sops_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|w| {
            !w.is_empty()
                && w != "."
                && w != ".."
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
}

/// Check every rule of the town; an empty list means it is valid.
pub fn validate(town: &Town) -> Vec<Problem> {
    let mut c = Check {
        problems: Vec::new(),
    };
    check_btrfs(&mut c, town);
    check_town_cloud(&mut c, town);

    if let Some(domain) = &town.domain {
        let ok = !domain.is_empty()
            && domain
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !ok {
            c.fail("domain", format!("{domain:?} is not a domain name; use letters, digits, '-' and dots, e.g. \"example.org\""));
        }
    }
    for (key, dir) in [
        ("agentsDir", &town.agents_dir),
        ("persistDir", &town.persist_dir),
    ] {
        if !dir.is_absolute() || dir.components().any(|c| c == Component::ParentDir) {
            c.fail(
                key,
                format!(
                    "{} must be an absolute path without '..', e.g. \"/{}\"",
                    dir.display(),
                    key.trim_end_matches("Dir")
                ),
            );
        }
    }
    if town.persist_dir.starts_with(&town.agents_dir)
        || town.agents_dir.starts_with(&town.persist_dir)
    {
        c.fail(
            "persistDir",
            format!(
                "{} and agentsDir {} must not contain each other: a new round levels agentsDir and would take persisted data with it; put them side by side, e.g. \"/persist\" and \"/agents\"",
                town.persist_dir.display(),
                town.agents_dir.display()
            ),
        );
    }
    for (i, dir) in town.project_dirs.iter().enumerate() {
        if !(dir == "~" || dir.starts_with("~/") || dir.starts_with('/')) {
            c.fail(
                format!("projectDirs[{i}]"),
                format!("{dir:?} must start with \"~/\" or \"/\", e.g. \"~/dev\""),
            );
        }
    }
    if let Some(human) = &town.human_user {
        if !is_unix_name(human) {
            c.fail("humanUser", format!("{human:?} is not a valid Unix user name; use lowercase letters, digits, '_' or '-', starting with a letter"));
        }
        if town.agents.contains_key(human) {
            c.fail("humanUser", format!("{human:?} is also declared as an agent; the human and the agents must be different users"));
        }
    }
    if let Some(email) = &town.human_email {
        if !email.contains('@') {
            c.fail("humanEmail", format!("{email:?} is not an e-mail address"));
        }
    }
    for (i, who) in town.hall.approvers.iter().enumerate() {
        if !is_unix_name(who) {
            c.fail(
                format!("hall.approvers[{i}]"),
                format!("{who:?} is not a valid Unix user name"),
            );
        } else if town.agents.contains_key(who) {
            c.fail(
                format!("hall.approvers[{i}]"),
                format!(
                    "{who:?} is an agent; agents may never approve escalations, list humans only"
                ),
            );
        }
    }
    let m = &town.hall.matrix;
    if m.enable {
        if !m
            .homeserver
            .as_deref()
            .is_some_and(|h| h.starts_with("http://") || h.starts_with("https://"))
        {
            c.fail(
                "hall.matrix.homeserver",
                "the Matrix approver needs the homeserver URL, e.g. \"https://matrix.example.org\"",
            );
        }
        if !m
            .user_id
            .as_deref()
            .is_some_and(|u| u.starts_with('@') && u.contains(':'))
        {
            c.fail(
                "hall.matrix.userId",
                "the Matrix approver needs the hall's Matrix id, e.g. \"@hall:example.org\"",
            );
        }
        if m.password_file.is_none() {
            c.fail(
                "hall.matrix.passwordFile",
                "the Matrix approver needs the password file of its account",
            );
        }
        if m.room.is_none() {
            c.fail(
                "hall.matrix.room",
                "the Matrix approver needs the approval room, e.g. \"#approvals:example.org\"",
            );
        }
        if m.approvers.is_empty() {
            c.fail("hall.matrix.approvers", "name the Matrix ids who may decide, e.g. [\"@josh:example.org\"]; nobody else is heard");
        }
        let agent_ids = town.all_agent_matrix_ids();
        for (i, a) in m.approvers.iter().enumerate() {
            if !(a.starts_with('@') && a.contains(':')) {
                c.fail(
                    format!("hall.matrix.approvers[{i}]"),
                    format!("{a:?} is not a Matrix id like \"@josh:example.org\""),
                );
            } else if let Some((_, agent)) =
                agent_ids.iter().find(|(id, _)| *id == a.to_lowercase())
            {
                c.fail(
                    format!("hall.matrix.approvers[{i}]"),
                    format!("{a:?} is agent {agent}'s Matrix account (agents.{agent}.chat.userId); agents may never approve, list humans only"),
                );
            } else if m
                .user_id
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(a))
            {
                c.fail(
                    format!("hall.matrix.approvers[{i}]"),
                    format!("{a:?} is the hall's own account (hall.matrix.userId); list the humans who decide"),
                );
            }
        }
    }
    if !town.hall.elevate_path.is_absolute() {
        c.fail(
            "hall.elevatePath",
            format!(
                "{} must be an absolute path",
                town.hall.elevate_path.display()
            ),
        );
    }
    if town.rebuild.command.is_empty() || town.rebuild.command[0].is_empty() {
        c.fail(
            "rebuild.command",
            "must name a program, e.g. [\"nixos-rebuild\"]",
        );
    }
    if town.host_agents().any(|(_, a)| a.sudo.enable) && town.approvers().is_empty() {
        c.fail(
            "humanUser",
            "an agent has sudo.enable but nobody can approve; set humanUser (or hall.approvers)",
        );
    }

    let mut uids: BTreeMap<u32, &str> = BTreeMap::new();
    for (name, agent) in &town.agents {
        let key = format!("agents.{name}");
        if !is_unix_name(name) {
            c.fail(&key, format!("{name:?} is not a valid Unix user name; use at most 32 lowercase letters, digits, '_' or '-', starting with a letter"));
        }
        if agent.uid < MIN_UID || agent.uid > MAX_UID {
            c.fail(format!("{key}.uid"), format!("{} is outside the range for people ({MIN_UID}–{MAX_UID}); agents conventionally start at 1100", agent.uid));
        } else if let Some(other) = uids.get(&agent.uid) {
            c.fail(
                format!("{key}.uid"),
                format!("{} is already {other}'s uid; pick a free one", agent.uid),
            );
        } else {
            uids.insert(agent.uid, name);
        }
        check_agent(&mut c, &key, name, agent);
        check_secrets(&mut c, town, &key, name, agent);
        check_credentials(&mut c, town, &key, name, agent);
    }
    check_gateway(&mut c, town);
    check_shared_dirs(&mut c, town);
    check_agent_ids(&mut c, town);
    check_rooms(&mut c, town);
    c.problems
}

/// `btrfsDevice` names a device (a bare UUID was read as its
/// `/dev/disk/by-uuid/` path); `btrfsSubvolume` a subvolume below the top.
fn check_btrfs(c: &mut Check, town: &Town) {
    if let Some(dev) = &town.btrfs_device {
        if !dev.starts_with("/dev/") || dev.contains(char::is_whitespace) {
            c.fail(
                "btrfsDevice",
                format!("{dev:?} is neither a device path (\"/dev/disk/by-uuid/…\", \"/dev/disk/by-label/nixos\") nor a filesystem UUID (\"38b243a0-c875-4758-8998-cc6c6a4c451e\", as blkid prints it)"),
            );
        }
    }
    if let Some(sub) = &town.btrfs_subvolume {
        let word = |w: &str| {
            !w.is_empty()
                && w != "."
                && w != ".."
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '_' | '-'))
        };
        if !sub.split('/').all(word) {
            c.fail(
                "btrfsSubvolume",
                format!("{sub:?} is not a subvolume path below the filesystem's top; use letters, digits, '@', '.', '_' and '-', e.g. \"@agents\""),
            );
        }
    }
}

/// The town-wide cloud defaults are checked in each agent that takes them;
/// here only what no agent may have taken yet.
fn check_town_cloud(c: &mut Check, town: &Town) {
    let cloud = &town.cloud;
    for (key, tier) in [
        ("cloud.resources", &cloud.resources),
        ("cloud.scaling.maxResources", &cloud.scaling.max_resources),
    ] {
        if let Some(t) = tier {
            if crate::tiers::rank(t).is_none() {
                c.fail(
                    key,
                    format!(
                        "{t:?} is not a tier; use \"small\", \"standard\", \"large\" or \"gpu\""
                    ),
                );
            }
        }
    }
    if let Some(t) = &cloud.scaling.idle_timeout {
        if let Err(e) = crate::network::parse_duration(t) {
            c.fail("cloud.scaling.idleTimeout", e);
        }
    }
    if let Some(ns) = &cloud.namespace {
        if !is_dns_label(ns) {
            c.fail(
                "cloud.namespace",
                format!("{ns:?} is not a valid Kubernetes namespace"),
            );
        }
    }
}

fn is_matrix_id(s: &str) -> bool {
    s.starts_with('@') && s.contains(':') && !s.contains(char::is_whitespace)
}

/// Agents are never heard as humans: no agent's Matrix id may be another agent's human.
fn check_agent_ids(c: &mut Check, town: &Town) {
    let agent_ids: BTreeMap<&str, &String> = town.agent_matrix_ids().collect();
    let mut seen: BTreeMap<&str, &String> = BTreeMap::new();
    for (id, name) in town.agent_matrix_ids() {
        if let Some(other) = seen.insert(id, name) {
            c.fail(
                format!("agents.{name}.chat.userId"),
                format!("{id:?} is already {other}'s Matrix account; every agent needs its own"),
            );
        }
    }
    for (name, agent) in town.enabled_agents().filter(|(_, a)| a.chat.enable) {
        for (i, h) in agent.chat.allowed_humans.iter().enumerate() {
            if let Some(other) = agent_ids.get(h.as_str()) {
                c.fail(
                    format!("agents.{name}.chat.allowedHumans[{i}]"),
                    format!("{h:?} is agent {other}'s Matrix account; an agent never commands another as its human — let them talk in a room with agentsAnswerAgents instead"),
                );
            }
        }
    }
}

fn check_rooms(c: &mut Check, town: &Town) {
    if town.rooms.is_empty() {
        return;
    }
    let m = &town.hall.matrix;
    if !m.enable {
        // With enable, the Matrix approver's own checks already name these keys.
        if !m
            .homeserver
            .as_deref()
            .is_some_and(|h| h.starts_with("http://") || h.starts_with("https://"))
        {
            c.fail("hall.matrix.homeserver", "the hall's Matrix account keeps the declared rooms: set its homeserver URL, e.g. \"https://matrix.example.org\"");
        }
        if !m.user_id.as_deref().is_some_and(is_matrix_id) {
            c.fail("hall.matrix.userId", "the hall's Matrix account keeps the declared rooms: set its Matrix id, e.g. \"@hall:example.org\"");
        }
        match &m.password_file {
            None => c.fail("hall.matrix.passwordFile", "the hall's Matrix account keeps the declared rooms: set the file holding its password"),
            // systemd hands it to the rooms keeper (LoadCredential=), which
            // takes one absolute path without spaces.
            Some(p) if !p.is_absolute() || p.to_string_lossy().chars().any(|ch| ch.is_whitespace() || ch.is_control()) => c.fail(
                "hall.matrix.passwordFile",
                format!("{:?}: the rooms keeper is given this file by systemd, which needs an absolute path without spaces, e.g. \"/run/secrets/hall-matrix\"", p.display().to_string()),
            ),
            Some(_) => {}
        }
    }
    let agent_ids: BTreeMap<&str, &String> = town.agent_matrix_ids().collect();
    let mut aliases: BTreeMap<String, &String> = BTreeMap::new();
    for (name, room) in &town.rooms {
        let key = format!("rooms.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._=-".contains(ch))
        {
            c.fail(&key, format!("{name:?} is not a room name; use lowercase letters, digits, '.', '_', '=' or '-' (it is the alias's local part)"));
        }
        if let Some(alias) = &room.alias {
            if !(alias.starts_with('#')
                && alias.contains(':')
                && !alias.contains(char::is_whitespace))
            {
                c.fail(
                    format!("{key}.alias"),
                    format!("{alias:?} is not a room alias like \"#team:example.org\""),
                );
            }
        }
        if let Some(alias) = town.room_alias(name) {
            if let Some(other) = aliases.insert(alias.clone(), name) {
                c.fail(
                    format!("{key}.alias"),
                    format!(
                        "{alias:?} is already the alias of rooms.{other}; give each room its own"
                    ),
                );
            }
        }
        for (i, h) in room.humans.iter().enumerate() {
            if !is_matrix_id(h) {
                c.fail(
                    format!("{key}.humans[{i}]"),
                    format!("{h:?} is not a Matrix id like \"@josh:example.org\""),
                );
            } else if let Some(agent) = agent_ids.get(h.as_str()) {
                c.fail(format!("{key}.humans[{i}]"), format!("{h:?} is agent {agent}'s Matrix account; list agents under agents, never as humans"));
            } else if m.user_id.as_deref() == Some(h.as_str()) {
                c.fail(
                    format!("{key}.humans[{i}]"),
                    format!(
                        "{h:?} is the hall's own account, which is always in the room; remove it"
                    ),
                );
            }
        }
        for (i, a) in room.agents.iter().enumerate() {
            match town.agents.get(a) {
                None => c.fail(format!("{key}.agents[{i}]"), format!("{a:?} is not an agent of this town; name one of: {}", town.agents.keys().cloned().collect::<Vec<_>>().join(", "))),
                Some(agent) if !(agent.enable && agent.chat.enable) => c.fail(format!("{key}.agents[{i}]"), format!("agent {a} has no chat account; set agents.{a}.chat.enable (with its Matrix account) or remove it from the room")),
                Some(_) => {}
            }
            if room.agents[..i].contains(a) {
                c.fail(
                    format!("{key}.agents[{i}]"),
                    format!("{a} is listed twice; list it once"),
                );
            }
        }
        if !(1..=100).contains(&room.agent_turns) {
            c.fail(format!("{key}.agentTurns"), format!("{} is outside 1–100; agents may answer agents that many times in a row before a human must speak", room.agent_turns));
        }
    }
}

/// Shared directories: a name that makes a group, a path root can own
/// outside every agent's tree, and members who are the town's own people.
fn check_shared_dirs(c: &mut Check, town: &Town) {
    let humans = town.humans();
    let mut paths: Vec<(String, std::path::PathBuf)> = Vec::new();
    for (name, dir) in &town.shared_dirs {
        let key = format!("sharedDirs.{name}");
        let group = Town::shared_group(name);
        if !is_unix_name(name) || !is_unix_name(&group) {
            c.fail(&key, format!("{name:?} cannot name a group ({group:?}); use at most 25 lowercase letters, digits, '_' or '-', starting with a letter"));
        }
        if town.agents.contains_key(&group) || humans.contains(&group) {
            c.fail(
                &key,
                format!(
                    "its group {group:?} is also a user of the town; rename the shared directory"
                ),
            );
        }
        let path = town.shared_path(name);
        let pkey = format!("{key}.path");
        let shown = path.display();
        if !path.is_absolute()
            || path.components().any(|c| c == Component::ParentDir)
            || path.parent().is_none()
        {
            c.fail(&pkey, format!("{shown} must be an absolute path below \"/\" without '..', e.g. \"/srv/shared/{name}\""));
        } else if path.starts_with(&town.agents_dir) || town.agents_dir.starts_with(&path) {
            c.fail(&pkey, format!("{shown} is inside agentsDir (or holds it), which every round levels and agents control; put it outside, e.g. \"/srv/shared/{name}\""));
        } else if path.starts_with(town.persist_dir.join("agents"))
            || town.persist_dir.starts_with(&path)
        {
            c.fail(&pkey, format!("{shown} is inside an agent's persist dir (or holds persistDir); put it outside, e.g. the default \"{}\"", town.persist_dir.join("shared").join(name).display()));
        } else if path.to_string_lossy().contains(['\n', '\0', ' ']) {
            c.fail(
                &pkey,
                format!("{shown:?} contains a space, newline or NUL; pick a plain path"),
            );
        }
        for (other, p) in &paths {
            if p.starts_with(&path) || path.starts_with(p) {
                c.fail(&pkey, format!("{shown} and sharedDirs.{other} ({}) contain each other; give each its own directory", p.display()));
            }
        }
        paths.push((name.clone(), path.clone()));
        if let Some(gid) = dir.gid {
            if !(1000..=59999).contains(&gid) {
                c.fail(
                    format!("{key}.gid"),
                    format!("{gid} is outside 1000–59999; pick a free gid, e.g. 31200"),
                );
            } else if let Some((agent, _)) = town.agents.iter().find(|(_, a)| a.uid == gid) {
                c.fail(
                    format!("{key}.gid"),
                    format!(
                        "{gid} is the gid of {agent}'s private group; pick a free gid, e.g. 31200"
                    ),
                );
            } else if let Some((other, _)) = town
                .shared_dirs
                .iter()
                .find(|(n, d)| *n != name && d.gid == Some(gid))
            {
                c.fail(
                    format!("{key}.gid"),
                    format!("{gid} is also sharedDirs.{other}'s gid; give each its own"),
                );
            }
        }
        if dir.members.is_empty() {
            c.fail(
                format!("{key}.members"),
                "is empty; name who shares it, e.g. { ada = \"rw\", vox = \"ro\" }",
            );
        }
        for who in dir.members.keys() {
            let is_agent = town.agents.get(who).is_some_and(|a| a.on_host());
            if town.agents.get(who).is_some_and(|a| a.cloud_only()) {
                c.fail(
                    format!("{key}.members.{who}"),
                    format!("{who} is declared for the cloud only (agents.{who}.host.enable = false): a shared directory is on this host; set agents.{who}.host.enable = true or remove {who} from the members"),
                );
            } else if !is_agent && !humans.contains(who) {
                let mut known: Vec<&str> = town.host_agents().map(|(n, _)| n.as_str()).collect();
                known.extend(humans.iter().map(String::as_str));
                c.fail(
                    format!("{key}.members.{who}"),
                    format!("{who:?} is neither an enabled agent nor a human of the town (humanUser, hall.approvers); use one of: {}", known.join(", ")),
                );
            }
        }
    }
}

/// A home-relative path that stays inside the home.
fn check_home_path(c: &mut Check, key: &str, path: &str) -> bool {
    let p = Path::new(path);
    let why = if path.is_empty() {
        Some("is empty")
    } else if p.is_absolute() || path.starts_with('~') {
        Some("is absolute; write it relative to the home, e.g. \"dev\" for ~/dev")
    } else if p.components().any(|c| c == Component::ParentDir) {
        Some("contains '..' and would escape the home; write a path inside the home")
    } else if p.components().all(|c| c == Component::CurDir) {
        Some("is the home itself; name a directory or file inside it")
    } else if path.contains('\n') || path.contains('\0') {
        Some("contains a newline or NUL")
    } else {
        None
    };
    if let Some(why) = why {
        c.fail(key, format!("{path:?} {why}"));
        false
    } else {
        true
    }
}

/// Keys and secrets: each the absolute path of a file (outside the Nix
/// store), or the name of a sops secret in the town's `sopsFile`.
fn check_secrets(c: &mut Check, town: &Town, key: &str, name: &str, agent: &Agent) {
    for (path, key2) in [
        (&agent.secrets.ssh_key, "sshKey"),
        (&agent.secrets.gpg_key, "gpgKey"),
    ] {
        if let Some(p) = path {
            check_secret_source(c, town, &format!("{key}.secrets.{key2}"), p);
        }
    }
    for (sname, secret) in &agent.secrets.extra_secrets {
        let k = format!("{key}.secrets.extraSecrets.{sname}");
        if let Some(path) = &secret.path {
            check_home_path(c, &format!("{k}.path"), path);
        }
        if secret.mode.len() < 3
            || secret.mode.len() > 4
            || u32::from_str_radix(&secret.mode, 8).is_err()
        {
            c.fail(
                format!("{k}.mode"),
                format!("{:?} is not an octal mode like \"0400\"", secret.mode),
            );
        }
        match &secret.source {
            Some(src) => check_secret_source(c, town, &format!("{k}.source"), src),
            None if secret.path.is_none() => c.fail(
                &k,
                format!("declares neither source nor path; name the sops secret (`{sname} = \"{name}/{sname}\"`) or the file (`source = \"/run/keys/{sname}\"`) it comes from"),
            ),
            None => {}
        }
    }
    if let Some(k) = &agent.keys.public_key {
        if !looks_like_public_key(k) {
            c.fail(
                format!("{key}.keys.publicKey"),
                "is not an SSH public key; give it as `ssh-keygen -y` prints it (`ssh-ed25519 AAAA… comment`)",
            );
        }
    }
}

/// The gateway's port and user.
fn check_gateway(c: &mut Check, town: &Town) {
    let g = &town.hall.gateway;
    if g.port == 0 {
        c.fail(
            "hall.gateway.port",
            "must be a port (1–65535); 8399 unless written",
        );
    }
    if !g.run_dir.is_absolute() {
        c.fail(
            "hall.gateway.runDir",
            format!(
                "{} must be an absolute path (/run/nuketown/gateway unless written)",
                g.run_dir.display()
            ),
        );
    }
    if !is_unix_name(&g.user) || g.user == "root" {
        c.fail(
            "hall.gateway.user",
            format!(
                "{:?} must be a system user name of its own (not root), e.g. \"nuketown-gateway\"",
                g.user
            ),
        );
    } else if town.agents.contains_key(&g.user) || town.human_user.as_deref() == Some(&g.user) {
        c.fail(
            "hall.gateway.user",
            format!("{:?} is a user of the town; the gateway runs as a user of its own (\"nuketown-gateway\")", g.user),
        );
    }
}

/// An agent's credentials (declared, and extra secrets handed to the gateway).
fn check_credentials(c: &mut Check, town: &Town, key: &str, name: &str, agent: &Agent) {
    use crate::credentials::{is_model_api, valid_name, valid_upstream, APIS};
    let apis = APIS.join(", ");
    for (sname, secret) in &agent.secrets.extra_secrets {
        if let Some(api) = &secret.gateway {
            let k = format!("{key}.secrets.extraSecrets.{sname}");
            if !APIS.contains(&api.as_str()) {
                c.fail(format!("{k}.gateway"), format!("{api:?} is not an API the gateway knows; use one of {apis} (an `http` credential needs agents.{name}.credentials to say its hosts)"));
            } else if !is_model_api(api) && api != "github" {
                c.fail(format!("{k}.gateway"), format!("an `{api}` credential needs its hosts and header; declare it as agents.{name}.credentials.{sname} instead"));
            }
            if !valid_name(sname) {
                c.fail(&k, format!("{sname:?} cannot name a credential at the gateway (it is a URL path segment): use lowercase letters, digits and '-'"));
            }
            if agent.credentials.contains_key(sname) {
                c.fail(
                    format!("{k}.gateway"),
                    format!("agents.{name}.credentials.{sname} is declared too; keep one"),
                );
            }
        }
    }
    let mut model_apis: BTreeMap<&str, &str> = BTreeMap::new();
    for (sname, secret) in &agent.secrets.extra_secrets {
        if let Some(api) = secret.gateway.as_deref().filter(|a| is_model_api(a)) {
            if let Some(other) = model_apis.insert(api, sname) {
                c.fail(format!("{key}.secrets.extraSecrets.{sname}.gateway"), format!("agents.{name}.secrets.extraSecrets.{other} is {name}'s `{api}` credential already; the CLIs reach one {api} endpoint: keep one"));
            }
        }
    }
    for (cname, cred) in &agent.credentials {
        let k = format!("{key}.credentials.{cname}");
        if !valid_name(cname) {
            c.fail(&k, format!("{cname:?} cannot name a credential (it is the gateway's URL path segment): use at most 32 lowercase letters, digits and '-'"));
        }
        match (&cred.source, &cred.systemd_credential) {
            (Some(src), None) => check_secret_source(c, town, &format!("{k}.source"), src),
            (None, Some(sd)) => {
                if sd.is_empty() || sd.contains('/') {
                    c.fail(format!("{k}.systemdCredential"), format!("{sd:?} is not a systemd credential's name"));
                }
            }
            (Some(_), Some(_)) => c.fail(&k, "declares both source and systemdCredential; keep one"),
            (None, None) => c.fail(&k, format!("says nowhere where the secret comes from: set source (a sops secret's name like \"{name}/{cname}\", or a file only root reads) or systemdCredential")),
        }
        let api = cred.api.as_str();
        if !APIS.contains(&api) {
            c.fail(
                format!("{k}.api"),
                format!("{api:?} is not an API the gateway knows; use one of {apis}"),
            );
            continue;
        }
        if is_model_api(api) {
            if let Some(other) = model_apis.insert(api, cname) {
                c.fail(&k, format!("agents.{name}.credentials.{other} is {name}'s `{api}` credential already; the CLIs reach one {api} endpoint (ANTHROPIC_BASE_URL / OPENAI_BASE_URL): keep one"));
            }
            if !cred.hosts.is_empty() {
                c.fail(format!("{k}.hosts"), format!("a model API ({api}) is reached at the gateway's /{cname}, never through its proxy; set upstream for another endpoint"));
            }
        } else if !cred.models.is_empty() {
            c.fail(format!("{k}.models"), format!("only model APIs (anthropic, openai) have models; remove it from this `{api}` credential"));
        }
        if api == "http" {
            if cred.hosts.is_empty() {
                c.fail(
                    format!("{k}.hosts"),
                    "an `http` credential needs the hosts it is for, e.g. [\"api.example.com\"]",
                );
            }
            if cred.header.as_deref().is_none_or(str::is_empty) {
                c.fail(format!("{k}.header"), "an `http` credential needs the header that carries it, e.g. \"Authorization\" (with scheme = \"Bearer\")");
            }
        }
        if let Some(h) = &cred.header {
            if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                c.fail(format!("{k}.header"), format!("{h:?} is not a header name"));
            }
        }
        if let Some(s) = &cred.scheme {
            if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                c.fail(
                    format!("{k}.scheme"),
                    format!("{s:?} is not an authorization scheme like \"Bearer\""),
                );
            }
        }
        for (i, h) in cred.hosts.iter().enumerate() {
            let (host, port) = h
                .rsplit_once(':')
                .map_or((h.as_str(), "443"), |(a, b)| (a, b));
            if host.is_empty()
                || port.parse::<u16>().is_err()
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
            {
                c.fail(
                    format!("{k}.hosts[{i}]"),
                    format!("{h:?} is not a host name (or host:port)"),
                );
            }
        }
        for (i, p) in cred.paths.iter().enumerate() {
            if !p.starts_with('/') || p.split('/').any(|s| s == "..") {
                c.fail(
                    format!("{k}.paths[{i}]"),
                    format!(
                        "{p:?} must be a path starting with '/' (a prefix, e.g. \"/v1/messages\")"
                    ),
                );
            }
        }
        if let Some(u) = &cred.upstream {
            if !valid_upstream(u) {
                c.fail(
                    format!("{k}.upstream"),
                    format!(
                        "{u:?} must be an https:// URL (http:// only to this machine's loopback)"
                    ),
                );
            }
        }
        if !matches!(cred.on_limit.as_str(), "deny" | "ask") {
            c.fail(
                format!("{k}.onLimit"),
                format!("{:?} must be \"deny\" or \"ask\"", cred.on_limit),
            );
        }
        if let Some(ca) = &cred.upstream_ca {
            if !ca.is_absolute() {
                c.fail(
                    format!("{k}.upstreamCa"),
                    format!("{} must be an absolute path of a PEM file", ca.display()),
                );
            }
        }
        let l = &cred.limits;
        for (v, f) in [
            (l.requests_per_hour, "requestsPerHour"),
            (l.requests_per_day, "requestsPerDay"),
            (l.tokens_per_hour, "tokensPerHour"),
            (l.tokens_per_day, "tokensPerDay"),
        ] {
            if v == Some(0) {
                c.fail(format!("{k}.limits.{f}"), "is 0: nothing could ever be asked; remove the credential, or `nuketown keys pause` the agent");
            }
        }
    }
}

/// `type base64 [comment]`, as ssh prints a public key.
fn looks_like_public_key(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    let b64 = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    };
    words.len() >= 2 && words[0].contains('-') && b64(words[1]) && !line.contains('\n')
}

/// A file holding a key or secret (an absolute path outside the Nix store),
/// or the name of a sops secret, which needs the town's `sopsFile`.
fn check_secret_source(c: &mut Check, town: &Town, key: &str, path: &Path) {
    let text = path.to_string_lossy();
    if !path.is_absolute() {
        if !is_sops_name(&text) {
            c.fail(
                key,
                format!(
                    "{text:?} is neither an absolute path to the file nor a sops secret name (words of letters, digits, '.', '_' and '-' joined by '/', e.g. \"ada/ssh-key\")"
                ),
            );
        } else if town.sops_file.is_none() {
            c.fail(
                key,
                format!(
                    "{text:?} names a sops secret, but the town declares no sopsFile to find it in; set sopsFile = \"/etc/nuketown/secrets.yaml\" (the sops file holding it), or give the absolute path of the file"
                ),
            );
        }
    } else if path.starts_with("/nix/store") {
        c.fail(
            key,
            format!(
                "{} is in the Nix store, which every user can read; keep secrets outside it",
                path.display()
            ),
        );
    }
}

fn normal(path: &str) -> String {
    Path::new(path)
        .components()
        .filter(|c| *c != Component::CurDir)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Strings a shell or an interpreter would read as code: a pattern that
/// lets an agent pass one of these hands it more than words. (Paths are
/// not refused here: the hall proves every file an argument may name, `..`
/// and `~user` included.)
const PATTERN_PROBES: &[&str] = &[
    "", "a b", "a;b", "a|b", "a&b", "$(x)", "`x`", "$x", "a\nb", "'a'", "\"a\"", "a>b", "a<b", "*",
    "a?", "a\\b", "{a,b}",
];

fn check_rules(c: &mut Check, key: &str, rules: &[CommandRule], approve: bool) {
    for (i, rule) in rules.iter().enumerate() {
        if rule.argv.is_empty() || rule.argv[0].is_empty() {
            c.fail(
                format!("{key}[{i}].argv"),
                "is empty; name the program, e.g. [\"systemctl\", \"status\"]",
            );
        }
        if approve && rule.prefix && rule.extra.is_none() {
            c.fail(
                format!("{key}[{i}].prefix"),
                "an autoApprove rule no longer approves whatever follows its argv; say what may follow: extra = { words = [\"nginx\"] } or extra = { pattern = \"[a-z0-9@._-]+\" }",
            );
        }
        let Some(extra) = &rule.extra else { continue };
        let k = format!("{key}[{i}].extra");
        if extra.words.is_empty() && extra.pattern.is_none() {
            c.fail(
                k.clone(),
                "names nothing that may follow; give words = [...] or pattern = \"...\" (or drop extra for an exact rule)",
            );
        }
        if extra.max == 0 || extra.max > 64 {
            c.fail(
                format!("{k}.max"),
                format!("{} must be between 1 and 64 arguments", extra.max),
            );
        }
        if let Some(w) = extra
            .words
            .iter()
            .find(|w| w.is_empty() || w.contains(char::is_control))
        {
            c.fail(
                format!("{k}.words"),
                format!("{w:?} is empty or holds a control character; write plain words"),
            );
        }
        match extra.regex() {
            Some(Err(e)) => c.fail(
                format!("{k}.pattern"),
                format!(
                    "is not a regular expression ({})",
                    e.to_string().replace('\n', " ")
                ),
            ),
            Some(Ok(re)) if approve => {
                if let Some(p) = PATTERN_PROBES.iter().find(|p| re.is_match(p)) {
                    c.fail(
                        format!("{k}.pattern"),
                        format!(
                            "{:?} also matches {p:?}, which a shell or an interpreter would read as code; allow plain words, e.g. \"[a-z0-9@._-]+\"",
                            extra.pattern.as_deref().unwrap_or_default()
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

fn udev_safe(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c == '"' || c == '\\' || c == '$' || c.is_control())
}

fn check_agent(c: &mut Check, key: &str, name: &str, agent: &Agent) {
    if agent.role.trim().is_empty() || agent.role.contains('\n') {
        c.fail(
            format!("{key}.role"),
            "must be one line of text, e.g. \"software\"",
        );
    }
    if let Some(email) = &agent.git.email {
        if !email.contains('@') || email.contains(char::is_whitespace) {
            c.fail(
                format!("{key}.git.email"),
                format!("{email:?} is not an e-mail address"),
            );
        }
    }
    if let Some(gn) = &agent.git.name {
        if gn.trim().is_empty() || gn.contains('\n') {
            c.fail(format!("{key}.git.name"), "must be one non-empty line");
        }
    }

    let mut seen = BTreeSet::new();
    for (kind, list) in [
        ("directories", &agent.persist.directories),
        ("files", &agent.persist.files),
    ] {
        for (i, path) in list.iter().enumerate() {
            let k = format!("{key}.persist.{kind}[{i}]");
            if check_home_path(c, &k, path) {
                let n = normal(path);
                if !seen.insert(n.clone()) {
                    c.fail(&k, format!("{path:?} is persisted twice; list it once"));
                }
            }
        }
    }
    let all: Vec<String> = seen.into_iter().collect();
    for a in &all {
        for b in &all {
            if b.starts_with(&format!("{a}/")) {
                c.fail(
                    format!("{key}.persist"),
                    format!(
                        "{b:?} lies inside persisted {a:?}; it is persisted already, remove {b:?}"
                    ),
                );
            }
        }
    }

    for (i, dev) in agent.devices.iter().enumerate() {
        let k = format!("{key}.devices[{i}]");
        if dev.subsystem.is_empty()
            || !dev
                .subsystem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            c.fail(
                format!("{k}.subsystem"),
                format!(
                    "{:?} is not a udev subsystem such as \"tty\" or \"usb\"",
                    dev.subsystem
                ),
            );
        }
        if dev.attrs.is_empty() {
            c.fail(format!("{k}.attrs"), "is empty and would match every device of the subsystem; name the device, e.g. { idVendor = \"0483\", idProduct = \"3748\" }");
        }
        for (a, v) in &dev.attrs {
            if !a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || a.is_empty() {
                c.fail(
                    format!("{k}.attrs.{a}"),
                    "attribute names are letters, digits and '_'",
                );
            }
            if !udev_safe(v) {
                c.fail(format!("{k}.attrs.{a}"), format!("{v:?} must be non-empty and free of quotes, backslashes, '$' and control characters"));
            }
        }
        if dev.action.is_empty()
            || !dev
                .action
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '|')
        {
            c.fail(
                format!("{k}.action"),
                format!(
                    "{:?} is not a udev action pattern like \"add|bind\"",
                    dev.action
                ),
            );
        }
        if dev.permission.is_empty()
            || !dev.permission.chars().all(|c| matches!(c, 'r' | 'w' | 'x'))
        {
            c.fail(
                format!("{k}.permission"),
                format!(
                    "{:?} must be made of r, w and x, e.g. \"rw\"",
                    dev.permission
                ),
            );
        }
        if !is_unix_name(&dev.group) {
            c.fail(
                format!("{k}.group"),
                format!("{:?} is not a valid group name", dev.group),
            );
        }
    }

    if agent.sudo.timeout == 0 || agent.sudo.timeout > 86_400 {
        c.fail(
            format!("{key}.sudo.timeout"),
            format!("{} must be between 1 and 86400 seconds", agent.sudo.timeout),
        );
    }
    c.problems.extend(crate::network::problems(
        &format!("{key}.network"),
        &agent.network,
    ));
    if agent.keys.timeout == 0 || agent.keys.timeout > 86_400 {
        c.fail(
            format!("{key}.keys.timeout"),
            format!("{} must be between 1 and 86400 seconds", agent.keys.timeout),
        );
    }
    for (host, h) in &agent.keys.hosts {
        let words: Vec<&str> = h.host_key.split_whitespace().collect();
        let b64 = |w: &str| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        };
        if words.len() < 2 || !words[0].contains('-') || !b64(words[1]) {
            c.fail(
                format!("{key}.keys.hosts.{host}.hostKey"),
                "not a public host key; give the key as `ssh-keyscan HOST` prints it, without the host name (`ssh-ed25519 AAAA…`)".to_string(),
            );
        }
    }
    if agent.sudo.max_pending == 0 || agent.sudo.max_pending > 1000 {
        c.fail(
            format!("{key}.sudo.maxPending"),
            format!(
                "{} must be between 1 and 1000 requests",
                agent.sudo.max_pending
            ),
        );
    }
    check_rules(
        c,
        &format!("{key}.sudo.autoApprove"),
        &agent.sudo.auto_approve,
        true,
    );
    check_rules(c, &format!("{key}.sudo.deny"), &agent.sudo.deny, false);
    check_rules(
        c,
        &format!("{key}.sudo.commands"),
        &agent.sudo.commands,
        false,
    );
    if !agent.sudo.commands.is_empty() && !agent.sudo.enable {
        c.fail(
            format!("{key}.sudo.commands"),
            "lists the commands the agent may ask for, but sudo.enable is false, so it may ask for none; set sudo.enable = true, or remove commands",
        );
    }

    let layout_ok = agent
        .portal
        .layout
        .split_once('/')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .is_some_and(|(a, b)| a + b == 100 && (10..=90).contains(&a));
    if !layout_ok {
        c.fail(
            format!("{key}.portal.layout"),
            format!(
                "{:?} must be agent/human percentages adding to 100, e.g. \"75/25\"",
                agent.portal.layout
            ),
        );
    }

    if let Some(an) = &agent.claude_code.agent_name {
        if an.is_empty() || an.contains('/') || an.starts_with('.') {
            c.fail(
                format!("{key}.claudeCode.agentName"),
                format!("{an:?} must be a plain file name"),
            );
        }
    }
    for extra in agent.claude_code.extra_agents.keys() {
        if extra.is_empty() || extra.contains('/') || extra.starts_with('.') {
            c.fail(
                format!("{key}.claudeCode.extraAgents.{extra}"),
                "agent names must be plain file names",
            );
        }
    }
    if !agent.claude_code.settings.is_null() && !agent.claude_code.settings.is_object() {
        c.fail(
            format!("{key}.claudeCode.settings"),
            "must be a table of Claude Code settings",
        );
    }

    if agent.enable && agent.host.enable == Some(false) && !agent.cloud.enable {
        c.fail(
            format!("{key}.host.enable"),
            "is false and cloud.enable is not set: the agent would run nowhere; set cloud.enable = true to run it in the cluster only, or enable = false to remove it",
        );
    }

    let chat = &agent.chat;
    // One Matrix account, one bridge: on the host when the agent has a user
    // there, else in its pod, where the bridge is what the pod runs and reads
    // the account's password from the agent's secrets (docs/cloud.md).
    if chat.enable && agent.cloud_only() && !agent.cloud.command.is_empty() {
        c.fail(
            format!("{key}.cloud.command"),
            "a cloud-only agent with chat.enable runs its chat bridge as the pod's command (the bridge starts the backend for each message); remove cloud.command, or turn chat off to run your own command",
        );
    }
    if chat.enable {
        let k = format!("{key}.chat");
        match &chat.homeserver {
            Some(h) if h.starts_with("http://") || h.starts_with("https://") => {}
            _ => c.fail(
                format!("{k}.homeserver"),
                "chat needs the homeserver URL, e.g. \"https://matrix.example.org\"",
            ),
        }
        match &chat.user_id {
            Some(u) if u.starts_with('@') && u.contains(':') => {}
            _ => c.fail(
                format!("{k}.userId"),
                format!("chat needs the agent's Matrix id, e.g. \"@{name}:example.org\""),
            ),
        }
        if agent.on_host() && chat.password_file.is_none() && chat.access_token_file.is_none() {
            c.fail(
                format!("{k}.passwordFile"),
                "chat needs passwordFile or accessTokenFile",
            );
        }
        for (i, h) in chat.allowed_humans.iter().enumerate() {
            if !(h.starts_with('@') && h.contains(':')) {
                c.fail(
                    format!("{k}.allowedHumans[{i}]"),
                    format!("{h:?} is not a Matrix id like \"@josh:example.org\""),
                );
            }
        }
        match chat.backend.kind.as_str() {
            "claude-code" | "codex" | "aider" => {}
            "command" if chat.backend.command.is_empty() => c.fail(format!("{k}.backend.command"), "backend type \"command\" needs the program to run, e.g. [\"/usr/local/bin/answer\"]"),
            "command" => {}
            other => c.fail(format!("{k}.backend.type"), format!("{other:?} is not a backend; use \"claude-code\", \"codex\", \"aider\" or \"command\"")),
        }
        if !matches!(chat.backend.permissions.as_str(), "own-tree" | "ask") {
            c.fail(
                format!("{k}.backend.permissions"),
                format!("{:?} is not a permission mode; use \"own-tree\" (the CLI works unasked as the agent, asks the town hall for anything else) or \"ask\" (every prompt goes to the town hall)", chat.backend.permissions),
            );
        }
    }

    let cloud = &agent.cloud;
    if cloud.enable {
        let k = format!("{key}.cloud");
        if !is_dns_label(name) {
            c.fail(&k, format!("agent name {name:?} is not a valid Kubernetes name (lowercase letters, digits and '-', at most 63); rename the agent or leave cloud.enable off"));
        }
        if !is_dns_label(&cloud.namespace) {
            c.fail(
                format!("{k}.namespace"),
                format!("{:?} is not a valid Kubernetes namespace", cloud.namespace),
            );
        }
        if !matches!(cloud.secrets.as_str(), "secret" | "sops-kms") {
            c.fail(
                format!("{k}.secrets"),
                format!("{:?} is not a way to get secrets into the pod; use \"secret\" (a Kubernetes Secret you create) or \"sops-kms\" (the sops file decrypted in the pod through its workload identity)", cloud.secrets),
            );
        }
        match cloud.resources.as_str() {
            "small" | "standard" | "large" => {}
            "gpu" if cloud.gpu.is_none() => c.fail(format!("{k}.gpu"), "the gpu tier needs gpu settings, e.g. gpu = { count = 1, nodeSelector = { \"cloud.google.com/gke-accelerator\" = \"nvidia-l4\" } }"),
            "gpu" => {}
            other => c.fail(format!("{k}.resources"), format!("{other:?} is not a tier; use \"small\", \"standard\", \"large\" or \"gpu\"")),
        }
        // Tiers, smallest first: a request may go up to maxResources.
        let rank = crate::tiers::rank;
        if let Some(max) = &cloud.scaling.max_resources {
            match (rank(max), rank(&cloud.resources)) {
                (None, _) => c.fail(format!("{k}.scaling.maxResources"), format!("{max:?} is not a tier; use \"small\", \"standard\", \"large\" or \"gpu\"")),
                (Some(m), Some(d)) if m < d => c.fail(format!("{k}.scaling.maxResources"), format!("{max:?} is below the declared tier {:?}; the largest tier the agent may be moved to is at least where it starts: raise it or remove it", cloud.resources)),
                (Some(3), _) if cloud.gpu.is_none() => c.fail(format!("{k}.gpu"), "maxResources = \"gpu\" needs gpu settings, e.g. gpu = { count = 1 }"),
                _ => {}
            }
        }
        let ceiling = cloud
            .scaling
            .max_resources
            .as_deref()
            .unwrap_or(&cloud.resources);
        for (i, t) in cloud.scaling.auto_approve.iter().enumerate() {
            match (rank(t), rank(ceiling)) {
                (None, _) => c.fail(
                    format!("{k}.scaling.autoApprove[{i}]"),
                    format!(
                        "{t:?} is not a tier; use \"small\", \"standard\", \"large\" or \"gpu\""
                    ),
                ),
                (Some(x), Some(m)) if x > m => c.fail(
                    format!("{k}.scaling.autoApprove[{i}]"),
                    format!(
                        "{t:?} is above maxResources {ceiling:?}; raise maxResources or remove it"
                    ),
                ),
                _ => {}
            }
        }
        if let Some(t) = &cloud.scaling.idle_timeout {
            if let Err(e) = crate::network::parse_duration(t) {
                c.fail(format!("{k}.scaling.idleTimeout"), e);
            }
        }
        if !cloud.command.is_empty() && cloud.command[0].trim().is_empty() {
            c.fail(
                format!("{k}.command"),
                "starts with an empty program; name it, e.g. [\"claude\"], or leave command empty for the image's entrypoint",
            );
        }
        if let Some(class) = &cloud.persist.storage_class {
            if !is_dns_subdomain(class) {
                c.fail(
                    format!("{k}.persist.storageClass"),
                    format!("{class:?} is not a Kubernetes StorageClass name (lowercase letters, digits, '-' and '.'); e.g. \"standard-rwo\", or leave it unset for the cluster's default class"),
                );
            }
        }
        for p in cloud.persist.sizes.keys() {
            if !agent
                .persist
                .directories
                .iter()
                .chain(&agent.persist.files)
                .any(|d| normal(d) == normal(p))
            {
                c.fail(
                    format!("{k}.persist.sizes.{p}"),
                    "is not a persisted path of this agent; list it in persist.directories first",
                );
            }
        }
    }
}

/// Whether `s` is a DNS-1123 label, as Kubernetes names must be.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a DNS-1123 subdomain (dot-separated labels, at most 253), as
/// most Kubernetes object names must be.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}
