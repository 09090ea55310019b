//! Root's file work inside directories an agent controls.
//!
//! An agent owns its home and its persist dir: it can put a symbolic link, a
//! FIFO or a hard link at any path there, and swap one for another while root
//! works. So root never resolves such a path by name. A [`Tree`] is a
//! directory root owns (`agentsDir`, `persistDir/agents`), held open by
//! descriptor; every path below it is resolved by `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (a link anywhere on the path is
//! refused, and nothing resolves outside the tree), files are opened with
//! `O_NOFOLLOW | O_NONBLOCK` and must be regular, ownership and modes are set
//! with `fchown`/`fchmod` on the descriptor root opened, files are written to
//! a fresh name and renamed into place, and binds are made with
//! `open_tree`/`move_mount` on descriptors. Every check is made on the very
//! descriptor that is then used, so nothing can change between check and use.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Uid};
use rustix::io::Errno;

use crate::HostError;

/// What root reads of an agent's file at most, unless told otherwise: keys,
/// identity files and status files are far smaller.
pub const MAX_AGENT_FILE: u64 = 16 << 20;

/// The type of a file, as [`Tree::meta`] finds it (links are not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A FIFO, socket or device node.
    Special,
}

/// A file's type, permission bits and owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Its type.
    pub kind: Kind,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
}

impl Meta {
    fn of(st: &rustix::fs::Stat) -> Meta {
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Special,
        };
        Meta {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
        }
    }
}

/// A directory root owns, held open; every path below it is resolved beneath
/// it without following symbolic links.
#[derive(Debug)]
pub struct Tree {
    fd: OwnedFd,
    /// As given (for messages).
    path: PathBuf,
    /// Where the kernel has it (for matching mount points).
    real: PathBuf,
}

fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS
}

/// `openat2` beneath `dir`, retried when the kernel asks (a rename raced the lookup).
fn open_beneath(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir, rel, flags | OFlags::CLOEXEC, mode, beneath()) {
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}

/// Whether `rel` names something strictly below a tree: relative, no `..`.
fn checked(rel: &Path) -> Result<(), String> {
    if rel.is_absolute() {
        return Err("it is absolute where a path inside the tree was expected".into());
    }
    if rel.components().any(|c| c == Component::ParentDir) {
        return Err("it contains '..'".into());
    }
    Ok(())
}

/// `rel` split into its parent (possibly empty) and last name.
fn split(rel: &Path) -> Option<(&Path, &OsStr)> {
    let name = rel.file_name()?;
    Some((rel.parent().unwrap_or(Path::new("")), name))
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name for a temporary file beside `name` that nothing else uses.
fn temp_name(name: &OsStr) -> OsString {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut s = OsString::from(".");
    s.push(name);
    s.push(format!(".nuketown-{}-{n}", std::process::id()));
    s
}

impl Tree {
    /// Open a directory root trusts (its path was declared by the
    /// administrator, so links on it are followed); it must be owned by root
    /// (or by the caller), because no one else may control what lies below.
    pub fn open(path: &Path) -> Result<Tree, HostError> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| HostError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| HostError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        let me = rustix::process::geteuid().as_raw();
        if st.st_uid != 0 && st.st_uid != me {
            return Err(HostError::Refused {
                path: path.to_path_buf(),
                why: format!(
                    "it belongs to uid {}, not root; nuketown works as root only beneath directories root owns",
                    st.st_uid
                ),
            });
        }
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap_or_else(|_| path.to_path_buf());
        Ok(Tree {
            fd,
            path: path.to_path_buf(),
            real,
        })
    }

    /// The tree's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn shown(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.path.clone()
        } else {
            self.path.join(rel)
        }
    }

    /// The error for `errno` at `rel`, naming the path and, for a link, the refusal.
    fn fail(&self, rel: &Path, errno: Errno) -> HostError {
        let path = self.shown(rel);
        match errno {
            Errno::LOOP => HostError::Refused {
                path,
                why: "a symbolic link is on this path".into(),
            },
            Errno::XDEV => HostError::Refused {
                path,
                why: format!("it resolves outside {}", self.path.display()),
            },
            e => HostError::Io {
                path,
                source: e.into(),
            },
        }
    }

    fn check(&self, rel: &Path) -> Result<(), HostError> {
        checked(rel).map_err(|why| HostError::Refused {
            path: self.shown(rel),
            why,
        })
    }

    /// A directory at `rel` (or the tree itself when `rel` is empty), opened beneath.
    pub(crate) fn dir_fd(&self, rel: &Path) -> Result<OwnedFd, HostError> {
        self.check(rel)?;
        open_beneath(
            self.fd.as_fd(),
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOTDIR => self.not_a_dir(rel),
            e => self.fail(rel, e),
        })
    }

    /// Why `rel` could not be opened as a directory: a link there (refused),
    /// or something else in the way.
    fn not_a_dir(&self, rel: &Path) -> HostError {
        match self.meta(rel) {
            Ok(Some(m)) if m.kind == Kind::Symlink => HostError::Refused {
                path: self.shown(rel),
                why: "it is a symbolic link where nuketown expects a directory".into(),
            },
            Err(e) => e,
            _ => HostError::Conflict(format!(
                "{} is not a directory where nuketown expects one; move it away",
                self.shown(rel).display()
            )),
        }
    }

    /// The parent directory of `rel`, opened beneath, and `rel`'s last name.
    fn parent<'r>(&self, rel: &'r Path) -> Result<(OwnedFd, &'r OsStr), HostError> {
        self.check(rel)?;
        let (parent, name) = split(rel).ok_or_else(|| HostError::Refused {
            path: self.shown(rel),
            why: "names no file".into(),
        })?;
        Ok((self.dir_fd(parent)?, name))
    }

    /// Type, mode and owner of `rel`, not following a link there; `None` when
    /// it does not exist. A link on the way to it is an error.
    pub fn meta(&self, rel: &Path) -> Result<Option<Meta>, HostError> {
        if rel.as_os_str().is_empty() {
            let st = rustix::fs::fstat(&self.fd).map_err(|e| self.fail(rel, e))?;
            return Ok(Some(Meta::of(&st)));
        }
        let (dir, name) = match self.parent(rel) {
            Ok(p) => p,
            Err(HostError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Meta::of(&st))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.fail(rel, e)),
        }
    }

    /// Open a regular file for reading: never a link (anywhere on the path),
    /// never a FIFO or device (opened non-blocking, then checked), and, with
    /// `owner`, only a file that uid owns (a hard link to a file of root or
    /// another agent belongs to them, and is refused).
    fn open_file(
        &self,
        rel: &Path,
        owner: Option<u32>,
    ) -> Result<(std::fs::File, Meta), HostError> {
        let (dir, name) = self.parent(rel)?;
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP => HostError::Refused {
                path: self.shown(rel),
                why: "it is a symbolic link".into(),
            },
            Errno::NXIO => HostError::Refused {
                path: self.shown(rel),
                why: "it is a socket, not a regular file".into(),
            },
            e => self.fail(rel, e),
        })?;
        let meta = Meta::of(&rustix::fs::fstat(&fd).map_err(|e| self.fail(rel, e))?);
        if meta.kind != Kind::File {
            return Err(HostError::Refused {
                path: self.shown(rel),
                why: "it is not a regular file (a FIFO, socket, device or directory)".into(),
            });
        }
        if let Some(uid) = owner {
            if meta.uid != uid {
                return Err(HostError::Refused {
                    path: self.shown(rel),
                    why: format!(
                        "it belongs to uid {}, not {uid} (a hard link to someone else's file?)",
                        meta.uid
                    ),
                });
            }
        }
        Ok((std::fs::File::from(fd), meta))
    }

    /// Whether a process holds a lock (`flock`) on the regular file `rel`:
    /// how a daemon that holds its lock file for life is seen to be alive,
    /// whatever its files last said. None when the file cannot be opened.
    pub fn locked(&self, rel: &Path, owner: Option<u32>) -> Option<bool> {
        let (f, _) = self.open_file(rel, owner).ok()?;
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockShared) {
            Ok(()) => Some(false),
            Err(Errno::WOULDBLOCK) => Some(true),
            Err(_) => None,
        }
    }

    /// Read a regular file below the tree (see `open_file`), at most `max` bytes.
    pub fn read(&self, rel: &Path, owner: Option<u32>, max: u64) -> Result<Vec<u8>, HostError> {
        let (f, meta) = self.open_file(rel, owner)?;
        if meta.size > max {
            return Err(HostError::Refused {
                path: self.shown(rel),
                why: format!("it is larger than {max} bytes"),
            });
        }
        let mut out = Vec::with_capacity(meta.size as usize);
        f.take(max + 1)
            .read_to_end(&mut out)
            .map_err(HostError::io(self.shown(rel)))?;
        if out.len() as u64 > max {
            return Err(HostError::Refused {
                path: self.shown(rel),
                why: format!("it is larger than {max} bytes"),
            });
        }
        Ok(out)
    }

    /// Whether `rel` is a regular file holding exactly `bytes`, with this mode
    /// and owner. Reads no more than `bytes.len()`; anything else (missing, a
    /// link, a FIFO, another size) is simply "no".
    pub fn holds(&self, rel: &Path, bytes: &[u8], mode: u32, uid: u32, gid: u32) -> bool {
        let Ok((f, meta)) = self.open_file(rel, Some(uid)) else {
            return false;
        };
        if meta.mode != mode || meta.gid != gid || meta.size != bytes.len() as u64 {
            return false;
        }
        let mut have = Vec::with_capacity(bytes.len());
        f.take(bytes.len() as u64 + 1)
            .read_to_end(&mut have)
            .is_ok_and(|_| have == bytes)
    }

    /// Make the directory `rel` if missing, then give it this owner and mode.
    /// The parent must exist; a link or a non-directory at `rel` is refused.
    pub fn mkdir(&self, rel: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), HostError> {
        let (dir, name) = self.parent(rel)?;
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(self.fail(rel, e)),
        }
        let fd = open_beneath(
            dir.as_fd(),
            Path::new(name),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOTDIR | Errno::LOOP => self.not_a_dir(rel),
            e => self.fail(rel, e),
        })?;
        own(&fd, mode, uid, gid).map_err(|e| self.fail(rel, e))
    }

    /// Write `bytes` to `rel` atomically: a new file beside it (created
    /// exclusively, so nothing planted there is opened), written, synced,
    /// given owner and mode by descriptor, then renamed over `rel`. Whatever
    /// was at `rel` (a file, a link) is replaced, never written through.
    pub fn write(
        &self,
        rel: &Path,
        bytes: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(), HostError> {
        let (dir, name) = self.parent(rel)?;
        if let Ok(st) = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                return Err(HostError::Conflict(format!(
                    "{} is a directory where nuketown writes a file; move it away",
                    self.shown(rel).display()
                )));
            }
        }
        // A name the agent planted (guessing ours) is skipped, never opened.
        let mut tries = 0;
        let (tmp, fd) = loop {
            let tmp = temp_name(name);
            match rustix::fs::openat(
                &dir,
                &tmp,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => break (tmp, fd),
                Err(Errno::EXIST) if tries < 64 => tries += 1,
                Err(e) => return Err(self.fail(rel, e)),
            }
        };
        let result = (|| {
            let mut f = std::fs::File::from(fd);
            f.write_all(bytes).map_err(HostError::io(self.shown(rel)))?;
            f.sync_all().map_err(HostError::io(self.shown(rel)))?;
            own(&f, mode, uid, gid).map_err(|e| self.fail(rel, e))?;
            rustix::fs::renameat(&dir, &tmp, &dir, name).map_err(|e| self.fail(rel, e))
        })();
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&dir, &tmp, AtFlags::empty());
        }
        result
    }

    /// Create `rel` as an empty file with this owner and mode if nothing is
    /// there; true if it was created. Whatever exists is left alone.
    pub fn create(&self, rel: &Path, mode: u32, uid: u32, gid: u32) -> Result<bool, HostError> {
        let (dir, name) = self.parent(rel)?;
        match rustix::fs::openat(
            &dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => {
                own(&fd, mode, uid, gid).map_err(|e| self.fail(rel, e))?;
                Ok(true)
            }
            Err(Errno::EXIST) => Ok(false),
            Err(e) => Err(self.fail(rel, e)),
        }
    }

    /// Remove the file or link `rel` (never what a link points to); gone is fine.
    pub fn remove(&self, rel: &Path) -> Result<(), HostError> {
        let (dir, name) = self.parent(rel)?;
        match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.fail(rel, e)),
        }
    }

    /// Rename `from` to `to`, both below the tree.
    pub fn rename(&self, from: &Path, to: &Path) -> Result<(), HostError> {
        let (a, an) = self.parent(from)?;
        let (b, bn) = self.parent(to)?;
        rustix::fs::renameat(&a, an, &b, bn).map_err(|e| self.fail(to, e))
    }

    /// An `O_PATH` descriptor of `rel` itself (a link there is refused).
    fn path_fd(&self, rel: &Path) -> Result<OwnedFd, HostError> {
        self.check(rel)?;
        open_beneath(
            self.fd.as_fd(),
            rel,
            OFlags::PATH | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| self.fail(rel, e))
    }

    /// Unmount everything mounted at or below `rel`, deepest first. Each mount
    /// point is opened beneath the tree (a link on its path is refused) and
    /// unmounted through that descriptor, so a path swapped meanwhile can
    /// never make root unmount something elsewhere.
    pub fn unmount_all(&self, rel: &Path) -> Result<(), HostError> {
        self.check(rel)?;
        let top = self.real.join(rel);
        let mut mounts: Vec<PathBuf> = crate::system::mount_points()
            .into_iter()
            .filter(|m| m.starts_with(&top))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        mounts.dedup();
        for m in &mounts {
            let below = m.strip_prefix(&self.real).unwrap_or(m).to_path_buf();
            // A path can carry several stacked mounts; unmount until none is left.
            let mut left = 64;
            while crate::system::is_mounted(m) && left > 0 {
                left -= 1;
                let fd = self.path_fd(&below)?;
                rustix::mount::unmount(
                    format!("/proc/self/fd/{}", fd.as_raw_fd()),
                    rustix::mount::UnmountFlags::DETACH,
                )
                .map_err(|e| HostError::Conflict(format!("cannot unmount {}: {e}", m.display())))?;
            }
        }
        Ok(())
    }
}

/// A directory's metadata with its access and default ACLs (if it has them).
pub type DirAcls = (Meta, Option<crate::acl::Acl>, Option<crate::acl::Acl>);

impl Tree {
    /// Make the directory `rel` root's shared directory: created if missing
    /// (an existing one must already be root's — a directory someone else
    /// made there may hold their links and open descriptors, so it is
    /// refused), then on the descriptor opened beneath without following a
    /// link: owner root, group `gid`, the access and default ACLs, `mode`.
    pub fn shared_dir(
        &self,
        rel: &Path,
        gid: u32,
        mode: u32,
        access: &crate::acl::Acl,
        default: &crate::acl::Acl,
    ) -> Result<(), HostError> {
        let (dir, name) = self.parent(rel)?;
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(self.fail(rel, e)),
        }
        let fd = open_beneath(
            dir.as_fd(),
            Path::new(name),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOTDIR | Errno::LOOP => self.not_a_dir(rel),
            e => self.fail(rel, e),
        })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| self.fail(rel, e))?;
        if st.st_uid != 0 {
            return Err(HostError::Refused {
                path: self.shown(rel),
                why: format!(
                    "it belongs to uid {}, not root; a shared directory is made by root — move it away and apply again",
                    st.st_uid
                ),
            });
        }
        let set = || -> Result<(), Errno> {
            rustix::fs::fchown(&fd, Some(Uid::ROOT), Some(Gid::from_raw(gid)))?;
            crate::acl::set(&fd, crate::acl::ACCESS, access)?;
            crate::acl::set(&fd, crate::acl::DEFAULT, default)?;
            // After the ACL: chmod sets the mask from the group bits, and keeps setgid (root).
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
        };
        set().map_err(|e| match e {
            Errno::OPNOTSUPP => HostError::Conflict(format!(
                "{}: this filesystem does not support POSIX ACLs; put the shared directory on one that does (ext4, btrfs, xfs, tmpfs) or mount it with `acl`",
                self.shown(rel).display()
            )),
            e => self.fail(rel, e),
        })
    }

    /// A directory's type, mode and owner with its access and default ACLs,
    /// read on a descriptor opened beneath (no link followed); `None` when
    /// nothing is there.
    pub fn dir_acls(&self, rel: &Path) -> Result<Option<DirAcls>, HostError> {
        match self.meta(rel)? {
            None => return Ok(None),
            Some(m) if m.kind != Kind::Dir => return Ok(Some((m, None, None))),
            Some(_) => {}
        }
        let fd = self.dir_fd(rel)?;
        let meta = Meta::of(&rustix::fs::fstat(&fd).map_err(|e| self.fail(rel, e))?);
        let access = crate::acl::get(&fd, crate::acl::ACCESS).map_err(|e| self.fail(rel, e))?;
        let default = crate::acl::get(&fd, crate::acl::DEFAULT).map_err(|e| self.fail(rel, e))?;
        Ok(Some((meta, access, default)))
    }
}

/// `fchown` then `fchmod` on a descriptor root holds.
fn own(fd: impl AsFd, mode: u32, uid: u32, gid: u32) -> Result<(), Errno> {
    rustix::fs::fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
}

/// Bind-mount `src_rel` below `src` onto `dst_rel` below `dst`: both opened
/// beneath their trees without following links (a symbolic link as the
/// source, the mount point or anywhere on their paths is refused), both of
/// one type, a file source owned by `owner`; then `open_tree` clones the
/// source and `move_mount` attaches it to the very mount point opened.
pub fn bind(
    src: &Tree,
    src_rel: &Path,
    owner: u32,
    dst: &Tree,
    dst_rel: &Path,
) -> Result<(), HostError> {
    let from = src.path_fd(src_rel)?;
    let to = dst.path_fd(dst_rel)?;
    let a = Meta::of(&rustix::fs::fstat(&from).map_err(|e| src.fail(src_rel, e))?);
    let b = Meta::of(&rustix::fs::fstat(&to).map_err(|e| dst.fail(dst_rel, e))?);
    for (tree, rel, m) in [(src, src_rel, a), (dst, dst_rel, b)] {
        let why = match m.kind {
            Kind::File | Kind::Dir => continue,
            Kind::Symlink => "it is a symbolic link",
            Kind::Special => "it is neither a directory nor a regular file",
        };
        return Err(HostError::Refused {
            path: tree.shown(rel),
            why: why.into(),
        });
    }
    if a.kind != b.kind {
        return Err(HostError::Conflict(format!(
            "cannot bind-mount {} onto {}: one is a directory, the other a file; move {} away",
            src.shown(src_rel).display(),
            dst.shown(dst_rel).display(),
            dst.shown(dst_rel).display()
        )));
    }
    if a.kind == Kind::File && a.uid != owner {
        return Err(HostError::Refused {
            path: src.shown(src_rel),
            why: format!(
                "it belongs to uid {}, not {owner} (a hard link to someone else's file?)",
                a.uid
            ),
        });
    }
    let shown_err = |e: Errno| {
        HostError::Conflict(format!(
            "cannot bind-mount {} onto {}: {e}; bind mounts need root in the host's mount namespace (in a container, grant CAP_SYS_ADMIN)",
            src.shown(src_rel).display(),
            dst.shown(dst_rel).display()
        ))
    };
    use rustix::mount::{MoveMountFlags, OpenTreeFlags};
    let tree = rustix::mount::open_tree(
        &from,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(shown_err)?;
    rustix::mount::move_mount(
        &tree,
        "",
        &to,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(shown_err)
}

/// Read a file root trusts by its declared path (links the administrator
/// made are followed), refusing anything but a regular file: a FIFO or
/// device there would hang root or feed it endless bytes.
pub fn read_trusted(path: &Path, max: u64) -> Result<Vec<u8>, HostError> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| HostError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let meta = Meta::of(&rustix::fs::fstat(&fd).map_err(|e| HostError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?);
    if meta.kind != Kind::File {
        return Err(HostError::Refused {
            path: path.to_path_buf(),
            why: "it is not a regular file".into(),
        });
    }
    if meta.size > max {
        return Err(HostError::Refused {
            path: path.to_path_buf(),
            why: format!("it is larger than {max} bytes"),
        });
    }
    let mut out = Vec::with_capacity(meta.size as usize);
    std::fs::File::from(fd)
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(HostError::io(path))?;
    Ok(out)
}

/// A fresh directory only root can use, removed on drop. Made with
/// `mkdir` under a new name (which never follows or reuses anything planted
/// in a shared temporary directory), then checked on its descriptor.
#[derive(Debug)]
pub struct PrivateDir(PathBuf);

impl PrivateDir {
    /// Make one in the system's temporary directory.
    pub fn new(prefix: &str) -> Result<PrivateDir, HostError> {
        let base = std::env::temp_dir();
        for _ in 0..64 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = base.join(format!("{prefix}-{}-{n}-{nanos:x}", std::process::id()));
            match rustix::fs::mkdir(&path, Mode::from_raw_mode(0o700)) {
                Ok(()) => {
                    let fd = rustix::fs::open(
                        &path,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| HostError::Io {
                        path: path.clone(),
                        source: e.into(),
                    })?;
                    let me = rustix::process::geteuid().as_raw();
                    let st = rustix::fs::fstat(&fd).map_err(|e| HostError::Io {
                        path: path.clone(),
                        source: e.into(),
                    })?;
                    if st.st_uid != me || st.st_mode & 0o077 != 0 {
                        return Err(HostError::Refused {
                            path,
                            why: "a private directory just made is not private".into(),
                        });
                    }
                    return Ok(PrivateDir(path));
                }
                Err(Errno::EXIST) => continue,
                Err(e) => {
                    return Err(HostError::Io {
                        path,
                        source: e.into(),
                    })
                }
            }
        }
        Err(HostError::Conflict(format!(
            "cannot make a private directory in {}",
            base.display()
        )))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Hand it to a user (for a tool run as that user), by descriptor.
    pub fn give_to(&self, uid: u32, gid: u32) -> Result<(), HostError> {
        rustix::fs::open(
            &self.0,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|fd| own(&fd, 0o700, uid, gid))
        .map_err(|e| HostError::Io {
            path: self.0.clone(),
            source: e.into(),
        })
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// A tree in a fresh temporary directory, and a directory outside it
    /// holding a file root must never touch.
    fn setup() -> (tempfile::TempDir, Tree, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        fs_create(&dir.path().join("tree"));
        fs_create(&dir.path().join("outside"));
        let victim = dir.path().join("outside/victim");
        std::fs::write(&victim, "root's secret\n").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let tree = Tree::open(&dir.path().join("tree")).unwrap();
        (dir, tree, victim)
    }

    fn fs_create(p: &Path) {
        std::fs::create_dir(p).unwrap();
    }

    fn refused(r: Result<impl std::fmt::Debug, HostError>, what: &str) -> String {
        match r {
            Err(e @ HostError::Refused { .. }) => e.to_string(),
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
    }

    fn me() -> (u32, u32) {
        (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        )
    }

    #[test]
    fn write_read_and_holds() {
        let (_d, t, _) = setup();
        let (uid, gid) = me();
        t.mkdir(Path::new("a"), 0o750, uid, gid).unwrap();
        t.write(Path::new("a/f"), b"hello", 0o640, uid, gid)
            .unwrap();
        assert_eq!(t.read(Path::new("a/f"), Some(uid), 100).unwrap(), b"hello");
        assert!(t.holds(Path::new("a/f"), b"hello", 0o640, uid, gid));
        assert!(!t.holds(Path::new("a/f"), b"hellO", 0o640, uid, gid));
        assert!(!t.holds(Path::new("a/f"), b"hello", 0o644, uid, gid));
        let m = t.meta(Path::new("a/f")).unwrap().unwrap();
        assert_eq!((m.kind, m.mode, m.size), (Kind::File, 0o640, 5));
        assert_eq!(t.meta(Path::new("a")).unwrap().unwrap().mode, 0o750);
        assert_eq!(t.meta(Path::new("a/missing")).unwrap(), None);
        assert_eq!(t.meta(Path::new("missing/x")).unwrap(), None);
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(t.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"]);
        let e = refused(t.read(Path::new("a/f"), Some(uid), 3), "too large");
        assert!(e.contains("larger than 3 bytes"), "{e}");
    }

    #[test]
    fn a_link_on_the_way_is_refused_and_nothing_outside_changes() {
        let (d, t, victim) = setup();
        let (uid, gid) = me();
        std::os::unix::fs::symlink(d.path().join("outside"), t.path().join("link")).unwrap();
        let before = std::fs::metadata(&victim).unwrap();
        let e = refused(
            t.write(Path::new("link/victim"), b"x", 0o644, uid, gid),
            "write through a linked directory",
        );
        assert!(
            e.contains("tree/link:") && e.contains("symbolic link"),
            "{e}"
        );
        refused(
            t.read(Path::new("link/victim"), None, 100),
            "read through a link",
        );
        refused(
            t.mkdir(Path::new("link/new"), 0o777, uid, gid),
            "mkdir through a link",
        );
        refused(t.meta(Path::new("link/victim")), "stat through a link");
        refused(t.remove(Path::new("link/victim")), "remove through a link");
        refused(
            t.create(Path::new("link/new"), 0o600, uid, gid),
            "create through a link",
        );
        assert!(!t.holds(
            Path::new("link/victim"),
            b"root's secret\n",
            0o600,
            uid,
            gid
        ));
        let after = std::fs::metadata(&victim).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"root's secret\n");
        assert_eq!(
            (after.mode(), after.uid(), after.ino()),
            (before.mode(), before.uid(), before.ino())
        );
        assert!(!d.path().join("outside/new").exists());
    }

    #[test]
    fn a_link_at_the_end_is_never_followed() {
        let (_d, t, victim) = setup();
        let (uid, gid) = me();
        std::os::unix::fs::symlink(&victim, t.path().join("f")).unwrap();
        std::os::unix::fs::symlink(victim.parent().unwrap(), t.path().join("d")).unwrap();
        assert_eq!(t.meta(Path::new("f")).unwrap().unwrap().kind, Kind::Symlink);
        let e = refused(t.read(Path::new("f"), None, 100), "read a link");
        assert!(e.contains("is a symbolic link"), "{e}");
        // mkdir/chmod on a link is refused; the directory it points to keeps its mode.
        let mode = std::fs::metadata(victim.parent().unwrap()).unwrap().mode();
        refused(t.mkdir(Path::new("d"), 0o777, uid, gid), "mkdir on a link");
        assert_eq!(
            std::fs::metadata(victim.parent().unwrap()).unwrap().mode(),
            mode
        );
        // create leaves whatever is there; write replaces the link itself.
        assert!(!t.create(Path::new("f"), 0o666, uid, gid).unwrap());
        t.write(Path::new("f"), b"mine", 0o644, uid, gid).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"root's secret\n");
        assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o777, 0o600);
        assert_eq!(t.meta(Path::new("f")).unwrap().unwrap().kind, Kind::File);
        // remove takes the link, not its target.
        t.remove(Path::new("d")).unwrap();
        assert!(victim.exists());
    }

    #[test]
    fn dot_dot_and_absolute_paths_are_refused() {
        let (_d, t, _) = setup();
        let (uid, gid) = me();
        refused(t.read(Path::new("../outside/victim"), None, 100), "..");
        refused(t.write(Path::new("../x"), b"", 0o644, uid, gid), "..");
        refused(t.read(Path::new("/etc/passwd"), None, 1 << 20), "absolute");
    }

    #[test]
    fn fifos_and_sockets_are_refused_without_waiting() {
        let (_d, t, _) = setup();
        let (uid, _) = me();
        rustix::fs::mkfifoat(&t.fd, "fifo", Mode::from_raw_mode(0o644)).unwrap();
        let started = std::time::Instant::now();
        let e = refused(t.read(Path::new("fifo"), Some(uid), 100), "fifo");
        assert!(e.contains("not a regular file"), "{e}");
        assert!(!t.holds(Path::new("fifo"), b"", 0o644, uid, uid));
        let _sock = std::os::unix::net::UnixListener::bind(t.path().join("sock")).unwrap();
        refused(t.read(Path::new("sock"), None, 100), "socket");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(
            t.meta(Path::new("fifo")).unwrap().unwrap().kind,
            Kind::Special
        );
        let fifo = t.path().join("fifo");
        refused(read_trusted(&fifo, 100), "trusted fifo");
    }

    #[test]
    fn another_owners_file_is_refused() {
        if !root() {
            eprintln!("SKIPPING: needs root to chown");
            return;
        }
        let (_d, t, _) = setup();
        t.write(Path::new("f"), b"x", 0o644, 0, 0).unwrap();
        let e = refused(t.read(Path::new("f"), Some(1234), 100), "root's file");
        assert!(e.contains("belongs to uid 0, not 1234"), "{e}");
        assert!(!t.holds(Path::new("f"), b"x", 0o644, 1234, 1234));
        t.write(Path::new("g"), b"y", 0o600, 1234, 1235).unwrap();
        let m = t.meta(Path::new("g")).unwrap().unwrap();
        assert_eq!((m.uid, m.gid, m.mode), (1234, 1235, 0o600));
        assert!(t.holds(Path::new("g"), b"y", 0o600, 1234, 1235));
    }

    #[test]
    fn a_tree_root_does_not_own_is_refused() {
        if !root() {
            eprintln!("SKIPPING: needs root to chown");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("agents");
        fs_create(&dir);
        std::os::unix::fs::chown(&dir, Some(1234), Some(1234)).unwrap();
        let e = refused(Tree::open(&dir), "agent-owned base");
        assert!(e.contains("belongs to uid 1234, not root"), "{e}");
    }

    #[test]
    fn bind_refuses_links_and_mounts_by_descriptor() {
        if !root() {
            eprintln!("SKIPPING: needs root to mount");
            return;
        }
        let (d, t, _) = setup();
        let (uid, gid) = me();
        t.mkdir(Path::new("src"), 0o700, uid, gid).unwrap();
        t.write(Path::new("src/data"), b"kept", 0o600, uid, gid)
            .unwrap();
        t.mkdir(Path::new("dst"), 0o700, uid, gid).unwrap();
        std::os::unix::fs::symlink(d.path().join("outside"), t.path().join("linkdst")).unwrap();
        std::os::unix::fs::symlink(d.path().join("outside"), t.path().join("linksrc")).unwrap();
        let e = refused(
            bind(&t, Path::new("src"), uid, &t, Path::new("linkdst")),
            "symlinked mount point",
        );
        assert!(e.contains("linkdst"), "{e}");
        refused(
            bind(&t, Path::new("linksrc"), uid, &t, Path::new("dst")),
            "symlinked source",
        );
        assert!(!crate::system::mount_points()
            .iter()
            .any(|m| m.starts_with(d.path())));
        bind(&t, Path::new("src"), uid, &t, Path::new("dst")).unwrap();
        assert_eq!(std::fs::read(t.path().join("dst/data")).unwrap(), b"kept");
        assert!(crate::system::is_mounted(&t.path().join("dst")));
        t.unmount_all(Path::new("")).unwrap();
        assert!(!crate::system::is_mounted(&t.path().join("dst")));
        assert!(!t.path().join("dst/data").exists());
    }

    #[test]
    fn private_dirs_are_private_and_go_away() {
        let p = PrivateDir::new("nuketown-test").unwrap();
        let path = p.path().to_path_buf();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o700);
        drop(p);
        assert!(!path.exists());
    }
}
