//! Whether an agent can change what a request runs or reads.
//!
//! "Can change" means more than a write bit: the agent owns the file (an
//! owner can always chmod it back), or may write it through its group, a
//! POSIX ACL entry or the other bits, or can replace it or any link or
//! directory that leads to it — it owns or may write one of the directories
//! the lookup passes through (sticky directories respected), or the file
//! lives on a FUSE file system, whose content its mounting user serves.
//!
//! The walk resolves a path the way the kernel does — component by
//! component from a directory descriptor, symbolic links followed by hand,
//! `..` taken physically — opening each step `O_PATH|O_NOFOLLOW`, so every
//! directory whose entry decides the outcome is examined, and the answer is
//! about the file the walk ends on (its device and inode are returned, so
//! the caller can insist it is the file it was asked about).

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, CWD};

use crate::files::{proc_fd_path, shown_name};

/// Who must not be able to change what root runs: the requesting agent and
/// every other agent of the town (one agent may plant a file for another),
/// as Unix users and the groups the system gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User ids, with their names for the reasons given.
    pub users: Vec<(u32, String)>,
    /// Every primary and supplementary group of those users.
    pub gids: Vec<u32>,
}

impl Identity {
    /// The users `uids`, with the groups the system gives them.
    pub fn of_uids(uids: impl IntoIterator<Item = u32>) -> Identity {
        let mut id = Identity {
            users: Vec::new(),
            gids: Vec::new(),
        };
        for uid in uids {
            let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten();
            let name = user
                .as_ref()
                .map_or_else(|| format!("uid {uid}"), |u| u.name.clone());
            let gids: Vec<u32> = user
                .and_then(|u| {
                    let name = std::ffi::CString::new(u.name).ok()?;
                    nix::unistd::getgrouplist(&name, u.gid).ok()
                })
                .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                .unwrap_or_default();
            id.users.push((uid, name));
            id.gids.extend(gids);
        }
        id.gids.sort_unstable();
        id.gids.dedup();
        id
    }

    /// Who is meant when "they may write": the one user, or "an agent".
    fn writers(&self) -> &str {
        match self.users.as_slice() {
            [(_, name)] => name,
            _ => "an agent of the town",
        }
    }

    /// The name of the user `uid`, if it is one of these.
    fn owner(&self, uid: u32) -> Option<&str> {
        self.users
            .iter()
            .find(|(u, _)| *u == uid)
            .map(|(_, n)| n.as_str())
    }
}

/// The end of a walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    /// Device and inode of the file the path names, when it exists.
    pub end: Option<(u64, u64)>,
    /// Why the agent can change it (or what leads to it), when it can.
    pub why: Option<String>,
}

const XATTR_ACL_ACCESS: &str = "system.posix_acl_access";
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_WRITE: u16 = 0x02;
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Whether any of `who` may write the file, from its mode bits or, when it
/// has one, its access ACL. Owners are handled by the caller. With several
/// users this errs towards "yes": group write counts when any of them is in
/// a matching group, other write always (someone is outside the group).
fn may_write(who: &Identity, st: &Stat, acl: Option<&[u8]>) -> bool {
    let Some(acl) = acl.filter(|a| a.len() >= 4 && (a.len() - 4) % 8 == 0) else {
        let mode = st.st_mode;
        return (who.gids.contains(&st.st_gid) && mode & 0o020 != 0) || mode & 0o002 != 0;
    };
    let entries: Vec<(u16, u16, u32)> = acl[4..]
        .chunks_exact(8)
        .map(|e| {
            (
                u16::from_le_bytes([e[0], e[1]]),
                u16::from_le_bytes([e[2], e[3]]),
                u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            )
        })
        .collect();
    let mask = entries
        .iter()
        .find(|(t, _, _)| *t == ACL_MASK)
        .map_or(0xffff, |(_, p, _)| *p);
    entries.iter().any(|(t, p, id)| match *t {
        ACL_USER => who.owner(*id).is_some() && p & mask & ACL_WRITE != 0,
        ACL_GROUP_OBJ => who.gids.contains(&st.st_gid) && p & mask & ACL_WRITE != 0,
        ACL_GROUP => who.gids.contains(id) && p & mask & ACL_WRITE != 0,
        ACL_OTHER => p & ACL_WRITE != 0,
        _ => false,
    })
}

fn acl_of(fd: BorrowedFd<'_>) -> Option<Vec<u8>> {
    let path = proc_fd_path(fd);
    let mut buf = vec![0u8; 1024];
    match rustix::fs::getxattr(&path, XATTR_ACL_ACCESS, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(rustix::io::Errno::RANGE) => {
            let n = rustix::fs::getxattr(&path, XATTR_ACL_ACCESS, &mut [0u8; 0][..]).ok()?;
            let mut buf = vec![0u8; n];
            let n = rustix::fs::getxattr(&path, XATTR_ACL_ACCESS, &mut buf).ok()?;
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

// f_type's width differs between architectures.
#[allow(clippy::unnecessary_cast)]
fn on_fuse(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fstatfs(fd).is_ok_and(|s| s.f_type as i64 == FUSE_SUPER_MAGIC)
}

/// Why `who` can change the object `fd` itself (its content, or for a
/// directory its entries), if it can.
fn object_changeable(who: &Identity, fd: BorrowedFd<'_>, st: &Stat) -> Option<String> {
    let kind = if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        "directory"
    } else {
        "file"
    };
    if let Some(owner) = who.owner(st.st_uid) {
        return Some(format!("{owner} owns the {kind} {}", shown_name(fd)));
    }
    if on_fuse(fd) {
        return Some(format!(
            "the {kind} {} is on a FUSE file system, whose content the user who mounted it serves",
            shown_name(fd)
        ));
    }
    if may_write(who, st, acl_of(fd).as_deref()) {
        return Some(format!(
            "{} may write the {kind} {}",
            who.writers(),
            shown_name(fd)
        ));
    }
    None
}

/// Why `who` can replace the entry `entry` (which may not exist) of the
/// directory `dir`, if it can.
fn entry_replaceable(
    who: &Identity,
    dir: BorrowedFd<'_>,
    dir_st: &Stat,
    entry: Option<&Stat>,
) -> Option<String> {
    if let Some(owner) = who.owner(dir_st.st_uid) {
        return Some(format!("{owner} owns the directory {}", shown_name(dir)));
    }
    if on_fuse(dir) {
        return Some(format!(
            "the directory {} is on a FUSE file system, whose content the user who mounted it serves",
            shown_name(dir)
        ));
    }
    if !may_write(who, dir_st, acl_of(dir).as_deref()) {
        return None;
    }
    let sticky = dir_st.st_mode & 0o1000 != 0;
    if sticky && entry.is_some_and(|e| who.owner(e.st_uid).is_none()) {
        // A sticky directory: only its owner, or the entry's, may remove or rename it.
        return None;
    }
    Some(format!(
        "{} may write the directory {}",
        who.writers(),
        shown_name(dir)
    ))
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::DIRECTORY,
        Mode::empty(),
    )
}

fn open_root() -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        CWD,
        "/",
        OFlags::PATH | OFlags::CLOEXEC | OFlags::DIRECTORY,
        Mode::empty(),
    )
}

/// Most symbolic links one walk follows (the kernel's limit).
const MAX_LINKS: usize = 40;
/// Most components one walk looks at.
const MAX_STEPS: usize = 4096;

/// Walk `path` from `base` (or from `/` when it is absolute) as the kernel
/// would, and say why `who` can change what it names or anything that
/// decides where it leads. A path that does not exist is judged by the
/// directory where the lookup stopped (could the agent create the name?).
pub fn walk(who: &Identity, base: BorrowedFd<'_>, path: &str) -> Walk {
    let unknown = |why: String| Walk {
        end: None,
        why: Some(why),
    };
    let mut dir = match if path.starts_with('/') {
        open_root()
    } else {
        rustix::io::fcntl_dupfd_cloexec(base, 0)
    } {
        Ok(d) => d,
        Err(e) => return unknown(format!("cannot examine {path:?}: {e}")),
    };
    let mut queue: VecDeque<String> = path.split('/').map(str::to_string).collect();
    let mut links = 0;
    let mut steps = 0;
    while let Some(c) = queue.pop_front() {
        steps += 1;
        if steps > MAX_STEPS {
            return unknown(format!("the path {path:?} is too long to examine"));
        }
        if c.is_empty() || c == "." {
            continue;
        }
        let last = queue.iter().all(|c| c.is_empty() || c == ".");
        // `name/` or `name/.` must be a directory.
        let must_be_dir = last && !queue.is_empty();
        let dir_st = match rustix::fs::fstat(dir.as_fd()) {
            Ok(s) => s,
            Err(e) => return unknown(format!("cannot examine {path:?}: {e}")),
        };
        if c == ".." {
            // Where `..` leads is decided by this directory's place in its
            // parent: whoever can move it away changes the answer.
            let up = match open_dir_at(dir.as_fd(), "..") {
                Ok(up) => up,
                Err(e) => return unknown(format!("cannot examine {path:?}: {e}")),
            };
            if let Ok(up_st) = rustix::fs::fstat(up.as_fd()) {
                if (up_st.st_dev, up_st.st_ino) != (dir_st.st_dev, dir_st.st_ino) {
                    if let Some(why) = entry_replaceable(who, up.as_fd(), &up_st, Some(&dir_st)) {
                        return Walk {
                            end: None,
                            why: Some(why),
                        };
                    }
                }
            }
            dir = up;
            continue;
        }
        let entry = rustix::fs::statat(dir.as_fd(), c.as_str(), AtFlags::SYMLINK_NOFOLLOW).ok();
        if let Some(why) = entry_replaceable(who, dir.as_fd(), &dir_st, entry.as_ref()) {
            return Walk {
                end: None,
                why: Some(why),
            };
        }
        let Some(entry) = entry else {
            // Not there, in a directory the agent cannot change: nothing of the agent's.
            return Walk {
                end: None,
                why: None,
            };
        };
        match FileType::from_raw_mode(entry.st_mode) {
            FileType::Symlink => {
                links += 1;
                if links > MAX_LINKS {
                    return unknown(format!("{path:?} has too many symbolic links"));
                }
                let target = match rustix::fs::readlinkat(dir.as_fd(), c.as_str(), Vec::new()) {
                    Ok(t) => t.to_string_lossy().into_owned(),
                    Err(e) => return unknown(format!("cannot read a link in {path:?}: {e}")),
                };
                if target.starts_with('/') {
                    match open_root() {
                        Ok(r) => dir = r,
                        Err(e) => return unknown(format!("cannot examine {path:?}: {e}")),
                    }
                }
                for part in target.split('/').rev() {
                    queue.push_front(part.to_string());
                }
            }
            // A directory, in the middle or at the end: go in (the end is judged below).
            FileType::Directory => match open_dir_at(dir.as_fd(), &c) {
                Ok(d) => dir = d,
                Err(e) => return unknown(format!("cannot examine {path:?}: {e}")),
            },
            _ if !last || must_be_dir => {
                // A file in the middle of a path (or before a `/`): the lookup fails here.
                return Walk {
                    end: None,
                    why: None,
                };
            }
            _ => {
                let fd = match rustix::fs::openat(
                    dir.as_fd(),
                    c.as_str(),
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(f) => f,
                    Err(e) => return unknown(format!("cannot examine {path:?}: {e}")),
                };
                let st = match rustix::fs::fstat(fd.as_fd()) {
                    Ok(s) => s,
                    Err(e) => return unknown(format!("cannot examine {path:?}: {e}")),
                };
                return Walk {
                    end: Some((st.st_dev, st.st_ino)),
                    why: object_changeable(who, fd.as_fd(), &st),
                };
            }
        }
    }
    // The path ended on a directory (`/`, `.`, `dir/`): judge the directory itself.
    match rustix::fs::fstat(dir.as_fd()) {
        Ok(st) => Walk {
            end: Some((st.st_dev, st.st_ino)),
            why: object_changeable(who, dir.as_fd(), &st),
        },
        Err(e) => unknown(format!("cannot examine {path:?}: {e}")),
    }
}

/// [`walk`] from `/` for an absolute path.
pub fn walk_absolute(who: &Identity, path: &str) -> Walk {
    walk(who, CWD, path)
}

/// The interpreter a script names on its `#!` line, if `path` is a
/// regular file that starts with one (read without following a link, at
/// most one line). `#!/usr/bin/env NAME` names env, which looks NAME up on
/// the clean, fixed PATH the command runs with.
pub fn interpreter_of(path: &str) -> Option<String> {
    use std::io::Read;
    let fd = rustix::fs::openat2(
        CWD,
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
        rustix::fs::ResolveFlags::NO_SYMLINKS | rustix::fs::ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return None;
    }
    let mut head = [0u8; 256];
    let n = std::fs::File::from(fd).read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|b| *b == b'\n').unwrap_or(line.len())];
    let text = std::str::from_utf8(line).ok()?.trim_start();
    let interpreter = text.split([' ', '\t']).next()?;
    interpreter
        .starts_with('/')
        .then(|| interpreter.to_string())
}

/// What in one request the agent can change, each with the reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assessment {
    /// The program itself (the file, or any directory on its canonical path).
    pub program: Option<String>,
    /// The way the agent named the program (a link or `..` through a directory it can change).
    pub typed: Option<String>,
    /// Arguments naming files the agent can change: (argument, why).
    pub args: Vec<(String, String)>,
    /// The working directory (or a directory above it).
    pub cwd: Option<String>,
}

impl Assessment {
    /// Whether only a human may decide: the agent can change the program,
    /// how it was reached, or a file an argument names. No rule, grant or
    /// mock mode decides such a request.
    pub fn human_only(&self) -> bool {
        self.program.is_some() || self.typed.is_some() || !self.args.is_empty()
    }

    /// Whether a time-boxed grant may cover this request later: never when
    /// the program, its name or a file an argument names is the agent's to
    /// change (the grant would cover content the agent rewrites). A working
    /// directory the agent can change is a warning the human decides on.
    pub fn grantable(&self) -> bool {
        !self.human_only()
    }

    /// One sentence per finding that makes the request human-only, for every approver channel.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Some(why) = &self.program {
            w.push(format!(
                "an agent can change the program: {why}; only a human may approve it"
            ));
        }
        if let Some(why) = &self.typed {
            w.push(format!(
                "the program was named through a path an agent can change: {why}"
            ));
        }
        for (arg, why) in &self.args {
            w.push(format!(
                "the argument {} names a file an agent can change: {why}",
                nuketown_town::display::show_str(arg)
            ));
        }
        w
    }

    /// What the approver should know but that does not make the request
    /// human-only: a working directory an agent can change (agents work in
    /// their homes; a program like `make` reads files from there unnamed).
    pub fn notes(&self) -> Vec<String> {
        self.cwd
            .iter()
            .map(|why| {
                format!(
                    "it runs in a working directory an agent can change ({why}): files the program reads from there without naming them are not root's"
                )
            })
            .collect()
    }
}

const SEPARATORS: &[char] = &[
    ' ', '\t', '\n', ';', '|', '&', '<', '>', '(', ')', '\'', '"', '`', '$', ',', ':', '=', '{',
    '}',
];

/// The strings in one argument that may name a file: the argument itself (or
/// what follows `-x`/`--opt=`), and every word in it that contains a `/`
/// (a path inside `sh -c '…'`, `PATH=…:…`, `--config=…`).
pub fn candidates(arg: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    if let Some(long) = arg.strip_prefix("--") {
        if let Some((_, v)) = long.split_once('=') {
            out.push(v);
        }
    } else if let Some(short) = arg.strip_prefix('-') {
        if short.len() > 1 {
            if let Some(i) = short.char_indices().nth(1).map(|(i, _)| i) {
                out.push(&short[i..]);
            }
        }
        if let Some((_, v)) = short.split_once('=') {
            out.push(v);
        }
    } else {
        out.push(arg);
        if let Some((_, v)) = arg.split_once('=') {
            out.push(v);
        }
    }
    out.extend(arg.split(SEPARATORS).filter(|w| w.contains('/')));
    out.retain(|c| !c.is_empty());
    out.sort_unstable();
    out.dedup();
    out
}

/// Judge one request for the agent `who`. The program and working
/// directory are opened again by their canonical paths (no link followed)
/// and must be the files the entry point opened; arguments are looked up
/// from that working directory, as the program will.
pub fn assess(
    who: &Identity,
    ask: &crate::protocol::Ask,
) -> Result<Assessment, crate::files::Refusal> {
    let cwd = crate::files::reopen(&ask.cwd, "the working directory")?;
    crate::files::reopen(&ask.program, "the program")?;
    let mut a = Assessment::default();

    let prog = walk_absolute(who, &ask.program.path);
    if prog.why.is_none() && prog.end != Some((ask.program.dev, ask.program.ino)) {
        return Err(format!(
            "the program {} was moved or replaced while the request was being checked",
            nuketown_town::display::show_str(&ask.program.path)
        ));
    }
    a.program = prog.why.or_else(|| {
        // A script runs its interpreter: judge that file (and its own, for
        // an interpreter that is a script) as the program.
        let mut script = ask.program.path.clone();
        for _ in 0..4 {
            let interpreter = interpreter_of(&script)?;
            if let Some(why) = walk_absolute(who, &interpreter).why {
                return Some(format!("its interpreter {interpreter}: {why}"));
            }
            script = interpreter;
        }
        None
    });
    if let Some(typed) = ask.typed.as_deref().filter(|t| t.contains('/')) {
        a.typed = walk(who, cwd.as_fd(), typed).why;
    }
    for arg in &ask.argv[1..] {
        for c in candidates(arg) {
            // A bare word names a file only if there is one of that name.
            if !c.contains('/')
                && rustix::fs::statat(cwd.as_fd(), c, AtFlags::SYMLINK_NOFOLLOW).is_err()
            {
                continue;
            }
            if let Some(why) = walk(who, cwd.as_fd(), c).why {
                a.args.push((arg.clone(), why));
                break;
            }
        }
    }
    a.cwd = walk_absolute(who, &ask.cwd.path).why;
    Ok(a)
}
