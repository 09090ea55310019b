//! What apply manages on this host, so that agents dropped from the town can
//! be found (`plan` reports them, `apply --prune` removes them).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::HostError;

/// The agents (and their places) apply has created.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// By agent name.
    pub agents: BTreeMap<String, ManagedAgent>,
}

/// One agent apply created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagedAgent {
    /// Its uid.
    pub uid: u32,
    /// Its home.
    pub home: PathBuf,
    /// Its persist root.
    pub persist: PathBuf,
}

impl State {
    /// The state file inside `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("state.json")
    }

    /// Read the state; a missing file is an empty state.
    pub fn load(state_dir: &Path) -> Result<State, HostError> {
        let path = State::path(state_dir);
        match fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| {
                HostError::Conflict(format!(
                    "{} is not a nuketown state file ({e}); move it away and apply again",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(HostError::Io { path, source: e }),
        }
    }

    /// The state as JSON text.
    pub fn to_text(&self) -> String {
        serde_json::to_string_pretty(self).expect("state serialises") + "\n"
    }
}

/// An exclusive lock on user/group changes, released on drop.
pub struct HostLock(#[allow(dead_code)] Flock<File>);

impl HostLock {
    /// Wait for and take the lock at `path`.
    pub fn take(path: &Path) -> Result<HostLock, HostError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(HostError::io(dir))?;
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(HostError::io(path))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map(HostLock)
            .map_err(|(_, e)| HostError::Io {
                path: path.to_path_buf(),
                source: e.into(),
            })
    }
}
