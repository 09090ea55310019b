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
