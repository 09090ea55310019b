//! One meaning for `secrets.sshKey`, `secrets.gpgKey` and
//! `extraSecrets.<n>.source` on every host: the absolute path of a file, or
//! the name of a sops secret in the town's `sopsFile` (the module guide's
//! meaning; on NixOS the module resolves it to sops-nix's path). A name
//! without a sops file to find it in is refused with the fix, as is a file
//! in the world-readable Nix store.

use nuketown_town::{parse, Format};

fn problems_in(top: &str, agent: &str) -> String {
    let text = format!("{top}[agents.ada]\nuid = 1100\n{agent}");
    match parse(&text, Format::Toml, "town.toml", "forge") {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

fn problems(agent: &str) -> String {
    problems_in("", agent)
}

#[test]
fn keys_are_files_or_sops_secrets() {
    assert_eq!(
        problems("secrets.sshKey = \"/run/secrets/ada/ssh-key\"\nsecrets.gpgKey = \"/etc/keys/ada.asc\"\n"),
        ""
    );
    assert_eq!(
        problems_in(
            "sopsFile = \"/etc/nuketown/agents.yaml\"\n",
            "secrets.sshKey = \"ada/ssh-key\"\nsecrets.gpgKey = \"ada/gpg-key\"\n"
        ),
        ""
    );
    assert_eq!(
        problems("secrets.sshKey = \"ada/ssh-key\"\nsecrets.gpgKey = \"ada/gpg-key\"\n"),
        "town.toml: the town is invalid:\n  \
agents.ada.secrets.sshKey: \"ada/ssh-key\" names a sops secret, but the town declares no sopsFile to find it in; set sopsFile = \"/etc/nuketown/secrets.yaml\" (the sops file holding it), or give the absolute path of the file\n  \
agents.ada.secrets.gpgKey: \"ada/gpg-key\" names a sops secret, but the town declares no sopsFile to find it in; set sopsFile = \"/etc/nuketown/secrets.yaml\" (the sops file holding it), or give the absolute path of the file"
    );
}

#[test]
fn key_files_are_not_in_the_nix_store() {
    assert_eq!(
        problems("secrets.sshKey = \"/nix/store/00000000000000000000000000000000-id_ed25519\"\n"),
        "town.toml: the town is invalid:\n  \
agents.ada.secrets.sshKey: /nix/store/00000000000000000000000000000000-id_ed25519 is in the Nix store, which every user can read; keep secrets outside it"
    );
}

#[test]
fn extra_secret_sources_likewise() {
    assert_eq!(
        problems("secrets.extraSecrets.gh = { path = \".config/gh/hosts.yml\", source = \"/run/secrets/ada/gh\" }\n"),
        ""
    );
    assert_eq!(
        problems("secrets.extraSecrets.gh = { path = \".config/gh/hosts.yml\", source = \"gh\" }\n"),
        "town.toml: the town is invalid:\n  \
agents.ada.secrets.extraSecrets.gh.source: \"gh\" names a sops secret, but the town declares no sopsFile to find it in; set sopsFile = \"/etc/nuketown/secrets.yaml\" (the sops file holding it), or give the absolute path of the file"
    );
    assert_eq!(
        problems("secrets.extraSecrets.gh = { path = \".config/gh/hosts.yml\", source = \"ada/../gh\" }\n"),
        "town.toml: the town is invalid:\n  \
agents.ada.secrets.extraSecrets.gh.source: \"ada/../gh\" is neither an absolute path to the file nor a sops secret name (words of letters, digits, '.', '_' and '-' joined by '/', e.g. \"ada/ssh-key\")"
    );
    // No source and no sops file: nothing to install on this host (on NixOS
    // the module always fills it in).
    assert_eq!(
        problems("secrets.extraSecrets.gh = { path = \".config/gh/hosts.yml\" }\n"),
        ""
    );
}
