//! The town hall daemon: two sockets over one [`State`].
//!
//! The requester socket (root only) takes requests from the entry point; the
//! approver socket (group `nuketown-approvers`) serves approvers. Peers are
//! identified by SO_PEERCRED, never by what they say. Every path that is not
//! an explicit approval ends in a denial: timeout, malformed or oversized
//! message, unknown agent, unreadable town, approvers gone, hall stopping.

use std::collections::HashMap;
use std::os::fd::FromRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nuketown_town::Town;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, Notify};

use crate::audit::{AuditLog, Record};
use crate::changeable::{self, Assessment, Identity};
use crate::policy::{self, Automatic, MockRefusal};
use crate::protocol::{
    self, Ask, DecidedBy, FromApprover, FromRequester, RequestView, ToApprover, ToRequester,
    MAX_LINE, VERSION,
};
use crate::state::{GrantKey, Outcome, State};
use crate::time::now_ms;

/// How long a requester has to send its request after connecting.
const REQUEST_WITHIN: Duration = Duration::from_secs(10);

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
    /// The town file, re-read whenever it changes, so policy changes apply at once.
    pub town: PathBuf,
    /// Where each agent's ssh-agent socket is made: `<dir>/<agent>/agent.sock`.
    pub ssh_agent_dir: PathBuf,
    /// The town's sealing key, which opens the agents' sealed keys.
    pub sealing_key: PathBuf,
    /// The ask socket (0666; only the town's agents are served, by `SO_PEERCRED`).
    pub ask_socket: PathBuf,
    /// The nftables table (`inet <name>`) holding the agents' network rules.
    pub nft_table: String,
    /// The agents' network rules `apply` wrote, installed when the hall starts.
    pub nftables_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            requester_socket: crate::REQUESTER_SOCKET.into(),
            approver_socket: crate::APPROVER_SOCKET.into(),
            mode_file: crate::MODE_FILE.into(),
            audit_log: crate::AUDIT_LOG.into(),
            town: "/etc/nuketown/town.json".into(),
            ssh_agent_dir: nuketown_keys::agent::SOCKET_DIR.into(),
            sealing_key: nuketown_keys::sealing::default_path(),
            ask_socket: crate::ASK_SOCKET.into(),
            nft_table: nuketown_town::network::TABLE.into(),
            nftables_file: Some(crate::NFTABLES_FILE.into()),
        }
    }
}

/// The town as last read, with its approvers' uids and its agents' groups.
pub(crate) struct Loaded {
    pub(crate) town: Town,
    pub(crate) approvers: Vec<(u32, String)>,
    /// Every enabled agent (uids and groups), looked up once per change: what
    /// any of them can change, root does not run without a human.
    agents: Identity,
}

/// Identity of the files a [`Loaded`] came from: the town file, /etc/passwd, /etc/group.
type Stamp = [(u64, u64, u64, i64, i64); 3];

fn stamp_of(path: &Path) -> (u64, u64, u64, i64, i64) {
    std::fs::metadata(path).map_or((0, 0, 0, 0, 0), |m| {
        (
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime_nsec() + m.mtime() * 1_000_000_000,
            m.ctime_nsec() + m.ctime() * 1_000_000_000,
        )
    })
}

/// Reads the town only when it (or the user database) changed.
struct TownCache {
    path: PathBuf,
    last: Mutex<Option<(Stamp, Arc<Loaded>)>>,
}

impl TownCache {
    fn get(&self) -> Result<Arc<Loaded>, String> {
        let stamp = [
            stamp_of(&self.path),
            stamp_of(Path::new("/etc/passwd")),
            stamp_of(Path::new("/etc/group")),
        ];
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, l)) = last.as_ref() {
            if *s == stamp {
                return Ok(l.clone());
            }
        }
        let town = nuketown_town::load(&self.path).map_err(|e| {
            format!("the town cannot be read ({e}); every request is denied until it is fixed")
        })?;
        let approvers = town
            .approvers()
            .into_iter()
            .filter_map(|n| {
                nix::unistd::User::from_name(&n)
                    .ok()
                    .flatten()
                    .map(|u| (u.uid.as_raw(), n))
            })
            .collect();
        let agents = Identity::of_uids(town.host_agents().map(|(_, a)| a.uid));
        let loaded = Arc::new(Loaded {
            town,
            approvers,
            agents,
        });
        *last = Some((stamp, loaded.clone()));
        Ok(loaded)
    }
}

/// Read one line of at most [`MAX_LINE`] bytes: `None` at a clean end,
/// an error when it is too long or cut off.
pub(crate) async fn read_line<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
) -> Result<Option<Vec<u8>>, String> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if buf.len() > MAX_LINE {
            protocol::ProtocolError::TooLong.to_string()
        } else {
            "the connection closed in the middle of a message".into()
        });
    }
    buf.pop();
    Ok(Some(buf))
}

pub(crate) async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    m: &impl serde::Serialize,
) -> std::io::Result<()> {
    w.write_all(&protocol::encode(m)).await?;
    w.flush().await
}

fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// The daemon: state, configuration, the town, the audit log.
pub struct Hall {
    pub(crate) cfg: Config,
    state: State,
    town: TownCache,
    audit: AuditLog,
    /// Requester connections still open, so a stopping hall can let them hear their denial.
    in_flight: AtomicUsize,
    idle: Notify,
    /// Each agent's key socket: its uid and the task serving it.
    key_sockets: Mutex<HashMap<String, (u32, tokio::task::JoinHandle<()>)>>,
    /// Open connections per uid on the ask socket.
    pub(crate) askers: crate::ask::Connections,
    /// Every audit record as it is written, for agents following their own requests.
    pub(crate) followers: crate::follow::Hub,
}

/// What the audit log needs to know about a request.
struct Asked<'a> {
    id: &'a str,
    agent: &'a str,
    uid: u32,
    ask: Option<&'a Ask>,
    assessment: Option<&'a Assessment>,
    arrived: Instant,
}

impl Hall {
    /// A hall with this configuration (nothing bound yet).
    pub fn new(cfg: Config) -> Arc<Hall> {
        Arc::new(Hall {
            town: TownCache {
                path: cfg.town.clone(),
                last: Mutex::new(None),
            },
            audit: AuditLog::new(&cfg.audit_log),
            state: State::new(),
            cfg,
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            key_sockets: Mutex::new(HashMap::new()),
            askers: crate::ask::Connections::default(),
            followers: crate::follow::Hub::default(),
        })
    }

    /// The town as last read (re-read when it changed).
    pub(crate) fn loaded(&self) -> Result<Arc<Loaded>, String> {
        self.town.get()
    }

    /// Append a record to the audit log (errors are logged: the hall goes on).
    pub(crate) fn append(&self, r: &Record) {
        if let Err(e) = self.audit.append(r) {
            tracing::error!(
                "cannot write the audit log {}: {e}",
                self.audit.path().display()
            );
        }
        self.followers.publish(r);
    }

    /// The town's key store, opened with the sealing key.
    fn key_store(&self, town: &Town) -> Result<nuketown_keys::Store, String> {
        let sealing = nuketown_keys::SealingKey::load_or_create(&self.cfg.sealing_key)
            .map_err(|e| e.to_string())?;
        Ok(nuketown_keys::Store::new(
            &town
                .persist_dir
                .join("agents")
                .join(nuketown_keys::store::STORE_DIR),
            sealing,
        ))
    }

    /// Give every enabled agent its key socket, and take departed agents' away.
    fn sync_key_sockets(self: &Arc<Self>) {
        let Ok(loaded) = self.town.get() else {
            return;
        };
        let mut sockets = self.key_sockets.lock().unwrap_or_else(|p| p.into_inner());
        let wanted: HashMap<&String, u32> =
            loaded.town.host_agents().map(|(n, a)| (n, a.uid)).collect();
        sockets.retain(|name, (uid, task)| {
            let keep = wanted.get(name) == Some(uid) && !task.is_finished();
            if !keep {
                task.abort();
                let _ = std::fs::remove_file(nuketown_keys::agent::socket_path(
                    &self.cfg.ssh_agent_dir,
                    name,
                ));
            }
            keep
        });
        let missing: Vec<(&String, u32)> = wanted
            .iter()
            .filter(|(n, _)| !sockets.contains_key(**n))
            .map(|(n, u)| (*n, *u))
            .collect();
        if missing.is_empty() {
            return;
        }
        let store = match self.key_store(&loaded.town) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::error!("the agents' key sockets are not served: {e}");
                return;
            }
        };
        let gate = Arc::new(crate::keyuse::HallGate(self.clone()));
        for (name, uid) in missing {
            let Some(gid) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.gid.as_raw())
            else {
                tracing::debug!("{name} (uid {uid}) has no user yet: no key socket");
                continue;
            };
            match nuketown_keys::agent::bind(&self.cfg.ssh_agent_dir, name, gid) {
                Ok(l) => {
                    let task = tokio::spawn(nuketown_keys::agent::serve(
                        l,
                        name.clone(),
                        uid,
                        store.clone(),
                        gate.clone(),
                    ));
                    sockets.insert(name.clone(), (uid, task));
                }
                Err(e) => tracing::error!("{name}'s key socket: {e}"),
            }
        }
    }

    /// Stop serving every key socket and remove the socket files.
    fn close_key_sockets(&self) {
        let mut sockets = self.key_sockets.lock().unwrap_or_else(|p| p.into_inner());
        for (name, (_, task)) in sockets.drain() {
            task.abort();
            let _ = std::fs::remove_file(nuketown_keys::agent::socket_path(
                &self.cfg.ssh_agent_dir,
                &name,
            ));
        }
    }

    /// The shared state (pending requests, grants, watchers).
    pub fn state(&self) -> &State {
        &self.state
    }

    fn record(
        &self,
        a: &Asked<'_>,
        approved: Option<bool>,
        by: &DecidedBy,
        reason: &str,
        mock: bool,
    ) {
        let mut r = Record::new(a.id, "decision", a.agent, a.uid);
        if let Some(ask) = a.ask {
            r.argv = ask.argv.clone();
            r.program = Some(ask.program.clone());
            r.typed = ask.typed.clone();
            r.cwd = ask.cwd.path.clone();
            r.target = ask.user.clone();
            r.group = ask.group.clone();
        }
        if let Some(assessment) = a.assessment {
            r.agent_can_write = assessment.human_only();
            r.warnings = assessment.warnings();
            r.notes = assessment.notes();
        }
        r.decision = match approved {
            Some(true) => "approved",
            Some(false) => "denied",
            None => "cancelled",
        }
        .into();
        r.reason = reason.into();
        r.decided_by = Some(by.clone());
        r.mock = mock;
        r.latency_ms = Some(a.arrived.elapsed().as_millis() as u64);
        self.append(&r);
    }

    /// One requester connection: a request, its decision, the exit status.
    async fn serve_requester(self: Arc<Self>, stream: UnixStream) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.clone().requester(stream).await;
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    async fn requester(self: Arc<Self>, stream: UnixStream) {
        let arrived = Instant::now();
        let peer = stream.peer_cred().map(|p| p.uid()).ok();
        if peer != Some(0) {
            // Nothing at all for a peer that is not root: not even a denial.
            tracing::warn!(peer_uid = ?peer, "closed a requester connection from a peer that is not root");
            return;
        }
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let id = match protocol::new_id() {
            Ok(id) => id,
            Err(e) => {
                tracing::error!("no randomness for a request id ({e}); denying");
                return;
            }
        };
        let deny = |reason: &str, by: DecidedBy| ToRequester::denied(&id, reason, by);
        let unknown = Asked {
            id: &id,
            agent: "?",
            uid: 0,
            ask: None,
            assessment: None,
            arrived,
        };

        let line = match tokio::time::timeout(REQUEST_WITHIN, read_line(&mut rd)).await {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                self.record(&unknown, Some(false), &DecidedBy::hall("hall"), &e, false);
                let _ = send(&mut wr, &deny(&e, DecidedBy::hall("hall"))).await;
                return;
            }
            Err(_) => {
                let e = format!("no request within {} s", REQUEST_WITHIN.as_secs());
                let _ = send(&mut wr, &deny(&e, DecidedBy::hall("hall"))).await;
                return;
            }
        };
        let ask = match protocol::parse_requester(&line) {
            Ok(FromRequester::Request { ask, .. }) => ask,
            Ok(FromRequester::Refused {
                sudo_uid,
                argv,
                reason,
                ..
            }) => {
                let name = self
                    .town
                    .get()
                    .ok()
                    .and_then(|l| policy::agent_by_uid(&l.town, sudo_uid).map(|(n, _)| n.clone()))
                    .or_else(|| user_name(sudo_uid))
                    .unwrap_or_else(|| format!("uid {sudo_uid}"));
                let mut r = Record::new(&id, "decision", &name, sudo_uid);
                r.argv = argv;
                r.decision = "denied".into();
                r.reason = reason.clone();
                r.decided_by = Some(DecidedBy::hall("entry"));
                r.latency_ms = Some(arrived.elapsed().as_millis() as u64);
                self.append(&r);
                let _ = send(&mut wr, &deny(&reason, DecidedBy::hall("entry"))).await;
                return;
            }
            Ok(FromRequester::Exit { .. }) => {
                let e = "an exit status without a request";
                self.record(&unknown, Some(false), &DecidedBy::hall("hall"), e, false);
                let _ = send(&mut wr, &deny(e, DecidedBy::hall("hall"))).await;
                return;
            }
            Err(e) => {
                let e = e.to_string();
                self.record(&unknown, Some(false), &DecidedBy::hall("hall"), &e, false);
                let _ = send(&mut wr, &deny(&e, DecidedBy::hall("hall"))).await;
                return;
            }
        };
        let uid = ask.sudo_uid;
        let who = format!("uid {uid}");
        let mut asked = Asked {
            id: &id,
            agent: &who,
            uid,
            ask: Some(&ask),
            assessment: None,
            arrived,
        };
        let loaded = match self.town.get() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{e}");
                self.record(&asked, Some(false), &DecidedBy::hall("hall"), &e, false);
                let _ = send(&mut wr, &deny(&e, DecidedBy::hall("hall"))).await;
                return;
            }
        };
        let Some((name, agent)) = policy::agent_by_uid(&loaded.town, uid) else {
            let who = user_name(uid).unwrap_or_else(|| who.clone());
            asked.agent = &who;
            let e = format!("{who} is not an enabled agent of this town");
            self.record(&asked, Some(false), &DecidedBy::hall("hall"), &e, false);
            let _ = send(&mut wr, &deny(&e, DecidedBy::hall("hall"))).await;
            return;
        };
        asked.agent = name;
        // What the agent could change, judged on the very files the entry
        // point opened; if they moved meanwhile, nothing is decided on them.
        let assessment = match changeable::assess(&loaded.agents, &ask) {
            Ok(a) => a,
            Err(e) => {
                let e = format!("{e}; denied");
                self.record(&asked, Some(false), &DecidedBy::hall("hall"), &e, false);
                let _ = send(&mut wr, &deny(&e, DecidedBy::hall("hall"))).await;
                return;
            }
        };
        asked.assessment = Some(&assessment);

        let now = now_ms();
        let automatic: Option<Automatic> =
            policy::by_rules(name, agent, &ask, &assessment, &self.state.grants(), now).or_else(
                || {
                    // Mock mode stands in for a human only where a policy could decide.
                    if assessment.human_only() {
                        return None;
                    }
                    match policy::mock(&self.cfg.mode_file, &loaded.approvers) {
                        Ok(a) => Some(a),
                        Err(MockRefusal::Absent) => None,
                        Err(MockRefusal::Untrusted(why)) => {
                            tracing::warn!("{why}");
                            None
                        }
                    }
                },
            );

        let (outcome, mock) = match automatic {
            Some(a) => (
                Outcome {
                    approved: a.approved,
                    by: a.by,
                    reason: a.reason,
                },
                a.mock,
            ),
            None => {
                let timeout = agent.sudo.timeout;
                let view = RequestView {
                    id: id.clone(),
                    agent: name.clone(),
                    uid,
                    argv: ask.argv.clone(),
                    program: ask.program.clone(),
                    typed: ask.typed.clone(),
                    cwd: ask.cwd.path.clone(),
                    user: ask.user.clone(),
                    group: ask.group.clone(),
                    agent_can_write: assessment.human_only(),
                    agent_writable_args: assessment.args.iter().map(|(a, _)| a.clone()).collect(),
                    warnings: assessment.warnings(),
                    notes: assessment.notes(),
                    grantable: assessment.grantable(),
                    asked_ms: now,
                    deadline_ms: now + timeout * 1000,
                    key_use: None,
                    network: None,
                    resources: None,
                };
                let key = GrantKey {
                    program: (ask.program.dev, ask.program.ino),
                    cwd: (ask.cwd.dev, ask.cwd.ino),
                    grantable: assessment.grantable(),
                };
                let decided = match self.state.submit(view, key, agent.sudo.max_pending) {
                    Ok(rx) => rx,
                    Err(too_many) => {
                        let e = too_many.to_string();
                        self.record(&asked, Some(false), &DecidedBy::hall("hall"), &e, false);
                        let _ = send(&mut wr, &deny(&e, DecidedBy::hall("hall"))).await;
                        return;
                    }
                };
                if send(
                    &mut wr,
                    &ToRequester::Pending {
                        id: id.clone(),
                        timeout_secs: timeout,
                    },
                )
                .await
                .is_err()
                {
                    self.state.resolve(
                        &id,
                        Outcome::hall_denied("requester", "the requester went away"),
                    );
                }
                // A decision, the deadline, or the requester going away: whichever comes first.
                let mut probe = [0u8; 1];
                let gone = async {
                    let _ = rd.read(&mut probe).await;
                    Outcome::hall_denied("requester", "the requester went away")
                };
                let outcome = self.state.settle(&id, decided, timeout, gone).await;
                if outcome.by.channel == "requester" {
                    self.record(&asked, None, &outcome.by, &outcome.reason, false);
                    return;
                }
                (outcome, false)
            }
        };
        self.record(
            &asked,
            Some(outcome.approved),
            &outcome.by,
            &outcome.reason,
            mock,
        );
        let approved = outcome.approved;
        let decision = ToRequester::Decision {
            id: id.clone(),
            approved,
            by: outcome.by,
            reason: outcome.reason,
            mock,
        };
        if send(&mut wr, &decision).await.is_err() || !approved {
            return;
        }
        // The command runs now; its exit status comes back on this connection.
        let mut r = Record::new(&id, "exit", name, uid);
        match read_line(&mut rd).await {
            Ok(Some(line)) => match protocol::parse_requester(&line) {
                Ok(FromRequester::Exit {
                    id: eid, status, ..
                }) if eid == id => {
                    r.exit_status = Some(status);
                }
                Ok(_) => r.reason = "the entry point reported an exit for another request".into(),
                Err(e) => r.reason = format!("the entry point's exit report was refused: {e}"),
            },
            Ok(None) => r.reason = "the entry point ended without reporting the exit status".into(),
            Err(e) => r.reason = format!("the entry point's exit report was refused: {e}"),
        }
        self.append(&r);
    }

    /// Who an approver peer is: root, or a listed approver; `None` closes the connection.
    fn approver_name(&self, uid: u32) -> Option<String> {
        if uid == 0 {
            return Some("root".into());
        }
        match self.town.get() {
            Ok(l) => l
                .approvers
                .iter()
                .find(|(u, _)| *u == uid)
                .map(|(_, n)| n.clone()),
            Err(e) => {
                tracing::error!("{e}");
                None
            }
        }
    }

    /// One approver connection.
    async fn serve_approver(self: Arc<Self>, stream: UnixStream) {
        let peer = stream.peer_cred().map(|p| p.uid()).ok();
        let Some(who) = peer.and_then(|uid| self.approver_name(uid)) else {
            tracing::warn!(peer_uid = ?peer, "closed an approver connection from a user who is not an approver");
            return;
        };
        let (rd, wr) = stream.into_split();
        let mut wr = tokio::io::BufWriter::new(wr);
        // Lines are read on their own task, so waiting for events never cuts a line in half.
        let (lines_tx, mut lines) = mpsc::channel::<Result<Option<Vec<u8>>, String>>(8);
        let reader = tokio::spawn(async move {
            let mut rd = BufReader::new(rd);
            loop {
                let l = read_line(&mut rd).await;
                let last = !matches!(l, Ok(Some(_)));
                if lines_tx.send(l).await.is_err() || last {
                    return;
                }
            }
        });
        let mut events: Option<broadcast::Receiver<ToApprover>> = None;
        let mut watch_channel = String::from("approver");
        loop {
            tokio::select! {
                l = lines.recv() => {
                    let line = match l {
                        Some(Ok(Some(line))) => line,
                        Some(Ok(None)) | None => break,
                        Some(Err(e)) => {
                            let _ = send(&mut wr, &ToApprover::Error { id: None, message: e }).await;
                            break;
                        }
                    };
                    let reply = match protocol::parse_approver(&line) {
                        Err(e) => ToApprover::Error { id: None, message: e.to_string() },
                        Ok(FromApprover::List { .. }) => ToApprover::Requests { requests: self.state.pending() },
                        Ok(FromApprover::Watch { channel, .. }) => {
                            if let Some(c) = channel {
                                watch_channel = c;
                            }
                            if events.is_some() {
                                ToApprover::Requests { requests: self.state.pending() }
                            } else {
                                let (now, rx) = self.state.watch();
                                events = Some(rx);
                                ToApprover::Requests { requests: now }
                            }
                        }
                        Ok(FromApprover::Decide { id, agent, argv, approve, grant_secs, channel, .. }) => {
                            match self.state.decide(&who, &id, &agent, &argv, approve, grant_secs, &channel) {
                                Ok(()) => ToApprover::Ok { id },
                                Err(e) => {
                                    tracing::warn!(approver = %who, "refused a decision: {e}");
                                    ToApprover::Error { id: Some(id), message: e.to_string() }
                                }
                            }
                        }
                    };
                    if send(&mut wr, &reply).await.is_err() {
                        break;
                    }
                }
                ev = async { events.as_mut().expect("guarded by the if").recv().await }, if events.is_some() => {
                    let mut next = Some(ev);
                    let mut broken = false;
                    // Write everything already waiting, then flush once.
                    while let Some(ev) = next.take() {
                        match ev {
                            Ok(m) => {
                                if wr.write_all(&protocol::encode(&m)).await.is_err() {
                                    broken = true;
                                    break;
                                }
                            }
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                let m = ToApprover::Error { id: None, message: format!("missed {n} events; list again") };
                                if wr.write_all(&protocol::encode(&m)).await.is_err() {
                                    broken = true;
                                    break;
                                }
                            }
                            Err(broadcast::error::RecvError::Closed) => {
                                broken = true;
                                break;
                            }
                        }
                        next = match events.as_mut().expect("watching").try_recv() {
                            Ok(m) => Some(Ok(m)),
                            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Err(broadcast::error::RecvError::Lagged(n))),
                            Err(_) => None,
                        };
                    }
                    if broken || wr.flush().await.is_err() {
                        break;
                    }
                }
            }
        }
        reader.abort();
        if events.is_some() {
            let denied = self.state.unwatch(&who, &watch_channel);
            if denied > 0 {
                tracing::warn!("{who}'s {watch_channel} approver went away: denied {denied} pending request(s)");
            }
        }
    }
}

/// Sockets handed over by systemd (`LISTEN_FDS`), by `FileDescriptorName`
/// (`requester`, `approvers`), or in that order when unnamed.
fn activated_sockets() -> HashMap<String, std::os::unix::net::UnixListener> {
    let mut out = HashMap::new();
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let n: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .unwrap_or_default()
        .split(':')
        .map(str::to_string)
        .collect();
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDNAMES");
    if !for_us || n <= 0 {
        return out;
    }
    for i in 0..n.min(3) {
        let fd = 3 + i;
        // Safety: systemd passes these descriptors open, starting at 3, for this process only.
        let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
        if l.set_nonblocking(true).is_err() {
            continue;
        }
        let name = match names.get(i as usize).map(String::as_str) {
            Some(n @ ("requester" | "approvers" | "ask")) => n.to_string(),
            _ if i == 0 => "requester".into(),
            _ if i == 1 => "approvers".into(),
            _ => "ask".into(),
        };
        out.insert(name, l);
    }
    out
}

/// Bind a socket at `path` with `mode` (and `group`); refuse if a hall answers there already.
fn bind(path: &Path, mode: u32, group: Option<&str>) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("a town hall is already listening on {}", path.display()),
        ));
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    let gid = match group {
        Some(g) => {
            match nix::unistd::Group::from_name(g).ok().flatten() {
                Some(grp) => Some(grp.gid),
                None => {
                    tracing::warn!("group {g} does not exist: only root can approve (nuketown apply creates it)");
                    None
                }
            }
        }
        None => None,
    };
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), gid)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(l)
}

/// Tell systemd (`NOTIFY_SOCKET`) about our state; nothing when not under systemd.
pub fn sd_notify(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
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
        tracing::warn!("sd_notify to {p}: {e}");
    }
}

/// A hall with its sockets bound (or handed over by systemd), not yet serving.
pub struct Listening {
    hall: Arc<Hall>,
    requester: UnixListener,
    approver: UnixListener,
    ask: UnixListener,
    /// Socket files we made (and remove when we stop).
    bound: Vec<PathBuf>,
}

/// Bind the sockets (or take systemd's). Call inside a tokio runtime.
pub fn listen(cfg: Config) -> std::io::Result<Listening> {
    // Sockets and files are born private; modes are opened up explicitly.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let mut activated = activated_sockets();
    let mut bound = Vec::new();
    let requester = match activated.remove("requester") {
        Some(l) => UnixListener::from_std(l)?,
        None => {
            let l = bind(&cfg.requester_socket, 0o600, None)?;
            bound.push(cfg.requester_socket.clone());
            l
        }
    };
    let approver = match activated.remove("approvers") {
        Some(l) => UnixListener::from_std(l)?,
        None => {
            let l = bind(&cfg.approver_socket, 0o660, Some(crate::APPROVERS_GROUP))?;
            bound.push(cfg.approver_socket.clone());
            l
        }
    };
    let ask = match activated.remove("ask") {
        Some(l) => UnixListener::from_std(l)?,
        None => {
            let l = bind(&cfg.ask_socket, 0o666, None)?;
            bound.push(cfg.ask_socket.clone());
            l
        }
    };
    // A temporary network rule never outlives the hall that gave it.
    crate::ask::reset_rules(&cfg.nft_table, cfg.nftables_file.as_deref());
    let hall = Hall::new(cfg);
    if let Err(e) = hall.town.get() {
        tracing::error!("{e}");
    }
    Ok(Listening {
        hall,
        requester,
        approver,
        ask,
        bound,
    })
}

impl Listening {
    /// The hall behind the sockets.
    pub fn hall(&self) -> Arc<Hall> {
        self.hall.clone()
    }

    /// Serve until `stop` completes; then deny whatever is pending.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()>) -> std::io::Result<()> {
        let Listening {
            hall,
            requester,
            approver,
            ask,
            bound,
        } = self;
        tracing::info!(
            "town hall (protocol v{VERSION}) listening: requests on {}, approvers on {}",
            hall.cfg.requester_socket.display(),
            hall.cfg.approver_socket.display()
        );
        hall.sync_key_sockets();
        sd_notify("READY=1\nSTATUS=accepting requests");
        tokio::pin!(stop);
        // New agents get their key socket without a restart of the hall.
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => hall.sync_key_sockets(),
                r = requester.accept() => match r {
                    Ok((s, _)) => { tokio::spawn(hall.clone().serve_requester(s)); }
                    Err(e) => tracing::warn!("accept on the requester socket: {e}"),
                },
                r = approver.accept() => match r {
                    Ok((s, _)) => { tokio::spawn(hall.clone().serve_approver(s)); }
                    Err(e) => tracing::warn!("accept on the approver socket: {e}"),
                },
                r = ask.accept() => match r {
                    Ok((s, _)) => { tokio::spawn(hall.clone().serve_asker(s)); }
                    Err(e) => tracing::warn!("accept on the ask socket: {e}"),
                },
                _ = &mut stop => break,
            }
        }
        sd_notify("STOPPING=1");
        tracing::info!("the town hall is stopping; denying what is pending");
        drop(requester);
        drop(approver);
        drop(ask);
        hall.close_key_sockets();
        for p in &bound {
            let _ = std::fs::remove_file(p);
        }
        hall.state.deny_all("the town hall is stopping, denied");
        // Let the requesters hear their denial (they would deny on the closed connection anyway).
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while hall.in_flight.load(Ordering::SeqCst) > 0 {
                let idle = hall.idle.notified();
                if hall.in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                idle.await;
            }
        })
        .await;
        Ok(())
    }
}

/// Run the hall until SIGTERM or SIGINT; then deny whatever is pending.
pub async fn run(cfg: Config) -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    listen(cfg)?
        .serve(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
        .await
}
