//! The hall's line protocol, version 2: one JSON object per line, at most
//! [`MAX_LINE`] bytes. This module only turns bytes into messages and back;
//! connections and state live elsewhere. Every malformed or oversized line is
//! an error, which the hall answers with a denial. See docs/protocol.md.

use serde::{Deserialize, Serialize};

/// Protocol version spoken by this build.
pub const VERSION: u32 = 2;
/// Longest line accepted, in bytes (newline excluded).
pub const MAX_LINE: usize = 64 * 1024;
/// Longest line a client accepts from the hall, in bytes: a list of many
/// pending requests is long; the hall itself is trusted (root, its socket).
pub const MAX_REPLY: usize = 64 * 1024 * 1024;
/// Longest argv accepted, in elements.
pub const MAX_ARGS: usize = 4096;
/// Longest approver channel name accepted, in bytes.
pub const MAX_CHANNEL: usize = 128;

/// A file as the entry point opened it: its canonical path (no symbolic
/// link, no `.` or `..`) and the device and inode it had when opened. The
/// hall decides on this identity and the entry point runs this very file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    /// Canonical absolute path.
    pub path: String,
    /// Device number (`st_dev`).
    pub dev: u64,
    /// Inode number (`st_ino`).
    pub ino: u64,
}

/// What the entry point asks (requester socket, root only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    /// The exact argv to run; `argv[0]` is `program.path`.
    pub argv: Vec<String>,
    /// The executable, opened once by the entry point; the child executes that descriptor.
    pub program: FileRef,
    /// The program as the agent named it, when that differs from `program.path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typed: Option<String>,
    /// The working directory, opened once; the child enters it by descriptor.
    pub cwd: FileRef,
    /// Target user.
    pub user: String,
    /// Target group, when `-g` was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The agent's uid, from sudo's `SUDO_UID` (believed only from a root peer).
    pub sudo_uid: u32,
}

/// Messages on the requester socket, entry point → hall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FromRequester {
    /// A privilege request: the first and only request on a connection.
    Request {
        /// Protocol version.
        v: u32,
        /// The request.
        #[serde(flatten)]
        ask: Ask,
    },
    /// The entry point refused a request before it could be asked (a magic
    /// link, a working directory that cannot be named, …): for the audit log,
    /// so probing leaves a trace. The hall answers with the denial.
    Refused {
        /// Protocol version.
        v: u32,
        /// The agent, from sudo's `SUDO_UID`.
        sudo_uid: u32,
        /// The command as the agent typed it.
        argv: Vec<String>,
        /// Why it was refused.
        reason: String,
    },
    /// The approved command ended with this status (for the audit log).
    Exit {
        /// Protocol version.
        v: u32,
        /// Request id, as the decision named it.
        id: String,
        /// Exit code, or 128 + the signal that ended it.
        status: i32,
    },
}

/// Who decided, through which channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecidedBy {
    /// An approver's user name, `policy`, or `hall`.
    pub who: String,
    /// `terminal`, `desktop`, `matrix:…`, `policy`, `grant`, `mock`, `timeout`, `approver-gone`, `hall`.
    pub channel: String,
}

impl DecidedBy {
    /// Decided by the hall itself, through `channel` (`hall`, `timeout`, `requester`, …).
    pub fn hall(channel: &str) -> DecidedBy {
        DecidedBy {
            who: "hall".into(),
            channel: channel.into(),
        }
    }
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
    /// The decision; the connection carries nothing else afterwards but the exit status.
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

impl ToRequester {
    /// The denial of request `id`, decided by `by`, for `reason`.
    pub fn denied(id: &str, reason: &str, by: DecidedBy) -> ToRequester {
        ToRequester::Decision {
            id: id.to_string(),
            approved: false,
            by,
            reason: reason.to_string(),
            mock: false,
        }
    }
}

/// A pending request as approvers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestView {
    /// Request id (128 random bits, hex).
    pub id: String,
    /// The agent, from the uid sudo reported.
    pub agent: String,
    /// The agent's uid.
    pub uid: u32,
    /// Exact argv; `argv[0]` is the file that will be executed (`program.path`).
    pub argv: Vec<String>,
    /// The executable the decision is about: canonical path, device, inode.
    pub program: FileRef,
    /// How the agent named the program, when that differs from `program.path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typed: Option<String>,
    /// Working directory (canonical).
    pub cwd: String,
    /// Target user.
    pub user: String,
    /// Target group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Whether the hall could not prove that no agent can change what this
    /// request runs or reads (see docs/security.md) — the
    /// program or a file an argument names — so only a human may decide it.
    pub agent_can_write: bool,
    /// The arguments that may name files not proven root's (scripts, configs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_writable_args: Vec<String>,
    /// Every warning for the approver, one sentence each: what makes the
    /// request human-only (agent-changeable program, interpreter, arguments,
    /// how the program was named).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What the approver should know besides (a working directory an agent can change).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Whether approving it may come with a time-boxed grant.
    pub grantable: bool,
    /// When asked (ms since the epoch).
    pub asked_ms: u64,
    /// When it will be denied (ms since the epoch).
    pub deadline_ms: u64,
    /// Present when the request is a use of the agent's key (a signature or
    /// an SSH authentication), not a command: then `argv` is the command
    /// line of the process that asked (the agent's words), `user` the agent
    /// whose key would sign, and nothing runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<Box<KeyUseView>>,
    /// Present when the request is for network access (`nuketown ask
    /// network`): then `argv` is the request in the CLI's words, `user` the
    /// agent, and approving adds exactly `network.rule` for `network.secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Box<NetworkView>>,
    /// Present when the request is to move the agent's cluster workload to a
    /// bigger tier (`nuketown ask resources` in its pod, brought by the
    /// hall's relay): approving writes exactly `resources.rule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Box<ResourcesView>>,
    /// Present when the agent's own CLI asks to use a tool (its
    /// permission-prompt tool): approving lets it run that tool once, as the
    /// agent; `argv` is `[cli, tool, input]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<Box<ToolView>>,
    /// Present when the agent asks for more of a credential past its limit
    /// (`nuketown ask credential`): approving raises its allowance at the
    /// gateway by exactly `more.requests` and `more.tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more: Option<Box<MoreView>>,
}

/// A request for more of a credential, as approvers see it and the audit
/// log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MoreView {
    /// The credential (`agents.<n>.credentials.<name>`).
    pub credential: String,
    /// Its API.
    pub api: String,
    /// The declared limits, in words.
    pub limits: String,
    /// What it used in the last hour and day, in words.
    pub used: String,
    /// Requests approving adds (0: none asked).
    pub requests: u64,
    /// Tokens approving adds.
    pub tokens: u64,
    /// Why, in the agent's words.
    pub reason: String,
}

impl RequestView {
    /// A request that runs no program (network access, a bigger tier, a use
    /// of the agent's key): `argv` in the asker's words, `program` its first
    /// word with device and inode 0, the agent as `user`, never grantable,
    /// due `timeout_secs` from now. The caller adds what it is about.
    pub fn asked(
        id: &str,
        agent: &str,
        uid: u32,
        argv: Vec<String>,
        timeout_secs: u64,
    ) -> RequestView {
        let now = crate::time::now_ms();
        RequestView {
            id: id.to_string(),
            agent: agent.to_string(),
            uid,
            program: FileRef {
                path: argv.first().cloned().unwrap_or_default(),
                dev: 0,
                ino: 0,
            },
            argv,
            typed: None,
            cwd: String::new(),
            user: agent.to_string(),
            group: None,
            agent_can_write: false,
            agent_writable_args: Vec::new(),
            warnings: Vec::new(),
            notes: Vec::new(),
            grantable: false,
            asked_ms: now,
            deadline_ms: now + timeout_secs * 1000,
            key_use: None,
            network: None,
            resources: None,
            tool: None,
            more: None,
        }
    }
}

/// A request for a bigger tier, as approvers see it and the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesView {
    /// The tier asked for.
    pub tier: String,
    /// What that tier is (CPU, memory, GPUs).
    pub size: String,
    /// The tier the workload is at now, as the API server says.
    pub current: String,
    /// The declared tier (`cloud.resources`), where it returns when idle.
    pub declared: String,
    /// The largest it may be moved to (`cloud.scaling.maxResources`).
    pub max: String,
    /// Why, in the agent's own words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Where the request came from (cluster, namespace, object, the agent's own id for it).
    pub origin: String,
    /// Exactly what approving changes: the annotation the relay writes.
    pub rule: String,
}

/// A request for network access, as approvers see it and the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkView {
    /// The destination as the hall understood it: `HOST[:PORT]`, an address or a network.
    pub target: String,
    /// The networks the rule opens (a host name's addresses, resolved by the hall).
    pub networks: Vec<String>,
    /// The one TCP/UDP port opened; none means every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// For how long, in seconds.
    pub secs: u64,
    /// Why, in the agent's own words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// What the agent may reach without asking (`agents.<name>.network.egress`).
    pub declared: String,
    /// Exactly what approving changes: the nftables elements added, with their timeout.
    pub rule: String,
}

/// A call through the credential gateway, as the gateway reports it (the
/// audit record of event `credential`). Known by the kernel: `uid` is the
/// owner of the connecting socket, `agent` that uid's agent (or `uid N`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallView {
    /// The agent (or `uid N` for a caller that is none).
    pub agent: String,
    /// The caller's uid, by the kernel.
    pub uid: u32,
    /// The credential used or asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// HTTP method (`CONNECT` for a refused tunnel).
    pub method: String,
    /// The upstream host.
    #[serde(default)]
    pub host: String,
    /// The path, without its query.
    #[serde(default)]
    pub path: String,
    /// The model asked for (model APIs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The status answered.
    #[serde(default)]
    pub status: u16,
    /// `forwarded`, or `denied: <why>`.
    pub decision: String,
    /// Tokens in and out, as the API reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_out: Option<u64>,
    /// Bytes of the request and of the answer.
    #[serde(default)]
    pub bytes_up: u64,
    #[serde(default)]
    pub bytes_down: u64,
    /// From the request to the end of the answer, in ms.
    #[serde(default)]
    pub ms: f64,
}

// An audit record compares whole; a call's time is never NaN.
impl Eq for CallView {}

/// A tool the agent's own CLI asks permission to use (its permission-prompt
/// tool, `nuketown mcp`): as approvers see it and the audit log keeps it.
/// Approving lets the CLI run the tool once, as the agent — never as root.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolView {
    /// The CLI that asks (`claude-code`).
    pub cli: String,
    /// The tool, as the CLI names it (`Bash`, `WebFetch`, `mcp__server__tool`).
    pub tool: String,
    /// The tool's input, as the CLI gave it (JSON text).
    pub input: String,
}

/// Longest tool input an agent's CLI may ask about, in bytes.
pub const MAX_TOOL_INPUT: usize = 16 * 1024;

/// What an agent asks the hall for itself, on the ask socket (any local
/// user may connect; the hall serves only the town's agents, known by
/// `SO_PEERCRED`). One request per connection; the hall answers with
/// [`ToRequester`] messages: `pending`, then the `decision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FromAsker {
    /// Reach `target` (`HOST`, `HOST:PORT`, `[V6]:PORT`, `CIDR[:PORT]`) for `secs` seconds.
    Network {
        /// Protocol version.
        v: u32,
        /// The destination, as the agent wrote it.
        target: String,
        /// How long, in seconds (1 to a day).
        secs: u64,
        /// Why, in the agent's words (shown escaped, at most [`MAX_REASON`] bytes).
        #[serde(default)]
        reason: String,
    },
    /// Let the agent's own CLI use `tool` with `input`, once (its
    /// permission-prompt tool asks, as the agent).
    Tool {
        /// Protocol version.
        v: u32,
        /// The CLI that asks (`claude-code`).
        cli: String,
        /// The tool's name.
        tool: String,
        /// The tool's input, JSON text (at most [`MAX_TOOL_INPUT`] bytes).
        input: String,
    },
    /// More of the agent's credential `credential` past its limit: one more
    /// window's worth of what its limits allow (a credential with
    /// `onLimit = "ask"` only).
    Credential {
        /// Protocol version.
        v: u32,
        /// The credential's name.
        credential: String,
        /// Why, in the agent's words.
        #[serde(default)]
        reason: String,
    },
    /// Move agent `agent`'s cluster workload to `tier`. Only the hall's
    /// relay (root) sends it, for a request it read from the agent's own
    /// request object in the cluster; an agent on the host is refused.
    Resources {
        /// Protocol version.
        v: u32,
        /// The agent, as the relay knows it from the object's name.
        agent: String,
        /// The tier asked for.
        tier: String,
        /// The tier the workload is at now (from the Deployment).
        current: String,
        /// Why, in the agent's words.
        #[serde(default)]
        reason: String,
        /// Where it came from, in words.
        origin: String,
    },
}

/// Longest reason an agent may give, in bytes.
pub const MAX_REASON: usize = 1000;

/// Parse a line from an agent on the ask socket.
pub fn parse_asker(line: &[u8]) -> Result<FromAsker, ProtocolError> {
    let m: FromAsker = decode(line)?;
    match &m {
        FromAsker::Network {
            v,
            target,
            secs,
            reason,
        } => {
            check_version(*v)?;
            check_strings([target, reason])?;
            if target.is_empty() || target.len() > 300 {
                return Err(ProtocolError::Invalid(
                    "target must be 1 to 300 bytes".into(),
                ));
            }
            if *secs == 0 || *secs > 86_400 {
                return Err(ProtocolError::Invalid(
                    "secs must be 1 to 86400 (a day)".into(),
                ));
            }
            if reason.len() > MAX_REASON {
                return Err(ProtocolError::Invalid(format!(
                    "a reason is at most {MAX_REASON} bytes"
                )));
            }
        }
        FromAsker::Tool {
            v,
            cli,
            tool,
            input,
        } => {
            check_version(*v)?;
            check_strings([cli, tool, input])?;
            if cli.is_empty() || cli.len() > 64 || tool.is_empty() || tool.len() > 256 {
                return Err(ProtocolError::Invalid(
                    "cli must be 1 to 64 bytes and tool 1 to 256".into(),
                ));
            }
            if input.len() > MAX_TOOL_INPUT {
                return Err(ProtocolError::Invalid(format!(
                    "a tool's input is at most {MAX_TOOL_INPUT} bytes"
                )));
            }
            if serde_json::from_str::<serde_json::Value>(input).is_err() {
                return Err(ProtocolError::Invalid("a tool's input is JSON".into()));
            }
        }
        FromAsker::Credential {
            v,
            credential,
            reason,
        } => {
            check_version(*v)?;
            check_strings([credential, reason])?;
            if credential.is_empty() || credential.len() > 32 {
                return Err(ProtocolError::Invalid(
                    "credential must be 1 to 32 bytes".into(),
                ));
            }
            if reason.len() > MAX_REASON {
                return Err(ProtocolError::Invalid(format!(
                    "a reason is at most {MAX_REASON} bytes"
                )));
            }
        }
        FromAsker::Resources {
            v,
            agent,
            tier,
            current,
            reason,
            origin,
        } => {
            check_version(*v)?;
            check_strings([agent, tier, current, reason, origin])?;
            for (what, s) in [("agent", agent), ("tier", tier), ("current", current)] {
                if s.is_empty() || s.len() > 64 {
                    return Err(ProtocolError::Invalid(format!(
                        "{what} must be 1 to 64 bytes"
                    )));
                }
            }
            if reason.len() > MAX_REASON || origin.len() > MAX_REASON {
                return Err(ProtocolError::Invalid(format!(
                    "a reason or origin is at most {MAX_REASON} bytes"
                )));
            }
        }
    }
    Ok(m)
}

/// A use of an agent's key, as approvers see it and the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyUseView {
    /// `sign` (an SSH signature: git commits and tags), `authenticate` (an SSH login), `other`.
    pub operation: String,
    /// The key's fingerprint (`SHA256:…`).
    pub key: String,
    /// For `sign`: the signature's namespace (`git` for commits and tags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// For `sign`: the hash of the message, `ALG:hex`, as the signer computed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_hash: Option<String>,
    /// For `authenticate`: the user name asked for on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_user: Option<String>,
    /// For `authenticate`: the declared host (`keys.hosts`) whose host key the server proved it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// For `authenticate`: the server's host key, when the session was bound to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// SHA-256 of the exact bytes signed, hex.
    pub data_sha256: String,
    /// The asking process's pid (`SO_PEERCRED`).
    pub caller_pid: u32,
    /// The asking process's parent's command line (`git commit …`, `git push …`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent: Vec<String>,
    /// What the town's policy for this operation says (`ask` when a human is asked).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule: String,
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
    /// Stream new requests and resolutions on this connection from now on.
    Watch {
        /// Protocol version.
        v: u32,
        /// The channel this watcher shows requests on (`terminal`, `desktop`, `matrix:…`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    /// Decide one request. It must name the request's id, agent and argv exactly.
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
        /// With `approve`: also approve this exact argv, for this agent and target, for so many seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant_secs: Option<u64>,
        /// The channel the approver used: `terminal`, `desktop`, or `matrix:@user:server`.
        channel: String,
    },
}

/// Messages on the approver socket, hall → approver.
// A message lives from a socket read to its display; a few hundred bytes on
// the stack is no reason to box the request every approver reads.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToApprover {
    /// Answer to `list` and `watch`: what is pending now.
    Requests {
        /// Pending requests, oldest first.
        requests: Vec<RequestView>,
    },
    /// A new pending request (after `watch`).
    Request {
        /// The request.
        request: RequestView,
    },
    /// A request was decided, timed out or withdrawn (after `watch`).
    Resolved {
        /// Request id.
        id: String,
        /// `approved`, `denied` or `cancelled`.
        outcome: String,
        /// Who decided.
        by: DecidedBy,
    },
    /// The decision was taken.
    Ok {
        /// Request id.
        id: String,
    },
    /// The last message was refused; nothing changed.
    Error {
        /// The request id it was about, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// What was wrong.
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
    decode_max(line, MAX_LINE)
}

fn decode_max<T: for<'de> Deserialize<'de>>(line: &[u8], max: usize) -> Result<T, ProtocolError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if line.len() > max {
        return Err(ProtocolError::TooLong);
    }
    if line.contains(&b'\n') {
        return Err(ProtocolError::Malformed("more than one line".into()));
    }
    let text = std::str::from_utf8(line).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    serde_json::from_str(text).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

fn check_version(v: u32) -> Result<(), ProtocolError> {
    if v == VERSION {
        Ok(())
    } else {
        Err(ProtocolError::Version(v))
    }
}

fn check_strings<'a>(items: impl IntoIterator<Item = &'a String>) -> Result<(), ProtocolError> {
    if items.into_iter().any(|s| s.contains('\0')) {
        return Err(ProtocolError::Invalid("strings may not contain NUL".into()));
    }
    Ok(())
}

fn check_argv(argv: &[String]) -> Result<(), ProtocolError> {
    if argv.is_empty() || argv.len() > MAX_ARGS {
        return Err(ProtocolError::Invalid(format!(
            "argv must have 1 to {MAX_ARGS} elements"
        )));
    }
    check_strings(argv)
}

/// Whether `p` is absolute with no empty, `.` or `..` component and no NUL:
/// the shape of a canonical path (whether it holds links is checked on disk).
pub fn is_canonical(p: &str) -> bool {
    p == "/"
        || (p.starts_with('/')
            && !p.contains('\0')
            && p[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."))
}

/// An unguessable request id: 128 bits from the kernel's random source (getrandom(2)), hex.
pub fn new_id() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    // Safety: the buffer is 16 writable bytes.
    let n = unsafe { nix::libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A request id: 32 lowercase hex digits.
pub fn is_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_id(id: &str) -> Result<(), ProtocolError> {
    if is_id(id) {
        Ok(())
    } else {
        Err(ProtocolError::Invalid(
            "a request id is 32 lowercase hex digits".into(),
        ))
    }
}

/// Parse a line from the entry point.
pub fn parse_requester(line: &[u8]) -> Result<FromRequester, ProtocolError> {
    let m: FromRequester = decode(line)?;
    match &m {
        FromRequester::Request { v, ask } => {
            check_version(*v)?;
            check_argv(&ask.argv)?;
            if !is_canonical(&ask.program.path) || ask.argv[0] != ask.program.path {
                return Err(ProtocolError::Invalid(
                    "argv[0] must be program.path, a canonical absolute path".into(),
                ));
            }
            if !is_canonical(&ask.cwd.path) {
                return Err(ProtocolError::Invalid(
                    "cwd.path must be a canonical absolute path".into(),
                ));
            }
            if ask.user.is_empty() || ask.group.as_deref() == Some("") {
                return Err(ProtocolError::Invalid(
                    "user and group may not be empty".into(),
                ));
            }
            check_strings(
                [&ask.cwd.path, &ask.user]
                    .into_iter()
                    .chain(ask.group.iter())
                    .chain(ask.typed.iter()),
            )?;
        }
        FromRequester::Refused {
            v, argv, reason, ..
        } => {
            check_version(*v)?;
            check_argv(argv)?;
            check_strings([reason])?;
        }
        FromRequester::Exit { v, id, .. } => {
            check_version(*v)?;
            check_id(id)?;
        }
    }
    Ok(m)
}

fn check_channel(channel: &str) -> Result<(), ProtocolError> {
    if channel.is_empty() || channel.len() > MAX_CHANNEL || channel.chars().any(char::is_control) {
        return Err(ProtocolError::Invalid(
            "channel must be a short name without control characters".into(),
        ));
    }
    Ok(())
}

/// Parse a line from an approver.
pub fn parse_approver(line: &[u8]) -> Result<FromApprover, ProtocolError> {
    let m: FromApprover = decode(line)?;
    match &m {
        FromApprover::List { v } => check_version(*v)?,
        FromApprover::Watch { v, channel } => {
            check_version(*v)?;
            if let Some(c) = channel {
                check_channel(c)?;
            }
        }
        FromApprover::Decide {
            v,
            id,
            agent,
            argv,
            channel,
            ..
        } => {
            check_version(*v)?;
            check_id(id)?;
            check_argv(argv)?;
            check_strings([agent])?;
            check_channel(channel)?;
        }
    }
    Ok(m)
}

/// Parse a line the hall sent to the entry point.
pub fn parse_to_requester(line: &[u8]) -> Result<ToRequester, ProtocolError> {
    decode_max(line, MAX_REPLY)
}

/// Parse a line the hall sent to an approver.
pub fn parse_to_approver(line: &[u8]) -> Result<ToApprover, ProtocolError> {
    decode_max(line, MAX_REPLY)
}

/// One message as a line: compact JSON (which never contains a raw newline) and `\n`.
pub fn encode(m: &impl Serialize) -> Vec<u8> {
    let mut v = serde_json::to_vec(m).expect("protocol messages always serialise");
    v.push(b'\n');
    v
}

pub use nuketown_town::display::{show_argv, show_str, unshow_str};
