//! The hall itself: its configuration, the town as last read (with who is
//! trusted), the shared state, the audit log and the followers' feed. The
//! request kinds ([`crate::requests`]), the approvers' connections
//! ([`crate::approver`]) and the sockets ([`crate::server`]) are built on
//! this; nothing here knows a socket or a request kind.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use nuketown_town::Town;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, Notify};

use crate::audit::{AuditLog, Record};
use crate::connection::{gone, send};
use crate::protocol::{DecidedBy, RequestView, ToRequester};
use crate::state::{GrantKey, Outcome, State};
use crate::town::{town_uids, Loaded};
use crate::trust::{Sources, Trust};

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
    /// `apply`'s record of the agents it made (`state.json`): users it made
    /// are the town's until they are pruned, declared or not.
    pub host_state: PathBuf,
    /// The account files trust is read from.
    pub accounts: Sources,
    /// The `nuketown` program, run as the credential gateway (`nuketown gateway`).
    pub nuketown: PathBuf,
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
            host_state: crate::HOST_STATE.into(),
            accounts: Sources::default(),
            nuketown: std::env::current_exe().unwrap_or_else(|_| "nuketown".into()),
        }
    }
}

/// Identity of a file a [`Loaded`] came from.
type Stamp = (u64, u64, u64, i64, i64);

fn stamp_of(path: &Path) -> Stamp {
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

/// Reads the town only when it, apply's record or an account file changed.
struct TownCache {
    files: Vec<PathBuf>,
    last: Mutex<Option<(Vec<Stamp>, Arc<Loaded>)>>,
}

impl TownCache {
    fn new(cfg: &Config) -> TownCache {
        let mut files = vec![cfg.town.clone(), cfg.host_state.clone()];
        files.extend(cfg.accounts.all().iter().map(|p| p.to_path_buf()));
        TownCache {
            files,
            last: Mutex::new(None),
        }
    }

    fn get(&self, cfg: &Config) -> Result<Arc<Loaded>, String> {
        let stamp: Vec<Stamp> = self.files.iter().map(|p| stamp_of(p)).collect();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, l)) = last.as_ref() {
            if *s == stamp {
                return Ok(l.clone());
            }
        }
        let town = nuketown_town::load(&cfg.town).map_err(|e| {
            format!("the town cannot be read ({e}); every request is denied until it is fixed")
        })?;
        let approvers: Vec<(u32, String)> = town
            .approvers()
            .into_iter()
            .filter_map(|n| {
                nix::unistd::User::from_name(&n)
                    .ok()
                    .flatten()
                    .map(|u| (u.uid.as_raw(), n))
            })
            .collect();
        let trust = Trust::read(&cfg.accounts, town_uids(&town, &approvers, &cfg.host_state));
        let loaded = Arc::new(Loaded {
            town,
            approvers,
            trust,
        });
        *last = Some((stamp, loaded.clone()));
        Ok(loaded)
    }
}

/// Every audit record, as it is written, for the followers.
pub(crate) struct Hub(pub(crate) broadcast::Sender<Arc<Record>>);

impl Default for Hub {
    fn default() -> Self {
        Hub(broadcast::channel(1024).0)
    }
}

impl Hub {
    /// A record was written: followers filter their own.
    pub(crate) fn publish(&self, r: &Record) {
        if self.0.receiver_count() > 0 {
            let _ = self.0.send(Arc::new(r.clone()));
        }
    }
}

/// The end (ms since the epoch) of the latest grant of each temporary
/// network element, so an earlier grant's expiry never removes a later one.
#[derive(Default)]
pub(crate) struct Ends(pub(crate) Mutex<HashMap<String, u64>>);

/// A request refused without a human's yes: what the requester hears and
/// the audit log keeps. Every stage of a request returns one instead of
/// going on, and each request kind records and sends it in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Why, in words for the agent.
    pub reason: String,
    /// Who decided, through which channel.
    pub by: DecidedBy,
}

impl Denial {
    /// Denied by the hall itself.
    pub fn hall(reason: impl Into<String>) -> Denial {
        Denial {
            reason: reason.into(),
            by: DecidedBy::hall("hall"),
        }
    }

    /// Denied by `by`.
    pub fn by(reason: impl Into<String>, by: DecidedBy) -> Denial {
        Denial {
            reason: reason.into(),
            by,
        }
    }

    /// The message that tells the requester, for request `id`.
    pub fn to_requester(&self, id: &str) -> ToRequester {
        ToRequester::denied(id, &self.reason, self.by.clone())
    }
}

/// The daemon: state, configuration, the town, the audit log.
pub struct Hall {
    pub(crate) cfg: Config,
    state: State,
    town: TownCache,
    audit: AuditLog,
    /// Requester connections still open, so a stopping hall can let them hear their denial.
    pub(crate) in_flight: AtomicUsize,
    pub(crate) idle: Notify,
    /// Each agent's key socket: its uid and the task serving it.
    pub(crate) key_sockets: Mutex<HashMap<String, (u32, tokio::task::JoinHandle<()>)>>,
    /// Open connections per uid on the ask socket.
    pub(crate) askers: crate::connection::Connections,
    /// Every audit record as it is written, for agents following their own requests.
    pub(crate) followers: Hub,
    /// Temporary network elements and when their latest grant ends.
    pub(crate) network_ends: Ends,
    /// The credential gateway the hall runs, and the agents' usage.
    pub(crate) gateway: crate::gateway::GatewayState,
}

impl Hall {
    /// A hall with this configuration (nothing bound yet).
    pub fn new(cfg: Config) -> Arc<Hall> {
        Arc::new(Hall {
            town: TownCache::new(&cfg),
            audit: AuditLog::new(&cfg.audit_log),
            state: State::new(),
            cfg,
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            key_sockets: Mutex::new(HashMap::new()),
            askers: crate::connection::Connections::default(),
            followers: Hub::default(),
            network_ends: Ends::default(),
            gateway: Default::default(),
        })
    }

    /// The town as last read (re-read when it changed).
    pub fn loaded(&self) -> Result<Arc<Loaded>, String> {
        self.town.get(&self.cfg)
    }

    /// The shared state (pending requests, grants, watchers).
    pub fn state(&self) -> &State {
        &self.state
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

    /// Where the audit log is.
    pub(crate) fn audit_path(&self) -> &Path {
        self.audit.path()
    }

    /// The town's key store, opened with the sealing key.
    pub(crate) fn key_store(&self, town: &Town) -> Result<nuketown_keys::Store, String> {
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

    /// Who an approver peer is: root, or a listed approver; `None` closes the connection.
    pub(crate) fn approver_name(&self, uid: u32) -> Option<String> {
        if uid == 0 {
            return Some("root".into());
        }
        match self.loaded() {
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

    /// The mock mode file's answer, when it gives one (a warning is logged
    /// when it is there but may not decide).
    pub(crate) fn mock(&self, loaded: &Loaded) -> Option<crate::policy::Automatic> {
        match crate::policy::mock(&self.cfg.mode_file, loaded) {
            Ok(a) => Some(a),
            Err(crate::policy::MockRefusal::Absent) => None,
            Err(crate::policy::MockRefusal::Untrusted(why)) => {
                tracing::warn!("{why}");
                None
            }
        }
    }

    /// Put `view` before every approver channel, tell the requester it is
    /// pending, and wait for a decision, the deadline or the requester going
    /// away (`withdrawn` is what that means) — whichever comes first;
    /// whoever takes the request out of the pending set decides it.
    pub(crate) async fn wait_for_human<R, W>(
        &self,
        view: RequestView,
        key: GrantKey,
        max_pending: u32,
        rd: &mut R,
        wr: &mut W,
        withdrawn: &str,
    ) -> Result<Outcome, Denial>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let id = view.id.clone();
        let timeout = view.deadline_ms.saturating_sub(view.asked_ms) / 1000;
        let decided = self
            .state
            .submit(view, key, max_pending)
            .map_err(|e| Denial::hall(e.to_string()))?;
        let pending = ToRequester::Pending {
            id: id.clone(),
            timeout_secs: timeout,
        };
        if send(wr, &pending).await.is_err() {
            self.state
                .resolve(&id, Outcome::hall_denied("requester", withdrawn));
        }
        let left = async {
            gone(rd).await;
            Outcome::hall_denied("requester", withdrawn)
        };
        Ok(self.state.settle(&id, decided, timeout, left).await)
    }
}

/// The user name of `uid`, if it has one.
pub(crate) fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}
