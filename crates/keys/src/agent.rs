//! One agent's ssh-agent socket: the standard agent protocol (ssh-agent-lib),
//! served for that agent's uid alone, signing with the key the town holds.
//!
//! Every connection's peer is asked of the kernel (`SO_PEERCRED`); anyone
//! but the agent's uid is closed without a byte, whatever the file modes
//! say. Every signature request is classified (a git/`ssh-keygen -Y`
//! signature, an SSH authentication, anything else), put to the [`Gate`]
//! (policy, a human, the audit log), and signed only on its yes. Keys can
//! be listed and used, never added, removed, locked or exported: those
//! messages fail.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use ssh_agent_lib::agent::{self, ListeningSocket};
pub use ssh_agent_lib::async_trait;
use ssh_agent_lib::error::AgentError;
use ssh_agent_lib::proto::extension::SessionBind;
use ssh_agent_lib::proto::{Extension, Identity, PublicCredential, SignRequest};
use ssh_key::public::KeyData;
use ssh_key::Signature;
use tokio::net::{UnixListener, UnixStream};

use crate::store::Store;

/// Where agents' sockets are made by default: `<dir>/<agent>/agent.sock`.
pub const SOCKET_DIR: &str = "/run/nuketown/ssh";

/// The socket of agent `name` under `dir`.
pub fn socket_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name).join("agent.sock")
}

/// The process on the other end of the socket, as the kernel and `/proc` tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// Its pid (`SO_PEERCRED`).
    pub pid: u32,
    /// Its uid (`SO_PEERCRED`): always the agent's, or it was never heard.
    pub uid: u32,
    /// Its command line (`/proc/PID/cmdline`: the agent's own words).
    pub cmdline: Vec<String>,
    /// Its parent's command line (who ran `ssh` or `ssh-keygen`: git, usually).
    pub parent: Vec<String>,
}

fn cmdline(pid: u32) -> Vec<String> {
    let Ok(b) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return Vec::new();
    };
    let b = &b[..b.len().min(8192)];
    b.split(|c| *c == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

impl Caller {
    fn of(pid: u32, uid: u32) -> Caller {
        Caller {
            pid,
            uid,
            cmdline: cmdline(pid),
            parent: parent_of(pid).map(cmdline).unwrap_or_default(),
        }
    }
}

/// What a signature request would do with the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// An SSH signature (`ssh-keygen -Y sign`: git commits and tags use namespace `git`).
    Sign {
        /// The signature's namespace (`git`, `file`, …).
        namespace: String,
        /// The hash algorithm of the message (`sha512`, `sha256`).
        hash_alg: String,
        /// The message's hash, hex (what is signed, as the signer sees it).
        message_hash: String,
    },
    /// An SSH user authentication.
    Authenticate {
        /// The user name asked for on the server.
        user: String,
        /// The server's host key, when the connection was bound to the
        /// session by `session-bind@openssh.com` (verified: the server
        /// signed the session id with it); `None` when unknown.
        host_key: Option<String>,
    },
    /// Anything else: bytes the town cannot read.
    Other,
}

impl Operation {
    /// `sign`, `authenticate`, `other`.
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::Sign { .. } => "sign",
            Operation::Authenticate { .. } => "authenticate",
            Operation::Other => "other",
        }
    }
}

/// One use of an agent's key, as the gate judges and the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    /// Its id (128 random bits, hex): the request id approvers answer and the audit record's.
    pub id: String,
    /// The agent whose key it is.
    pub agent: String,
    /// The key's fingerprint (`SHA256:…`).
    pub key: String,
    /// What the signature is for.
    pub operation: Operation,
    /// SHA-256 of the exact bytes to sign, hex.
    pub data_sha256: String,
    /// Who asked.
    pub caller: Caller,
    /// Why the town refuses it before any policy (agent forwarding, a
    /// session the connection was not bound to), if it does.
    pub refused: Option<String>,
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Sign or not.
    pub allowed: bool,
    /// Who decided (`policy`, an approver's name, `hall`).
    pub who: String,
    /// Through which channel (`policy`, `terminal`, `matrix:…`, `paused`, `timeout`, …).
    pub channel: String,
    /// The rule or the approver's words.
    pub reason: String,
    /// The request id (also the audit record's id).
    pub id: String,
}

/// Decides on each use and records it (the town hall implements this).
#[async_trait]
pub trait Gate: Send + Sync + 'static {
    /// Decide whether `u` may sign. Called for every request that is not
    /// already refused by the store (paused) or the protocol.
    async fn decide(&self, u: &KeyUse) -> Verdict;
    /// Record what happened: the verdict and, when allowed, whether signing worked.
    fn record(&self, u: &KeyUse, v: &Verdict, result: Result<(), String>);
    /// A connection from someone who is not the agent was closed.
    fn refused_peer(&self, agent: &str, uid: Option<u32>, pid: Option<u32>);
    /// The caller went away before the decision: withdraw `u` (nothing is signed).
    fn withdraw(&self, u: &KeyUse);
}

/// Make the agent's socket: `<dir>/<agent>/` (root, the agent's group, 0750)
/// and the socket in it (root, the agent's group, 0660).
pub fn bind(dir: &Path, agent: &str, gid: u32) -> std::io::Result<UnixListener> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
        // Whatever the umask: every agent must pass through to its own directory.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    }
    let own = dir.join(agent);
    match fs::symlink_metadata(&own) {
        Ok(m) if m.is_dir() && m.uid() == 0 => {}
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{}: not a directory of root's; refusing to put {agent}'s key socket there",
                own.display()
            )))
        }
        Err(_) => fs::DirBuilder::new().mode(0o750).create(&own)?,
    }
    nix::unistd::chown(&own, Some(0.into()), Some(gid.into()))?;
    fs::set_permissions(&own, fs::Permissions::from_mode(0o750))?;
    let path = own.join("agent.sock");
    let _ = fs::remove_file(&path);
    let l = UnixListener::bind(&path)?;
    nix::unistd::chown(&path, Some(0.into()), Some(gid.into()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o660))?;
    Ok(l)
}

/// Most connections one agent may hold open to its socket at once: more are
/// closed at once, so an agent cannot exhaust the hall's descriptors.
pub const MAX_CONNECTIONS: usize = 64;
/// Most bytes one connection may send: a session of ssh signs a handful of
/// small messages; an agent cannot make the hall buffer without bound.
pub const MAX_BYTES: u64 = 4 << 20;

/// The listener, handing on only connections whose peer is the agent's uid.
#[derive(Debug)]
struct OnlyFor {
    listener: UnixListener,
    agent: String,
    uid: u32,
    gate: Arc<dyn GateDebug>,
    live: Arc<std::sync::atomic::AtomicUsize>,
}

/// One accepted connection: its peer, counted while open, its input bounded.
#[derive(Debug)]
struct Guarded {
    inner: UnixStream,
    pid: u32,
    uid: u32,
    read: u64,
    live: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl tokio::io::AsyncRead for Guarded {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read += (buf.filled().len() - before) as u64;
        if self.read > MAX_BYTES {
            return std::task::Poll::Ready(Err(std::io::Error::other(
                "more than the agent protocol ever needs on one connection",
            )));
        }
        r
    }
}

impl tokio::io::AsyncWrite for Guarded {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

trait GateDebug: Gate {}
impl<T: Gate> GateDebug for T {}
impl std::fmt::Debug for dyn GateDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

#[async_trait]
impl ListeningSocket for OnlyFor {
    type Stream = Guarded;
    async fn accept(&mut self) -> std::io::Result<Guarded> {
        use std::sync::atomic::Ordering;
        loop {
            let (s, _) = self.listener.accept().await?;
            match s.peer_cred() {
                Ok(c) if c.uid() == self.uid => {
                    if self.live.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                        tracing::warn!(
                            "{} has {MAX_CONNECTIONS} connections open to its key socket; closed another",
                            self.agent
                        );
                        continue;
                    }
                    self.live.fetch_add(1, Ordering::SeqCst);
                    return Ok(Guarded {
                        inner: s,
                        pid: c.pid().map_or(0, |p| p as u32),
                        uid: c.uid(),
                        read: 0,
                        live: self.live.clone(),
                    });
                }
                Ok(c) => {
                    self.gate
                        .refused_peer(&self.agent, Some(c.uid()), c.pid().map(|p| p as u32))
                }
                Err(_) => self.gate.refused_peer(&self.agent, None, None),
            }
            // Dropped: closed without a byte.
        }
    }
}

/// A second tokio handle on the same connection (a duplicated descriptor).
fn dup_stream(s: &UnixStream) -> Option<UnixStream> {
    use std::os::fd::{AsFd, OwnedFd};
    let fd: OwnedFd = s.as_fd().try_clone_to_owned().ok()?;
    let std = std::os::unix::net::UnixStream::from(fd);
    std.set_nonblocking(true).ok()?;
    UnixStream::from_std(std).ok()
}

/// Completes when the peer has closed the connection (EOF), never when it
/// merely sent more (the agent protocol is one request at a time).
async fn peer_gone(s: &UnixStream) {
    use std::os::fd::AsRawFd;
    loop {
        if s.readable().await.is_err() {
            return;
        }
        let mut b = [0u8; 1];
        let peeked = s.try_io(tokio::io::Interest::READABLE, || {
            nix::sys::socket::recv(
                s.as_raw_fd(),
                &mut b,
                nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            )
            .map_err(std::io::Error::from)
        });
        match peeked {
            // The end of the stream: the caller closed it.
            Ok(0) => return,
            // More bytes: the caller is still there.
            Ok(_) => std::future::pending::<()>().await,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            // Reset: gone.
            Err(_) => return,
        }
    }
}

/// One connection's state.
#[derive(Clone)]
struct Conn {
    watch: Option<Arc<UnixStream>>,
    agent: String,
    store: Arc<Store>,
    gate: Arc<dyn GateDebug>,
    caller: Caller,
    /// Sessions this connection was bound to: (session id, host key, forwarding).
    binds: Vec<(Vec<u8>, KeyData, bool)>,
}

struct Server {
    agent: String,
    store: Arc<Store>,
    gate: Arc<dyn GateDebug>,
}

impl agent::Agent<OnlyFor> for Server {
    fn new_session(&mut self, socket: &Guarded) -> impl agent::Session {
        let (uid, pid) = (socket.uid, socket.pid);
        // A second handle on the connection, to notice the caller leave while
        // a human decides (the protocol's own reader waits for our answer).
        let watch = dup_stream(&socket.inner).map(Arc::new);
        Conn {
            watch,
            agent: self.agent.clone(),
            store: self.store.clone(),
            gate: self.gate.clone(),
            caller: Caller::of(pid, uid),
            binds: Vec::new(),
        }
    }
}

/// Serve agent `agent` (uid `uid`) on `listener` until the task is dropped.
pub async fn serve(
    listener: UnixListener,
    agent: String,
    uid: u32,
    store: Arc<Store>,
    gate: Arc<impl Gate>,
) {
    let gate: Arc<dyn GateDebug> = gate;
    let socket = OnlyFor {
        listener,
        agent: agent.clone(),
        uid,
        gate: gate.clone(),
        live: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    };
    let server = Server {
        agent: agent.clone(),
        store,
        gate,
    };
    if let Err(e) = agent::listen(socket, server).await {
        tracing::error!("{agent}'s key socket stopped: {e}");
    }
}

/// A reader of SSH wire strings.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn string(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_be_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let s = self.0.get(4..4 + n)?;
        self.0 = &self.0[4 + n..];
        Some(s)
    }
    fn byte(&mut self) -> Option<u8> {
        let b = *self.0.first()?;
        self.0 = &self.0[1..];
        Some(b)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An authentication's session id and, for the host-bound method, the host
/// key (wire encoding) the client says it saw.
pub type Session = (Vec<u8>, Option<Vec<u8>>);

/// What the bytes an agent asks to sign are: an SSHSIG blob, an SSH
/// userauth request (with its [`Session`]), or neither.
pub fn classify(data: &[u8]) -> (Operation, Option<Session>) {
    if let Some(rest) = data.strip_prefix(b"SSHSIG") {
        let mut w = Wire(rest);
        let parsed = (|| {
            let namespace = String::from_utf8(w.string()?.to_vec()).ok()?;
            let _reserved = w.string()?;
            let hash_alg = String::from_utf8(w.string()?.to_vec()).ok()?;
            let hash = w.string()?;
            w.0.is_empty().then(|| Operation::Sign {
                namespace,
                hash_alg,
                message_hash: hex(hash),
            })
        })();
        return (parsed.unwrap_or(Operation::Other), None);
    }
    let mut w = Wire(data);
    let parsed = (|| {
        let session_id = w.string()?.to_vec();
        if w.byte()? != 50 {
            return None;
        }
        let user = String::from_utf8(w.string()?.to_vec()).ok()?;
        if w.string()? != b"ssh-connection" {
            return None;
        }
        let method = w.string()?;
        if w.byte()? != 1 {
            return None;
        }
        let _alg = w.string()?;
        let _key = w.string()?;
        let host_key = match method {
            b"publickey" => None,
            b"publickey-hostbound-v00@openssh.com" => Some(w.string()?.to_vec()),
            _ => return None,
        };
        w.0.is_empty().then_some((user, session_id, host_key))
    })();
    match parsed {
        Some((user, session_id, host_key)) => (
            Operation::Authenticate {
                user,
                host_key: None,
            },
            Some((session_id, host_key)),
        ),
        None => (Operation::Other, None),
    }
}

fn key_line(k: &KeyData) -> String {
    ssh_key::PublicKey::from(k.clone())
        .to_openssh()
        .unwrap_or_default()
}

fn failure(why: impl Into<String>) -> AgentError {
    AgentError::Other(why.into().into())
}

impl Conn {
    /// The operation with what this connection's session binds tell about
    /// the host, or why the town refuses it outright.
    fn judge(&self, data: &[u8]) -> (Operation, Option<String>) {
        let (mut op, session) = classify(data);
        let mut refused = None;
        if let (Operation::Authenticate { host_key, .. }, Some((sid, bound_key))) =
            (&mut op, session)
        {
            if let Some((_, k, fwd)) = self.binds.iter().rev().find(|(s, _, _)| *s == sid) {
                if *fwd {
                    refused = Some("the request came through agent forwarding (ssh -A); the town's keys are not forwarded".to_string());
                }
                if let Some(b) = bound_key {
                    if <KeyData as ssh_agent_lib::ssh_encoding::Decode>::decode(&mut &b[..])
                        .ok()
                        .as_ref()
                        != Some(k)
                    {
                        refused = Some(
                            "the host key in the request is not the one the session was bound to"
                                .to_string(),
                        );
                    }
                }
                *host_key = Some(key_line(k));
            } else if !self.binds.is_empty() {
                refused = Some(
                    "the request is for a session this connection was not bound to".to_string(),
                );
            }
        }
        if self.binds.iter().any(|(_, _, fwd)| *fwd) && refused.is_none() {
            refused = Some(
                "the connection is a forwarded agent (ssh -A); the town's keys are not forwarded"
                    .to_string(),
            );
        }
        (op, refused)
    }
}

#[async_trait]
impl agent::Session for Conn {
    async fn request_identities(&mut self) -> Result<Vec<Identity>, AgentError> {
        // Listed even while paused: the use is then asked for, refused and audited.
        Ok(match self.store.public(&self.agent) {
            Ok(Some(k)) => vec![Identity {
                credential: PublicCredential::Key(k.key_data().clone()),
                comment: k.comment().to_string(),
            }],
            _ => Vec::new(),
        })
    }

    async fn sign(&mut self, request: SignRequest) -> Result<Signature, AgentError> {
        let public = self
            .store
            .public(&self.agent)
            .ok()
            .flatten()
            .ok_or_else(|| failure("no key"))?;
        if request.credential.key_data() != public.key_data() {
            return Err(failure("not this agent's key"));
        }
        let (operation, refused) = self.judge(&request.data);
        let u = KeyUse {
            id: crate::new_id().map_err(|e| failure(e.to_string()))?,
            agent: self.agent.clone(),
            key: crate::store::fingerprint(&public),
            operation,
            data_sha256: hex(&Sha256::digest(&request.data)),
            caller: self.caller.clone(),
            refused,
        };
        let verdict = if self.store.paused(&self.agent) {
            Verdict {
                allowed: false,
                who: "hall".into(),
                channel: "paused".into(),
                reason: format!(
                    "{}'s keys are paused (`nuketown keys resume {}`)",
                    self.agent, self.agent
                ),
                id: u.id.clone(),
            }
        } else {
            let gone = async {
                match &self.watch {
                    Some(w) => peer_gone(w).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                v = self.gate.decide(&u) => v,
                _ = gone => {
                    self.gate.withdraw(&u);
                    return Err(failure("the caller went away"));
                }
            }
        };
        if !verdict.allowed {
            self.gate.record(&u, &verdict, Err("not signed".into()));
            return Err(failure(verdict.reason));
        }
        // Paused while a human was deciding: still nothing is signed.
        if self.store.paused(&self.agent) {
            let v = Verdict {
                allowed: false,
                channel: "paused".into(),
                reason: format!("{}'s keys were paused meanwhile", self.agent),
                ..verdict
            };
            self.gate.record(&u, &v, Err("not signed".into()));
            return Err(failure(v.reason));
        }
        let signed = self.store.private(&self.agent).and_then(|key| {
            if key.public_key().key_data() != public.key_data() {
                return Err(crate::KeyError::Invalid(
                    "the key was rotated meanwhile".into(),
                ));
            }
            signature::Signer::try_sign(&key, &request.data)
                .map_err(|e| crate::KeyError::Invalid(e.to_string()))
        });
        match signed {
            Ok(sig) => {
                self.gate.record(&u, &verdict, Ok(()));
                Ok(sig)
            }
            Err(e) => {
                self.gate.record(&u, &verdict, Err(e.to_string()));
                Err(failure(e.to_string()))
            }
        }
    }

    async fn extension(&mut self, extension: Extension) -> Result<Option<Extension>, AgentError> {
        if extension.name == "session-bind@openssh.com" {
            let bind: SessionBind = extension
                .parse_message()
                .ok()
                .flatten()
                .ok_or(AgentError::ExtensionFailure)?;
            bind.verify_signature()
                .map_err(|_| AgentError::ExtensionFailure)?;
            self.binds
                .push((bind.session_id, bind.host_key, bind.is_forwarding));
            return Ok(None);
        }
        Err(AgentError::ExtensionFailure)
    }
}
