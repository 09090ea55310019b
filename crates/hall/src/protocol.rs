//! The hall's line protocol, version 1: one JSON object per line, at most
//! [`MAX_LINE`] bytes. Parsing is separate from connections and state, and
//! every malformed or oversized line is an error (which the hall answers with
//! a denial). See docs/protocol.md.

use serde::{Deserialize, Serialize};

/// Protocol version spoken by this build.
pub const VERSION: u32 = 1;
/// Longest line accepted, in bytes (newline excluded).
pub const MAX_LINE: usize = 64 * 1024;
/// Longest argv accepted, in elements.
pub const MAX_ARGS: usize = 4096;

/// What the entry point asks (requester socket, root only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    /// The exact argv to run, program resolved to an absolute path.
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// Target user.
    pub user: String,
    /// Target group, if asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The agent's uid, from sudo's SUDO_UID (trusted only from a root peer).
    pub sudo_uid: u32,
}

/// Messages on the requester socket, entry point → hall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FromRequester {
    /// A privilege request.
    Request {
        /// Protocol version.
        v: u32,
        /// The request.
        #[serde(flatten)]
        ask: Ask,
    },
    /// The approved command ended with this status.
    Exit {
        /// Request id.
        id: String,
        /// Exit code (or 128 + signal).
        status: i32,
    },
}

/// Who decided, through which channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecidedBy {
    /// A user name, or `policy`, or `hall`.
    pub who: String,
    /// `terminal`, `desktop`, `matrix`, `policy`, `grant`, `mock`, `timeout`, …
    pub channel: String,
}

/// Messages on the requester socket, hall → entry point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToRequester {
    /// Waiting for a human.
    Pending {
        /// Request id.
        id: String,
        /// Seconds until it is denied.
        timeout_secs: u64,
    },
    /// The decision.
    Decision {
        /// Request id.
        id: String,
        /// Whether the command may run.
        approved: bool,
        /// Who decided.
        by: DecidedBy,
        /// Why, in words for the agent.
        reason: String,
        /// A mock-mode decision.
        #[serde(default)]
        mock: bool,
    },
}

/// A pending request as approvers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestView {
    /// Request id (unguessable).
    pub id: String,
    /// The agent.
    pub agent: String,
    /// The agent's uid.
    pub uid: u32,
    /// Exact argv.
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// Target user.
    pub user: String,
    /// Target group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Whether the agent can write the executable or its directory.
    pub agent_can_write: bool,
    /// When asked (ms since the epoch).
    pub asked_ms: u64,
    /// When it will be denied (ms since the epoch).
    pub deadline_ms: u64,
}

/// Messages on the approver socket, approver → hall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FromApprover {
    /// The pending requests, now.
    List {
        /// Protocol version.
        v: u32,
    },
    /// Stream requests as they come (and resolutions).
    Watch {
        /// Protocol version.
        v: u32,
    },
    /// Decide one request; it must match id, agent and argv exactly.
    Decide {
        /// Protocol version.
        v: u32,
        /// Request id.
        id: String,
        /// The agent the approver saw.
        agent: String,
        /// The argv the approver saw.
        argv: Vec<String>,
        /// Approve or deny.
        approve: bool,
        /// With approve: also approve this exact argv for this agent for so many seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant_secs: Option<u64>,
        /// Which channel the approver used (`terminal`, `desktop`, `matrix`).
        channel: String,
    },
}

/// Messages on the approver socket, hall → approver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToApprover {
    /// Answer to `list`.
    Requests {
        /// Pending requests.
        requests: Vec<RequestView>,
    },
    /// A new pending request (with `watch`).
    Request {
        /// The request.
        request: RequestView,
    },
    /// A request was decided or withdrawn.
    Resolved {
        /// Request id.
        id: String,
        /// approved / denied / cancelled.
        outcome: String,
        /// Who decided.
        by: DecidedBy,
    },
    /// The decision was taken.
    Ok {
        /// Request id.
        id: String,
    },
    /// Something was wrong with the last message.
    Error {
        /// What.
        message: String,
    },
}

/// Why a line is not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Longer than [`MAX_LINE`].
    #[error("message longer than {MAX_LINE} bytes")]
    TooLong,
    /// Not a message of this protocol.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Another protocol version.
    #[error("protocol version {0} is not spoken here (this is version {VERSION})")]
    Version(u32),
    /// A field out of bounds.
    #[error("invalid message: {0}")]
    Invalid(String),
}

fn decode<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Result<T, ProtocolError> {
    if line.len() > MAX_LINE {
        return Err(ProtocolError::TooLong);
    }
    let text = std::str::from_utf8(line).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    serde_json::from_str(text.trim_end_matches(['\n', '\r']))
        .map_err(|e| ProtocolError::Malformed(e.to_string()))
}

fn check_strings<'a>(items: impl IntoIterator<Item = &'a String>) -> Result<(), ProtocolError> {
    for s in items {
        if s.contains('\0') {
            return Err(ProtocolError::Invalid("strings may not contain NUL".into()));
        }
    }
    Ok(())
}

/// Parse a requester line.
pub fn parse_requester(line: &[u8]) -> Result<FromRequester, ProtocolError> {
    let m: FromRequester = decode(line)?;
    if let FromRequester::Request { v, ask } = &m {
        if *v != VERSION {
            return Err(ProtocolError::Version(*v));
        }
        if ask.argv.is_empty() || ask.argv.len() > MAX_ARGS {
            return Err(ProtocolError::Invalid(format!(
                "argv must have 1 to {MAX_ARGS} elements"
            )));
        }
        if !ask.argv[0].starts_with('/') {
            return Err(ProtocolError::Invalid(
                "argv[0] must be an absolute path".into(),
            ));
        }
        check_strings(
            ask.argv
                .iter()
                .chain([&ask.cwd, &ask.user])
                .chain(ask.group.iter()),
        )?;
    }
    Ok(m)
}

/// Parse an approver line.
pub fn parse_approver(line: &[u8]) -> Result<FromApprover, ProtocolError> {
    let m: FromApprover = decode(line)?;
    let v = match &m {
        FromApprover::List { v } | FromApprover::Watch { v } | FromApprover::Decide { v, .. } => *v,
    };
    if v != VERSION {
        return Err(ProtocolError::Version(v));
    }
    Ok(m)
}

/// Parse a line the hall sent to a requester.
pub fn parse_to_requester(line: &[u8]) -> Result<ToRequester, ProtocolError> {
    decode(line)
}

/// Parse a line the hall sent to an approver.
pub fn parse_to_approver(line: &[u8]) -> Result<ToApprover, ProtocolError> {
    decode(line)
}

/// One message as a line (JSON + newline).
pub fn encode(m: &impl Serialize) -> Vec<u8> {
    let mut v = serde_json::to_vec(m).expect("messages serialise");
    v.push(b'\n');
    v
}

/// An argv shown unambiguously: each element quoted, control characters,
/// newlines, quotes and backslashes escaped, no markup; elements separated by
/// spaces. Two different argvs never show the same.
pub fn show_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| show_str(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One string quoted and escaped for display (see [`show_argv`]).
pub fn show_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' => out.push_str("\\u{3c}"),
            '>' => out.push_str("\\u{3e}"),
            '&' => out.push_str("\\u{26}"),
            c if c.is_control() || is_invisible(c) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Characters that render as nothing or reorder text (bidi controls, zero-width).
fn is_invisible(c: char) -> bool {
    matches!(c as u32, 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2069 | 0xfeff | 0x00ad)
}
