//! Agents' keys, held by the town: an agent can *use* its key but never *hold* it.
//!
//! Each agent's private key is sealed at rest in the town's key store
//! ([`store`], with the sealing key of [`sealing`]), and used only through
//! that agent's own ssh-agent socket ([`agent`]): `ssh`, `git push` over SSH
//! and git's SSH signing work unchanged, while every signature is judged by
//! a [`agent::Gate`] (the town hall: policy, a human, the audit log) and no
//! message of the protocol can add, remove or export a key.

pub mod agent;
pub mod sealing;
pub mod store;

use std::path::{Path, PathBuf};

pub use sealing::SealingKey;
pub use store::Store;

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The agent has no key in the store.
    #[error("{0} has no key in the town's key store (`nuketown apply` makes one)")]
    NoKey(String),
    /// Something is not what it must be.
    #[error("{0}")]
    Invalid(String),
}

impl KeyError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> KeyError {
        KeyError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Fill `buf` from the kernel's random source (getrandom(2)).
pub(crate) fn random(buf: &mut [u8]) -> Result<(), KeyError> {
    let mut filled = 0;
    while filled < buf.len() {
        // Safety: the pointer and length name the unfilled rest of `buf`.
        let n = unsafe {
            nix::libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0)
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(KeyError::Invalid(format!("no randomness: {e}")));
        }
        filled += n as usize;
    }
    Ok(())
}

/// A request id like the hall's: 128 random bits, 32 hex digits.
pub fn new_id() -> Result<String, KeyError> {
    let mut b = [0u8; 16];
    random(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
