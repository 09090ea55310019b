//! One change to the host: how it reads in a plan, and how it is made.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::system::{self, run};
use crate::HostError;

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Rendered text.
    Text(String),
    /// A copy of another file (keys, secrets).
    CopyOf(PathBuf),
    /// The public half of an SSH private key file (`ssh-keygen -y`).
    PublicKeyOf(PathBuf),
    /// An `allowed_signers` line for `email` with the public key at the path.
    AllowedSigner {
        /// The principal.
        email: String,
        /// The private key whose public half is allowed.
        key: PathBuf,
    },
}

impl Source {
    /// The bytes, as they would be written now.
    pub fn bytes(&self) -> Result<Vec<u8>, HostError> {
        match self {
            Source::Text(t) => Ok(t.clone().into_bytes()),
            Source::CopyOf(p) => fs::read(p).map_err(HostError::io(p)),
            Source::PublicKeyOf(p) => {
                let pubfile = PathBuf::from(format!("{}.pub", p.display()));
                if let Ok(b) = fs::read(&pubfile) {
                    return Ok(b);
                }
                Ok(run(
                    "ssh-keygen",
                    [
                        std::ffi::OsStr::new("-y"),
                        std::ffi::OsStr::new("-f"),
                        p.as_os_str(),
                    ],
                )?
                .stdout)
            }
            Source::AllowedSigner { email, key } => {
                let key = String::from_utf8_lossy(&Source::PublicKeyOf(key.clone()).bytes()?)
                    .into_owned();
                let key: Vec<&str> = key.split_whitespace().take(2).collect();
                Ok(format!("{email} namespaces=\"git\" {}\n", key.join(" ")).into_bytes())
            }
        }
    }
}

/// One change apply makes. `Display` is the line `plan` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `groupadd`.
    CreateGroup {
        name: String,
        gid: Option<u32>,
        system: bool,
    },
    /// `useradd` (never with a password; the home is made separately).
    CreateUser {
        name: String,
        uid: Option<u32>,
        gid: Option<u32>,
        home: PathBuf,
        shell: String,
        comment: String,
        create_home: bool,
    },
    /// `usermod` to fix home/shell/primary group.
    ModifyUser {
        name: String,
        what: String,
        args: Vec<String>,
    },
    /// `gpasswd -a`.
    AddToGroup { user: String, group: String },
    /// `gpasswd -d`: agents never sit in sudo/wheel/admin.
    RemoveFromGroup { user: String, group: String },
    /// Create an agent's home: a btrfs subvolume when `subvolume`, else a
    /// directory; made under a temporary name and renamed into place, so a
    /// home never exists with the wrong owner or mode.
    Home {
        path: PathBuf,
        uid: u32,
        gid: u32,
        subvolume: bool,
    },
    /// Create or replace a symbolic link (enabling a unit).
    Symlink { link: PathBuf, target: PathBuf },
    /// `systemctl daemon-reload`.
    DaemonReload,
    /// Delete levelled homes left in the trash.
    EmptyTrash { agents_dir: PathBuf },
    /// Create or fix a directory's mode and owner.
    Dir {
        path: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Create or replace a file (atomically) with mode and owner.
    File {
        path: PathBuf,
        source: Source,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Create an empty file if missing (a bind-mount target or persisted file).
    Touch {
        path: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Bind-mount `source` onto `target`.
    Bind { source: PathBuf, target: PathBuf },
    /// Generate an ed25519 key pair at `path` (kept in the persist dir).
    GenerateSshKey {
        path: PathBuf,
        comment: String,
        uid: u32,
        gid: u32,
    },
    /// Import an armored private key into the agent's GnuPG home.
    ImportGpgKey { user: String, key: PathBuf },
    /// Give an agent its ACL on a device present now (the rule's exact command).
    DeviceAcl {
        agent: String,
        node: PathBuf,
        argv: Vec<String>,
    },
    /// Tell udev to re-read its rules (a no-op where udevd is not running).
    ReloadUdev,
    /// Check a sudoers file with `visudo -cf`, then put it in place.
    Sudoers { path: PathBuf, text: String },
    /// Remove a user no longer in the town (its home too).
    RemoveUser { name: String, home: PathBuf },
    /// Remove a directory tree (a pruned agent's persist dir with --purge).
    RemoveTree { path: PathBuf },
    /// Remove a file.
    RemoveFile { path: PathBuf },
    /// Record what apply manages.
    SaveState { path: PathBuf, text: String },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CreateGroup {
                name, gid: Some(g), ..
            } => write!(f, "+ group {name} (gid {g})"),
            Change::CreateGroup {
                name, gid: None, ..
            } => write!(f, "+ group {name}"),
            Change::CreateUser {
                name,
                uid: Some(uid),
                home,
                ..
            } => write!(f, "+ user {name} (uid {uid}, home {})", home.display()),
            Change::CreateUser {
                name,
                uid: None,
                home,
                ..
            } => write!(f, "+ user {name} (home {})", home.display()),
            Change::ModifyUser { name, what, .. } => write!(f, "~ user {name}: {what}"),
            Change::AddToGroup { user, group } => write!(f, "+ {user} joins group {group}"),
            Change::RemoveFromGroup { user, group } => write!(f, "- {user} leaves group {group}"),
            Change::Home {
                path,
                subvolume: true,
                ..
            } => write!(f, "+ home {} (btrfs subvolume, 0700)", path.display()),
            Change::Home { path, .. } => write!(f, "+ home {} (0700)", path.display()),
            Change::Dir { path, mode, .. } if !path.exists() => {
                write!(f, "+ dir {} ({mode:04o})", path.display())
            }
            Change::Dir {
                path,
                mode,
                uid,
                gid,
            } => write!(f, "~ dir {} ({mode:04o} {uid}:{gid})", path.display()),
            Change::File { path, .. } if !path.exists() => write!(f, "+ file {}", path.display()),
            Change::File { path, .. } => write!(f, "~ file {}", path.display()),
            Change::Touch { path, .. } => write!(f, "+ file {} (empty)", path.display()),
            Change::Bind { source, target } => {
                write!(f, "+ bind {} -> {}", source.display(), target.display())
            }
            Change::GenerateSshKey { path, .. } => {
                write!(f, "+ ssh key {} (ed25519)", path.display())
            }
            Change::ImportGpgKey { user, key } => {
                write!(f, "+ gpg key {} for {user}", key.display())
            }
            Change::ReloadUdev => write!(f, "~ udev: reload rules"),
            Change::Symlink { link, target } => {
                write!(f, "+ link {} -> {}", link.display(), target.display())
            }
            Change::DaemonReload => write!(f, "~ systemd: daemon-reload"),
            Change::EmptyTrash { agents_dir } => write!(
                f,
                "- levelled homes in {}",
                crate::round::trash_dir(agents_dir).display()
            ),
            Change::DeviceAcl { agent, node, .. } => {
                write!(f, "+ acl {agent} on {}", node.display())
            }
            Change::Sudoers { path, .. } if !path.exists() => {
                write!(f, "+ sudoers {}", path.display())
            }
            Change::Sudoers { path, .. } => write!(f, "~ sudoers {}", path.display()),
            Change::RemoveUser { name, home } => {
                write!(f, "- user {name} and its home {}", home.display())
            }
            Change::RemoveTree { path } => write!(f, "- dir {}", path.display()),
            Change::RemoveFile { path } => write!(f, "- file {}", path.display()),
            Change::SaveState { path, .. } => write!(f, "~ state {}", path.display()),
        }
    }
}

/// Write `bytes` to `path` atomically (temp file + rename) with mode and owner.
pub fn write_file(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<(), HostError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.nuketown-{}", std::process::id()));
    let result = (|| {
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(HostError::io(&tmp))?;
        f.write_all(bytes).map_err(HostError::io(&tmp))?;
        f.sync_all().map_err(HostError::io(&tmp))?;
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(HostError::io(&tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(HostError::io(&tmp))?;
        if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err(HostError::Conflict(format!(
                "{} is a directory where nuketown writes a file; move it away",
                path.display()
            )));
        }
        fs::rename(&tmp, path).map_err(HostError::io(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub(crate) fn make_dir(path: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), HostError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(HostError::Conflict(format!(
                "{} is a symlink where nuketown expects a directory; remove it",
                path.display()
            )))
        }
        Ok(m) if !m.is_dir() => {
            return Err(HostError::Conflict(format!(
                "{} exists and is not a directory; move it away",
                path.display()
            )))
        }
        Ok(_) => {}
        Err(_) => fs::create_dir(path).map_err(HostError::io(path))?,
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(HostError::io(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(HostError::io(path))
}

impl Change {
    /// Make the change on the host.
    pub fn make(&self) -> Result<(), HostError> {
        match self {
            Change::CreateGroup { name, gid, system } => {
                if system::group(name).is_some() {
                    return Ok(()); // made meanwhile by another apply
                }
                let mut args: Vec<String> = Vec::new();
                if let Some(g) = gid {
                    args.extend(["-g".into(), g.to_string()]);
                }
                if *system {
                    args.push("-r".into());
                }
                args.push(name.clone());
                run("groupadd", &args)?;
            }
            Change::CreateUser {
                name,
                uid,
                gid,
                home,
                shell,
                comment,
                create_home,
            } => {
                let mut args: Vec<String> = Vec::new();
                if let Some(u) = uid {
                    args.extend(["-u".into(), u.to_string()]);
                }
                if let Some(g) = gid {
                    args.extend(["-g".into(), g.to_string()]);
                }
                args.extend([
                    "-d".into(),
                    home.display().to_string(),
                    "-s".into(),
                    shell.clone(),
                    "-c".into(),
                    comment.clone(),
                    "-K".into(),
                    "UMASK=0077".into(),
                ]);
                args.push(if *create_home { "-m" } else { "-M" }.into());
                args.push(name.clone());
                run("useradd", &args)?;
            }
            Change::ModifyUser { name, args, .. } => {
                let mut a = args.clone();
                a.push(name.clone());
                run("usermod", &a)?;
            }
            Change::AddToGroup { user, group } => {
                run("gpasswd", ["-a", user, group])?;
            }
            Change::RemoveFromGroup { user, group } => {
                run("gpasswd", ["-d", user, group])?;
            }
            Change::Home {
                path,
                uid,
                gid,
                subvolume,
            } => crate::round::create_home(path, *uid, *gid, *subvolume)?,
            Change::Dir {
                path,
                mode,
                uid,
                gid,
            } => make_dir(path, *mode, *uid, *gid)?,
            Change::File {
                path,
                source,
                mode,
                uid,
                gid,
            } => write_file(path, &source.bytes()?, *mode, *uid, *gid)?,
            Change::Touch {
                path,
                mode,
                uid,
                gid,
            } => {
                if fs::symlink_metadata(path).is_err() {
                    write_file(path, b"", *mode, *uid, *gid)?;
                }
            }
            Change::Bind { source, target } => {
                nix::mount::mount(Some(source.as_path()), target.as_path(), None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
                    .map_err(|e| {
                        HostError::Conflict(format!(
                            "cannot bind-mount {} onto {}: {e}; bind mounts need root in the host's mount namespace (in a container, grant CAP_SYS_ADMIN)",
                            source.display(),
                            target.display()
                        ))
                    })?;
            }
            Change::GenerateSshKey {
                path,
                comment,
                uid,
                gid,
            } => {
                if let Some(dir) = path.parent() {
                    make_dir(dir, 0o700, *uid, *gid)?;
                }
                run(
                    "ssh-keygen",
                    [
                        OsArg::s("-q"),
                        OsArg::s("-t"),
                        OsArg::s("ed25519"),
                        OsArg::s("-N"),
                        OsArg::s(""),
                        OsArg::s("-C"),
                        OsArg::s(comment),
                        OsArg::s("-f"),
                        OsArg::p(path),
                    ],
                )?;
                for p in [
                    path.clone(),
                    PathBuf::from(format!("{}.pub", path.display())),
                ] {
                    std::os::unix::fs::lchown(&p, Some(*uid), Some(*gid))
                        .map_err(HostError::io(&p))?;
                }
            }
            Change::ImportGpgKey { user, key } => {
                let bytes = fs::read(key).map_err(HostError::io(key))?;
                let mut cmd = system::as_user(user, "gpg");
                cmd.args(["--batch", "--quiet", "--import"])
                    .stdin(std::process::Stdio::piped());
                let shown = format!("gpg --import {} (as {user})", key.display());
                let mut child = cmd
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .map_err(|e| HostError::Tool {
                        command: shown.clone(),
                        message: e.to_string(),
                    })?;
                child
                    .stdin
                    .take()
                    .expect("piped")
                    .write_all(&bytes)
                    .map_err(HostError::io(key))?;
                let out = child.wait_with_output().map_err(HostError::io(key))?;
                if !out.status.success() {
                    return Err(HostError::Tool {
                        command: shown,
                        message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    });
                }
            }
            Change::DeviceAcl { argv, .. } => {
                run(&argv[0], &argv[1..])?;
            }
            Change::EmptyTrash { agents_dir } => crate::round::empty_trash(agents_dir)?,
            Change::Symlink { link, target } => {
                let _ = fs::remove_file(link);
                std::os::unix::fs::symlink(target, link).map_err(HostError::io(link))?;
            }
            Change::DaemonReload => {
                run("systemctl", ["daemon-reload"])?;
            }
            Change::ReloadUdev => {
                // udevd may not run (containers, CI): the rules still apply at next boot.
                if let Err(e) = run("udevadm", ["control", "--reload"]) {
                    tracing::warn!("udev rules written but not reloaded: {e}");
                }
            }
            Change::Sudoers { path, text } => {
                let dir = path.parent().unwrap_or(Path::new("/"));
                fs::create_dir_all(dir).map_err(HostError::io(dir))?;
                let check = dir.join(format!(".nuketown-check-{}", std::process::id()));
                write_file(&check, text.as_bytes(), 0o440, 0, 0)?;
                let verdict = run("visudo", [OsArg::s("-cf"), OsArg::p(&check)]);
                if let Err(e) = verdict {
                    let _ = fs::remove_file(&check);
                    return Err(HostError::Conflict(format!(
                        "the rendered sudoers drop-in failed visudo and was not installed: {e}"
                    )));
                }
                fs::rename(&check, path).map_err(HostError::io(path))?;
            }
            Change::RemoveUser { name, home } => {
                system::unmount_under(home)?;
                // Stop whatever still runs as the user, or userdel refuses.
                let _ = run("pkill", ["-KILL", "-u", name]);
                run("userdel", [name.as_str()])?;
                if home.exists() {
                    fs::remove_dir_all(home).map_err(HostError::io(home))?;
                }
            }
            Change::RemoveTree { path } => {
                system::unmount_under(path)?;
                fs::remove_dir_all(path).map_err(HostError::io(path))?
            }
            Change::RemoveFile { path } => fs::remove_file(path).map_err(HostError::io(path))?,
            Change::SaveState { path, text } => {
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(HostError::io(dir))?;
                }
                write_file(path, text.as_bytes(), 0o644, 0, 0)?;
            }
        }
        Ok(())
    }
}

/// Mixed string / path arguments for host tools.
enum OsArg<'a> {
    S(&'a str),
    P(&'a Path),
}

impl<'a> OsArg<'a> {
    fn s(s: &'a str) -> Self {
        OsArg::S(s)
    }
    fn p(p: &'a Path) -> Self {
        OsArg::P(p)
    }
}

impl AsRef<std::ffi::OsStr> for OsArg<'_> {
    fn as_ref(&self) -> &std::ffi::OsStr {
        match self {
            OsArg::S(s) => s.as_ref(),
            OsArg::P(p) => p.as_os_str(),
        }
    }
}
