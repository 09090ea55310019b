//! Deciding without a human: the agent's deny and auto-approve rules,
//! time-boxed grants, and the mock mode file. A denial may come from any of
//! them; an approval only for a request whose every file the hall proved
//! root's (see [`crate::proof`]). Anything else waits for a human.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use nuketown_town::{Agent, CommandRule, Town};

use crate::proof::Assessment;
use crate::protocol::{Ask, DecidedBy};
use crate::town::Loaded;

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

/// "This exact argv, as this target, for this agent, until then": for the
/// very program and working directory the human saw (device and inode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The agent.
    pub agent: String,
    /// The exact argv.
    pub argv: Vec<String>,
    /// The program's device and inode.
    pub program: (u64, u64),
    /// The working directory's device and inode.
    pub cwd: (u64, u64),
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
            && self.program == (ask.program.dev, ask.program.ino)
            && self.cwd == (ask.cwd.dev, ask.cwd.ino)
            && self.user == ask.user
            && self.group == ask.group
    }
}

/// The agent whose uid is `uid`, if it is an enabled agent of the town.
pub fn agent_by_uid(town: &Town, uid: u32) -> Option<(&String, &Agent)> {
    town.host_agents().find(|(_, a)| a.uid == uid)
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

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether a rule's program names the request's program: the same file
/// (device and inode) as the rule's path, or — for a rule without a `/` —
/// as what `sudo NAME` finds on the fixed PATH. Never "any file called
/// NAME", except in deny rules, which err towards denying: there a program
/// of that name, or a name the agent typed, matches too.
pub fn program_matches(rule_program: &str, ask: &Ask, deny: bool) -> bool {
    let program = &ask.program;
    if deny && !rule_program.contains('/') {
        let typed = ask.typed.as_deref().map(base_name);
        if base_name(&program.path) == rule_program || typed == Some(rule_program) {
            return true;
        }
    }
    let same = |id: Option<(u64, u64)>| id == Some((program.dev, program.ino));
    if rule_program.contains('/') {
        rule_program.starts_with('/') && same(crate::files::identity_of(rule_program))
    } else {
        let found =
            crate::files::open_program(rule_program, rustix::fs::CWD, crate::entry::SAFE_PATH)
                .ok()
                .map(|o| (o.file.dev, o.file.ino));
        same(found)
    }
}

/// Whether `rule` matches the request: its program as [`program_matches`],
/// the arguments as [`CommandRule::matches`] (exactly, or a prefix followed
/// by what the rule's `extra` allows; a bare prefix only in a deny rule).
pub fn rule_matches(rule: &CommandRule, ask: &Ask, deny: bool) -> bool {
    let Some(program) = rule.argv.first() else {
        return false;
    };
    if !deny && rule.prefix && rule.extra.is_none() {
        // "Anything after the prefix" approves nothing (the town refuses it too).
        return false;
    }
    let mut argv = ask.argv.clone();
    argv[0] = program.clone();
    rule.matches(&argv) && program_matches(program, ask, deny)
}

/// Whether `rule` of `sudo.commands` lets the agent ask for the request:
/// its program as [`program_matches`] names it, its arguments exactly, as a
/// prefix (anything after) or as its `extra` allows. Asking is all it
/// allows: a human (or a rule, for what is proven) still decides.
pub fn may_ask(rule: &CommandRule, ask: &Ask) -> bool {
    let Some(program) = rule.argv.first() else {
        return false;
    };
    let mut argv = ask.argv.clone();
    argv[0] = program.clone();
    rule.matches(&argv) && program_matches(program, ask, false)
}

/// The agent's rules and grants: `Some` when they decide. Deny rules win
/// over everything; then a request outside `sudo.commands` (when it lists
/// any) is denied; an approval needs the request proven root's
/// (`assessment.proven()`), else a human decides; auto-approve rules cover
/// commands as root only (another target always asks a human); then grants.
pub fn by_rules(
    name: &str,
    agent: &Agent,
    ask: &Ask,
    assessment: &Assessment,
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
        .position(|r| rule_matches(r, ask, true))
    {
        return Some(by_policy(
            false,
            format!("denied by policy: matches agents.{name}.sudo.deny[{i}]"),
        ));
    }
    let commands = &agent.sudo.commands;
    if !commands.is_empty() && !commands.iter().any(|r| may_ask(r, ask)) {
        return Some(by_policy(
            false,
            format!(
                "{} is not among the commands {name} may ask for (agents.{name}.sudo.commands); denied without asking",
                nuketown_town::display::show_str(&ask.program.path)
            ),
        ));
    }
    if !assessment.proven() {
        return None;
    }
    if ask.user == "root" && ask.group.is_none() {
        if let Some(i) = agent
            .sudo
            .auto_approve
            .iter()
            .position(|r| rule_matches(r, ask, false))
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

/// The mock mode file, honoured only when it is a regular file (not a
/// link) owned by root or an approver, proven beyond everyone else (nobody
/// else may write it or a directory on the way to it, nobody holds it open
/// for writing), containing `MOCK_APPROVED` or `MOCK_DENIED`. Every
/// decision it makes says `[MOCK]`. It approves only what a rule could.
pub fn mock(mode_file: &Path, loaded: &Loaded) -> Result<Automatic, MockRefusal> {
    let untrusted = |why: String| {
        Err(MockRefusal::Untrusted(format!(
            "ignoring the mock mode file {}: {why}",
            mode_file.display()
        )))
    };
    let approvers = &loaded.approvers;
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
    let Some(path) = mode_file.to_str().filter(|p| p.starts_with('/')) else {
        return untrusted("its path is not absolute UTF-8".into());
    };
    match rustix::fs::lstat(mode_file) {
        Err(rustix::io::Errno::NOENT) => return Err(MockRefusal::Absent),
        Err(e) => return untrusted(format!("cannot examine it ({e})")),
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode)
                != rustix::fs::FileType::RegularFile =>
        {
            return untrusted("not a regular file (a link or something else)".into())
        }
        Ok(_) => {}
    }
    let trust = loaded
        .trust
        .clone()
        .with_users(approvers.iter().map(|(u, _)| *u));
    let end = match crate::proof::prove_absolute(&trust, path) {
        Ok(end) => end,
        Err(why) => return untrusted(why),
    };
    let Some((fd, st)) = end.file else {
        return Err(MockRefusal::Absent);
    };
    let Some(owner) = owner_name(st.st_uid) else {
        return untrusted(format!(
            "owned by uid {}, who is neither root nor an approver",
            st.st_uid
        ));
    };
    let mut text = String::new();
    let read = rustix::fs::open(
        crate::files::proc_fd_path(fd.as_fd()),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map(std::fs::File::from)
    .map_err(std::io::Error::from)
    .and_then(|f| f.take(64).read_to_string(&mut text));
    if read.is_err() {
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
