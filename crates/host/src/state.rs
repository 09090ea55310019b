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
    /// Shared directories apply made, by name: closed when they leave the town.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shared: BTreeMap<String, PathBuf>,
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
///
/// The lock lives in `/run/lock`, which everyone may write (sticky): an agent
/// could plant a link there for root to follow (creating a file wherever it
/// points), or make the file itself and hold a lock on it forever. So a
/// link or a file root does not own at that name is removed (never
/// followed) and made again, and root's lock file is 0600: nobody else can
/// open it, so nobody else can lock it.
pub struct HostLock(#[allow(dead_code)] Flock<File>);

impl HostLock {
    /// Wait for and take the lock at `path`.
    pub fn take(path: &Path) -> Result<HostLock, HostError> {
        use rustix::fs::{Mode, OFlags};
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(HostError::io(dir))?;
        }
        let me = rustix::process::geteuid().as_raw();
        let mut tries = 0;
        let f = loop {
            tries += 1;
            let opened = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
                .open(path);
            let foreign = match &opened {
                Ok(f) => rustix::fs::fstat(f)
                    .map(|st| {
                        st.st_uid != me
                            || rustix::fs::FileType::from_raw_mode(st.st_mode)
                                != rustix::fs::FileType::RegularFile
                    })
                    .unwrap_or(true),
                // ELOOP: a link is there; ENXIO/EISDIR and others: not a plain file.
                Err(e) => e.raw_os_error() != Some(rustix::io::Errno::NOENT.raw_os_error()),
            };
            if !foreign {
                let f = opened.map_err(HostError::io(path))?;
                rustix::fs::fchmod(&f, Mode::from_raw_mode(0o600))
                    .map_err(|e| HostError::io(path)(e.into()))?;
                break f;
            }
            if tries > 3 {
                return Err(HostError::Refused {
                    path: path.to_path_buf(),
                    why: "something other than root's lock file keeps appearing there".into(),
                });
            }
            tracing::warn!(
                "{}: not root's lock file (a link, or another user's file); replacing it",
                path.display()
            );
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(HostError::io(path)(e)),
            }
        };
        Flock::lock(f, FlockArg::LockExclusive)
            .map(HostLock)
            .map_err(|(_, e)| HostError::Io {
                path: path.to_path_buf(),
                source: e.into(),
            })
    }
}
