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

use std::path::{Path, PathBuf};

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
    at.tree()?.shared_dir(&at.rel, gid, MODE, &acl, &acl)
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
