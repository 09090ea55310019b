//! One change to the host: how it reads in a plan, and how it is made.
//!
//! Every file a change touches is named as an [`At`]: a path beneath a
//! directory root owns, resolved without following links (see
//! [`crate::safe`]). That is what keeps root from following a link an agent
//! planted in its home or persist dir.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::safe::{self, Tree, MAX_AGENT_FILE};
use crate::system::{self, run};
use crate::HostError;

/// Where root works on a file: `rel` beneath `base`, a directory root owns
/// (`agentsDir`, `persistDir/agents`, or a system directory), resolved
/// without following symbolic links. Shown as the joined path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    /// The directory root owns.
    pub base: PathBuf,
    /// The path below it.
    pub rel: PathBuf,
}

impl At {
    /// `rel` beneath `base`.
    pub fn new(base: impl Into<PathBuf>, rel: impl Into<PathBuf>) -> At {
        At {
            base: base.into(),
            rel: rel.into(),
        }
    }

    /// A path only root controls (system directories): beneath its parent.
    pub fn system(path: &Path) -> At {
        match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) => At::new(dir, name),
            _ => At::new(path, ""),
        }
    }

    /// The joined path.
    pub fn path(&self) -> PathBuf {
        if self.rel.as_os_str().is_empty() {
            self.base.clone()
        } else {
            self.base.join(&self.rel)
        }
    }

    /// A path further below.
    pub fn join(&self, rel: impl AsRef<Path>) -> At {
        At::new(&self.base, self.rel.join(rel))
    }

    /// The same path with `suffix` added to its last name (`key` → `key.pub`).
    pub fn with_suffix(&self, suffix: &str) -> At {
        let mut rel = self.rel.clone().into_os_string();
        rel.push(suffix);
        At::new(&self.base, rel)
    }

    /// The directory root owns, opened.
    pub fn tree(&self) -> Result<Tree, HostError> {
        Tree::open(&self.base)
    }

    /// What is there now (not following a link); `None` when nothing is
    /// (nor its base); an error when a link is on the way.
    pub fn meta(&self) -> Result<Option<safe::Meta>, HostError> {
        match self.tree() {
            Ok(t) => t.meta(&self.rel),
            Err(HostError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path().display())
    }
}

/// Where root reads a file from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file the administrator declared outside every agent's tree (or
    /// root's own, like the running binary): read by its path, regular files only.
    Trusted(PathBuf),
    /// A file inside an agent's tree or nuketown's key store: read beneath
    /// it without links, and only if `owner` owns it.
    Beneath {
        /// Where.
        at: At,
        /// Who must own it.
        owner: u32,
    },
    /// A secret in a sops file, decrypted by `sops` as root (the town's
    /// `sopsFile`, outside every agent's tree).
    Sops {
        /// The sops file.
        file: PathBuf,
        /// The secret's name as sops-nix reads it: `ada/ssh-key` is the
        /// key `ssh-key` under `ada`.
        name: String,
    },
}

impl Origin {
    /// Its path, for messages.
    pub fn path(&self) -> PathBuf {
        match self {
            Origin::Trusted(p) => p.clone(),
            Origin::Beneath { at, .. } => at.path(),
            Origin::Sops { file, .. } => file.clone(),
        }
    }

    /// Its bytes.
    pub fn read(&self) -> Result<Vec<u8>, HostError> {
        match self {
            Origin::Trusted(p) => safe::read_trusted(p, u64::MAX),
            Origin::Beneath { at, owner } => at.tree()?.read(&at.rel, Some(*owner), MAX_AGENT_FILE),
            Origin::Sops { file, name } => sops_decrypt(file, name),
        }
    }

    /// Whether anything is there (a link or FIFO too: reading it then
    /// refuses it by name, rather than calling it missing). For a sops
    /// secret: whether its file is there (the secret is read when used).
    pub fn exists(&self) -> bool {
        match self {
            Origin::Trusted(p) => p.exists(),
            Origin::Beneath { at, .. } => !matches!(at.meta(), Ok(None)),
            Origin::Sops { file, .. } => file.exists(),
        }
    }

    /// The file beside it with `suffix` added to its name.
    pub fn with_suffix(&self, suffix: &str) -> Origin {
        match self {
            Origin::Trusted(p) => {
                let mut s = p.clone().into_os_string();
                s.push(suffix);
                Origin::Trusted(s.into())
            }
            Origin::Beneath { at, owner } => Origin::Beneath {
                at: at.with_suffix(suffix),
                owner: *owner,
            },
            Origin::Sops { file, name } => Origin::Sops {
                file: file.clone(),
                name: format!("{name}{suffix}"),
            },
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Sops { file, name } => {
                write!(f, "sops secret {name} in {}", file.display())
            }
            _ => write!(f, "{}", self.path().display()),
        }
    }
}

/// The secret `name` of the sops file `file`, as sops-nix reads it: each
/// `/` of the name a level of the file's tree (`ada/ssh-key` is
/// `["ada"]["ssh-key"]`). sops finds its own key (an age key in
/// `SOPS_AGE_KEY_FILE` or root's `~/.config/sops/age/keys.txt`, a cloud
/// KMS, PGP); units started without `HOME` look in root's home.
pub fn sops_decrypt(file: &Path, name: &str) -> Result<Vec<u8>, HostError> {
    let extract: String = name
        .split('/')
        .map(|k| format!("[{}]", serde_json::Value::from(k)))
        .collect();
    let mut cmd = std::process::Command::new("sops");
    cmd.args(["--decrypt", "--extract", &extract]).arg(file);
    if std::env::var_os("HOME").is_none() {
        cmd.env(
            "HOME",
            system::user("root").map_or("/root".into(), |a| a.home),
        );
    }
    let shown = format!("sops --decrypt --extract '{extract}' {}", file.display());
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| HostError::Tool {
            command: shown.clone(),
            message: if e.kind() == std::io::ErrorKind::NotFound {
                "sops is not installed; install it (https://github.com/getsops/sops/releases) to read the town's sops secrets, or name the files instead".to_string()
            } else {
                e.to_string()
            },
        })?;
    if !out.status.success() {
        return Err(HostError::Tool {
            command: shown,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Rendered text.
    Text(String),
    /// A copy of another file (keys, secrets, binaries).
    CopyOf(Origin),
    /// The public half of an SSH private key: its `.pub` beside it, or
    /// derived from the private key (`ssh-keygen -y`, the key on stdin).
    PublicKeyOf(Origin),
    /// An `allowed_signers` line for `email` with the public key of `key`.
    AllowedSigner {
        /// The principal.
        email: String,
        /// The private key whose public half is allowed.
        key: Origin,
    },
    /// The town's `allowed_signers`: a line for each principal and key, in order.
    AllowedSigners(Vec<(String, Origin)>),
}

/// The public half of the private key `key` (its `.pub` beside it, else derived).
pub fn public_key(key: &Origin) -> Result<Vec<u8>, HostError> {
    if let Ok(b) = key.with_suffix(".pub").read() {
        return Ok(b);
    }
    let owner = match key {
        Origin::Beneath { owner, .. } if *owner != 0 => Some(*owner),
        _ => None,
    };
    derive_public(&key.read()?, owner).map_err(|e| match e {
        HostError::Tool { message, .. } => HostError::Conflict(format!(
            "{key} is not an unencrypted SSH private key: {}",
            nuketown_town::display::clean(&message)
        )),
        e => e,
    })
}

/// `ssh-keygen -y` of a private key's bytes. A key from an agent's tree is
/// parsed by ssh-keygen running as that agent (`as_uid`), from a file of its
/// own in a private directory handed to it; root's own keys go on stdin.
fn derive_public(private: &[u8], as_uid: Option<u32>) -> Result<Vec<u8>, HostError> {
    let args = |f: &Path| -> Vec<std::ffi::OsString> {
        vec!["-y".into(), "-P".into(), "".into(), "-f".into(), f.into()]
    };
    let Some(uid) = as_uid else {
        let out =
            system::run_with_input("ssh-keygen", args(Path::new("/dev/stdin")), private, None)?;
        return Ok(out.stdout);
    };
    let gid = system::user_by_uid(uid).map_or(uid, |a| a.gid);
    let tmp = safe::PrivateDir::new("nuketown-key")?;
    let file = tmp.path().join("key");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&file)
            .map_err(HostError::io(&file))?;
        f.write_all(private).map_err(HostError::io(&file))?;
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(HostError::io(&file))?;
    }
    tmp.give_to(uid, gid)?;
    let out = system::run_with_input("ssh-keygen", args(&file), b"", Some(uid))?;
    Ok(out.stdout)
}

impl Source {
    /// The bytes, as they would be written now.
    pub fn bytes(&self) -> Result<Vec<u8>, HostError> {
        match self {
            Source::Text(t) => Ok(t.clone().into_bytes()),
            Source::CopyOf(o) => o.read(),
            Source::PublicKeyOf(o) => public_key(o),
            Source::AllowedSigner { email, key } => signer_line(email, key),
            Source::AllowedSigners(list) => {
                let mut text = b"# Written by nuketown: the town's agents and the keys that sign their commits.\n".to_vec();
                for (email, key) in list {
                    text.extend(signer_line(email, key)?);
                }
                Ok(text)
            }
        }
    }
}

/// `<email> namespaces="git" <type> <key>`: git may verify `email`'s commits with the key.
fn signer_line(email: &str, key: &Origin) -> Result<Vec<u8>, HostError> {
    let key = String::from_utf8_lossy(&public_key(key)?).into_owned();
    let key: Vec<&str> = key.split_whitespace().take(2).collect();
    Ok(format!("{email} namespaces=\"git\" {}\n", key.join(" ")).into_bytes())
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
        /// No subordinate uid/gid ranges (`newuidmap` would let the user
        /// own files as ids that are no one's): every agent.
        no_subordinate_ids: bool,
    },
    /// `usermod` to fix home/shell/primary group, or to take subordinate ids away.
    ModifyUser {
        name: String,
        what: String,
        args: Vec<String>,
    },
    /// `gpasswd -a`.
    AddToGroup { user: String, group: String },
    /// `gpasswd -d`: agents never sit in sudo/wheel/admin.
    RemoveFromGroup { user: String, group: String },
    /// Create an agent's home (`agentsDir` + name): a btrfs subvolume when
    /// `subvolume`, else a directory; made under a temporary name and renamed
    /// into place, so a home never exists with the wrong owner or mode.
    Home {
        at: At,
        uid: u32,
        gid: u32,
        subvolume: bool,
    },
    /// Create or replace a symbolic link (enabling a unit).
    Symlink { link: PathBuf, target: PathBuf },
    /// `systemctl daemon-reload`.
    DaemonReload,
    /// `systemctl stop` a unit that is no longer wanted (before its file goes).
    StopUnit { name: String },
    /// Delete levelled homes left in the trash.
    EmptyTrash { agents_dir: PathBuf },
    /// Create or fix a directory's mode and owner (by descriptor).
    Dir {
        at: At,
        mode: u32,
        uid: u32,
        gid: u32,
        /// Nothing is there yet.
        new: bool,
    },
    /// Create or replace a file (atomically) with mode and owner.
    File {
        at: At,
        source: Source,
        mode: u32,
        uid: u32,
        gid: u32,
        /// Nothing is there yet.
        new: bool,
    },
    /// Create an empty file if missing (a bind-mount target or persisted file).
    Touch {
        at: At,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Bind-mount `source` (a file there must be `owner`'s) onto `target`.
    Bind { source: At, owner: u32, target: At },
    /// Generate an ed25519 key for `agent`, sealed in the town's key store.
    GenerateSshKey {
        agent: String,
        store: PathBuf,
        comment: String,
    },
    /// Take a private key into the town's key store (sealed): a declared
    /// key, or a file an older nuketown kept (read beneath its tree, its
    /// owner's only, checked as that owner); `remove`: delete that file then.
    ImportSshKey {
        agent: String,
        store: PathBuf,
        from: Origin,
        remove: bool,
    },
    /// `useradd --system` for a service of the town (the credential
    /// gateway): no home, no shell, no subordinate ids.
    CreateSystemUser { name: String, comment: String },
    /// Seal a credential into the town's key store (read as root from its
    /// source, never placed where the agent reads).
    ImportCredential {
        agent: String,
        name: String,
        store: PathBuf,
        from: Origin,
    },
    /// Remove a sealed credential no longer declared.
    ForgetCredential {
        agent: String,
        name: String,
        store: PathBuf,
    },
    /// Remove a secret's copy the town once placed in the agent's tree and
    /// now hands to the gateway instead.
    ForgetSecretFile { at: At },
    /// Remove a private key file the town no longer keeps there (the home's
    /// `~/.ssh/id_ed25519`, a plain key in the store or persist dir).
    ForgetKeyFile { at: At },
    /// Import an armored private key into the agent's GnuPG home (gpg runs as the agent).
    ImportGpgKey { user: String, key: Origin },
    /// Import the public half of `agent`'s private key `key` into a human's
    /// keyring (gpg runs as the human), so the human's git verifies the
    /// agent's GPG signatures.
    ImportGpgPublic {
        user: String,
        agent: String,
        /// The agent's address: the only user id that goes along.
        email: String,
        key: Origin,
    },
    /// Make the system git configuration include the town's (`[include] path`).
    GitInclude { config: PathBuf, include: PathBuf },
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
    /// Load the agents' network rules into nftables (one `nft -f`
    /// transaction: all or nothing), then keep them at `path` for the hall,
    /// which loads them again when it starts.
    Nftables {
        path: PathBuf,
        text: String,
        table: String,
    },
    /// Remove a user no longer in the town (its home too).
    RemoveUser { name: String, home: At },
    /// Remove a directory tree (a pruned agent's home or persist dir).
    RemoveTree { at: At },
    /// Remove a file.
    RemoveFile { path: PathBuf },
    /// Record what apply manages.
    SaveState { path: PathBuf, text: String },
    /// Make or fix a shared directory: root's, setgid to `group`, each
    /// member's ACL entry (access and default), nothing for anyone else.
    SharedDir {
        /// The directory (beneath its parent, which root owns).
        at: At,
        /// `sharedDirs.<name>`.
        name: String,
        /// Its group.
        group: String,
        /// The members (uids resolved when it is made: a human may be new).
        members: Vec<(String, nuketown_town::SharedAccess)>,
        /// Nothing is there yet.
        new: bool,
    },
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
                at,
                subvolume: true,
                ..
            } => write!(f, "+ home {at} (btrfs subvolume, 0700)"),
            Change::Home { at, .. } => write!(f, "+ home {at} (0700)"),
            Change::Dir {
                at,
                mode,
                new: true,
                ..
            } => write!(f, "+ dir {at} ({mode:04o})"),
            Change::Dir {
                at, mode, uid, gid, ..
            } => write!(f, "~ dir {at} ({mode:04o} {uid}:{gid})"),
            Change::File { at, new: true, .. } => write!(f, "+ file {at}"),
            Change::File { at, .. } => write!(f, "~ file {at}"),
            Change::Touch { at, .. } => write!(f, "+ file {at} (empty)"),
            Change::Bind { source, target, .. } => write!(f, "+ bind {source} -> {target}"),
            Change::GenerateSshKey { agent, .. } => {
                write!(f, "+ ssh key of {agent} (ed25519, sealed in the town's key store)")
            }
            Change::ImportSshKey {
                agent,
                from,
                remove: true,
                ..
            } => write!(
                f,
                "+ ssh key of {agent} imported into the town's key store from {from}, then that file removed"
            ),
            Change::ImportSshKey { agent, from, .. } => {
                write!(f, "+ ssh key of {agent} imported into the town's key store from {from}")
            }
            Change::ForgetKeyFile { at } => {
                write!(f, "- private key file {at} (the town holds the key)")
            }
            Change::CreateSystemUser { name, comment } => {
                write!(f, "+ system user {name} ({comment})")
            }
            Change::ImportCredential {
                agent, name, from, ..
            } => write!(
                f,
                "+ credential {name} of {agent} sealed in the town's key store from {from} (used through the gateway, never in {agent}'s reach)"
            ),
            Change::ForgetCredential { agent, name, .. } => {
                write!(f, "- credential {name} of {agent} (no longer declared)")
            }
            Change::ForgetSecretFile { at } => {
                write!(f, "- secret file {at} (the gateway holds it now)")
            }
            Change::ImportGpgKey { user, key } => write!(f, "+ gpg key {key} for {user}"),
            Change::ImportGpgPublic { user, agent, .. } => {
                write!(f, "+ {agent}'s public gpg key in {user}'s keyring")
            }
            Change::GitInclude { config, include } => write!(
                f,
                "+ include {} in {} (git verifies the agents' signatures)",
                include.display(),
                config.display()
            ),
            Change::ReloadUdev => write!(f, "~ udev: reload rules"),
            Change::Symlink { link, target } => {
                write!(f, "+ link {} -> {}", link.display(), target.display())
            }
            Change::DaemonReload => write!(f, "~ systemd: daemon-reload"),
            Change::StopUnit { name } => write!(f, "- systemd: stop {name}"),
            Change::EmptyTrash { agents_dir } => write!(
                f,
                "- levelled homes in {}",
                crate::home::trash_dir(agents_dir).display()
            ),
            Change::DeviceAcl { agent, node, .. } => {
                write!(f, "+ acl {agent} on {}", node.display())
            }
            Change::Sudoers { path, .. } if !path.exists() => {
                write!(f, "+ sudoers {}", path.display())
            }
            Change::Sudoers { path, .. } => write!(f, "~ sudoers {}", path.display()),
            Change::Nftables { table, text, .. } if text.contains("delete table") => write!(
                f,
                "- nftables inet {table} (no agent's egress is restricted)"
            ),
            Change::Nftables { table, .. } => {
                write!(f, "~ nftables inet {table} (agents' egress, by uid)")
            }
            Change::RemoveUser { name, home } => write!(f, "- user {name} and its home {home}"),
            Change::RemoveTree { at } => write!(f, "- dir {at}"),
            Change::RemoveFile { path } => write!(f, "- file {}", path.display()),
            Change::SaveState { path, .. } => write!(f, "~ state {}", path.display()),
            Change::SharedDir {
                at,
                group,
                members,
                new,
                ..
            } => {
                let mut who: Vec<String> = members
                    .iter()
                    .map(|(w, a)| format!("{w} {}", a.as_str()))
                    .collect();
                if who.is_empty() {
                    who.push("no members: closed".into());
                }
                write!(
                    f,
                    "{} shared dir {at} (2770, group {group}: {})",
                    if *new { "+" } else { "~" },
                    who.join(", ")
                )
            }
        }
    }
}

/// Write `bytes` to a path only root controls, atomically, with mode and owner.
pub fn write_file(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<(), HostError> {
    let at = At::system(path);
    at.tree()?.write(&at.rel, bytes, mode, uid, gid)
}

/// Generate a key pair in a private directory, then store both halves at
/// `key` (root's, 0600 and 0644): the public half first, so a key that
/// exists always has its `.pub`.
/// The town's key store at `dir`, sealed with the town's sealing key
/// (made on first use; see `nuketown_keys::sealing`).
pub fn key_store(dir: &Path) -> Result<nuketown_keys::Store, HostError> {
    let path = nuketown_keys::sealing::default_path();
    let sealing = nuketown_keys::SealingKey::load_or_create(&path)
        .map_err(|e| HostError::Conflict(format!("the town's sealing key: {e}")))?;
    Ok(nuketown_keys::Store::new(dir, sealing))
}

fn import_gpg_key(user: &str, key: &Origin) -> Result<(), HostError> {
    let bytes = zeroize::Zeroizing::new(key.read()?);
    import_gpg(user, &bytes, &key.to_string())
}

/// `gpg --import` of `bytes` as `user`, into their own keyring.
fn import_gpg(user: &str, bytes: &[u8], what: &str) -> Result<(), HostError> {
    let mut cmd = system::as_user(user, "gpg");
    cmd.args(["--batch", "--quiet", "--import"])
        .stdin(std::process::Stdio::piped());
    let shown = format!("gpg --import {what} (as {user})");
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
        .write_all(bytes)
        .map_err(|e| HostError::Tool {
            command: shown.clone(),
            message: e.to_string(),
        })?;
    let out = child.wait_with_output().map_err(|e| HostError::Tool {
        command: shown.clone(),
        message: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(HostError::Tool {
            command: shown,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
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
                no_subordinate_ids,
            } => {
                let mut args: Vec<String> = Vec::new();
                if *no_subordinate_ids {
                    args.extend([
                        "-K".into(),
                        "SUB_UID_COUNT=0".into(),
                        "-K".into(),
                        "SUB_GID_COUNT=0".into(),
                    ]);
                }
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
                at,
                uid,
                gid,
                subvolume,
            } => crate::home::create(at, *uid, *gid, *subvolume)?,
            Change::Dir {
                at, mode, uid, gid, ..
            } => at.tree()?.mkdir(&at.rel, *mode, *uid, *gid)?,
            Change::File {
                at,
                source,
                mode,
                uid,
                gid,
                ..
            } => {
                let bytes = source.bytes()?;
                at.tree()?.write(&at.rel, &bytes, *mode, *uid, *gid)?
            }
            Change::Touch { at, mode, uid, gid } => {
                at.tree()?.create(&at.rel, *mode, *uid, *gid)?;
            }
            Change::Bind {
                source,
                owner,
                target,
            } => safe::bind(
                &source.tree()?,
                &source.rel,
                *owner,
                &target.tree()?,
                &target.rel,
            )?,
            Change::GenerateSshKey {
                agent,
                store,
                comment,
            } => {
                key_store(store)?
                    .generate(agent, comment)
                    .map_err(|e| HostError::Conflict(format!("{agent}'s key: {e}")))?;
            }
            Change::ImportSshKey {
                agent,
                store,
                from,
                remove,
            } => {
                let private = zeroize::Zeroizing::new(from.read()?);
                if let Origin::Beneath { owner, .. } = from {
                    if *owner != 0 {
                        // Checked as its owner first, like every key from an agent's tree.
                        derive_public(&private, Some(*owner)).map_err(|_| {
                            HostError::Conflict(format!(
                                "{from} is not an unencrypted SSH private key; move it away to have a new key generated"
                            ))
                        })?;
                    }
                }
                key_store(store)?.import(agent, &private).map_err(|e| {
                    HostError::Conflict(format!(
                        "{from}: {e}; give {agent} an unencrypted ed25519 key"
                    ))
                })?;
                if *remove {
                    if let Origin::Beneath { at, .. } = from {
                        at.tree()?.remove(&at.rel)?;
                    }
                }
            }
            Change::ForgetKeyFile { at } | Change::ForgetSecretFile { at } => {
                at.tree()?.remove(&at.rel)?
            }
            Change::CreateSystemUser { name, comment } => {
                let nologin = [
                    "/usr/sbin/nologin",
                    "/sbin/nologin",
                    "/run/current-system/sw/bin/nologin",
                ]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .unwrap_or("/bin/false");
                run(
                    "useradd",
                    [
                        "--system",
                        "-M",
                        "-d",
                        "/nonexistent",
                        "-s",
                        nologin,
                        "-c",
                        comment,
                        "-U",
                        name,
                    ],
                )?;
            }
            Change::ImportCredential {
                agent,
                name,
                store,
                from,
            } => {
                let secret = zeroize::Zeroizing::new(from.read()?);
                key_store(store)?
                    .put_credential(agent, name, &secret)
                    .map_err(|e| {
                        HostError::Conflict(format!(
                            "agents.{agent}.credentials.{name} ({from}): {e}"
                        ))
                    })?;
            }
            Change::ForgetCredential { agent, name, store } => {
                key_store(store)?
                    .remove_credential(agent, name)
                    .map_err(|e| {
                        HostError::Conflict(format!("{agent}'s credential {name}: {e}"))
                    })?;
            }
            Change::ImportGpgKey { user, key } => import_gpg_key(user, key)?,
            Change::ImportGpgPublic {
                user, key, email, ..
            } => {
                let public = crate::plan::gpg_public(key, email)
                    .map_err(|e| HostError::Conflict(format!("{key}: {e}")))?;
                import_gpg(user, &public, &format!("the public half of {key}"))?
            }
            Change::GitInclude { config, include } => {
                if config.symlink_metadata().is_ok_and(|m| !m.is_file()) {
                    return Err(HostError::Refused {
                        path: config.clone(),
                        why: "not a regular file (a link: managed elsewhere)".into(),
                    });
                }
                if let Some(dir) = config.parent() {
                    fs::create_dir_all(dir).map_err(HostError::io(dir))?;
                }
                run(
                    "git",
                    [
                        std::ffi::OsStr::new("config"),
                        "--file".as_ref(),
                        config.as_os_str(),
                        "--add".as_ref(),
                        "include.path".as_ref(),
                        include.as_os_str(),
                    ],
                )?;
            }
            Change::DeviceAcl { argv, .. } => {
                run(&argv[0], &argv[1..])?;
            }
            Change::EmptyTrash { agents_dir } => crate::home::empty_trash(agents_dir)?,
            Change::Symlink { link, target } => {
                let _ = fs::remove_file(link);
                std::os::unix::fs::symlink(target, link).map_err(HostError::io(link))?;
            }
            Change::DaemonReload => {
                run("systemctl", ["daemon-reload"])?;
            }
            Change::StopUnit { name } => {
                run("systemctl", ["stop", name.as_str()])?;
            }
            Change::ReloadUdev => {
                // udevd may not run (containers, CI): the rules still apply at next boot.
                if let Err(e) = run("udevadm", ["control", "--reload"]) {
                    tracing::warn!("udev rules written but not reloaded: {e}");
                }
            }
            Change::Sudoers { path, text } => {
                crate::sudoers::install(Path::new(crate::sudoers::MAIN), path, text)?;
            }
            Change::Nftables { path, text, table } => {
                let removal = text.contains("delete table");
                if !removal || nuketown_town::network::table_exists(table) {
                    nuketown_town::network::nft(text).map_err(HostError::Conflict)?;
                }
                // Before the town's other files: its directory may not exist yet.
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(HostError::io(dir))?;
                }
                write_file(path, text.as_bytes(), 0o644, 0, 0)?;
            }
            Change::RemoveUser { name, home } => {
                // Stop whatever still runs as the user first (or userdel
                // refuses), so nothing of the agent's moves while its mounts go.
                if let Some(acct) = system::user(name) {
                    system::stop_processes(acct.uid)?;
                }
                home.tree()?.unmount_all(&home.rel)?;
                run("userdel", [name.as_str()])?;
                crate::home::remove(&home.path())?;
            }
            Change::RemoveTree { at } => {
                at.tree()?.unmount_all(&at.rel)?;
                let path = at.path();
                // std's remove_dir_all works by descriptor and never follows a link.
                fs::remove_dir_all(&path).map_err(HostError::io(&path))?
            }
            Change::RemoveFile { path } => fs::remove_file(path).map_err(HostError::io(path))?,
            Change::SaveState { path, text } => {
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(HostError::io(dir))?;
                }
                write_file(path, text.as_bytes(), 0o644, 0, 0)?;
            }
            Change::SharedDir {
                at,
                name,
                group,
                members,
                ..
            } => {
                let uids = crate::shared::member_uids(name, members)?;
                crate::shared::make(at, group, &uids)?
            }
        }
        Ok(())
    }
}
