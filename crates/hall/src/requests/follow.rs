//! Following one's own escalations: an agent (its chat bridge, which runs as
//! the agent) asks the hall on the ask socket to be told of its own requests
//! — sudo, network, uses of its key — as they are asked and as they are
//! decided, so a chat room can show them. The hall is the only source: what a
//! backend prints is the agent's word and could lie.
//!
//! The hall knows the follower by `SO_PEERCRED` (see [`crate::requests`]) and
//! sends it only records whose uid *and* agent are that peer's: another
//! agent's requests never reach it. The stream is read-only; nothing sent on
//! it decides or changes anything. See docs/protocol.md.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::net::UnixStream;
use tokio::sync::broadcast;

use crate::audit::Record;
use crate::connection::send;
use crate::hall::Hall;
use crate::protocol::{DecidedBy, RequestView, ToApprover, MAX_REPLY, VERSION};
use nuketown_town::display::clean;

/// What an agent sends, first and only, to follow its own requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Follow {
    /// Tell me of my requests, from now on (and those pending now).
    Follow {
        /// Protocol version.
        v: u32,
    },
}

/// What the hall sends a follower, one line each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Followed {
    /// A request of the follower waits for a human.
    Asked {
        /// Request id.
        id: String,
        /// `sudo`, `network`, `resources`, `key` or `tool`.
        kind: String,
        /// What exactly, escaped (no control characters).
        what: String,
        /// When asked (ms since the epoch).
        asked_ms: u64,
        /// When it will be denied unless decided (ms since the epoch).
        deadline_ms: u64,
    },
    /// A request of the follower was decided (or ended otherwise).
    Decided {
        /// Request id.
        id: String,
        /// `sudo`, `network`, `resources`, `key` or `tool`.
        kind: String,
        /// What exactly, escaped (no control characters).
        what: String,
        /// `approved`, `denied`, `cancelled` or `expired` (a network grant whose time was up).
        decision: String,
        /// Who decided, through which channel.
        by: DecidedBy,
        /// Why, as the hall said it.
        reason: String,
        /// A mock-mode decision.
        #[serde(default)]
        mock: bool,
    },
    /// The follower read too slowly: this many events were not sent.
    Missed {
        /// How many.
        count: u64,
    },
    /// The follow request was refused; the hall closes the connection.
    Refused {
        /// Why, with the fix.
        reason: String,
    },
}

/// Whether the first line on the ask socket asks to follow: `None` when it
/// is something else (a request), `Some(Err)` when it is a malformed follow.
pub(crate) fn request(line: &[u8]) -> Option<Result<(), String>> {
    #[derive(Deserialize)]
    struct Tag {
        #[serde(rename = "type")]
        kind: String,
    }
    let tag: Tag = serde_json::from_slice(line).ok()?;
    if tag.kind != "follow" {
        return None;
    }
    Some(match serde_json::from_slice::<Follow>(line) {
        Ok(Follow::Follow { v }) if v == VERSION => Ok(()),
        Ok(Follow::Follow { v }) => Err(format!(
            "protocol version {v} is not spoken here (this is version {VERSION})"
        )),
        Err(e) => Err(format!(
            "a follow request is {{\"type\":\"follow\",\"v\":{VERSION}}} ({e})"
        )),
    })
}

/// `what` of a pending request: its kind and what exactly, escaped.
pub fn asked_what(v: &RequestView) -> (&'static str, String) {
    if let Some(k) = &v.key_use {
        return ("key", key_what(k));
    }
    if let Some(n) = &v.network {
        return ("network", network_what(n));
    }
    if let Some(x) = &v.resources {
        return ("resources", resources_what(x));
    }
    if let Some(t) = &v.tool {
        return ("tool", tool_what(t));
    }
    ("sudo", sudo_what(&v.argv, &v.user, v.group.as_deref()))
}

/// The kind and what exactly of a decision record; `None` for records that
/// decide nothing (exit statuses).
pub fn decided_what(r: &Record) -> Option<(&'static str, String)> {
    if r.decision.is_empty() {
        return None;
    }
    match r.event.as_str() {
        "decision" => Some(("sudo", sudo_what(&r.argv, &r.target, r.group.as_deref()))),
        "network" => Some((
            "network",
            match &r.network {
                Some(n) => network_what(n),
                None => crate::protocol::show_argv(&r.argv),
            },
        )),
        "resources" => Some((
            "resources",
            match &r.resources {
                Some(x) => resources_what(x),
                None => crate::protocol::show_argv(&r.argv),
            },
        )),
        "tool" => Some((
            "tool",
            match &r.tool {
                Some(t) => tool_what(t),
                None => crate::protocol::show_argv(&r.argv),
            },
        )),
        "key" => Some((
            "key",
            match &r.key_use {
                Some(k) => key_what(k),
                None => "a use of its key".into(),
            },
        )),
        _ => None,
    }
}

fn sudo_what(argv: &[String], user: &str, group: Option<&str>) -> String {
    let mut s = crate::protocol::show_argv(argv);
    if !user.is_empty() {
        s.push_str(&format!(" as {}", clean(user)));
    }
    if let Some(g) = group {
        s.push_str(&format!(" (group {})", clean(g)));
    }
    s
}

fn resources_what(x: &crate::protocol::ResourcesView) -> String {
    format!(
        "its workload in the cluster moved from {} to {} ({})",
        crate::protocol::show_str(&x.current),
        crate::protocol::show_str(&x.tier),
        clean(&x.size)
    )
}

fn tool_what(t: &crate::protocol::ToolView) -> String {
    format!(
        "{} {} {}",
        clean(&t.cli),
        crate::protocol::show_str(&t.tool),
        crate::protocol::show_str(&t.input)
    )
}

fn network_what(n: &crate::protocol::NetworkView) -> String {
    format!(
        "reach {} for {}",
        clean(&n.target),
        nuketown_town::network::show_duration(n.secs)
    )
}

fn key_what(k: &crate::protocol::KeyUseView) -> String {
    let mut s = format!("{} with its key {}", clean(&k.operation), clean(&k.key));
    if let Some(ns) = &k.namespace {
        s.push_str(&format!(" (namespace {})", clean(ns)));
    }
    if let Some(h) = k.host.as_ref().or(k.remote_user.as_ref()) {
        s.push_str(&format!(" for {}", clean(h)));
    }
    s
}

/// What the follower `uid`, agent `agent`, is told of an approver event.
fn of_event(ev: &ToApprover, uid: u32, agent: &str) -> Option<Followed> {
    match ev {
        ToApprover::Request { request } => of_pending(request, uid, agent),
        _ => None,
    }
}

fn of_pending(v: &RequestView, uid: u32, agent: &str) -> Option<Followed> {
    if v.uid != uid || v.agent != agent {
        return None;
    }
    let (kind, what) = asked_what(v);
    Some(Followed::Asked {
        id: v.id.clone(),
        kind: kind.into(),
        what,
        asked_ms: v.asked_ms,
        deadline_ms: v.deadline_ms,
    })
}

/// What the follower `uid`, agent `agent`, is told of an audit record.
pub fn of_record(r: &Record, uid: u32, agent: &str) -> Option<Followed> {
    // Both must match: a record of agent A with B's uid (B knocking on A's
    // key socket) is neither A's nor B's to see.
    if r.uid != uid || r.agent != agent {
        return None;
    }
    let (kind, what) = decided_what(r)?;
    let by = r.decided_by.clone().unwrap_or(DecidedBy {
        who: "hall".into(),
        channel: "hall".into(),
    });
    Some(Followed::Decided {
        id: r.id.clone(),
        kind: kind.into(),
        what,
        decision: r.decision.clone(),
        by,
        reason: clean(&r.reason),
        mock: r.mock,
    })
}

/// Serve a follower (the ask socket's peer `uid`, agent `agent`) until it goes.
pub(crate) async fn serve<R, W>(
    hall: Arc<Hall>,
    uid: u32,
    agent: String,
    asked: Result<(), String>,
    mut rd: BufReader<R>,
    mut wr: W,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if let Err(reason) = asked {
        let _ = send(&mut wr, &Followed::Refused { reason }).await;
        return;
    }
    // Records first: a request decided between the snapshot and the
    // stream is then heard as decided, never lost.
    let mut records = hall.followers.0.subscribe();
    let (pending, mut events) = hall.state().follow();
    for v in &pending {
        if let Some(m) = of_pending(v, uid, &agent) {
            if send(&mut wr, &m).await.is_err() {
                return;
            }
        }
    }
    tracing::debug!(agent, uid, "following its own requests");
    let mut probe = [0u8; 64];
    loop {
        let m = tokio::select! {
            // An asked request before its decision, when both are ready.
            biased;
            e = events.recv() => match e {
                Ok(e) => of_event(&e, uid, &agent),
                Err(broadcast::error::RecvError::Lagged(n)) => Some(Followed::Missed { count: n }),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            r = records.recv() => match r {
                Ok(r) => of_record(&r, uid, &agent),
                Err(broadcast::error::RecvError::Lagged(n)) => Some(Followed::Missed { count: n }),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            // The follower says nothing; anything it sends, or its going, ends the stream.
            _ = rd.read(&mut probe) => return,
        };
        if let Some(m) = m {
            if send(&mut wr, &m).await.is_err() {
                return;
            }
        }
    }
}

/// A connection following the caller's own requests (the client side).
pub struct Follower {
    rd: BufReader<tokio::net::unix::OwnedReadHalf>,
    _wr: tokio::net::unix::OwnedWriteHalf,
}

/// Why following stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The socket could not be reached or read.
    #[error("the town hall's ask socket {socket}: {error}")]
    Io {
        /// The socket.
        socket: String,
        /// What failed.
        error: std::io::Error,
    },
    /// The hall closed the connection.
    #[error("the town hall closed the connection (it serves only the town's enabled agents, each for itself)")]
    Closed,
    /// The hall refused.
    #[error("the town hall refused: {0}")]
    Refused(String),
    /// A line that is not a follow message.
    #[error("the town hall sent something else: {0}")]
    Malformed(String),
}

impl Follower {
    /// Connect to the ask socket and ask to follow.
    pub async fn connect(socket: &Path) -> Result<Follower, FollowError> {
        let io = |error| FollowError::Io {
            socket: socket.display().to_string(),
            error,
        };
        let s = UnixStream::connect(socket).await.map_err(io)?;
        let (rd, mut wr) = s.into_split();
        send(&mut wr, &Follow::Follow { v: VERSION })
            .await
            .map_err(io)?;
        Ok(Follower {
            rd: BufReader::new(rd),
            _wr: wr,
        })
    }

    /// The next event; `Closed` when the hall went away.
    pub async fn next(&mut self) -> Result<Followed, FollowError> {
        let mut line = Vec::new();
        let n = (&mut self.rd)
            .take(MAX_REPLY as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|error| FollowError::Io {
                socket: "(connected)".into(),
                error,
            })?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Err(FollowError::Closed);
        }
        match serde_json::from_slice(&line) {
            Ok(Followed::Refused { reason }) => Err(FollowError::Refused(reason)),
            Ok(m) => Ok(m),
            Err(e) => Err(FollowError::Malformed(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FileRef, NetworkView};

    fn view(uid: u32, agent: &str) -> RequestView {
        RequestView {
            id: "ab".repeat(16),
            agent: agent.into(),
            uid,
            argv: vec!["/usr/bin/id".into(), "-u\u{1b}[2J".into()],
            program: FileRef {
                path: "/usr/bin/id".into(),
                dev: 1,
                ino: 2,
            },
            typed: None,
            cwd: "/".into(),
            user: "root".into(),
            group: None,
            agent_can_write: false,
            agent_writable_args: vec![],
            warnings: vec![],
            notes: vec![],
            grantable: true,
            asked_ms: 1,
            deadline_ms: 2,
            key_use: None,
            tool: None,
            more: None,
            network: None,
            resources: None,
        }
    }

    #[test]
    fn a_follower_hears_only_its_own_requests() {
        let v = view(1100, "ada");
        assert!(of_pending(&v, 1100, "ada").is_some());
        assert_eq!(of_pending(&v, 1101, "vox"), None);
        assert_eq!(of_pending(&v, 1101, "ada"), None, "the uid must match");
        assert_eq!(of_pending(&v, 1100, "vox"), None, "the agent must match");
        let mut r = Record::new("x", "decision", "ada", 1100);
        r.decision = "approved".into();
        assert!(of_record(&r, 1100, "ada").is_some());
        assert_eq!(of_record(&r, 1101, "vox"), None);
        // vox knocking on ada's key socket: neither's to see.
        let mut k = Record::new("y", "key", "ada", 1101);
        k.decision = "denied".into();
        assert_eq!(of_record(&k, 1101, "vox"), None);
        assert_eq!(of_record(&k, 1100, "ada"), None);
    }

    #[test]
    fn what_is_escaped_and_exit_records_decide_nothing() {
        let (kind, what) = asked_what(&view(1, "ada"));
        assert_eq!(kind, "sudo");
        assert_eq!(what, "\"/usr/bin/id\" \"-u\\u{1b}[2J\" as root");
        let mut e = Record::new("x", "exit", "ada", 1);
        e.exit_status = Some(0);
        assert_eq!(decided_what(&e), None);
        let mut n = Record::new("x", "network", "ada", 1);
        n.decision = "approved".into();
        n.network = Some(NetworkView {
            target: "pypi.org:443".into(),
            secs: 3600,
            ..Default::default()
        });
        assert_eq!(
            decided_what(&n),
            Some(("network", "reach pypi.org:443 for 1h".into()))
        );
    }

    #[test]
    fn a_follow_request_is_told_apart_from_a_request() {
        assert_eq!(request(br#"{"type":"follow","v":2}"#), Some(Ok(())));
        assert!(
            matches!(request(br#"{"type":"follow","v":1}"#), Some(Err(e)) if e.contains("version 1"))
        );
        assert!(matches!(
            request(br#"{"type":"follow","v":2,"uid":0}"#),
            Some(Err(_))
        ));
        assert_eq!(request(br#"{"type":"network","v":2}"#), None);
        assert_eq!(request(b"junk"), None);
    }
}
