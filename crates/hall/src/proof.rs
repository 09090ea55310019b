//! Proof that what a request runs and reads is root's: the one thing that
//! lets a rule, a grant or the mock file decide without a human.
//!
//! The hall does not look for a way an agent could change a file (every
//! such search misses a case); it proves that nobody it does not trust
//! ([`Trust`]: root and the host's own system accounts) can. A file is
//! proven when it is owned by a trusted user, nobody untrusted may write it
//! (mode bits, group, POSIX ACL with its mask), it is not on FUSE, it is not
//! held open for writing by anyone (the kernel's own count, read by taking
//! a read lease: it sees descriptors passed over sockets and shared
//! writable mappings too), and every directory on the way to it — links
//! followed by hand, `..` taken physically — is proven the same way, so the
//! entry that leads on cannot be replaced. A name that does not exist is
//! proven absent when the directory it would be made in is proven. Anything
//! the walk cannot establish is unproven, with the reason.
//!
//! For a request, that is the working directory, the program, its
//! interpreters (`#!`, and what `env` finds on the fixed PATH), how the
//! agent named it, and every string an argument holds that could name a
//! file: the argument, what follows `-x` at any point of a bundle of short
//! flags, `--opt=`, `=`, `:`, `,` and `@` (response files), every word in
//! it, and `~` and `~user` expanded — each from `/` when absolute, and from
//! every directory the program might start from when relative: the working
//! directory and every directory any of these strings names (`-C DIR`,
//! `--directory=DIR`, `git -C`, `env -C`, `tar -C`), until no new one
//! appears. A relative path that climbs with `..` leaves any directory it
//! starts from, so it is never proven.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, CWD};

use crate::files::{proc_fd_path, shown_name};
use crate::trust::Trust;

const XATTR_ACL_ACCESS: &str = "system.posix_acl_access";
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_WRITE: u16 = 0x02;
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Most symbolic links one walk follows (the kernel's limit).
const MAX_LINKS: usize = 40;
/// Most components one walk looks at.
const MAX_STEPS: usize = 4096;
/// Most strings of one request that are proven.
const MAX_CANDIDATES: usize = 4096;
/// Most directories a relative string is proven from.
const MAX_BASES: usize = 64;
/// Most entries proven below one directory a program may start from.
pub const MAX_TREE: usize = 50_000;
/// Deepest such a tree is walked.
const MAX_TREE_DEPTH: usize = 256;
/// Most interpreters followed (a script run by a script …).
const MAX_INTERPRETERS: usize = 4;

/// Character devices whose content no writer changes: what a reader gets
/// from `/dev/null`, `/dev/zero`, `/dev/full`, `/dev/random` and
/// `/dev/urandom` is the kernel's, whoever writes to them.
const INERT_DEVICES: &[(u32, u32)] = &[(1, 3), (1, 5), (1, 7), (1, 8), (1, 9)];

/// Why something could not be proven root's, in words for the approver.
pub type Unproven = String;

/// The end of a proven walk: what the path names, opened `O_PATH`, or
/// nothing — and then nobody untrusted can make it.
#[derive(Debug)]
pub struct End {
    /// The file, when it exists.
    pub file: Option<(OwnedFd, Stat)>,
}

impl End {
    /// Device and inode of the file, when it exists.
    pub fn id(&self) -> Option<(u64, u64)> {
        self.file.as_ref().map(|(_, st)| (st.st_dev, st.st_ino))
    }

    fn dir(&self) -> Option<BorrowedFd<'_>> {
        self.file
            .as_ref()
            .filter(|(_, st)| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
            .map(|(fd, _)| fd.as_fd())
    }
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

/// Someone untrusted who may write the object, from its mode bits or, when
/// it has one, its access ACL (mask applied). The owner is judged apart.
fn untrusted_writer(t: &Trust, st: &Stat, acl: Option<&[u8]>) -> Option<String> {
    let Some(acl) = acl.filter(|a| a.len() >= 4 && (a.len() - 4) % 8 == 0) else {
        let mode = st.st_mode;
        if mode & 0o020 != 0 && !t.group(st.st_gid) {
            return Some(t.group_who(st.st_gid));
        }
        return (mode & 0o002 != 0).then(|| "everyone".to_string());
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
        .find(|(tag, _, _)| *tag == ACL_MASK)
        .map_or(0xffff, |(_, p, _)| *p);
    entries.iter().find_map(|(tag, p, id)| {
        let w = p & mask & ACL_WRITE != 0;
        match *tag {
            ACL_USER if w && !t.user(*id) => Some(t.who(*id)),
            ACL_GROUP_OBJ if w && !t.group(st.st_gid) => Some(t.group_who(st.st_gid)),
            ACL_GROUP if w && !t.group(*id) => Some(t.group_who(*id)),
            ACL_OTHER if p & ACL_WRITE != 0 => Some("everyone".into()),
            _ => None,
        }
    })
}

// f_type's width differs between architectures.
#[allow(clippy::unnecessary_cast)]
fn on_fuse(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fstatfs(fd).is_ok_and(|s| s.f_type as i64 == FUSE_SUPER_MAGIC)
}

fn kind(st: &Stat) -> &'static str {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => "directory",
        FileType::Symlink => "link",
        _ => "file",
    }
}

/// Whether some process holds the regular file open for writing: a read
/// lease is refused (`EAGAIN`) exactly when the inode has a writer, however
/// the descriptor is held. Anything else than a clear answer is unproven.
fn open_for_writing(fd: BorrowedFd<'_>) -> Result<(), Unproven> {
    let name = shown_name(fd);
    let rd = rustix::fs::open(
        proc_fd_path(fd),
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOATIME,
        Mode::empty(),
    )
    .or_else(|_| {
        rustix::fs::open(
            proc_fd_path(fd),
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
    })
    .map_err(|e| format!("the file {name} cannot be opened to see who writes it ({e})"))?;
    // Safety: F_SETLEASE on a descriptor we own; no memory is passed.
    let r = unsafe {
        nix::libc::fcntl(
            rd.as_raw_fd(),
            nix::libc::F_SETLEASE,
            nix::libc::F_RDLCK as nix::libc::c_int,
        )
    };
    if r == 0 {
        // Safety: as above.
        unsafe {
            nix::libc::fcntl(
                rd.as_raw_fd(),
                nix::libc::F_SETLEASE,
                nix::libc::F_UNLCK as nix::libc::c_int,
            );
        }
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    Err(match e.raw_os_error() {
        Some(nix::libc::EAGAIN) => format!(
            "the file {name} is held open for writing by some process (a descriptor kept from before, passed on, or a shared mapping), so what it holds may change"
        ),
        _ => format!("cannot tell whether the file {name} is held open for writing ({e})"),
    })
}

/// Whether the object `fd` itself (its content, or a directory's entries)
/// is beyond every untrusted user.
fn object(t: &Trust, fd: BorrowedFd<'_>, st: &Stat) -> Result<(), Unproven> {
    let ty = FileType::from_raw_mode(st.st_mode);
    if ty == FileType::CharacterDevice {
        let dev = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
        if INERT_DEVICES.contains(&dev) {
            return Ok(());
        }
    }
    let k = kind(st);
    if !t.user(st.st_uid) {
        return Err(format!(
            "the {k} {} is owned by {}, not root or a system account",
            shown_name(fd),
            t.who(st.st_uid)
        ));
    }
    if on_fuse(fd) {
        return Err(format!(
            "the {k} {} is on a FUSE file system, whose content the user who mounted it serves",
            shown_name(fd)
        ));
    }
    if let Some(w) = untrusted_writer(t, st, acl_of(fd).as_deref()) {
        return Err(format!("{w} may write the {k} {}", shown_name(fd)));
    }
    match ty {
        FileType::Directory => Ok(()),
        FileType::RegularFile => open_for_writing(fd),
        _ => Err(format!(
            "{} is a device, pipe or socket: what it gives is not a file root can prove",
            shown_name(fd)
        )),
    }
}

/// Whether the entry `entry` (which may not exist) of the directory `dir`
/// is fixed: nobody untrusted can add, remove or replace it.
fn entry_fixed(
    t: &Trust,
    dir: BorrowedFd<'_>,
    dir_st: &Stat,
    name: &str,
    entry: Option<&Stat>,
) -> Result<(), Unproven> {
    if !t.user(dir_st.st_uid) {
        return Err(format!(
            "the directory {} is owned by {}, not root or a system account",
            shown_name(dir),
            t.who(dir_st.st_uid)
        ));
    }
    if on_fuse(dir) {
        return Err(format!(
            "the directory {} is on a FUSE file system, whose content the user who mounted it serves",
            shown_name(dir)
        ));
    }
    let Some(w) = untrusted_writer(t, dir_st, acl_of(dir).as_deref()) else {
        return Ok(());
    };
    // A sticky directory: only its owner, or the entry's, may remove or rename it.
    if dir_st.st_mode & 0o1000 != 0 && entry.is_some_and(|e| t.user(e.st_uid)) {
        return Ok(());
    }
    Err(format!(
        "{w} may write the directory {}, so {} there is theirs to make or replace",
        shown_name(dir),
        nuketown_town::display::show_str(name)
    ))
}

fn open_at(dir: BorrowedFd<'_>, name: &str, extra: OFlags) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC | extra,
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

/// Prove `path` from the directory `base` (or from `/` when it is
/// absolute), walking as the kernel resolves it. `base` itself must have
/// been proven by the caller.
pub fn prove(t: &Trust, base: BorrowedFd<'_>, path: &str) -> Result<End, Unproven> {
    let cannot = |e: rustix::io::Errno| {
        format!(
            "cannot examine {}: {e}",
            nuketown_town::display::show_str(path)
        )
    };
    let mut dir = if path.starts_with('/') {
        open_root()
    } else {
        rustix::io::fcntl_dupfd_cloexec(base, 0)
    }
    .map_err(cannot)?;
    let mut queue: VecDeque<String> = path.split('/').map(str::to_string).collect();
    let (mut links, mut steps) = (0, 0);
    while let Some(c) = queue.pop_front() {
        steps += 1;
        if steps > MAX_STEPS {
            return Err(format!(
                "the path {} is too long to prove",
                nuketown_town::display::show_str(path)
            ));
        }
        if c.is_empty() || c == "." {
            continue;
        }
        let last = queue.iter().all(|c| c.is_empty() || c == ".");
        let must_be_dir = last && !queue.is_empty();
        let dir_st = rustix::fs::fstat(&dir).map_err(cannot)?;
        if c == ".." {
            // Where `..` leads is decided by this directory's place in its
            // parent: nobody untrusted may move it away.
            let up = open_at(dir.as_fd(), "..", OFlags::DIRECTORY).map_err(cannot)?;
            let up_st = rustix::fs::fstat(&up).map_err(cannot)?;
            // (What is looked up in it next is proven as it is looked up.)
            if (up_st.st_dev, up_st.st_ino) != (dir_st.st_dev, dir_st.st_ino) {
                entry_fixed(t, up.as_fd(), &up_st, "..", Some(&dir_st))?;
            }
            dir = up;
            continue;
        }
        let entry = rustix::fs::statat(&dir, c.as_str(), AtFlags::SYMLINK_NOFOLLOW).ok();
        entry_fixed(t, dir.as_fd(), &dir_st, &c, entry.as_ref())?;
        let Some(entry) = entry else {
            // Not there, in a directory nobody untrusted can write: it stays so.
            return Ok(End { file: None });
        };
        match FileType::from_raw_mode(entry.st_mode) {
            FileType::Symlink => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(format!(
                        "{} has too many symbolic links",
                        nuketown_town::display::show_str(path)
                    ));
                }
                let target = rustix::fs::readlinkat(&dir, c.as_str(), Vec::new())
                    .map_err(cannot)?
                    .to_string_lossy()
                    .into_owned();
                if target.starts_with('/') {
                    dir = open_root().map_err(cannot)?;
                }
                for part in target.split('/').rev() {
                    queue.push_front(part.to_string());
                }
            }
            FileType::Directory => {
                dir = open_at(dir.as_fd(), &c, OFlags::DIRECTORY).map_err(cannot)?;
                // The lookup's next step judges it as a directory; the end judges it below.
            }
            _ if !last || must_be_dir => {
                // A file in the middle of a path: the lookup fails here, and
                // nobody untrusted can put a directory in its place.
                return Ok(End { file: None });
            }
            _ => {
                let fd = open_at(dir.as_fd(), &c, OFlags::empty()).map_err(cannot)?;
                let st = rustix::fs::fstat(&fd).map_err(cannot)?;
                if (st.st_dev, st.st_ino) != (entry.st_dev, entry.st_ino) {
                    return Err(format!(
                        "{} changed while it was being proven",
                        nuketown_town::display::show_str(path)
                    ));
                }
                object(t, fd.as_fd(), &st)?;
                return Ok(End {
                    file: Some((fd, st)),
                });
            }
        }
    }
    // The path ended on a directory (`/`, `.`, `dir/`): prove the directory itself.
    let st = rustix::fs::fstat(&dir).map_err(cannot)?;
    object(t, dir.as_fd(), &st)?;
    Ok(End {
        file: Some((dir, st)),
    })
}

/// Prove everything below the (proven) directory `dir`: every entry fixed,
/// every file and directory proven, every link's target proven — at most
/// [`MAX_TREE`] entries, no link followed into a walk.
pub fn prove_tree(t: &Trust, dir: BorrowedFd<'_>) -> Result<(), Unproven> {
    let mut budget = MAX_TREE;
    // The walk lists directories: a descriptor that can be read.
    let rd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot examine {}: {e}", shown_name(dir)))?;
    tree_below(t, rd.as_fd(), &mut budget, 0)
}

fn tree_below(
    t: &Trust,
    dir: BorrowedFd<'_>,
    budget: &mut usize,
    depth: usize,
) -> Result<(), Unproven> {
    let cannot = |e: rustix::io::Errno| format!("cannot examine {}: {e}", shown_name(dir));
    if depth > MAX_TREE_DEPTH {
        return Err(format!(
            "{} is more than {MAX_TREE_DEPTH} directories deep; too deep to prove",
            shown_name(dir)
        ));
    }
    let dir_st = rustix::fs::fstat(dir).map_err(cannot)?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir).map_err(cannot)? {
        let entry = entry.map_err(cannot)?;
        let n = entry.file_name();
        if n.to_bytes() != b"." && n.to_bytes() != b".." {
            names.push(n.to_owned());
        }
    }
    for name in names {
        *budget = budget.checked_sub(1).ok_or_else(|| {
            format!("the tree it may read holds more than {MAX_TREE} entries; too many to prove")
        })?;
        let shown = name.to_string_lossy();
        let Ok(st) = rustix::fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) else {
            continue; // gone meanwhile: nobody untrusted can bring it back (the directory is proven)
        };
        entry_fixed(t, dir, &dir_st, &shown, Some(&st))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir, name.as_c_str(), Vec::new())
                    .map_err(cannot)?
                    .to_string_lossy()
                    .into_owned();
                prove(t, dir, &target)?;
            }
            FileType::Directory => {
                let fd = open_at(dir, &shown, OFlags::DIRECTORY).map_err(cannot)?;
                let st = rustix::fs::fstat(&fd).map_err(cannot)?;
                object(t, fd.as_fd(), &st)?;
                let rd = rustix::fs::openat(
                    &fd,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(cannot)?;
                tree_below(t, rd.as_fd(), budget, depth + 1)?;
            }
            _ => {
                let fd = open_at(dir, &shown, OFlags::empty()).map_err(cannot)?;
                let st = rustix::fs::fstat(&fd).map_err(cannot)?;
                object(t, fd.as_fd(), &st)?;
            }
        }
    }
    Ok(())
}

/// [`prove`] from `/`; a relative path is unproven (relative to what?).
pub fn prove_absolute(t: &Trust, path: &str) -> Result<End, Unproven> {
    if !path.starts_with('/') {
        return Err(format!(
            "{} is relative to a directory the hall does not know",
            nuketown_town::display::show_str(path)
        ));
    }
    prove(t, CWD, path)
}

/// The `#!` line of the regular file `fd`, if it has one: the interpreter
/// and its arguments (split on blanks, as the kernel passes them to the
/// interpreter, or as `env -S` would).
pub fn shebang(fd: BorrowedFd<'_>) -> Option<(String, Vec<String>)> {
    use std::io::Read;
    let st = rustix::fs::fstat(fd).ok()?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return None;
    }
    let f = rustix::fs::open(
        proc_fd_path(fd),
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut head = [0u8; 256];
    let n = std::fs::File::from(f).read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|b| *b == b'\n').unwrap_or(line.len())];
    let text = String::from_utf8_lossy(line);
    let mut words = text.split([' ', '\t']).filter(|w| !w.is_empty());
    let interpreter = words.next()?.to_string();
    Some((interpreter, words.map(str::to_string).collect()))
}

/// What `env ARGS…` runs: the command's name and, separately, every other
/// argument (directories for `-C`, names, values), all of which are proven
/// as arguments. `None` when no command follows the options.
fn env_command(args: &[String]) -> (Option<String>, Vec<String>) {
    let mut words: VecDeque<String> = args.iter().cloned().collect();
    let mut others = Vec::new();
    while let Some(w) = words.pop_front() {
        match w.as_str() {
            "-S" | "--split-string" => {
                let s = words.pop_front().unwrap_or_default();
                for part in s.split_whitespace().rev() {
                    words.push_front(part.to_string());
                }
            }
            s if s.starts_with("-S") && s.len() > 2 => {
                for part in s[2..].split_whitespace().rev() {
                    words.push_front(part.to_string());
                }
            }
            "-u" | "--unset" | "-C" | "--chdir" => {
                others.push(w.clone());
                if let Some(v) = words.pop_front() {
                    others.push(v);
                }
            }
            "--" => {
                let cmd = words.pop_front();
                others.extend(words);
                return (cmd, others);
            }
            s if s.starts_with('-') || s.contains('=') => others.push(w.clone()),
            _ => {
                others.extend(words);
                return (Some(w), others);
            }
        }
    }
    (None, others)
}

/// What in a request is not proven root's, each with the reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assessment {
    /// Findings, in the order found.
    pub findings: Vec<Finding>,
}

/// One thing the hall could not prove, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What it is about.
    pub subject: Subject,
    /// Why it is not proven.
    pub why: Unproven,
}

/// What a finding is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// The program file (or a directory on its canonical path).
    Program,
    /// An interpreter the program runs (`#!`), by path.
    Interpreter(String),
    /// The way the agent named the program.
    Typed(String),
    /// The working directory.
    Cwd,
    /// An argument (as typed), through a string in it that may name a file.
    Arg(String),
    /// The request as a whole (too many strings or directories to prove).
    Request,
}

impl Assessment {
    /// Whether everything is proven root's: only then may a rule, a grant
    /// or the mock file approve.
    pub fn proven(&self) -> bool {
        self.findings.is_empty()
    }

    /// Whether only a human may approve: something is not proven.
    pub fn human_only(&self) -> bool {
        !self.proven()
    }

    /// Whether a time-boxed grant may cover this request later.
    pub fn grantable(&self) -> bool {
        self.proven()
    }

    /// The arguments with an unproven string in them.
    pub fn args(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .findings
            .iter()
            .filter_map(|f| match &f.subject {
                Subject::Arg(a) => Some(a.clone()),
                _ => None,
            })
            .collect();
        v.dedup();
        v
    }

    /// One sentence per finding, for every approver channel and the audit log.
    pub fn warnings(&self) -> Vec<String> {
        use nuketown_town::display::show_str;
        self.findings
            .iter()
            .map(|f| match &f.subject {
                Subject::Program => format!("the program is not proven root's: {}; only a human may approve it", f.why),
                Subject::Interpreter(i) => format!("its interpreter {} is not proven root's: {}", show_str(i), f.why),
                Subject::Typed(t) => format!("the program was named through {}, which is not proven root's: {}", show_str(t), f.why),
                Subject::Cwd => format!("the working directory is not proven root's: {}; whatever the program reads there, or relative to it, may be an agent's (a rule decides only from a directory root owns: cd / first)", f.why),
                Subject::Arg(a) => format!("the argument {} may name a file that is not proven root's: {}", show_str(a), f.why),
                Subject::Request => f.why.clone(),
            })
            .collect()
    }

    fn find(&mut self, subject: Subject, why: Unproven) {
        if !self
            .findings
            .iter()
            .any(|f| f.subject == subject && f.why == why)
        {
            self.findings.push(Finding { subject, why });
        }
    }
}

const SEPARATORS: &[char] = &[
    ' ', '\t', '\n', '\r', ';', '|', '&', '<', '>', '(', ')', '\'', '"', '`', '$', ',', ':', '=',
    '{', '}', '@', '[', ']', '*', '?', '!', '#', '\\',
];

/// Every string in one argument that may name a file: the argument; each
/// tail of a bundle of short flags (`-sf/x` is `-s -f /x`); what follows
/// `--opt=`, `=`, `:`, `,` or `@`; and every word between separators.
pub fn candidates(arg: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![arg.to_string()];
    if let Some(short) = arg.strip_prefix('-').filter(|s| !s.starts_with('-')) {
        for (i, _) in short.char_indices().skip(1) {
            out.push(short[i..].to_string());
        }
    }
    for (i, c) in arg.char_indices() {
        if matches!(c, '=' | ':' | ',' | '@') {
            out.push(arg[i + c.len_utf8()..].to_string());
        }
    }
    let words: Vec<String> = out
        .iter()
        .flat_map(|s| s.split(SEPARATORS).map(str::to_string).collect::<Vec<_>>())
        .collect();
    out.extend(words);
    out.retain(|c| !c.is_empty());
    out.sort_unstable();
    out.dedup();
    out
}

/// `~` and `~user` at the start, as a shell or the program would expand
/// them: the target's home, or that user's. `None` when it does not start
/// so, or names no user (then it is an ordinary relative name).
fn tilde(s: &str, target_home: &str) -> Option<String> {
    let rest = s.strip_prefix('~')?;
    let (user, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let home = if user.is_empty() {
        target_home.to_string()
    } else {
        nix::unistd::User::from_name(user)
            .ok()
            .flatten()?
            .dir
            .to_string_lossy()
            .into_owned()
    };
    Some(format!("{home}/{tail}"))
}

fn climbs(rel: &str) -> bool {
    rel.split('/').any(|c| c == "..")
}

/// Prove one request: `ask` as the entry point opened it, for a command run
/// as `target_home`'s user. The working directory and program are opened
/// again by their canonical paths (no link followed) and must be the files
/// the entry point opened.
pub fn assess(
    t: &Trust,
    ask: &crate::protocol::Ask,
    target_home: &str,
) -> Result<Assessment, crate::files::Refusal> {
    crate::files::reopen(&ask.cwd, "the working directory")?;
    crate::files::reopen(&ask.program, "the program")?;
    let mut a = Assessment::default();
    let mut bases: Vec<(OwnedFd, (u64, u64))> = Vec::new();

    match prove_absolute(t, &ask.cwd.path) {
        Ok(end) if end.id() == Some((ask.cwd.dev, ask.cwd.ino)) => {
            if let Some((fd, st)) = end.file {
                // A program reads from where it runs without naming it (a
                // Makefile's includes, a repository's hooks): the whole tree
                // there is proven — but for `/`, whose own entries are the
                // host's (and `/tmp` everyone's).
                let whole = if ask.cwd.path == "/" {
                    Ok(())
                } else {
                    prove_tree(t, fd.as_fd())
                };
                match whole {
                    Ok(()) => bases.push((fd, (st.st_dev, st.st_ino))),
                    Err(why) => a.find(Subject::Cwd, why),
                }
            }
        }
        Ok(_) => return Err(moved("the working directory", &ask.cwd.path)),
        Err(why) => a.find(Subject::Cwd, why),
    }

    // The program, then what it runs: its interpreters, their arguments.
    let mut extra_args: Vec<String> = Vec::new();
    match prove_absolute(t, &ask.program.path) {
        Ok(end) if end.id() == Some((ask.program.dev, ask.program.ino)) => {
            interpreters(t, end, &mut a, &mut extra_args);
        }
        Ok(_) => return Err(moved("the program", &ask.program.path)),
        Err(why) => a.find(Subject::Program, why),
    }
    if let Some(typed) = ask.typed.as_deref().filter(|p| p.contains('/')) {
        let r = if typed.starts_with('/') {
            prove_absolute(t, typed).map(|_| ())
        } else if climbs(typed) {
            Err("it climbs with ..".to_string())
        } else if let Some((base, _)) = bases.first() {
            prove(t, base.as_fd(), typed).map(|_| ())
        } else {
            // Relative to an unproven working directory (a human's already):
            // say what the way there is.
            crate::files::reopen(&ask.cwd, "the working directory")
                .and_then(|cwd| prove(t, cwd.as_fd(), typed).map(|_| ()))
        };
        if let Err(why) = r {
            a.find(Subject::Typed(typed.to_string()), why);
        }
    }

    // Every string that may name a file, from every directory the program may start from.
    let mut strings: Vec<(String, String)> = Vec::new();
    let cwd_unproven = bases.is_empty();
    for arg in ask.argv[1..].iter().chain(extra_args.iter()) {
        for c in candidates(arg) {
            if let Some(expanded) = tilde(&c, target_home) {
                strings.push((arg.clone(), expanded));
            }
            strings.push((arg.clone(), c));
        }
        if strings.len() > MAX_CANDIDATES {
            a.find(
                Subject::Request,
                format!("the request holds more than {MAX_CANDIDATES} strings that may name files; too many to prove"),
            );
            return Ok(a);
        }
    }
    if cwd_unproven {
        // The request is a human's already; name the files of the working
        // directory its arguments reach, so the human sees which they are.
        if let Ok(cwd) = crate::files::reopen(&ask.cwd, "the working directory") {
            for (arg, s) in strings.iter().filter(|(_, s)| !s.starts_with('/')) {
                if rustix::fs::statat(&cwd, s.as_str(), AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                    if let Err(why) = prove(t, cwd.as_fd(), s) {
                        a.find(Subject::Arg(arg.clone()), why);
                    }
                }
            }
        }
    }
    let mut tried = vec![0usize; strings.len()];
    let mut absolute_done = vec![false; strings.len()];
    loop {
        let known = bases.len();
        for (i, (arg, s)) in strings.iter().enumerate() {
            let ends: Vec<Result<End, Unproven>> = if s.starts_with('/') {
                if absolute_done[i] {
                    continue;
                }
                absolute_done[i] = true;
                vec![prove_absolute(t, s)]
            } else if climbs(s) {
                if tried[i] == 0 {
                    tried[i] = 1;
                    a.find(
                        Subject::Arg(arg.clone()),
                        format!(
                            "{} climbs with .., which leaves any directory the program may start from",
                            nuketown_town::display::show_str(s)
                        ),
                    );
                }
                continue;
            } else {
                let from = tried[i];
                tried[i] = known;
                let mut ends: Vec<Result<End, Unproven>> = bases[from..known]
                    .iter()
                    .map(|(b, _)| prove(t, b.as_fd(), s))
                    .collect();
                // A bare word a program may look up on its PATH (env, a
                // shell, xargs): proven in every directory of the fixed PATH.
                if from == 0 && !s.contains('/') {
                    ends.extend(crate::entry::SAFE_PATH.split(':').map(|d| {
                        prove_absolute(t, &format!("{d}/{s}")).map(|_| End { file: None })
                    }));
                }
                ends
            };
            for end in ends {
                match end {
                    Err(why) => a.find(Subject::Arg(arg.clone()), why),
                    Ok(end) => {
                        if let (Some(dir), Some(id)) = (end.dir(), end.id()) {
                            if !bases.iter().any(|(_, b)| *b == id) {
                                if bases.len() >= MAX_BASES {
                                    a.find(
                                        Subject::Request,
                                        format!("the request names more than {MAX_BASES} directories; too many to prove"),
                                    );
                                    return Ok(a);
                                }
                                let fd = rustix::io::fcntl_dupfd_cloexec(dir, 0)
                                    .map_err(|e| format!("cannot examine {s}: {e}"))?;
                                // A directory the program is given, it may
                                // read all of (`make -C`, `chown -R`, `tar -C`).
                                if let Err(why) = prove_tree(t, fd.as_fd()) {
                                    a.find(Subject::Arg(arg.clone()), why);
                                    continue;
                                }
                                bases.push((fd, id));
                            }
                        }
                    }
                }
            }
        }
        if bases.len() == known {
            break;
        }
    }
    Ok(a)
}

fn moved(what: &str, path: &str) -> crate::files::Refusal {
    format!(
        "{what} {} was moved or replaced while the request was being checked",
        nuketown_town::display::show_str(path)
    )
}

/// Follow a proven program's `#!` lines: each interpreter (and, for `env`,
/// the command it finds on the fixed PATH) is proven as the program is;
/// their arguments are proven as the request's.
fn interpreters(t: &Trust, program: End, a: &mut Assessment, args: &mut Vec<String>) {
    let mut current = program;
    for _ in 0..MAX_INTERPRETERS {
        let Some((fd, _)) = current.file.as_ref() else {
            return;
        };
        let Some((interpreter, iargs)) = shebang(fd.as_fd()) else {
            return;
        };
        // A script reads what lies beside it (python's sys.path[0], a
        // shell's `. "$(dirname "$0")/lib.sh"`): its directory is proven whole.
        let name = shown_name(fd.as_fd());
        let dir = name
            .rsplit_once('/')
            .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d });
        let beside = prove_absolute(t, dir).and_then(|end| match end.file {
            Some((d, _)) => prove_tree(t, d.as_fd()),
            None => Ok(()),
        });
        if let Err(why) = beside {
            return a.find(
                Subject::Interpreter(name.clone()),
                format!(
                    "{} is a script, and what lies beside it is not proven root's: {why}",
                    nuketown_town::display::show_str(&name)
                ),
            );
        }
        let env = interpreter.rsplit('/').next() == Some("env");
        let next = match prove_absolute(t, &interpreter) {
            Err(why) => return a.find(Subject::Interpreter(interpreter), why),
            Ok(end) if !env => {
                args.extend(iargs);
                end
            }
            Ok(_) => {
                let (cmd, others) = env_command(&iargs);
                args.extend(others);
                let Some(cmd) = cmd else { return };
                match on_safe_path(t, &cmd) {
                    Err(why) => return a.find(Subject::Interpreter(cmd), why),
                    Ok(None) => return,
                    Ok(Some(end)) => end,
                }
            }
        };
        current = next;
    }
    a.find(
        Subject::Request,
        format!(
            "the program runs more than {MAX_INTERPRETERS} interpreters deep; too deep to prove"
        ),
    );
}

/// What `env NAME` runs: `NAME` itself when it has a `/`, or the first file
/// of that name on the fixed PATH — and every directory before it must
/// prove it has no such name.
fn on_safe_path(t: &Trust, name: &str) -> Result<Option<End>, Unproven> {
    if name.contains('/') {
        return if name.starts_with('/') {
            prove_absolute(t, name).map(Some)
        } else {
            Err(format!(
                "env runs {}, relative to the working directory",
                nuketown_town::display::show_str(name)
            ))
        };
    }
    for dir in crate::entry::SAFE_PATH.split(':') {
        let end = prove_absolute(t, &format!("{dir}/{name}"))?;
        if let Some((_, st)) = &end.file {
            if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                && st.st_mode & 0o111 != 0
            {
                return Ok(Some(end));
            }
        }
    }
    Ok(None)
}
