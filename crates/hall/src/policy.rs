//! Deciding without a human: deny rules, auto-approve rules, time-boxed
//! grants and the mock mode file. Anything else waits for a human.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nuketown_town::{Agent, Town};

use crate::protocol::DecidedBy;

/// A decision taken without asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Automatic {
    /// Approved or denied.
    pub approved: bool,
    /// Who.
    pub by: DecidedBy,
    /// Why.
    pub reason: String,
    /// From the mock mode file.
    pub mock: bool,
}

/// "This exact argv as this user for this agent until then."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The agent.
    pub agent: String,
    /// The exact argv.
    pub argv: Vec<String>,
    /// The target user.
    pub user: String,
    /// Until (ms since the epoch).
    pub until_ms: u64,
    /// The approver who granted it.
    pub by: String,
}

/// The agent whose uid is `uid`, if it is an enabled agent of the town.
pub fn agent_by_uid(town: &Town, uid: u32) -> Option<(&String, &Agent)> {
    town.enabled_agents().find(|(_, a)| a.uid == uid)
}

fn policy(approved: bool, reason: String) -> Automatic {
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

/// Whether a rule matches the (resolved) argv. A rule naming its program
/// without a `/` means the program `sudo NAME` would run: the same lookup in
/// the safe PATH, never "any file called NAME".
pub fn rule_matches(rule: &nuketown_town::CommandRule, argv: &[String]) -> bool {
    if rule.argv.first().is_some_and(|p| !p.contains('/')) {
        let Some(resolved) = crate::resolve_program(&rule.argv[0], Path::new("/")) else { return false };
        let mut r = rule.clone();
        r.argv[0] = resolved.to_string_lossy().into_owned();
        return r.matches(argv);
    }
    rule.matches(argv)
}

/// Rules and grants: `Some` when they decide.
pub fn by_rules(
    name: &str,
    agent: &Agent,
    argv: &[String],
    user: &str,
    grants: &[Grant],
    now_ms: u64,
) -> Option<Automatic> {
    if !agent.sudo.enable {
        return Some(policy(false, format!("agents.{name}.sudo.enable is false")));
    }
    if let Some(i) = agent.sudo.deny.iter().position(|r| rule_matches(r, argv)) {
        return Some(policy(
            false,
            format!("matches agents.{name}.sudo.deny[{i}]"),
        ));
    }
    // Rules are about commands as root; another target user always asks a human.
    if user == "root" {
        if let Some(i) = agent.sudo.auto_approve.iter().position(|r| rule_matches(r, argv)) {
            return Some(policy(
                true,
                format!("matches agents.{name}.sudo.autoApprove[{i}]"),
            ));
        }
    }
    grants
        .iter()
        .find(|g| g.agent == name && g.argv == argv && g.user == user && g.until_ms > now_ms)
        .map(|g| Automatic {
            approved: true,
            by: DecidedBy {
                who: g.by.clone(),
                channel: "grant".into(),
            },
            reason: format!(
                "a time-boxed grant by {} ({} s left)",
                g.by,
                (g.until_ms - now_ms) / 1000
            ),
            mock: false,
        })
}

/// The mock mode file: honoured only when it is a regular file owned by root
/// or an approver and writable by nobody else.
pub fn mock(mode_file: &Path, approver_uids: &[(u32, String)]) -> Option<Automatic> {
    let meta = std::fs::symlink_metadata(mode_file).ok()?;
    if !meta.is_file() {
        return None;
    }
    let owner = if meta.uid() == 0 {
        "root".to_string()
    } else {
        approver_uids
            .iter()
            .find(|(u, _)| *u == meta.uid())
            .map(|(_, n)| n.clone())?
    };
    if meta.mode() & 0o022 != 0 {
        tracing::warn!(
            "ignoring {}: writable by group or others",
            mode_file.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(mode_file).ok()?;
    let approved = match text.trim() {
        "MOCK_APPROVED" => true,
        "MOCK_DENIED" => false,
        _ => return None,
    };
    Some(Automatic {
        approved,
        by: DecidedBy {
            who: owner.clone(),
            channel: "mock".into(),
        },
        reason: format!(
            "[MOCK] {} by the mock mode file of {owner}",
            if approved { "approved" } else { "denied" }
        ),
        mock: true,
    })
}

/// Whether the agent (uid, gids) can write `path` or the directory holding it.
pub fn agent_can_write(path: &Path, uid: u32, gids: &[u32]) -> bool {
    let writable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| {
            let mode = m.mode();
            (m.uid() == uid && mode & 0o200 != 0)
                || (gids.contains(&m.gid()) && mode & 0o020 != 0)
                || mode & 0o002 != 0
        })
    };
    writable(path) || path.parent().is_some_and(writable)
}
