//! Agent homes as whole trees: made fresh, levelled, and their remains
//! cleared. A home is `agentsDir/<name>`; `agentsDir` is root's, so the
//! home's own entry cannot be swapped by its agent, and everything done
//! inside it goes through [`crate::safe`].
//!
//! On btrfs each home is its own subvolume, so levelling is a rename into a
//! root-only trash plus a background delete; elsewhere the tree is removed.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sys::statfs::{statfs, BTRFS_SUPER_MAGIC};

use crate::change::At;
use crate::safe::Tree;
use crate::system::run;
use crate::HostError;

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

/// Where levelled btrfs homes wait for their (background) deletion: root-only.
pub fn trash_dir(agents_dir: &Path) -> PathBuf {
    agents_dir.join(TRASH)
}

const TRASH: &str = ".nuketown-trash";

fn name_of(at: &At) -> Result<String, HostError> {
    at.rel
        .to_str()
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .map(str::to_string)
        .ok_or_else(|| HostError::Conflict(format!("{} is not a home directly in agentsDir", at)))
}

/// Level the home at `at` (`agentsDir` + name) now. A btrfs subvolume is
/// renamed into the root-only trash (O(1): the agent can never reach it
/// again) and deleted in the background, because deleting a subvolume costs
/// the kernel time in proportion to its cached inodes; a directory is
/// removed before returning.
pub fn level(at: &At) -> Result<(), HostError> {
    let path = at.path();
    if !is_subvolume(&path) {
        return remove(&path);
    }
    let name = name_of(at)?;
    let agents = Tree::open(&at.base)?;
    agents.unmount_all(&at.rel)?;
    agents.mkdir(Path::new(TRASH), 0o700, 0, 0)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let gone = Path::new(TRASH).join(format!("{name}.{stamp}"));
    agents.rename(&at.rel, &gone)?;
    let gone = at.base.join(gone);
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
        if let Err(err) = remove(&path) {
            if fs::symlink_metadata(&path).is_ok() {
                return Err(err);
            }
        }
    }
    Ok(())
}

/// Remove a home (subvolume or directory) whose parent is root's, after
/// unmounting everything under it.
pub fn remove(path: &Path) -> Result<(), HostError> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(HostError::Conflict(format!(
            "{} is not a home to remove",
            path.display()
        )));
    };
    Tree::open(parent)?.unmount_all(Path::new(name))?;
    // Refuse to delete while anything is still mounted below: that would reach persisted data.
    if crate::system::mount_points()
        .iter()
        .any(|m| m.starts_with(path))
    {
        return Err(HostError::Conflict(format!(
            "{} still has mounts below it; not deleting",
            path.display()
        )));
    }
    if is_subvolume(path) {
        let deleted = run(
            "btrfs",
            [
                std::ffi::OsStr::new("subvolume"),
                "delete".as_ref(),
                path.as_os_str(),
            ],
        );
        if let Err(e) = deleted {
            // An agent can nest subvolumes of its own in its home, which
            // `btrfs subvolume delete` refuses to take along; removing the
            // tree does (root's rmdir deletes an empty subvolume).
            tracing::info!("{e}; removing {} as a tree", path.display());
            fs::remove_dir_all(path).map_err(HostError::io(path))?;
        }
    } else {
        // std's remove_dir_all works by descriptor and never follows a link.
        fs::remove_dir_all(path).map_err(HostError::io(path))?;
    }
    Ok(())
}

/// Make a fresh, empty home at `at` (see [`crate::Change::Home`]): under a
/// temporary name in `agentsDir`, given its owner and mode 0700 by
/// descriptor, then renamed into place, so a home never exists with the
/// wrong owner or mode.
pub fn create(at: &At, uid: u32, gid: u32, subvolume: bool) -> Result<(), HostError> {
    let name = name_of(at)?;
    let tmp = format!(".{name}.new-round");
    remove(&at.base.join(&tmp))?; // left by an interrupted round
    let agents = Tree::open(&at.base)?;
    if subvolume {
        run(
            "btrfs",
            [
                std::ffi::OsStr::new("subvolume"),
                "create".as_ref(),
                at.base.join(&tmp).as_os_str(),
            ],
        )?;
    }
    agents.mkdir(Path::new(&tmp), 0o700, uid, gid)?;
    // rename(2) replaces an empty directory and fails on a non-empty one: never merges.
    agents.rename(Path::new(&tmp), &at.rel)
}
