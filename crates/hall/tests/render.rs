//! The files `nuketown apply` installs for the privilege path, as snapshots,
//! and checked by the tools that will read them: `visudo -cf` for the
//! sudoers drop-in, `systemd-analyze verify` for units.

use std::path::Path;
use std::process::Command;

use nuketown_hall::{sudoers, units};
use nuketown_town::{parse, Format, Town};

fn town(extra: &str) -> Town {
    let text = format!(
        "humanUser = \"josh\"\n{extra}\n\
         [agents.ada]\nuid = 1100\nsudo.enable = true\n\
         [agents.vox]\nuid = 1101\nsudo.enable = true\n\
         [agents.eve]\nuid = 1102\n\
         [agents.old]\nuid = 1103\nenable = false\nsudo.enable = true\n"
    );
    parse(&text, Format::Toml, "town.toml", "testhost").unwrap()
}

fn visudo(text: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("nuketown");
    std::fs::write(&f, text).unwrap();
    let o = Command::new("visudo")
        .arg("-cf")
        .arg(&f)
        .output()
        .map_err(|e| format!("visudo: {e} (apt install sudo)"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

#[test]
fn sudoers_grants_each_sudo_agent_exactly_the_entry_point() {
    let text = sudoers::render(&town(""));
    insta::assert_snapshot!(text);
    visudo(&text).unwrap();
    // Only enabled agents with sudo.enable; never ALL as a command, never SETENV.
    assert!(
        text.contains("\nada, vox ALL = (root) NOPASSWD: NOSETENV: /"),
        "{text}"
    );
    assert!(!text.contains("eve") && !text.contains("old"), "{text}");
    // No alias: a name defined twice makes the whole configuration invalid.
    assert!(!text.contains("_Alias"), "{text}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.trim_end().ends_with("ALL") && !line.contains(" SETENV"),
            "{line}"
        );
    }
}

#[test]
fn sudoers_escapes_an_unusual_entry_point_path_and_refuses_an_impossible_one() {
    let mut t = town("");
    t.hall.elevate_path = "/opt/nuke town/a,b:c=d/nuketown-elevate".into();
    let text = sudoers::render(&t);
    assert!(
        text.contains(r"/opt/nuke\ town/a\,b\:c\=d/nuketown-elevate"),
        "{text}"
    );
    visudo(&text).unwrap();
    t.hall.elevate_path = "/opt/x\nALL ALL=(ALL) NOPASSWD: ALL".into();
    let text = sudoers::render(&t);
    assert!(
        !text.lines().any(|l| !l.starts_with('#') && !l.is_empty()),
        "{text}"
    );
    visudo(&text).unwrap();
}

#[test]
fn sudoers_with_nobody_allowed_grants_nothing() {
    let text = sudoers::render(
        &parse(
            "humanUser = \"josh\"\n[agents.eve]\nuid = 1102\n",
            Format::Toml,
            "t",
            "h",
        )
        .unwrap(),
    );
    assert!(
        !text.lines().any(|l| !l.starts_with('#') && !l.is_empty()),
        "{text}"
    );
    visudo(&text).unwrap();
}

/// Two drop-ins of two towns (an applied town and a test's) side by side
/// are one valid configuration: nothing in them is a global name.
#[test]
fn two_towns_drop_ins_together_are_still_valid_sudoers() {
    let a = town("");
    let b = parse(
        "humanUser = \"kim\"\nhall.elevatePath = \"/opt/other/nuketown-elevate\"\n[agents.ada]\nuid = 1100\nsudo.enable = true\n[agents.zed]\nuid = 1110\nsudo.enable = true\n",
        Format::Toml,
        "b.toml",
        "testhost",
    )
    .unwrap();
    let both = format!(
        "{}{}{}{}",
        sudoers::render(&a),
        sudoers::human_grant(&a),
        sudoers::render(&b),
        sudoers::human_grant(&b)
    );
    visudo(&both).unwrap();
}

#[test]
fn units_render() {
    let bin = Path::new("/usr/local/bin/nuketown");
    insta::assert_snapshot!("hall_service", units::hall_service(bin));
    insta::assert_snapshot!("hall_socket", units::hall_socket());
    insta::assert_snapshot!("approvers_socket", units::approvers_socket());
    insta::assert_snapshot!(
        "desktop_approver_service",
        units::desktop_approver_service(bin)
    );
    assert!(units::hall_service(Path::new("/opt/my tools/nuketown"))
        .contains("ExecStart=\"/opt/my tools/nuketown\" hall"));
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPING: systemd-analyze is not installed (apt install systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // ExecStart must name an existing executable for verify.
    let bin = dir.path().join("nuketown");
    std::fs::copy("/bin/true", &bin).unwrap();
    let files = [
        ("nuketown-hall.service", units::hall_service(&bin)),
        ("nuketown-hall.socket", units::hall_socket()),
        ("nuketown-approvers.socket", units::approvers_socket()),
        (
            "nuketown-approver.service",
            units::desktop_approver_service(&bin),
        ),
    ];
    for (name, text) in &files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .args(files.iter().map(|(n, _)| dir.path().join(n)))
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    // verify also reports on the host's own units it had to load; judge only ours.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("nuketown")).collect();
    assert!(ours.is_empty(), "{err}");
}

#[test]
fn the_humans_grant_runs_as_each_enabled_agent_never_as_root() {
    let t = town("");
    let text = sudoers::human_grant(&t);
    visudo(&format!("{}{text}", sudoers::render(&t))).unwrap();
    assert!(
        text.contains("\nDefaults>ada, eve, vox use_pty\n"),
        "{text}"
    );
    assert!(
        text.contains("josh ALL = (ada, eve, vox) NOPASSWD: ALL\n"),
        "{text}"
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.contains("root") && !line.contains("(ALL") && !line.contains("old"),
            "{line}"
        );
    }
    // Off, or nobody to grant it to: nothing.
    let mut off = town("humanAsAgents = false");
    assert_eq!(sudoers::human_grant(&off), "");
    off.human_as_agents = true;
    off.human_user = None;
    assert_eq!(sudoers::human_grant(&off), "");
}

/// An agent declared for the cloud only has no user here: no sudo rule,
/// no grant to act as it, and the hall does not know its uid; one declared
/// for both keeps them.
#[test]
fn cloud_only_agents_get_no_rule_and_are_no_agent_of_the_hall() {
    let t = town(
        "[agents.sky]\nuid = 1104\nsudo.enable = true\ncloud = { enable = true, image = \"busybox\" }\n\
         [agents.duo]\nuid = 1105\nsudo.enable = true\nhost.enable = true\ncloud = { enable = true, image = \"busybox\" }\n",
    );
    let text = sudoers::render(&t);
    assert!(
        text.contains("\nada, duo, vox ALL = (root) NOPASSWD: NOSETENV: /"),
        "{text}"
    );
    let grant = sudoers::human_grant(&t);
    assert!(!grant.contains("sky") && grant.contains("duo"), "{grant}");
    assert!(nuketown_hall::policy::agent_by_uid(&t, 1104).is_none());
    assert_eq!(
        nuketown_hall::policy::agent_by_uid(&t, 1105).map(|(n, _)| n.as_str()),
        Some("duo")
    );
}
