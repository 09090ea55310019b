//! Snapshot tests of every file projected from an agent identity.

use nuketown_town::{parse, Format, Signing, Town};

fn example() -> Town {
    parse(
        include_str!("../../../examples/town.toml"),
        Format::Toml,
        "town.toml",
        "forge",
    )
    .unwrap()
}

#[test]
fn identity_toml() {
    insta::assert_snapshot!(example().identity("ada").identity_toml());
}

#[test]
fn prompt_with_sudo_and_persist() {
    insta::assert_snapshot!(example().identity("ada").prompt());
}

#[test]
fn prompt_without_sudo() {
    insta::assert_snapshot!(example().identity("vox").prompt());
}

#[test]
fn claude_agent_file() {
    insta::assert_snapshot!(example().identity("ada").claude_agent_file());
}

#[test]
fn gitconfig_ssh_and_gpg() {
    let id = example().identity("ada");
    insta::assert_snapshot!(
        "gitconfig_ssh",
        id.gitconfig(Some(&Signing::Ssh(".ssh/id_ed25519.pub".into())))
    );
    insta::assert_snapshot!(
        "gitconfig_gpg",
        id.gitconfig(Some(&Signing::Gpg("0123456789ABCDEF".into())))
    );
}

#[test]
fn projection_set() {
    let town = example();
    let ada: Vec<String> = town
        .projections("ada")
        .into_iter()
        .map(|p| format!("{} {:o}", p.path, p.mode))
        .collect();
    assert_eq!(
        ada,
        [
            ".config/nuketown/identity.toml 644",
            ".claude/CLAUDE.md 644",
            ".claude/agents/ada-software.md 644",
            "AGENTS.md 644",
            ".codex/AGENTS.md 644",
            ".claude/settings.json 644",
        ]
    );
    // One identity, many projections: the prompt files agree.
    let files = town.projections("vox");
    let claude = files
        .iter()
        .find(|p| p.path == ".claude/CLAUDE.md")
        .unwrap();
    let agents = files.iter().find(|p| p.path == "AGENTS.md").unwrap();
    assert_eq!(claude.contents, agents.contents);
}

/// The prompt says how to ask for what the agent may ask for, and only that:
/// more network when its egress is restricted, a bigger tier when it may
/// have one in the cluster.
#[test]
fn the_prompt_says_how_to_ask_for_network_and_resources_only_when_it_may() {
    let open = example().identity("ada").prompt();
    assert!(!open.contains("nuketown ask network"), "{open}");
    assert!(!open.contains("nuketown ask resources"), "{open}");
    let text = include_str!("../../../examples/town.toml").replace(
        "[agents.ada.sudo]",
        "[agents.ada.network]\negress = \"none\"\n\n[agents.ada.host]\nenable = true\n\n[agents.ada.cloud]\nenable = true\nscaling.maxResources = \"large\"\n\n[agents.ada.sudo]",
    );
    let town = parse(&text, Format::Toml, "town.toml", "forge").unwrap();
    let p = town.identity("ada").prompt();
    assert!(
        p.contains("- **Network**: ")
            && p.contains("`nuketown ask network HOST[:PORT] --for 1h --reason \"why\"`"),
        "{p}"
    );
    assert!(
        p.contains("- **Resources**: ")
            && p.contains("`nuketown ask resources TIER --reason \"why\"`"),
        "{p}"
    );
    assert!(p.contains("- **A denial** is"), "{p}");
}
