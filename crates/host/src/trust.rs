//! The human's side of the trust graph: what lets the town's humans verify
//! the agents' signed commits in their own checkouts, with no hand work.
//!
//! - `<etc>/allowed_signers`: every host agent's SSH key (the one the town
//!   holds), as `git` and `ssh-keygen -Y verify` read it, with the agent's
//!   e-mail as principal;
//! - `<etc>/gitconfig`, included from the system git configuration, which
//!   points git at that file for every user (a user's own setting wins);
//! - the public GPG key of each agent that signs with GPG, in each human's
//!   keyring (imported as the human; never trusted beyond that).
//!
//! `apply` keeps them current, `reset --all` (every boot) and
//! `keys rotate` republish them.

use std::path::{Path, PathBuf};

use nuketown_town::Town;

use crate::change::Origin;
use crate::plan::{generated_key, secret_origin};
use crate::{HostError, HostPaths};

/// The allowed signers file, in the town's `/etc` directory.
pub fn allowed_signers(paths: &HostPaths) -> PathBuf {
    paths.etc_dir.join("allowed_signers")
}

/// The git configuration the system configuration includes.
pub fn git_include(paths: &HostPaths) -> PathBuf {
    paths.etc_dir.join("gitconfig")
}

/// What `<etc>/gitconfig` says.
pub fn git_include_text(paths: &HostPaths) -> String {
    format!(
        "# Written by nuketown: git verifies the town's agents' SSH signatures with their keys.\n\
         # Included from the system git configuration; a user's own gpg.ssh.allowedSignersFile wins.\n\
         [gpg \"ssh\"]\n\tallowedSignersFile = {}\n",
        allowed_signers(paths).display()
    )
}

/// Each host agent's principal (its git e-mail) and the key the town holds
/// for it, as the allowed signers list them.
pub fn signers(town: &Town) -> Vec<(String, Origin)> {
    town.host_agents()
        .map(|(name, _)| {
            let key = Origin::Beneath {
                at: generated_key(town, name),
                owner: 0,
            };
            (town.identity(name).email, key)
        })
        .collect()
}

/// Each GPG-signing host agent's key file (or sops secret): its public half
/// goes into the humans' keyrings.
pub fn gpg_keys(town: &Town) -> Result<Vec<(String, Origin)>, HostError> {
    let mut keys = Vec::new();
    for (name, agent) in town.host_agents() {
        if let Some(k) = &agent.secrets.gpg_key {
            keys.push((name.clone(), secret_origin(town, k)?));
        }
    }
    Ok(keys)
}

/// Whether the system git configuration at `config` already includes `include`.
pub fn includes(config: &Path, include: &Path) -> bool {
    let out = std::process::Command::new("git")
        .args(["config", "--file"])
        .arg(config)
        .args(["--get-all", "include.path"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    out.is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| Path::new(l.trim()) == include)
    })
}
