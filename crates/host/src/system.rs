//! The host as it is: users, groups, mounts, files; and running the host's
//! own tools (useradd, mount, ssh-keygen) with errors a user can act on.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::unistd::{Group, User};

use crate::HostError;

/// A user account as the host has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// User name.
    pub name: String,
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
    /// Login shell.
    pub shell: PathBuf,
}

/// Look up a user by name.
pub fn user(name: &str) -> Option<Account> {
    User::from_name(name).ok().flatten().map(|u| Account {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        home: u.dir,
        shell: u.shell,
    })
}

/// Look up a user by uid.
pub fn user_by_uid(uid: u32) -> Option<Account> {
    User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .and_then(|u| user(&u.name))
}

/// A group: its gid and members (supplementary).
pub fn group(name: &str) -> Option<(u32, Vec<String>)> {
    Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| (g.gid.as_raw(), g.mem))
}

/// The name of the group with this gid.
pub fn group_name(gid: u32) -> Option<String> {
    Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
}

/// The supplementary groups `user` is listed in.
pub fn groups_of(user: &str) -> Vec<String> {
    let Ok(text) = fs::read_to_string("/etc/group") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[3].split(',').any(|m| m == user)).then(|| f[0].to_string())
        })
        .collect()
}

/// The subordinate id ranges `user` has in `file` (`/etc/subuid` or
/// `/etc/subgid`), as `FIRST-LAST` for usermod's `--del-subuids`. Entries
/// are matched by name or by uid.
pub fn subordinate_ranges(file: &Path, user: &str, uid: u32) -> Vec<String> {
    let Ok(text) = fs::read_to_string(file) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(':').collect();
            if f.len() != 3 || (f[0] != user && f[0] != uid.to_string()) {
                return None;
            }
            let first: u64 = f[1].parse().ok()?;
            let count: u64 = f[2].parse().ok().filter(|c| *c > 0)?;
            Some(format!("{first}-{}", first + count - 1))
        })
        .collect()
}

/// Mount points currently in this mount namespace.
pub fn mount_points() -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `path` is a mount point now.
pub fn is_mounted(path: &Path) -> bool {
    mount_points().iter().any(|m| m == path)
}

/// Mode (permission bits), uid and gid of a path, not following links.
pub fn owner_mode(path: &Path) -> Option<(u32, u32, u32)> {
    fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.mode() & 0o7777, m.uid(), m.gid()))
}

/// Run a host tool; a failure names the command and its stderr.
pub fn run<I, S>(program: &str, args: I) -> Result<Output, HostError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    run_cmd(Command::new(program).args(&args))
}

/// Run a prepared command; a failure names the command and its stderr.
pub fn run_cmd(cmd: &mut Command) -> Result<Output, HostError> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HostError::Tool {
            command: shown.clone(),
            message: tool_missing(cmd.get_program(), e),
        })?;
    if !out.status.success() {
        return Err(HostError::Tool {
            command: shown,
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out)
}

fn tool_missing(program: &OsStr, e: io::Error) -> String {
    if e.kind() == io::ErrorKind::NotFound {
        format!(
            "{} is not installed (or not on PATH)",
            program.to_string_lossy()
        )
    } else {
        e.to_string()
    }
}

/// Run a host tool with `input` on its stdin; a failure names the command
/// and its stderr. With `as_uid`, the tool runs as that user (its private
/// group, no supplementary groups): a tool parsing what an agent wrote
/// (its old key, a key file in its tree) gets none of root's privileges.
pub fn run_with_input<I, S>(
    program: &str,
    args: I,
    input: &[u8],
    as_uid: Option<u32>,
) -> Result<Output, HostError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    use std::io::Write as _;
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(uid) = as_uid.filter(|u| *u != 0) {
        // std drops supplementary groups (setgroups) before setgid/setuid.
        let gid = user_by_uid(uid).map_or(uid, |a| a.gid);
        cmd.uid(uid)
            .gid(gid)
            .current_dir("/")
            .env("HOME", "/nonexistent");
    }
    let shown = format!(
        "{} {}",
        program,
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| HostError::Tool {
            command: shown.clone(),
            message: tool_missing(OsStr::new(program), e),
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    // Write from a thread: the tool may answer before it has read everything.
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().map_err(|e| HostError::Tool {
        command: shown.clone(),
        message: e.to_string(),
    })?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(HostError::Tool {
            command: shown,
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out)
}

/// The uid's live (non-zombie) processes.
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
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
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
        if std::time::Instant::now() > deadline {
            return Err(HostError::Conflict(format!(
                "processes of uid {uid} survive SIGKILL; not levelling the home"
            )));
        }
        // Give the kernel a moment to tear them down before looking again.
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A command run as `user` with a login-like environment (runuser, as root).
pub fn as_user(user: &str, program: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", user, "--", program]);
    if let Some(acct) = self::user(user) {
        c.env_clear()
            .env("HOME", &acct.home)
            .env("USER", user)
            .env("LOGNAME", user)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
    }
    c
}

/// Unmount everything mounted at or below `dir`, deepest first, so that
/// removing `dir` can never reach into a persisted (bind-mounted) tree. By
/// path: for directories only root controls (test scaffolding); inside an
/// agent's tree use [`crate::safe::Tree::unmount_all`].
pub fn unmount_under(dir: &Path) -> Result<(), HostError> {
    let mut mounts: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    for m in &mounts {
        // A path can carry several stacked mounts; unmount until none is left.
        while is_mounted(m) {
            nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| HostError::Conflict(format!("cannot unmount {}: {e}", m.display())))?;
        }
    }
    Ok(())
}
