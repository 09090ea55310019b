//! The agent's escalations as the room sees them: the bridge follows the
//! agent's own requests through the town hall (`nuketown_hall::follow`; the
//! hall knows the bridge's uid from the kernel and sends only this agent's
//! requests) and posts each, with its request id, then its decision, in the
//! room where a turn runs. Nothing here is read from a backend's output: a
//! backend is the agent's word, and could print a request that never was.

use std::collections::VecDeque;

use nuketown_hall::follow::Followed;
use nuketown_town::display::clean;

/// An escalation of the agent still waiting for a decision.
#[derive(Debug, Clone)]
pub struct Escalation {
    /// The request id (its first 8 hex digits, as approvers type it).
    pub id: String,
    /// What was asked, as the hall showed it.
    pub what: String,
    /// The room it was shown in (empty when no turn had run yet).
    pub room: String,
    /// When it was asked (ms since the epoch).
    pub since_ms: u64,
}

/// The id as humans type it (`nuketown approvals approve 3f2a1b9c`).
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// What the agent asked, as a phrase: `run "/usr/bin/id" as root`, `reach host:443 for 1h`.
fn asked_phrase(kind: &str, what: &str) -> String {
    match kind {
        "sudo" => format!("run {}", clean(what)),
        "tool" => format!("use a tool of its CLI: {}", clean(what)),
        _ => clean(what),
    }
}

/// The notice for a request waiting for a human.
pub fn asked_text(agent: &str, kind: &str, id: &str, what: &str) -> String {
    format!(
        "🔐 {agent} asked to {} — request {}, waiting for a human's decision",
        asked_phrase(kind, what),
        short(id)
    )
}

/// The notice for a decision; `shown` when the request's waiting was shown
/// (then the room knows what it was; otherwise it is said again).
pub fn decided_text(agent: &str, d: &Followed, shown: bool) -> Option<String> {
    let Followed::Decided {
        id,
        kind,
        what,
        decision,
        by,
        reason,
        mock,
    } = d
    else {
        return None;
    };
    let head = format!(
        "{decision} by {} via {}",
        clean(&by.who),
        clean(&by.channel)
    );
    let mut text = if shown {
        format!("🔐 request {}: {head}", short(id))
    } else {
        format!(
            "🔐 request {} ({agent} asked to {}): {head}",
            short(id),
            asked_phrase(kind, what)
        )
    };
    if *mock {
        text.push_str(" [MOCK]");
    }
    let reason = clean(reason);
    if !reason.is_empty() && reason != head {
        text.push_str(&format!(" — {reason}"));
    }
    Some(text)
}

/// Whether a decision nobody was asked for is worth a notice: every
/// sudo and network request is; a use of the agent's key the town's policy
/// allowed (each signed commit) is not.
pub fn worth_showing(d: &Followed) -> bool {
    match d {
        Followed::Decided { kind, decision, .. } => !(kind == "key" && decision == "approved"),
        _ => false,
    }
}

/// The request ids already shown (bounded), so a reconnect never shows one twice.
#[derive(Default)]
pub struct Shown(VecDeque<String>);

impl Shown {
    /// Remember `id`; false when it was shown already.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.0.iter().any(|s| s == id) {
            return false;
        }
        self.0.push_back(id.to_string());
        while self.0.len() > 1000 {
            self.0.pop_front();
        }
        true
    }

    /// Whether `id` was shown.
    pub fn contains(&self, id: &str) -> bool {
        self.0.iter().any(|s| s == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nuketown_hall::protocol::DecidedBy;

    fn decided(kind: &str, decision: &str, reason: &str) -> Followed {
        Followed::Decided {
            id: "0123456789abcdef0123456789abcdef".into(),
            kind: kind.into(),
            what: "\"/usr/bin/id\" \"-u\" as root".into(),
            decision: decision.into(),
            by: DecidedBy {
                who: "josh".into(),
                channel: "terminal".into(),
            },
            reason: reason.into(),
            mock: false,
        }
    }

    #[test]
    fn notices_name_the_request_and_who_decided() {
        assert_eq!(
            asked_text("ada", "sudo", "0123456789abcdef", "\"/usr/bin/id\" as root"),
            "🔐 ada asked to run \"/usr/bin/id\" as root — request 01234567, waiting for a human's decision"
        );
        let d = decided("sudo", "approved", "approved by josh via terminal");
        assert_eq!(
            decided_text("ada", &d, true).unwrap(),
            "🔐 request 01234567: approved by josh via terminal"
        );
        let d = decided("sudo", "denied", "timed out\u{1b}[2J");
        let t = decided_text("ada", &d, false).unwrap();
        assert_eq!(
            t,
            "🔐 request 01234567 (ada asked to run \"/usr/bin/id\" \"-u\" as root): denied by josh via terminal — timed out\\u{1b}[2J"
        );
    }

    #[test]
    fn a_policy_signed_commit_is_not_news() {
        assert!(!worth_showing(&decided("key", "approved", "")));
        assert!(worth_showing(&decided("key", "denied", "")));
        assert!(worth_showing(&decided("sudo", "approved", "")));
        let mut s = Shown::default();
        assert!(s.first_time("a"));
        assert!(!s.first_time("a"));
        assert!(s.contains("a"));
    }
}
