//! One meaning for `secrets.sshKey`, `secrets.gpgKey` and
//! `extraSecrets.<n>.source` on every host: the absolute path of the file
//! (on NixOS the module writes sops-nix's path there). A sops key name, the
//! old NixOS meaning, is refused with the fix, as is a file in the
//! world-readable Nix store.

use nuketown_town::{parse, Format};

fn problems(agent: &str) -> String {
    let text = format!("[agents.ada]\nuid = 1100\n{agent}");
    match parse(&text, Format::Toml, "town.toml", "forge") {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn key_files_are_absolute_paths() {
    assert_eq!(
        problems("secrets.sshKey = \"/run/secrets/ada/ssh-key\"\nsecrets.gpgKey = \"/etc/keys/ada.asc\"\n"),
        ""
    );
    assert_eq!(
        problems("secrets.sshKey = \"ada/ssh-key\"\nsecrets.gpgKey = \"ada/gpg-key\"\n"),
        "town.toml: the town is invalid:\n  \
agents.ada.secrets.sshKey: ada/ssh-key is not an absolute path; name the file that holds it (with sops-nix on NixOS: config.sops.secrets.\"ada/…\".path)\n  \
agents.ada.secrets.gpgKey: ada/gpg-key is not an absolute path; name the file that holds it (with sops-nix on NixOS: config.sops.secrets.\"ada/…\".path)"
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
agents.ada.secrets.extraSecrets.gh.source: gh is not an absolute path; name the file that holds it (with sops-nix on NixOS: config.sops.secrets.\"ada/…\".path)"
    );
    // No source: nothing to install on this host (on NixOS the module always fills it in).
    assert_eq!(
        problems("secrets.extraSecrets.gh = { path = \".config/gh/hosts.yml\" }\n"),
        ""
    );
}
