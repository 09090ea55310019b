//! Policies on their own: deny wins, rules name programs the way sudo does,
//! prefix rules approve only the arguments they name, nothing automatic
//! approves what is not proven root's, the mock mode file is believed only
//! from its rightful owner. Files are made with real
//! owners and modes, so these run as root (CI does).

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use nuketown_hall::files;
use nuketown_hall::policy::{self, MockRefusal};
use nuketown_hall::proof::{Assessment, Finding, Subject};
use nuketown_hall::protocol::Ask;
use nuketown_hall::town::Loaded;
use nuketown_hall::trust::{Sources, Trust};
use nuketown_town::{Agent, CommandRule};

const AGENT_UID: u32 = 1997;
const HUMAN_UID: u32 = 1998;

fn root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests chown files to other users: run them as root (CI does)"
    );
}

fn agent(auto: &[(&[&str], bool)], deny: &[(&[&str], bool)]) -> Agent {
    let rules = |r: &[(&[&str], bool)]| -> Vec<CommandRule> {
        r.iter()
            .map(|(a, prefix)| CommandRule {
                argv: a.iter().map(|s| s.to_string()).collect(),
                prefix: *prefix,
                extra: None,
            })
            .collect()
    };
    let mut a: Agent = serde_json::from_value(serde_json::json!({ "uid": 1100 })).unwrap();
    a.sudo.enable = true;
    a.sudo.auto_approve = rules(auto);
    a.sudo.deny = rules(deny);
    a
}

/// A request as the entry point makes it: the program opened from `/`, named canonically.
fn ask(argv: &[&str]) -> Ask {
    let argv = argv.iter().map(|s| s.to_string()).collect();
    files::prepare(argv, "/", "root", 1100).unwrap().ask
}

fn clean() -> Assessment {
    Assessment::default()
}

fn agent_can_change() -> Assessment {
    Assessment {
        findings: vec![Finding {
            subject: Subject::Program,
            why: "the file /x is owned by ada (uid 1100, of the town)".into(),
        }],
    }
}

/// A rule from its TOML text, as a town would declare it.
fn rule(toml_text: &str) -> CommandRule {
    toml::from_str(toml_text).unwrap()
}

fn decided(a: &Agent, argv: &[&str]) -> Option<bool> {
    policy::by_rules("ada", a, &ask(argv), &clean(), &[], 0).map(|d| d.approved)
}

#[test]
fn deny_wins_over_auto_approve() {
    let mut a = agent(&[], &[(&["/usr/bin/systemctl", "poweroff"], true)]);
    a.sudo.auto_approve = vec![rule(
        "argv = [\"/usr/bin/systemctl\"]\nextra = { pattern = \"[a-z0-9@._-]+\", max = 3 }",
    )];
    assert_eq!(
        decided(&a, &["/usr/bin/systemctl", "restart", "nginx"]),
        Some(true)
    );
    assert_eq!(
        decided(&a, &["/usr/bin/systemctl", "poweroff"]),
        Some(false)
    );
    assert_eq!(
        decided(&a, &["/usr/bin/systemctl", "poweroff", "--force"]),
        Some(false)
    );
    assert_eq!(
        decided(&a, &["/usr/bin/id"]),
        None,
        "nothing matches: a human decides"
    );
    let d = policy::by_rules(
        "ada",
        &a,
        &ask(&["/usr/bin/systemctl", "poweroff"]),
        &clean(),
        &[],
        0,
    )
    .unwrap();
    assert_eq!(
        d.reason,
        "denied by policy: matches agents.ada.sudo.deny[0]"
    );
    assert_eq!(
        (d.by.who.as_str(), d.by.channel.as_str(), d.mock),
        ("policy", "policy", false)
    );
}

#[test]
fn exact_rules_match_exactly_and_prefix_rules_as_a_prefix() {
    let a = agent(&[(&["/usr/bin/apt", "update"], false)], &[]);
    assert_eq!(decided(&a, &["/usr/bin/apt", "update"]), Some(true));
    assert_eq!(
        decided(
            &a,
            &[
                "/usr/bin/apt",
                "update",
                "-o",
                "APT::Update::Post-Invoke=sh"
            ]
        ),
        None
    );
    assert_eq!(decided(&a, &["/usr/bin/apt"]), None);
}

#[test]
fn prefix_rules_approve_only_the_arguments_they_name() {
    let mut a = agent(&[], &[]);
    a.sudo.auto_approve = vec![
        rule("argv = [\"/usr/bin/systemctl\", \"restart\"]\nextra = { words = [\"nginx\", \"postgresql\"] }"),
        rule("argv = [\"/usr/bin/make\", \"-C\", \"/srv/app\"]\nextra = { pattern = \"[a-z]+\", max = 2 }"),
    ];
    let ok = ["/usr/bin/systemctl", "restart", "nginx"];
    assert_eq!(
        decided(&a, &ok),
        if Path::new(ok[0]).exists() {
            Some(true)
        } else {
            None
        }
    );
    for argv in [
        // Not a listed word; more than `max`; nothing but the prefix is fine (zero extras).
        &["/usr/bin/systemctl", "restart", "sshd"][..],
        &["/usr/bin/systemctl", "restart", "nginx", "postgresql"][..],
        &[
            "/usr/bin/make",
            "-C",
            "/srv/app",
            "-f",
            "../../agents/ada/evil.mk",
        ][..],
        &["/usr/bin/make", "-C", "/srv/app", "-sf/agents/ada/evil.mk"][..],
        &["/usr/bin/make", "-C", "/srv/app", "a", "b", "c"][..],
    ] {
        assert_eq!(decided(&a, argv), None, "{argv:?}");
    }
    if Path::new("/usr/bin/make").exists() {
        assert_eq!(
            decided(&a, &["/usr/bin/make", "-C", "/srv/app", "install"]),
            Some(true)
        );
        assert_eq!(
            decided(&a, &["/usr/bin/make", "-C", "/srv/app"]),
            Some(true)
        );
    }
    // "Anything after the prefix" approves nothing, even when a town slipped it through.
    let bare = agent(&[(&["/usr/bin/systemctl"], true)], &[]);
    assert_eq!(decided(&bare, &["/usr/bin/systemctl", "status"]), None);
    // In a deny rule a bare prefix still denies whatever follows.
    let d = agent(&[], &[(&["/usr/bin/systemctl"], true)]);
    assert_eq!(
        decided(&d, &["/usr/bin/systemctl", "anything", "-at", "all"]),
        Some(false)
    );
}

/// `sudo.commands` (the module guide's form): what the agent may ask for at
/// all; anything else is denied without bothering a human, and what is
/// listed still needs a human (or a rule, for what is proven).
#[test]
fn sudo_commands_bound_what_may_be_asked() {
    let mut a = agent(&[(&["/usr/bin/id"], false)], &[]);
    a.sudo.commands = vec![
        nuketown_town::command_line("systemctl"),
        nuketown_town::command_line("id -u"),
    ];
    let d = policy::by_rules("ada", &a, &ask(&["/usr/bin/true"]), &clean(), &[], 0).unwrap();
    assert!(
        !d.approved && d.reason.contains("agents.ada.sudo.commands"),
        "{d:?}"
    );
    // Listed: asked of a human (no rule covers it) …
    if Path::new("/usr/bin/systemctl").exists() {
        assert_eq!(decided(&a, &["/usr/bin/systemctl", "restart", "x"]), None);
    }
    assert_eq!(decided(&a, &["/usr/bin/id", "-u"]), None);
    // … but not `id` with other arguments, even though a rule would approve `id` alone.
    assert_eq!(decided(&a, &["/usr/bin/id"]), Some(false));
}

#[test]
fn a_bare_program_name_means_what_sudo_would_run() {
    let a = agent(&[(&["true"], false)], &[(&["rm"], true)]);
    let real_true = ask(&["true"]).program.path;
    assert_eq!(decided(&a, &[real_true.as_str()]), Some(true));
    // Not any file called `true`.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("true");
    std::fs::write(&fake, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(decided(&a, &[fake.to_str().unwrap()]), None);
    // A deny rule's bare name catches every program of that name, wherever it is.
    let fake_rm = dir.path().join("rm");
    std::fs::copy(&fake, &fake_rm).unwrap();
    assert_eq!(
        decided(&a, &[fake_rm.to_str().unwrap(), "-rf", "/"]),
        Some(false)
    );
    assert_eq!(decided(&a, &["/bin/rm", "-rf", "/"]), Some(false));
    assert_eq!(decided(&a, &["/usr/bin/rm", "-rf", "/"]), Some(false));
}

#[test]
fn a_path_rule_matches_other_paths_to_the_same_file() {
    // On a merged /usr, /bin/true is /usr/bin/true.
    let same = std::fs::canonicalize("/bin/true").unwrap()
        == std::fs::canonicalize("/usr/bin/true").unwrap();
    let a = agent(&[(&["/usr/bin/true"], false)], &[(&["/usr/bin/id"], true)]);
    assert_eq!(
        decided(&a, &["/bin/true"]),
        if same { Some(true) } else { None }
    );
    if std::fs::canonicalize("/bin/id")
        .is_ok_and(|p| p == std::fs::canonicalize("/usr/bin/id").unwrap())
    {
        assert_eq!(
            decided(&a, &["/bin/id"]),
            Some(false),
            "a deny rule is not dodged by another path to the file"
        );
    }
}

#[test]
fn nothing_automatic_covers_what_the_agent_can_change() {
    let a = agent(&[(&["/usr/bin/true"], false)], &[]);
    assert!(policy::by_rules(
        "ada",
        &a,
        &ask(&["/usr/bin/true"]),
        &agent_can_change(),
        &[],
        0
    )
    .is_none());
    let id = ask(&["/usr/bin/id"]);
    let grant = policy::Grant {
        agent: "ada".into(),
        argv: id.argv.clone(),
        program: (id.program.dev, id.program.ino),
        cwd: (id.cwd.dev, id.cwd.ino),
        user: "root".into(),
        group: None,
        until_ms: 10_000,
        by: "josh".into(),
    };
    assert!(policy::by_rules(
        "ada",
        &a,
        &id,
        &clean(),
        std::slice::from_ref(&grant),
        1_000
    )
    .is_some_and(|d| d.approved && d.by.channel == "grant"));
    assert!(policy::by_rules(
        "ada",
        &a,
        &id,
        &agent_can_change(),
        std::slice::from_ref(&grant),
        1_000
    )
    .is_none());
    // Another program of the same argv text, or another working directory: not covered.
    let mut other = grant.clone();
    other.program.1 += 1;
    assert!(policy::by_rules("ada", &a, &id, &clean(), &[other], 1_000).is_none());
    let mut other = grant.clone();
    other.cwd.1 += 1;
    assert!(policy::by_rules("ada", &a, &id, &clean(), &[other], 1_000).is_none());
    // Expired: not covered.
    assert!(policy::by_rules(
        "ada",
        &a,
        &id,
        &clean(),
        std::slice::from_ref(&grant),
        10_000
    )
    .is_none());
    // But a deny rule still denies.
    let d = agent(&[], &[(&["/usr/bin/id"], false)]);
    assert_eq!(
        policy::by_rules("ada", &d, &id, &agent_can_change(), &[], 0).map(|d| d.approved),
        Some(false)
    );
}

#[test]
fn auto_approve_is_for_root_only_and_sudo_disabled_denies() {
    let a = agent(&[(&["/usr/bin/true"], false)], &[]);
    let mut as_vox = ask(&["/usr/bin/true"]);
    as_vox.user = "vox".into();
    assert!(policy::by_rules("ada", &a, &as_vox, &clean(), &[], 0).is_none());
    let mut with_group = ask(&["/usr/bin/true"]);
    with_group.group = Some("disk".into());
    assert!(policy::by_rules("ada", &a, &with_group, &clean(), &[], 0).is_none());
    let mut off = a.clone();
    off.sudo.enable = false;
    assert_eq!(decided(&off, &["/usr/bin/true"]), Some(false));
}

fn chown(p: &Path, uid: u32) {
    nix::unistd::chown(p, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
}

fn mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// The hall's view of a town whose only approver is `HUMAN_UID`, with the host's accounts.
fn loaded() -> Loaded {
    let town = nuketown_town::parse(
        "humanUser = \"nkthuman\"\n[agents.nktada]\nuid = 1997\n",
        nuketown_town::Format::Toml,
        "test",
        "host",
    )
    .unwrap();
    Loaded {
        town,
        approvers: vec![(HUMAN_UID, "nkthuman".to_string())],
        trust: Trust::read(&Sources::default(), [AGENT_UID, HUMAN_UID]),
    }
}

#[test]
fn the_mock_file_is_believed_only_from_root_or_an_approver_and_only_when_nobody_else_can_write_it()
{
    root();
    let l = loaded();
    let dir = tempfile::tempdir().unwrap();
    mode(dir.path(), 0o755);
    let f = dir.path().join("mode");
    assert_eq!(policy::mock(&f, &l), Err(MockRefusal::Absent));

    std::fs::write(&f, "MOCK_APPROVED\n").unwrap();
    chown(&f, HUMAN_UID);
    mode(&f, 0o644);
    let m = policy::mock(&f, &l).unwrap();
    assert!(m.approved && m.mock);
    assert_eq!(
        (m.by.who.as_str(), m.by.channel.as_str()),
        ("nkthuman", "mock")
    );
    assert_eq!(m.reason, "[MOCK] approved by nkthuman's mock mode file");

    std::fs::write(&f, "MOCK_DENIED").unwrap();
    let m = policy::mock(&f, &l).unwrap();
    assert!(!m.approved && m.reason.starts_with("[MOCK] denied"));

    chown(&f, 0);
    assert_eq!(policy::mock(&f, &l).unwrap().by.who, "root");

    let refused = |why: &str| match policy::mock(&f, &l) {
        Err(MockRefusal::Untrusted(m)) => assert!(m.contains(why), "{m} (wanted {why})"),
        other => panic!("{other:?} (wanted {why})"),
    };
    std::fs::write(&f, "MOCK_APPROVED").unwrap();
    chown(&f, AGENT_UID);
    refused("not root or a system account");
    chown(&f, HUMAN_UID);
    mode(&f, 0o646);
    refused("everyone may write the file");
    mode(&f, 0o600);
    std::fs::write(&f, "MOCK_APPROVED please").unwrap();
    refused("not MOCK_APPROVED or MOCK_DENIED");
    std::fs::write(&f, "MOCK_APPROVED").unwrap();
    // A directory others can write: the file could be swapped.
    mode(dir.path(), 0o777);
    refused("may write the directory");
    mode(dir.path(), 0o755);
    // Held open for writing by someone: what it says may change under the hall.
    {
        let _held = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
        refused("held open for writing");
    }
    // A link is never followed, even to a good file.
    let link = dir.path().join("link");
    symlink(&f, &link).unwrap();
    assert!(matches!(
        policy::mock(&link, &l),
        Err(MockRefusal::Untrusted(_))
    ));
    // Not a regular file.
    let d = dir.path().join("d");
    std::fs::create_dir(&d).unwrap();
    assert!(matches!(
        policy::mock(&d, &l),
        Err(MockRefusal::Untrusted(_))
    ));
    // Sanity: the good file is still believed.
    assert!(policy::mock(&f, &l).unwrap().approved);
}
