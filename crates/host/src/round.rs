//! Rounds: levelling an agent's home and laying it down again from the
//! declaration. On btrfs each home is its own subvolume, so a new round is a
//! subvolume delete + create; elsewhere the directory is rebuilt.
//!
//! The order makes an interrupted reset safe at every step: processes are
//! stopped first, persisted binds are unmounted before anything is deleted
//! (so deletion can never reach persisted data), and a new home is made under
//! a temporary name with its final owner and mode 0700 before it is renamed
//! into place. Whatever step a reset dies in, the next reset or apply repairs it.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::statfs::{statfs, BTRFS_SUPER_MAGIC};
use nuketown_town::Town;

use crate::change::{make_dir, Change};
use crate::plan::plan_agent;
use crate::state::HostLock;
use crate::system::{self, run};
use crate::{HostError, HostPaths};

/// Whether `path` (or its nearest existing ancestor) is on btrfs.
pub fn on_btrfs(path: &Path) -> bool {
    path.ancestors()
        .find(|a| a.exists())
        .and_then(|a| statfs(a).ok())
        .is_some_and(|s| s.filesystem_type() == BTRFS_SUPER_MAGIC)
}

/// Whether `path` is the root of a btrfs subvolume (inode 256 on btrfs).
pub fn is_subvolume(path: &Path) -> bool {
    on_btrfs(path) && fs::symlink_metadata(path).is_ok_and(|m| m.is_dir() && m.ino() == 256)
}

fn temp_home(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.new-round"))
}

/// Where levelled btrfs homes wait for their (background) deletion: root-only.
pub fn trash_dir(agents_dir: &Path) -> PathBuf {
    agents_dir.join(".nuketown-trash")
}

/// Level a home now. A btrfs subvolume is renamed into the root-only trash
/// (O(1): the agent can never reach it again) and deleted in the background,
/// because deleting a subvolume costs the kernel time in proportion to its
/// cached inodes; a directory is removed before returning.
pub fn level_home(path: &Path) -> Result<(), HostError> {
    if !is_subvolume(path) {
        return remove_home(path);
    }
    system::unmount_under(path)?;
    let trash = trash_dir(path.parent().unwrap_or(Path::new("/")));
    make_dir(&trash, 0o700, 0, 0)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let gone = trash.join(format!("{name}.{stamp}"));
    fs::rename(path, &gone).map_err(HostError::io(path))?;
    let spawned = std::process::Command::new("btrfs")
        .args(["subvolume", "delete"])
        .arg(&gone)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        tracing::warn!(
            "{} left in the trash: cannot start btrfs: {e}; nuketown apply deletes it",
            gone.display()
        );
    }
    Ok(())
}

/// Delete whatever levelled homes are still in the trash (apply does this).
pub fn empty_trash(agents_dir: &Path) -> Result<(), HostError> {
    let trash = trash_dir(agents_dir);
    let Ok(entries) = fs::read_dir(&trash) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let path = e.path();
        // A background delete may finish first: gone is as good as deleted.
        if let Err(err) = remove_home(&path) {
            if fs::symlink_metadata(&path).is_ok() {
                return Err(err);
            }
        }
    }
    Ok(())
}

/// Remove a home (subvolume or directory) after unmounting everything under it.
pub fn remove_home(path: &Path) -> Result<(), HostError> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    system::unmount_under(path)?;
    // Refuse to delete while anything is still mounted below: that would reach persisted data.
    if system::mount_points().iter().any(|m| m.starts_with(path)) {
        return Err(HostError::Conflict(format!(
            "{} still has mounts below it; not deleting",
            path.display()
        )));
    }
    if is_subvolume(path) {
        run(
            "btrfs",
            [
                std::ffi::OsStr::new("subvolume"),
                "delete".as_ref(),
                path.as_os_str(),
            ],
        )?;
    } else {
        fs::remove_dir_all(path).map_err(HostError::io(path))?;
    }
    Ok(())
}

/// Make a fresh, empty home at `path` (see [`Change::Home`]).
pub fn create_home(path: &Path, uid: u32, gid: u32, subvolume: bool) -> Result<(), HostError> {
    let tmp = temp_home(path);
    remove_home(&tmp)?; // left by an interrupted round
    if subvolume {
        run(
            "btrfs",
            [
                std::ffi::OsStr::new("subvolume"),
                "create".as_ref(),
                tmp.as_os_str(),
            ],
        )?;
    } else {
        fs::create_dir(&tmp).map_err(HostError::io(&tmp))?;
    }
    make_dir(&tmp, 0o700, uid, gid)?;
    // rename(2) replaces an empty directory and fails on a non-empty one: never merges.
    fs::rename(&tmp, path).map_err(HostError::io(path))
}

/// The uids' live (non-zombie) processes.
fn processes_of(uid: u32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
                return false;
            };
            let uid_matches = status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .is_some_and(|l| l.split_whitespace().skip(1).any(|u| u == uid.to_string()));
            let zombie = status
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'));
            uid_matches && !zombie
        })
        .collect()
}

/// End every process running as `uid` (SIGKILL, repeated until none is left).
pub fn stop_processes(uid: u32) -> Result<(), HostError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = processes_of(uid);
        if pids.is_empty() {
            return Ok(());
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if Instant::now() > deadline {
            return Err(HostError::Conflict(format!(
                "processes of uid {uid} survive SIGKILL; not levelling the home"
            )));
        }
        // Give the kernel a moment to tear them down before looking again.
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The agent's system units that a round stops and restarts.
pub fn agent_units(name: &str, uid: u32) -> Vec<String> {
    vec![
        format!("nuketown-chat@{name}.service"),
        format!("nuketown-chat-{name}.service"),
        format!("user@{uid}.service"),
    ]
}

/// A step of a reset, reported as it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Services and processes stopped.
    Stopped,
    /// Binds unmounted.
    Unmounted,
    /// Home deleted.
    Levelled,
    /// Fresh home made, identity laid down, persist re-bound.
    LaidDown,
    /// Services restarted.
    Restarted,
}

impl Step {
    /// The step's name (as `NUKETOWN_TEST_STOP_AFTER` takes it).
    pub fn name(self) -> &'static str {
        match self {
            Step::Stopped => "stopped",
            Step::Unmounted => "unmounted",
            Step::Levelled => "levelled",
            Step::LaidDown => "laid-down",
            Step::Restarted => "restarted",
        }
    }
}

/// For crash tests: stop this process (SIGSTOP) right after the named step,
/// so a test can SIGKILL it there deterministically. Only pauses; changes nothing.
fn test_pause(step: Step) {
    if std::env::var("NUKETOWN_TEST_STOP_AFTER").is_ok_and(|s| s == step.name()) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
    }
}

/// A new round for agent `name`: stop, unmount, level, lay down, re-bind, restart.
pub fn reset(
    town: &Town,
    name: &str,
    paths: &HostPaths,
    mut report: impl FnMut(&str),
) -> Result<(), HostError> {
    if !system::is_root() {
        return Err(HostError::NeedsRoot("nuketown reset"));
    }
    let Some(agent) = town.agents.get(name).filter(|a| a.enable) else {
        let known: Vec<&str> = town.enabled_agents().map(|(n, _)| n.as_str()).collect();
        return Err(HostError::Conflict(format!(
            "{name} is not an enabled agent of this town (agents: {})",
            known.join(", ")
        )));
    };
    let _lock = HostLock::take(&paths.lock)?;
    let home = town.home_of(name);

    let mut restart = Vec::new();
    if systemd_running() {
        for unit in agent_units(name, agent.uid) {
            if run("systemctl", ["--quiet", "is-active", unit.as_str()]).is_ok() {
                run("systemctl", ["stop", unit.as_str()])?;
                restart.push(unit);
            }
        }
    }
    stop_processes(agent.uid)?;
    report(&format!(
        "{name}: stopped every process of uid {}",
        agent.uid
    ));
    test_pause(Step::Stopped);

    system::unmount_under(&home)?;
    report(&format!("{name}: unmounted persisted paths"));
    test_pause(Step::Unmounted);

    let was_subvolume = is_subvolume(&home);
    level_home(&home)?;
    report(&format!(
        "{name}: levelled {}{}",
        home.display(),
        if was_subvolume {
            " (btrfs subvolume)"
        } else {
            ""
        }
    ));
    test_pause(Step::Levelled);

    let plan = plan_agent(town, name, paths)?;
    for c in &plan.changes {
        c.make()?;
    }
    let binds = plan
        .changes
        .iter()
        .filter(|c| matches!(c, Change::Bind { .. }))
        .count();
    report(&format!(
        "{name}: laid down a new home ({} changes, {binds} persisted paths re-bound)",
        plan.changes.len()
    ));
    test_pause(Step::LaidDown);

    for unit in &restart {
        run("systemctl", ["start", unit.as_str()])?;
    }
    if !restart.is_empty() {
        report(&format!("{name}: restarted {}", restart.join(", ")));
    }
    test_pause(Step::Restarted);
    Ok(())
}
