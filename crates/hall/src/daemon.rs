//! The town hall daemon: two sockets, one state.
//!
//! The requester socket (root only) takes requests from the entry point; the
//! approver socket (group `nuketown-approvers`) serves approvers. Peers are
//! identified by SO_PEERCRED only. Every path that is not an explicit
//! approval ends in a denial: timeout, malformed message, requester gone.

use std::collections::HashMap;
use std::os::fd::FromRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nuketown_town::Town;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, oneshot, Mutex};

use crate::audit::{AuditLog, Record};
use crate::policy::{self, Automatic, Grant};
use crate::protocol::{
    self, DecidedBy, FromApprover, FromRequester, RequestView, ToApprover, ToRequester, MAX_LINE,
    VERSION,
};
use crate::time::now_ms;

/// Where the hall listens and writes.
#[derive(Debug, Clone)]
pub struct Config {
    /// Requester socket (root 0600).
    pub requester_socket: PathBuf,
    /// Approver socket (group nuketown-approvers, 0660).
    pub approver_socket: PathBuf,
    /// Mock mode file.
    pub mode_file: PathBuf,
    /// Audit log.
    pub audit_log: PathBuf,
    /// The town file (re-read on every request, so policy changes apply at once).
    pub town: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            requester_socket: crate::REQUESTER_SOCKET.into(),
            approver_socket: crate::APPROVER_SOCKET.into(),
            mode_file: crate::MODE_FILE.into(),
            audit_log: crate::AUDIT_LOG.into(),
            town: "/etc/nuketown/town.json".into(),
        }
    }
}

/// How a pending request ended.
#[derive(Debug, Clone)]
struct Outcome {
    approved: bool,
    by: DecidedBy,
    reason: String,
}

struct Pending {
    view: RequestView,
    decide: oneshot::Sender<Outcome>,
}

struct State {
    cfg: Config,
    audit: AuditLog,
    pending: Mutex<HashMap<String, Pending>>,
    grants: Mutex<Vec<Grant>>,
    events: broadcast::Sender<ToApprover>,
}

/// An unguessable request id: 128 random bits, hex.
fn new_id() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn load_town(path: &Path) -> Result<Town, String> {
    nuketown_town::load(path)
        .map_err(|e| format!("the town cannot be read ({e}); denying everything until it is fixed"))
}

/// Read one line of at most MAX_LINE bytes; None at EOF, Err when too long or broken.
async fn read_line<R: tokio::io::AsyncRead + Unpin>(
    r: &mut BufReader<R>,
) -> Result<Option<Vec<u8>>, String> {
    let mut buf = Vec::new();
    let mut limited = (&mut *r).take(MAX_LINE as u64 + 1);
    let n = limited
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        if buf.len() > MAX_LINE {
            return Err(format!("message longer than {MAX_LINE} bytes"));
        }
        return Err("connection closed mid-message".into());
    }
    buf.pop();
    Ok(Some(buf))
}

fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

fn user_gids(name: &str, gid: u32) -> Vec<u32> {
    let mut gids = vec![gid];
    if let Ok(text) = std::fs::read_to_string("/etc/group") {
        for l in text.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse() {
                    gids.push(g);
                }
            }
        }
    }
    gids
}

/// Approvers as (uid, name), for peer checks and the mock file.
fn approver_uids(town: &Town) -> Vec<(u32, String)> {
    town.approvers()
        .into_iter()
        .filter_map(|n| {
            nix::unistd::User::from_name(&n)
                .ok()
                .flatten()
                .map(|u| (u.uid.as_raw(), n))
        })
        .collect()
}

async fn send<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    m: &impl serde::Serialize,
) -> std::io::Result<()> {
    w.write_all(&protocol::encode(m)).await
}

impl State {
    fn record_decision(
        &self,
        id: &str,
        agent: &str,
        uid: u32,
        ask: Option<&protocol::Ask>,
        approved: Option<bool>,
        by: &DecidedBy,
        reason: &str,
        mock: bool,
        asked: Instant,
    ) {
        let mut r = Record::new(id, "decision", agent, uid);
        if let Some(a) = ask {
            r.argv = a.argv.clone();
            r.cwd = a.cwd.clone();
            r.target = a.user.clone();
        }
        r.decision = match approved {
            Some(true) => "approved",
            Some(false) => "denied",
            None => "cancelled",
        }
        .to_string();
        r.reason = reason.to_string();
        r.decided_by = Some(by.clone());
        r.mock = mock;
        r.latency_ms = Some(asked.elapsed().as_millis() as u64);
        if let Err(e) = self.audit.append(&r) {
            tracing::error!(
                "cannot write the audit log {}: {e}",
                self.cfg.audit_log.display()
            );
        }
    }

    /// One requester connection: a request, its decision, the exit status.
    async fn serve_requester(self: Arc<Self>, stream: UnixStream) {
        let asked = Instant::now();
        let peer = stream.peer_cred().ok();
        if peer.map(|p| p.uid()) != Some(0) {
            tracing::warn!(peer = ?peer.map(|p| p.uid()), "refused a requester that is not root");
            return; // not even a denial: nothing for non-root peers
        }
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let id = new_id();
        let hall = DecidedBy {
            who: "hall".into(),
            channel: "hall".into(),
        };
        let deny = |reason: String| ToRequester::Decision {
            id: id.clone(),
            approved: false,
            by: hall.clone(),
            reason,
            mock: false,
        };

        let line = match tokio::time::timeout(Duration::from_secs(10), read_line(&mut rd)).await {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                self.record_decision(&id, "?", 0, None, Some(false), &hall, &e, false, asked);
                let _ = send(&mut wr, &deny(e)).await;
                return;
            }
            Err(_) => {
                let _ = send(&mut wr, &deny("no request within 10 s".into())).await;
                return;
            }
        };
        let ask = match protocol::parse_requester(&line) {
            Ok(FromRequester::Request { ask, .. }) => ask,
            Ok(FromRequester::Exit { .. }) => {
                let _ = send(&mut wr, &deny("an exit status without a request".into())).await;
                return;
            }
            Err(e) => {
                let reason = e.to_string();
                self.record_decision(&id, "?", 0, None, Some(false), &hall, &reason, false, asked);
                let _ = send(&mut wr, &deny(reason)).await;
                return;
            }
        };
        let uid = ask.sudo_uid;
        let town = match load_town(&self.cfg.town) {
            Ok(t) => t,
            Err(reason) => {
                self.record_decision(
                    &id,
                    &user_name(uid).unwrap_or_default(),
                    uid,
                    Some(&ask),
                    Some(false),
                    &hall,
                    &reason,
                    false,
                    asked,
                );
                let _ = send(&mut wr, &deny(reason)).await;
                return;
            }
        };
        let Some((name, agent)) = policy::agent_by_uid(&town, uid) else {
            let who = user_name(uid).unwrap_or_else(|| format!("uid {uid}"));
            let reason = format!("{who} is not an agent of this town");
            self.record_decision(
                &id,
                &who,
                uid,
                Some(&ask),
                Some(false),
                &hall,
                &reason,
                false,
                asked,
            );
            let _ = send(&mut wr, &deny(reason)).await;
            return;
        };
        let name = name.clone();

        let now = now_ms();
        self.grants.lock().await.retain(|g| g.until_ms > now);
        let automatic: Option<Automatic> = {
            let grants = self.grants.lock().await;
            policy::by_rules(&name, agent, &ask.argv, &ask.user, &grants, now)
        }
        .or_else(|| policy::mock(&self.cfg.mode_file, &approver_uids(&town)));

        let (approved, by, reason, mock) = if let Some(a) = automatic {
            (a.approved, a.by, a.reason, a.mock)
        } else {
            // Ask the humans.
            let timeout = Duration::from_secs(agent.sudo.timeout);
            let gids = user_gids(&name, uid);
            let view = RequestView {
                id: id.clone(),
                agent: name.clone(),
                uid,
                argv: ask.argv.clone(),
                cwd: ask.cwd.clone(),
                user: ask.user.clone(),
                group: ask.group.clone(),
                agent_can_write: policy::agent_can_write(Path::new(&ask.argv[0]), uid, &gids),
                asked_ms: now,
                deadline_ms: now + timeout.as_millis() as u64,
            };
            let (tx, rx) = oneshot::channel();
            self.pending.lock().await.insert(
                id.clone(),
                Pending {
                    view: view.clone(),
                    decide: tx,
                },
            );
            let _ = self.events.send(ToApprover::Request { request: view });
            if send(
                &mut wr,
                &ToRequester::Pending {
                    id: id.clone(),
                    timeout_secs: agent.sudo.timeout,
                },
            )
            .await
            .is_err()
            {
                self.pending.lock().await.remove(&id);
                return;
            }
            // Decision, timeout, or the requester going away — whichever comes first.
            let mut probe = [0u8; 1];
            let outcome = tokio::select! {
                o = rx => o.ok(),
                _ = tokio::time::sleep(timeout) => Some(Outcome {
                    approved: false,
                    by: DecidedBy { who: "hall".into(), channel: "timeout".into() },
                    reason: format!("timed out after {} s", agent.sudo.timeout),
                }),
                _ = rd.read(&mut probe) => None,
            };
            self.pending.lock().await.remove(&id);
            match outcome {
                Some(o) => (o.approved, o.by, o.reason, false),
                None => {
                    let by = DecidedBy {
                        who: "hall".into(),
                        channel: "requester".into(),
                    };
                    self.record_decision(
                        &id,
                        &name,
                        uid,
                        Some(&ask),
                        None,
                        &by,
                        "the requester went away",
                        false,
                        asked,
                    );
                    let _ = self.events.send(ToApprover::Resolved {
                        id: id.clone(),
                        outcome: "cancelled".into(),
                        by,
                    });
                    return;
                }
            }
        };
        self.record_decision(
            &id,
            &name,
            uid,
            Some(&ask),
            Some(approved),
            &by,
            &reason,
            mock,
            asked,
        );
        let _ = self.events.send(ToApprover::Resolved {
            id: id.clone(),
            outcome: if approved { "approved" } else { "denied" }.into(),
            by: by.clone(),
        });
        let decision = ToRequester::Decision {
            id: id.clone(),
            approved,
            by,
            reason,
            mock,
        };
        if send(&mut wr, &decision).await.is_err() || !approved {
            return;
        }
        // The command runs now; its exit status comes back on this connection.
        if let Ok(Some(line)) = read_line(&mut rd).await {
            if let Ok(FromRequester::Exit { id: eid, status }) = protocol::parse_requester(&line) {
                if eid == id {
                    let mut r = Record::new(&id, "exit", &name, uid);
                    r.exit_status = Some(status);
                    if let Err(e) = self.audit.append(&r) {
                        tracing::error!("cannot write the audit log: {e}");
                    }
                }
            }
        }
    }

    /// One approver connection.
    async fn serve_approver(self: Arc<Self>, stream: UnixStream) {
        let Ok(peer) = stream.peer_cred() else { return };
        let town = match load_town(&self.cfg.town) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        let who = if peer.uid() == 0 {
            "root".to_string()
        } else if let Some((_, n)) = approver_uids(&town)
            .into_iter()
            .find(|(u, _)| *u == peer.uid())
        {
            n
        } else {
            tracing::warn!(
                uid = peer.uid(),
                "refused an approver connection from a user who is not an approver"
            );
            return;
        };
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let mut events: Option<broadcast::Receiver<ToApprover>> = None;
        loop {
            let line = tokio::select! {
                l = read_line(&mut rd) => l,
                ev = async { events.as_mut().expect("guarded").recv().await }, if events.is_some() => {
                    match ev {
                        Ok(m) => {
                            if send(&mut wr, &m).await.is_err() { return; }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!("approver {who} lagged {n} events");
                        }
                        Err(_) => return,
                    }
                    continue;
                }
            };
            let line = match line {
                Ok(Some(l)) => l,
                Ok(None) => return,
                Err(e) => {
                    let _ = send(&mut wr, &ToApprover::Error { message: e }).await;
                    return;
                }
            };
            let reply = match protocol::parse_approver(&line) {
                Err(e) => ToApprover::Error {
                    message: e.to_string(),
                },
                Ok(FromApprover::List { .. }) => ToApprover::Requests {
                    requests: self.pending_views().await,
                },
                Ok(FromApprover::Watch { .. }) => {
                    // Subscribe first, then send what is already pending: nothing falls between.
                    events = Some(self.events.subscribe());
                    ToApprover::Requests {
                        requests: self.pending_views().await,
                    }
                }
                Ok(FromApprover::Decide {
                    id,
                    agent,
                    argv,
                    approve,
                    grant_secs,
                    channel,
                    ..
                }) => {
                    self.decide(&who, &id, &agent, &argv, approve, grant_secs, &channel)
                        .await
                }
            };
            if send(&mut wr, &reply).await.is_err() {
                return;
            }
        }
    }

    async fn pending_views(&self) -> Vec<RequestView> {
        let mut v: Vec<RequestView> = self
            .pending
            .lock()
            .await
            .values()
            .map(|p| p.view.clone())
            .collect();
        v.sort_by_key(|r| r.asked_ms);
        v
    }

    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        who: &str,
        id: &str,
        agent: &str,
        argv: &[String],
        approve: bool,
        grant_secs: Option<u64>,
        channel: &str,
    ) -> ToApprover {
        let channel_ok = matches!(channel, "terminal" | "desktop")
            || channel
                .strip_prefix("matrix:")
                .is_some_and(|m| m.starts_with('@'))
            || channel == "matrix";
        if !channel_ok {
            return ToApprover::Error {
                message: format!(
                    "unknown channel {channel:?}; use terminal, desktop or matrix:@user:server"
                ),
            };
        }
        let mut pending = self.pending.lock().await;
        let Some(p) = pending.get(id) else {
            return ToApprover::Error {
                message: format!("no pending request {id} (decided, withdrawn or timed out)"),
            };
        };
        if p.view.agent != agent || p.view.argv != argv {
            return ToApprover::Error {
                message: format!(
                    "request {id} is not {agent}'s {}; nothing decided",
                    protocol::show_argv(argv)
                ),
            };
        }
        let p = pending.remove(id).expect("present");
        drop(pending);
        if approve {
            if let Some(secs) = grant_secs.filter(|s| *s > 0) {
                self.grants.lock().await.push(Grant {
                    agent: agent.to_string(),
                    argv: argv.to_vec(),
                    user: p.view.user.clone(),
                    until_ms: now_ms() + secs.min(86_400) * 1000,
                    by: who.to_string(),
                });
            }
        }
        let reason = match (approve, grant_secs) {
            (true, Some(s)) if s > 0 => {
                format!("approved by {who} via {channel}, and granted for {s} s")
            }
            (true, _) => format!("approved by {who} via {channel}"),
            (false, _) => format!("denied by {who} via {channel}"),
        };
        let _ = p.decide.send(Outcome {
            approved: approve,
            by: DecidedBy {
                who: who.to_string(),
                channel: channel.to_string(),
            },
            reason,
        });
        ToApprover::Ok { id: id.to_string() }
    }
}

/// Sockets handed over by systemd (LISTEN_FDS), by name.
fn activated_sockets() -> HashMap<String, std::os::unix::net::UnixListener> {
    let mut out = HashMap::new();
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let n: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if !pid_ok || n <= 0 {
        return out;
    }
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .unwrap_or_default()
        .split(':')
        .map(str::to_string)
        .collect();
    for i in 0..n {
        let fd = 3 + i;
        // Safety: systemd passes these descriptors to us, open, starting at 3.
        let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
        let _ = l.set_nonblocking(true);
        out.insert(names.get(i as usize).cloned().unwrap_or_default(), l);
    }
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDNAMES");
    out
}

fn bind(path: &Path, mode: u32, group: Option<&str>) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    if let Some(g) = group {
        match nix::unistd::Group::from_name(g).ok().flatten() {
            Some(grp) => {
                nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), Some(grp.gid))?
            }
            None => tracing::warn!(
                "group {g} does not exist: only root can approve (run nuketown apply)"
            ),
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(l)
}

fn sd_notify(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let p = path.to_string_lossy().into_owned();
    let r = if let Some(abs) = p.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abs.as_bytes())
            .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), &p)
    };
    if let Err(e) = r {
        tracing::warn!("sd_notify failed: {e}");
    }
}

/// Run the hall until the process is stopped.
pub async fn run(cfg: Config) -> std::io::Result<()> {
    let mut activated = activated_sockets();
    let requester = match activated.remove("requester") {
        Some(l) => UnixListener::from_std(l)?,
        None => bind(&cfg.requester_socket, 0o600, None)?,
    };
    let approver = match activated.remove("approvers") {
        Some(l) => UnixListener::from_std(l)?,
        None => bind(&cfg.approver_socket, 0o660, Some(crate::APPROVERS_GROUP))?,
    };
    if let Err(e) = load_town(&cfg.town) {
        tracing::error!("{e}");
    }
    let (events, _) = broadcast::channel(4096);
    let state = Arc::new(State {
        audit: AuditLog::new(&cfg.audit_log),
        cfg: cfg.clone(),
        pending: Mutex::new(HashMap::new()),
        grants: Mutex::new(Vec::new()),
        events,
    });
    tracing::info!(
        "town hall v{VERSION} listening: requests on {}, approvers on {}",
        cfg.requester_socket.display(),
        cfg.approver_socket.display()
    );
    sd_notify("READY=1\nSTATUS=accepting requests");
    loop {
        tokio::select! {
            r = requester.accept() => match r {
                Ok((s, _)) => { tokio::spawn(state.clone().serve_requester(s)); }
                Err(e) => tracing::warn!("accept on the requester socket: {e}"),
            },
            r = approver.accept() => match r {
                Ok((s, _)) => { tokio::spawn(state.clone().serve_approver(s)); }
                Err(e) => tracing::warn!("accept on the approver socket: {e}"),
            },
        }
    }
}
