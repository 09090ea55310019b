//! Shared directories: the filesystem as a coordination surface.
//!
//! Each declared directory is root's, setgid to a group of its own
//! (`shared-<name>`, whose members are the declared members), mode 2770, with
//! an access ACL naming every member (`rwx` or `r-x`) and the same entries as
//! its default ACL, so every file created inside carries them too. Access is
//! given by the named-user entries, not by the group: a member taken out of
//! the declaration loses its entry on the next apply, even while a process of
//! theirs still holds the group. Others get nothing. `getfacl` on the
//! directory tells who can talk to whom.
//!
//! Root makes the directory only beneath ancestors no agent can change (each
//! one root's, writable by others only when sticky) and works on it by
//! descriptor, never following a link planted at its path.
//!
//! When the members change, the whole tree follows, not just the top: every
//! file and directory inside gets exactly the members' named entries (a
//! member made read-only loses write on what it made earlier; one taken out
//! loses its entries), no named groups and nothing for the owning group;
//! what a member no longer allowed to write owns becomes root's (an owner
//! could give itself write back); directories get the members as their
//! default ACL. The walk goes by descriptor, never follows a link, stays on
//! the directory's own file system, and touches only what differs.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use nuketown_town::{SharedAccess, Town};

use crate::acl::{Acl, Entry, Tag, R, W, X};
use crate::change::At;
use crate::safe::Kind;
use crate::system;
use crate::HostError;

/// The shared directory's mode: setgid, owner and group class `rwx` (the
/// group class is the ACL mask), nothing for others.
pub const MODE: u32 = 0o2770;

/// The bits a member gets.
pub fn bits(access: SharedAccess) -> u16 {
    match access {
        SharedAccess::ReadWrite => R | W | X,
        SharedAccess::ReadOnly => R | X,
    }
}

/// The access ACL of a shared directory whose members have these uids; its
/// default ACL is the same list. The owning group gets nothing: access comes
/// from the named entries alone.
pub fn acl(members: &[(u32, SharedAccess)]) -> Acl {
    let mut e = vec![
        Entry {
            tag: Tag::UserObj,
            id: None,
            perm: R | W | X,
        },
        Entry {
            tag: Tag::GroupObj,
            id: None,
            perm: 0,
        },
        Entry {
            tag: Tag::Mask,
            id: None,
            perm: R | W | X,
        },
        Entry {
            tag: Tag::Other,
            id: None,
            perm: 0,
        },
    ];
    for &(uid, access) in members {
        e.push(Entry {
            tag: Tag::User,
            id: Some(uid),
            perm: bits(access),
        });
    }
    Acl::new(e)
}

/// Whether root may make a directory at `path`: every existing ancestor
/// must be a directory root owns, writable by others only with the sticky
/// bit (then nobody else can rename or remove root's entries in it), and a
/// symbolic link on the way only one root made. Otherwise an agent could
/// swap a directory on the way for a link and root would make (and hand
/// out) a directory elsewhere.
pub fn check_ancestors(path: &Path) -> Result<(), String> {
    let mut seen = PathBuf::from("/");
    for c in path.parent().unwrap_or(Path::new("/")).components().skip(1) {
        seen.push(c);
        let Ok(l) = std::fs::symlink_metadata(&seen) else {
            return Ok(()); // missing from here on: root makes the rest
        };
        use std::os::unix::fs::MetadataExt;
        if l.file_type().is_symlink() && l.uid() != 0 {
            return Err(format!(
                "{} is a symbolic link of uid {}; root follows only its own links",
                seen.display(),
                l.uid()
            ));
        }
        let Ok(m) = std::fs::metadata(&seen) else {
            return Err(format!("{} cannot be followed", seen.display()));
        };
        if !m.is_dir() {
            return Err(format!("{} is not a directory", seen.display()));
        }
        if m.uid() != 0 {
            return Err(format!(
                "{} belongs to uid {}, not root",
                seen.display(),
                m.uid()
            ));
        }
        if m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0 {
            return Err(format!(
                "{} is writable by others (mode {:04o}) without the sticky bit",
                seen.display(),
                m.mode() & 0o7777
            ));
        }
    }
    Ok(())
}

/// The members of shared directory `name` with their uids, as the host
/// knows them now (apply has made the agents and the human by then); a
/// member without an account is an error naming the key.
pub fn member_uids(
    name: &str,
    members: &[(String, SharedAccess)],
) -> Result<Vec<(u32, SharedAccess)>, HostError> {
    members
        .iter()
        .map(|(who, access)| {
            system::user(who).map(|a| (a.uid, *access)).ok_or_else(|| {
                HostError::Conflict(format!(
                    "sharedDirs.{name}.members.{who}: no user {who:?} on this host; create the account (or remove the member) and apply again"
                ))
            })
        })
        .collect()
}

/// Make shared directory `at` (see [`crate::Change::SharedDir`]).
pub fn make(at: &At, group: &str, members: &[(u32, SharedAccess)]) -> Result<(), HostError> {
    check_ancestors(&at.path()).map_err(|why| HostError::Refused {
        path: at.path(),
        why: format!("{why}; put the shared directory under directories only root can change, e.g. /srv/shared"),
    })?;
    let gid = system::group(group)
        .map(|(g, _)| g)
        .ok_or_else(|| HostError::Conflict(format!("group {group} does not exist")))?;
    let acl = acl(members);
    let tree = at.tree()?;
    tree.shared_dir(&at.rel, gid, MODE, &acl, &acl)?;
    let top = tree.dir_fd(&at.rel)?;
    let done = reconcile_tree(top.as_fd(), gid, members).map_err(|e| HostError::Io {
        path: at.path(),
        source: e.into(),
    })?;
    if done.changed > 0 {
        tracing::info!(
            "{}: {} of {} files and directories inside brought to the members' access",
            at.path().display(),
            done.changed,
            done.seen
        );
    }
    Ok(())
}

/// What [`reconcile_tree`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Files and directories looked at (the top not counted).
    pub seen: u64,
    /// How many were changed (owner or ACL).
    pub changed: u64,
}

/// Deepest a shared tree is walked; deeper is an error, nothing is skipped silently.
const MAX_DEPTH: usize = 512;

/// The access ACL a file or directory inside should have: its owner's
/// bits as they are, nothing for the owning group, each member's bits
/// (for a file, execute only where its owner has it), others as they are.
fn inner_acl(members: &[(u32, SharedAccess)], dir: bool, owner: u16, other: u16) -> Acl {
    let mut e = vec![
        Entry {
            tag: Tag::UserObj,
            id: None,
            perm: owner,
        },
        Entry {
            tag: Tag::GroupObj,
            id: None,
            perm: 0,
        },
        Entry {
            tag: Tag::Other,
            id: None,
            perm: other,
        },
    ];
    let mut mask = 0;
    for &(uid, access) in members {
        let mut perm = bits(access);
        if !dir && owner & X == 0 {
            perm &= !X;
        }
        mask |= perm;
        e.push(Entry {
            tag: Tag::User,
            id: Some(uid),
            perm,
        });
    }
    if !members.is_empty() {
        e.push(Entry {
            tag: Tag::Mask,
            id: None,
            perm: mask,
        });
    }
    Acl::new(e)
}

/// Bring every file and directory below `top` (the shared directory, held
/// open) to the members' access; see the module's documentation.
pub fn reconcile_tree(
    top: BorrowedFd<'_>,
    gid: u32,
    members: &[(u32, SharedAccess)],
) -> Result<Reconciled, Errno> {
    let mut walk = Walk {
        dev: rustix::fs::fstat(top)?.st_dev,
        gid,
        members,
        writers: members
            .iter()
            .filter(|(_, a)| *a == SharedAccess::ReadWrite)
            .map(|(u, _)| *u)
            .collect(),
        default: acl(members),
        done: Reconciled::default(),
    };
    walk.dir(top, 0)?;
    Ok(walk.done)
}

/// One reconciliation: what every entry should be, and what was done.
struct Walk<'a> {
    dev: u64,
    gid: u32,
    members: &'a [(u32, SharedAccess)],
    writers: Vec<u32>,
    default: Acl,
    done: Reconciled,
}

impl Walk<'_> {
    /// Every entry of the directory `dir`, depth first: one descriptor
    /// open per level, never a path.
    fn dir(&mut self, dir: BorrowedFd<'_>, depth: usize) -> Result<(), Errno> {
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                names.push(name.to_owned());
            }
        }
        for name in names {
            let Ok(st) = rustix::fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) else {
                continue; // gone meanwhile
            };
            let ty = FileType::from_raw_mode(st.st_mode);
            if st.st_dev != self.dev || !matches!(ty, FileType::Directory | FileType::RegularFile) {
                // Another file system mounted inside, a link (never
                // followed), a device, pipe or socket: left as it is.
                continue;
            }
            let flags = if ty == FileType::Directory {
                OFlags::RDONLY | OFlags::DIRECTORY
            } else {
                OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOATIME
            };
            let fd = match rustix::fs::openat(
                dir,
                name.as_c_str(),
                flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::NOENT) | Err(Errno::LOOP) | Err(Errno::NOTDIR) => continue,
                Err(e) => return Err(e),
            };
            self.entry(&fd, depth)?;
        }
        Ok(())
    }

    fn entry(&mut self, fd: &OwnedFd, depth: usize) -> Result<(), Errno> {
        let st = rustix::fs::fstat(fd)?;
        let ty = FileType::from_raw_mode(st.st_mode);
        if st.st_dev != self.dev || !matches!(ty, FileType::Directory | FileType::RegularFile) {
            return Ok(());
        }
        self.done.seen += 1;
        let is_dir = ty == FileType::Directory;
        if is_dir && depth >= MAX_DEPTH {
            // Deeper than any tree a member needs: closed to everyone but
            // root, never skipped (a skipped tree would keep its writers).
            rustix::fs::fchown(fd, Some(rustix::fs::Uid::ROOT), None)?;
            crate::acl::set(fd, crate::acl::ACCESS, &inner_acl(&[], true, 0, 0))?;
            rustix::fs::fchmod(fd, Mode::from_raw_mode(0))?;
            tracing::warn!("a directory {MAX_DEPTH} levels deep in a shared directory was closed (root only, mode 0)");
            self.done.changed += 1;
            return Ok(());
        }
        let mut changed = false;
        if st.st_uid != 0 && !self.writers.contains(&st.st_uid) {
            rustix::fs::fchown(fd, Some(rustix::fs::Uid::ROOT), None)?;
            changed = true;
        }
        let owner = ((st.st_mode >> 6) & 7) as u16;
        let other = (st.st_mode & 7) as u16;
        let want = inner_acl(self.members, is_dir, owner, other);
        if crate::acl::get(fd, crate::acl::ACCESS)?.as_ref() != Some(&want) {
            crate::acl::set(fd, crate::acl::ACCESS, &want)?;
            changed = true;
        }
        if is_dir {
            if crate::acl::get(fd, crate::acl::DEFAULT)?.as_ref() != Some(&self.default) {
                crate::acl::set(fd, crate::acl::DEFAULT, &self.default)?;
                changed = true;
            }
            if st.st_gid != self.gid || st.st_mode & 0o2000 == 0 {
                // New files inside keep the shared group.
                rustix::fs::fchown(fd, None, Some(rustix::fs::Gid::from_raw(self.gid)))?;
                let mode = rustix::fs::fstat(fd)?.st_mode & 0o7777;
                rustix::fs::fchmod(fd, Mode::from_raw_mode(mode | 0o2000))?;
                changed = true;
            }
        }
        if changed {
            self.done.changed += 1;
        }
        if is_dir {
            self.dir(fd.as_fd(), depth + 1)?;
        }
        Ok(())
    }
}

/// How a shared directory is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing there yet.
    Missing,
    /// Root's, setgid to its group, with exactly the declared ACLs.
    AsDeclared,
    /// Something else: what differs.
    Differs(String),
}

/// Compare shared directory `at` with what it should be.
pub fn inspect(at: &At, group: &str, members: &[(u32, SharedAccess)]) -> Found {
    let tree = match at.tree() {
        Ok(t) => t,
        Err(HostError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Found::Missing
        }
        Err(e) => return Found::Differs(e.to_string()),
    };
    let (meta, access, default) = match tree.dir_acls(&at.rel) {
        Ok(None) => return Found::Missing,
        Ok(Some(x)) => x,
        Err(e) => return Found::Differs(e.to_string()),
    };
    if meta.kind != Kind::Dir {
        return Found::Differs("not a directory".into());
    }
    let gid = system::group(group).map(|(g, _)| g);
    let want = acl(members);
    let mut why = Vec::new();
    if meta.uid != 0 {
        why.push(format!("owner uid {}", meta.uid));
    }
    if Some(meta.gid) != gid {
        why.push(format!("group gid {}", meta.gid));
    }
    if meta.mode != MODE {
        why.push(format!("mode {:04o}", meta.mode));
    }
    if access.as_ref() != Some(&want) {
        why.push("access ACL".into());
    }
    if default.as_ref() != Some(&want) {
        why.push("default ACL".into());
    }
    if why.is_empty() {
        Found::AsDeclared
    } else {
        Found::Differs(why.join(", "))
    }
}

/// The declared members of shared directory `name`, in order.
pub fn members(town: &Town, name: &str) -> Vec<(String, SharedAccess)> {
    town.shared_dirs[name]
        .members
        .iter()
        .map(|(w, a)| (w.clone(), *a))
        .collect()
}
