//! Files as the town hall decides on them: opened once, named canonically,
//! identified by device and inode.
//!
//! The entry point opens the program and the working directory here, once,
//! as descriptors; the hall is told their canonical paths and identities and
//! the child executes and enters those very descriptors. No path whose
//! meaning depends on the process that resolves it is accepted: `/proc`
//! magic links (`/proc/self/…`, `/dev/fd/…`, `/proc/PID/cwd`) are refused,
//! and a canonical path is only believed after it was opened again from `/`
//! without following any link and found to be the same file.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags, CWD};

use crate::protocol::FileRef;

/// A file opened once (`O_PATH`), and what it is.
#[derive(Debug)]
pub struct Opened {
    /// The descriptor: the child executes or enters exactly this.
    pub fd: OwnedFd,
    /// Canonical path, device and inode.
    pub file: FileRef,
}

/// Why a file could not be opened for a decision; said to the agent.
pub type Refusal = String;

fn identity(fd: BorrowedFd<'_>) -> std::io::Result<(u64, u64, rustix::fs::Stat)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino, st))
}

/// `/proc/self/fd/N` for our own descriptor: only ever used to ask the
/// kernel about a file we already hold, never to judge a path.
pub(crate) fn proc_fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Open `path` from `dir` (`O_PATH`), following ordinary symbolic links but
/// never a magic link of `/proc`.
fn open_beneath_nothing(
    dir: BorrowedFd<'_>,
    path: &str,
    extra: OFlags,
) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        dir,
        path,
        OFlags::PATH | OFlags::CLOEXEC | extra,
        Mode::empty(),
        ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// Open `path` (absolute) without following any link at all.
fn open_no_links(path: &str, extra: OFlags) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        CWD,
        path,
        OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW | extra,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?)
}

fn refusal_for(e: &std::io::Error, what: &str, shown: &str) -> Refusal {
    match e.raw_os_error() {
        Some(nix::libc::ELOOP) => format!(
            "{what} {shown} goes through a /proc magic link (/proc/self, /dev/fd, /proc/PID/cwd or too many links), whose meaning depends on the process; name the file itself"
        ),
        Some(nix::libc::ENOENT) => format!("{what} {shown}: no such file"),
        Some(nix::libc::ENOTDIR) => format!("{what} {shown}: not a directory"),
        Some(nix::libc::EXDEV) => format!("{what} {shown} leaves the tree it was named in"),
        _ => format!("{what} {shown}: {e}"),
    }
}

/// The canonical path and identity of an open descriptor, verified: the
/// kernel's name for it, opened again from `/` following no link, is the
/// same device and inode. Anything else (a deleted file, a file renamed
/// meanwhile, a name with a link in it, another mount namespace) is refused.
pub fn canonical(fd: BorrowedFd<'_>, what: &str) -> Result<FileRef, Refusal> {
    let (dev, ino, st) = identity(fd).map_err(|e| format!("{what}: {e}"))?;
    let name = std::fs::read_link(proc_fd_path(fd)).map_err(|e| format!("{what}: {e}"))?;
    let Some(text) = name.to_str() else {
        return Err(format!(
            "{what}: its path is not UTF-8 and cannot be shown to an approver exactly"
        ));
    };
    if !crate::protocol::is_canonical(text) {
        return Err(format!(
            "{what} {}: it has no name an approver could check (deleted, or outside this file system view)",
            nuketown_town::display::show_str(text)
        ));
    }
    let dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
    let again = open_no_links(
        text,
        if dir {
            OFlags::DIRECTORY
        } else {
            OFlags::empty()
        },
    )
    .map_err(|_| {
        format!(
            "{what} {} was moved or replaced while it was being opened",
            nuketown_town::display::show_str(text)
        )
    })?;
    match identity(again.as_fd()) {
        Ok((d, i, _)) if d == dev && i == ino => Ok(FileRef {
            path: text.to_string(),
            dev,
            ino,
        }),
        _ => Err(format!(
            "{what} {} was moved or replaced while it was being opened",
            nuketown_town::display::show_str(text)
        )),
    }
}

/// The working directory of this process, opened once.
pub fn open_cwd() -> Result<Opened, Refusal> {
    let fd = open_beneath_nothing(CWD, ".", OFlags::DIRECTORY)
        .map_err(|e| refusal_for(&e, "the working directory", "."))?;
    let file = canonical(fd.as_fd(), "the working directory")?;
    Ok(Opened { fd, file })
}

/// A directory named by an absolute path the system gave (a target's home), opened once.
pub fn open_dir(path: &str) -> Result<Opened, Refusal> {
    let shown = nuketown_town::display::show_str(path);
    if !path.starts_with('/') {
        return Err(format!("the directory {shown} is not an absolute path"));
    }
    let fd = open_beneath_nothing(CWD, path, OFlags::DIRECTORY)
        .map_err(|e| refusal_for(&e, "the directory", &shown))?;
    let file = canonical(fd.as_fd(), "the directory")?;
    Ok(Opened { fd, file })
}

fn executable_file(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|st| {
        FileType::from_raw_mode(st.st_mode) == FileType::RegularFile && st.st_mode & 0o111 != 0
    })
}

/// The program as `sudo` would find it, opened once: `name` with a `/` is
/// opened from the working directory `cwd`; a bare name is the first
/// executable regular file of that name in `search` (a fixed PATH). Magic
/// links are refused; the result must be an executable regular file.
pub fn open_program(name: &str, cwd: BorrowedFd<'_>, search: &str) -> Result<Opened, Refusal> {
    let shown = nuketown_town::display::show_str(name);
    if name.is_empty() {
        return Err("an empty command name".into());
    }
    let fd = if name.contains('/') {
        let fd = open_beneath_nothing(cwd, name, OFlags::empty())
            .map_err(|e| refusal_for(&e, "the program", &shown))?;
        if !executable_file(fd.as_fd()) {
            return Err(format!("{shown}: not an executable file"));
        }
        fd
    } else {
        search
            .split(':')
            .filter(|d| d.starts_with('/'))
            .filter_map(|d| {
                let p = format!("{}/{name}", d.trim_end_matches('/'));
                open_beneath_nothing(CWD, &p, OFlags::empty()).ok()
            })
            .find(|fd| executable_file(fd.as_fd()))
            .ok_or_else(|| format!("{shown}: command not found (looked in {search})"))?
    };
    let file = canonical(fd.as_fd(), "the program")?;
    Ok(Opened { fd, file })
}

/// The hall's side: open `file` again by its canonical path, following no
/// link, and make sure it is still the file the entry point opened.
pub fn reopen(file: &FileRef, what: &str) -> Result<OwnedFd, Refusal> {
    let moved = || {
        format!(
            "{what} {} was moved or replaced while the request was being checked",
            nuketown_town::display::show_str(&file.path)
        )
    };
    if !crate::protocol::is_canonical(&file.path) {
        return Err(moved());
    }
    let fd = open_no_links(&file.path, OFlags::empty()).map_err(|_| moved())?;
    match identity(fd.as_fd()) {
        Ok((d, i, _)) if d == file.dev && i == file.ino => Ok(fd),
        _ => Err(moved()),
    }
}

/// Device and inode of what `path` names now, links followed (never a magic
/// link): how a policy rule's program is compared with the request's.
pub fn identity_of(path: &str) -> Option<(u64, u64)> {
    let fd = open_beneath_nothing(CWD, path, OFlags::empty()).ok()?;
    identity(fd.as_fd()).ok().map(|(d, i, _)| (d, i))
}

/// The name a descriptor has now, for messages only (never judged).
pub(crate) fn shown_name(fd: BorrowedFd<'_>) -> String {
    std::fs::read_link(proc_fd_path(fd))
        .map(|p| String::from_utf8_lossy(OsStr::new(&p).as_bytes()).into_owned())
        .unwrap_or_else(|_| "?".into())
}

/// Open `argv[0]` as [`open_program`] does and put its canonical path in
/// its place: the argv the hall decides on is the argv that runs. Returns
/// the opened program and, when it differs, the name the agent typed.
pub fn name_program(
    argv: &mut [String],
    cwd: BorrowedFd<'_>,
    search: &str,
) -> Result<(Opened, Option<String>), Refusal> {
    let first = argv
        .first_mut()
        .ok_or_else(|| "an empty command".to_string())?;
    let program = open_program(first, cwd, search)?;
    let typed = std::mem::replace(first, program.file.path.clone());
    let typed = (typed != program.file.path).then_some(typed);
    Ok((program, typed))
}

/// A request ready for the hall, with the descriptors it names.
#[derive(Debug)]
pub struct Prepared {
    /// What the hall is asked.
    pub ask: crate::protocol::Ask,
    /// The program, to execute by descriptor.
    pub program: Opened,
    /// The working directory, to enter by descriptor.
    pub cwd: Opened,
}

/// The request to run `argv` in the directory `cwd` as `user`, for the
/// agent `sudo_uid`, made as the entry point makes it (for root requesters
/// inside the town: the rebuild coordinator, tests, benchmarks).
pub fn prepare(
    mut argv: Vec<String>,
    cwd: &str,
    user: &str,
    sudo_uid: u32,
) -> Result<Prepared, Refusal> {
    let cwd = open_dir(cwd)?;
    let (program, typed) = name_program(&mut argv, cwd.fd.as_fd(), crate::entry::SAFE_PATH)?;
    Ok(Prepared {
        ask: crate::protocol::Ask {
            argv,
            program: program.file.clone(),
            typed,
            cwd: cwd.file.clone(),
            user: user.to_string(),
            group: None,
            sudo_uid,
        },
        program,
        cwd,
    })
}
