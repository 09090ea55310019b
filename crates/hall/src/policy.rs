//! Deciding without a human: the agent's deny and auto-approve rules,
//! time-boxed grants, and the mock mode file. Anything else waits for a human.
//! Also what the approver is warned about: files the agent could change
//! between the decision and the exec.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nuketown_town::{Agent, CommandRule, Town};

use crate::protocol::{Ask, DecidedBy};

/// A decision taken without asking a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Automatic {
    /// Approved or denied.
    pub approved: bool,
    /// Who decided.
    pub by: DecidedBy,
    /// Why, for the agent and the audit log.
    pub reason: String,
    /// From the mock mode file.
    pub mock: bool,
}

/// "This exact argv, as this target, for this agent, until then."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The agent.
    pub agent: String,
    /// The exact argv.
    pub argv: Vec<String>,
    /// The target user.
    pub user: String,
    /// The target group, if one was asked for.
    pub group: Option<String>,
    /// Until (ms since the epoch).
    pub until_ms: u64,
    /// The approver who granted it.
    pub by: String,
}

impl Grant {
    /// Whether this grant covers `ask` by `agent` at `now_ms`.
    pub fn covers(&self, agent: &str, ask: &Ask, now_ms: u64) -> bool {
        self.until_ms > now_ms
            && self.agent == agent
            && self.argv == ask.argv
            && self.user == ask.user
            && self.group == ask.group
    }
}

/// The agent whose uid is `uid`, if it is an enabled agent of the town.
pub fn agent_by_uid(town: &Town, uid: u32) -> Option<(&String, &Agent)> {
    town.enabled_agents().find(|(_, a)| a.uid == uid)
}

fn by_policy(approved: bool, reason: String) -> Automatic {
    Automatic {
        approved,
        by: DecidedBy {
            who: "policy".into(),
            channel: "policy".into(),
        },
        reason,
        mock: false,
    }
}

/// Whether two paths name the same file (links followed).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Whether a rule's program names the executable `exe` (an absolute path).
///
/// A program without a `/` means what `sudo NAME` runs: the same lookup in
/// the fixed PATH, never "any file called NAME" — except in deny rules, where
/// any program of that name matches (a deny rule errs towards denying). A
/// path matches itself, or another path to the same file (`/bin/true` and
/// `/usr/bin/true` on a merged /usr).
pub fn program_matches(rule_program: &str, exe: &str, deny: bool) -> bool {
    if rule_program == exe {
        return true;
    }
    let exe_path = Path::new(exe);
    if !rule_program.contains('/') {
        if deny && exe_path.file_name().is_some_and(|n| n == rule_program) {
            return true;
        }
        return crate::entry::resolve(rule_program, Path::new("/"), crate::entry::SAFE_PATH)
            .is_ok_and(|p| same_file(&p, exe_path));
    }
    rule_program.starts_with('/') && same_file(Path::new(rule_program), exe_path)
}

/// Whether `rule` matches `argv` (program as [`program_matches`], the
/// arguments exactly, or as a prefix when the rule says so).
pub fn rule_matches(rule: &CommandRule, argv: &[String], deny: bool) -> bool {
    let Some((program, args)) = rule.argv.split_first() else {
        return false;
    };
    let Some((exe, rest)) = argv.split_first() else {
        return false;
    };
    program_matches(program, exe, deny)
        && if rule.prefix {
            rest.len() >= args.len() && rest[..args.len()] == args[..]
        } else {
            rest == args
        }
}

/// The agent's rules and grants: `Some` when they decide. Deny rules win over
/// everything; auto-approve rules cover commands as root only (another target
/// always asks a human); then grants. Neither an auto-approval nor a grant
/// ever covers a program the agent can change (`agent_can_write`): that
/// always goes to a human, with a warning.
pub fn by_rules(
    name: &str,
    agent: &Agent,
    ask: &Ask,
    agent_can_write: bool,
    grants: &[Grant],
    now_ms: u64,
) -> Option<Automatic> {
    if !agent.sudo.enable {
        return Some(by_policy(
            false,
            format!("agents.{name}.sudo.enable is false"),
        ));
    }
    if let Some(i) = agent
        .sudo
        .deny
        .iter()
        .position(|r| rule_matches(r, &ask.argv, true))
    {
        return Some(by_policy(
            false,
            format!("denied by policy: matches agents.{name}.sudo.deny[{i}]"),
        ));
    }
    if agent_can_write {
        return None;
    }
    if ask.user == "root" && ask.group.is_none() {
        if let Some(i) = agent
            .sudo
            .auto_approve
            .iter()
            .position(|r| rule_matches(r, &ask.argv, false))
        {
            return Some(by_policy(
                true,
                format!("approved by policy: matches agents.{name}.sudo.autoApprove[{i}]"),
            ));
        }
    }
    grants
        .iter()
        .find(|g| g.covers(name, ask, now_ms))
        .map(|g| Automatic {
            approved: true,
            by: DecidedBy {
                who: g.by.clone(),
                channel: "grant".into(),
            },
            reason: format!(
                "approved by {}'s time-boxed grant ({} s left)",
                g.by,
                (g.until_ms - now_ms).div_ceil(1000)
            ),
            mock: false,
        })
}

/// Why the mock mode file was not honoured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MockRefusal {
    /// There is no such file (the normal case: no mock mode).
    Absent,
    /// It exists but may not decide, for this reason.
    Untrusted(String),
}

/// The mock mode file, honoured only when it is a regular file (not a link)
/// owned by root or an approver, writable by nobody else, in a directory
/// nobody else can write, containing `MOCK_APPROVED` or `MOCK_DENIED`.
/// Every decision it makes says `[MOCK]`.
pub fn mock(mode_file: &Path, approvers: &[(u32, String)]) -> Result<Automatic, MockRefusal> {
    let untrusted = |why: String| {
        Err(MockRefusal::Untrusted(format!(
            "ignoring the mock mode file {}: {why}",
            mode_file.display()
        )))
    };
    let owner_name = |uid: u32| -> Option<String> {
        if uid == 0 {
            Some("root".into())
        } else {
            approvers
                .iter()
                .find(|(u, _)| *u == uid)
                .map(|(_, n)| n.clone())
        }
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
        .open(mode_file)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(MockRefusal::Absent),
        Err(e) => return untrusted(format!("cannot open it without following links ({e})")),
    };
    let Ok(meta) = file.metadata() else {
        return untrusted("cannot stat it".into());
    };
    if !meta.is_file() {
        return untrusted("not a regular file".into());
    }
    let Some(owner) = owner_name(meta.uid()) else {
        return untrusted(format!(
            "owned by uid {}, who is neither root nor an approver",
            meta.uid()
        ));
    };
    if meta.mode() & 0o022 != 0 {
        return untrusted(format!(
            "mode {:o} lets group or others write it",
            meta.mode() & 0o7777
        ));
    }
    let dir = mode_file.parent().unwrap_or(Path::new("/"));
    match std::fs::metadata(dir) {
        Ok(d) if owner_name(d.uid()).is_none() => {
            return untrusted(format!(
                "its directory {} is owned by uid {}",
                dir.display(),
                d.uid()
            ))
        }
        Ok(d) if d.mode() & 0o022 != 0 => {
            return untrusted(format!(
                "its directory {} is writable by group or others",
                dir.display()
            ))
        }
        Ok(_) => {}
        Err(e) => return untrusted(format!("cannot stat {}: {e}", dir.display())),
    }
    let mut text = String::new();
    if file.take(64).read_to_string(&mut text).is_err() {
        return untrusted("not readable text".into());
    }
    let approved = match text.trim() {
        "MOCK_APPROVED" => true,
        "MOCK_DENIED" => false,
        other => {
            return untrusted(format!(
                "it says {other:?}, not MOCK_APPROVED or MOCK_DENIED"
            ))
        }
    };
    Ok(Automatic {
        approved,
        by: DecidedBy {
            who: owner.clone(),
            channel: "mock".into(),
        },
        reason: format!(
            "[MOCK] {} by {owner}'s mock mode file",
            if approved { "approved" } else { "denied" }
        ),
        mock: true,
    })
}

/// A Unix identity, for "could this user change that file?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Primary and supplementary group ids.
    pub gids: Vec<u32>,
}

impl Identity {
    /// The identity of the user `uid`, with the groups the system gives them.
    pub fn of_uid(uid: u32) -> Identity {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten();
        let gids = user
            .and_then(|u| {
                let name = std::ffi::CString::new(u.name).ok()?;
                nix::unistd::getgrouplist(&name, u.gid).ok()
            })
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
        Identity { uid, gids }
    }

    fn can_write(&self, m: &std::fs::Metadata) -> bool {
        let mode = m.mode();
        if self.uid == 0 {
            true
        } else if m.uid() == self.uid {
            mode & 0o200 != 0
        } else if self.gids.contains(&m.gid()) {
            mode & 0o020 != 0
        } else {
            mode & 0o002 != 0
        }
    }

    /// Whether this user can replace `entry` in `dir` (write the directory,
    /// respecting the sticky bit).
    fn can_replace(&self, dir: &Path, entry: &Path) -> bool {
        let Ok(d) = std::fs::metadata(dir) else {
            return false;
        };
        if !self.can_write(&d) {
            return false;
        }
        if d.mode() & 0o1000 == 0 || d.uid() == self.uid {
            return true;
        }
        // Sticky directory: only entries they own, or new ones.
        std::fs::symlink_metadata(entry).map_or(true, |e| e.uid() == self.uid)
    }

    /// Whether this user could change what `path` runs or holds: write the
    /// file, or replace it or any directory or symbolic link on the way to it
    /// (every link followed). POSIX ACLs are not consulted.
    pub fn can_change(&self, path: &Path) -> bool {
        let mut hop: PathBuf = path.to_path_buf();
        for _ in 0..40 {
            if self.can_change_entry(&hop) {
                return true;
            }
            match std::fs::symlink_metadata(&hop) {
                Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(&hop) {
                    Ok(target) => {
                        hop = hop.parent().unwrap_or(Path::new("/")).join(target);
                    }
                    Err(_) => return false,
                },
                _ => break,
            }
        }
        match std::fs::canonicalize(path) {
            Ok(real) => self.can_change_entry(&real),
            Err(_) => false,
        }
    }

    fn can_change_entry(&self, path: &Path) -> bool {
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if !m.file_type().is_symlink() && self.can_write(&m) {
                return true;
            }
        }
        let mut entry = path;
        while let Some(dir) = entry.parent() {
            if dir.as_os_str().is_empty() {
                break;
            }
            if self.can_replace(dir, entry) {
                return true;
            }
            entry = dir;
        }
        false
    }
}

/// What the approver is warned about: whether the agent can change the
/// executable, and which other arguments name files it can change.
pub fn writable_by(who: &Identity, ask: &Ask) -> (bool, Vec<String>) {
    let exe = who.can_change(Path::new(&ask.argv[0]));
    let args = ask.argv[1..]
        .iter()
        .filter(|a| !a.is_empty() && !a.starts_with('-'))
        .filter(|a| {
            let p = Path::new(&ask.cwd).join(a);
            std::fs::symlink_metadata(&p).is_ok() && who.can_change(&p)
        })
        .cloned()
        .collect();
    (exe, args)
}
