//! Snapshot tests of the host files apply renders.

use std::path::Path;

use nuketown_host::render;
use nuketown_town::{parse, Format};

#[test]
fn udev_rules_for_the_example_town() {
    let town = parse(
        include_str!("../../../examples/town.toml"),
        Format::Toml,
        "town.toml",
        "forge",
    )
    .unwrap();
    insta::assert_snapshot!(render::udev_rules(&town, render::SETFACL));
}

#[test]
fn acl_command_matches_the_rule() {
    let town = parse(
        include_str!("../../../examples/town.toml"),
        Format::Toml,
        "town.toml",
        "forge",
    )
    .unwrap();
    let rules = render::udev_rules(&town, render::SETFACL);
    let cmd = render::acl_command(render::SETFACL, "ada", "rw", Path::new("/dev/ttyACM0"));
    // The rule runs the same command, with udev's DEVNAME for the node.
    let expected = cmd.join(" ").replace("/dev/ttyACM0", "$env{DEVNAME}");
    assert!(rules.contains(&format!("RUN+=\"{expected}\"")), "{rules}");
}

#[test]
fn bashrc_puts_the_shim_first() {
    let ada = render::bashrc(
        "ada",
        Some((
            Path::new("/usr/local/libexec/nuketown/bin"),
            Path::new("/usr/local/libexec/nuketown/nuketown-elevate"),
        )),
    );
    insta::assert_snapshot!(ada);
    // bash itself runs it: the function is defined and exported.
    let o = std::process::Command::new("bash")
        .args(["--norc", "-c"])
        .arg(format!(
            "{ada}\ndeclare -f sudo >/dev/null && bash -c 'declare -F sudo'"
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "sudo\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let plain = render::bashrc("vox", None);
    assert!(!plain.contains("PATH"), "{plain}");
}

#[test]
fn reset_unit_runs_before_agents_and_the_hall() {
    insta::assert_snapshot!(render::reset_unit(Path::new("/usr/local/bin/nuketown")));
}

#[test]
fn chat_unit_runs_the_bridge_as_the_agent() {
    insta::assert_snapshot!(render::chat_unit(Path::new("/usr/local/bin/nuketown")));
}
