//! Escalations an agent asks for itself, beyond sudo: network access
//! (`nuketown ask network HOST[:PORT] --for 1h`). They go through the same
//! pending set, approver channels, settle time, mock file and audit log as
//! a sudo request; an approval changes exactly what the approvers were
//! shown (`NetworkView::rule`), and only for the time shown.
//!
//! The agent reaches the hall on the ask socket, which anyone may connect
//! to: the hall asks the kernel who the peer is (`SO_PEERCRED`) and serves
//! only an enabled agent of the town, for itself. Nothing the agent says
//! names another uid.

use std::collections::HashMap;
use std::net::ToSocketAddrs;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nuketown_town::network::{self as net, Dest, Egress, Net};
use tokio::io::{AsyncReadExt, BufReader};
use tokio::net::UnixStream;

use crate::audit::Record;
use crate::daemon::{read_line, send, Hall};
use crate::policy::{self, MockRefusal};
use crate::protocol::{self, DecidedBy, FromAsker, NetworkView, RequestView, ToRequester};
use crate::state::{GrantKey, Outcome};
use crate::time::now_ms;

/// Most connections one uid may hold open on the ask socket at once.
pub const MAX_CONNECTIONS_PER_UID: usize = 16;
/// Most addresses one host name may open.
const MAX_ADDRESSES: usize = 16;
/// How long an agent has to send its request after connecting.
const REQUEST_WITHIN: Duration = Duration::from_secs(10);

/// Open connections per uid on the ask socket.
#[derive(Default)]
pub(crate) struct Connections(Mutex<HashMap<u32, usize>>);

struct Slot<'a>(&'a Connections, u32);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut m = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

impl Connections {
    fn take(&self, uid: u32) -> Option<Slot<'_>> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(uid).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_UID {
            return None;
        }
        *n += 1;
        Some(Slot(self, uid))
    }
}

/// The agent's declared egress, in words for the approvers.
pub fn declared(e: &Egress) -> String {
    match e {
        Egress::All => "all (nothing is restricted)".into(),
        Egress::None => "none (DNS and loopback only)".into(),
        Egress::Allow(rules) => rules
            .iter()
            .map(|r| {
                let d = r.cidr.clone().or(r.host.clone()).unwrap_or_default();
                if r.ports.is_empty() {
                    d
                } else {
                    format!(
                        "{d} port {}",
                        r.ports
                            .iter()
                            .map(u16::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// Resolve a host name as root, through the host's resolver, off the runtime.
async fn resolve(host: String) -> Result<Vec<Net>, String> {
    let h = host.clone();
    let addrs = tokio::task::spawn_blocking(move || (h.as_str(), 0u16).to_socket_addrs())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{host:?} does not resolve here ({e})"))?;
    let mut v: Vec<Net> = addrs.map(|a| Net::host(a.ip())).collect();
    v.sort();
    v.dedup();
    if v.is_empty() {
        return Err(format!("{host:?} resolves to no address"));
    }
    v.truncate(MAX_ADDRESSES);
    Ok(v)
}

impl Hall {
    /// One connection on the ask socket: one request, its decision.
    pub(crate) async fn serve_asker(self: Arc<Self>, stream: UnixStream) {
        let Some(uid) = stream.peer_cred().ok().map(|p| p.uid()) else {
            return;
        };
        let Some(_slot) = self.askers.take(uid) else {
            tracing::warn!(uid, "closed an ask connection: too many open for this uid");
            return;
        };
        let Ok(loaded) = self.loaded() else {
            return;
        };
        if uid == 0 {
            // The hall's relay, with an agent's request from the cluster.
            return self.clone().serve_relay(stream, loaded).await;
        }
        let Some((name, agent)) =
            policy::agent_by_uid(&loaded.town, uid).map(|(n, a)| (n.clone(), a.clone()))
        else {
            // Not an agent of the town: nothing at all, not even a denial.
            tracing::warn!(
                uid,
                "closed an ask connection from a user who is not an agent"
            );
            return;
        };
        let arrived = Instant::now();
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let Ok(id) = protocol::new_id() else {
            return;
        };
        let mut rec = Record::new(&id, "network", &name, uid);
        rec.target = name.clone();
        let deny = |reason: &str, by: DecidedBy| ToRequester::denied(&id, reason, by);
        let line = match tokio::time::timeout(REQUEST_WITHIN, read_line(&mut rd)).await {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                let _ = send(&mut wr, &deny(&e, DecidedBy::hall("hall"))).await;
                return;
            }
            Err(_) => return,
        };
        if let Some(asked) = crate::follow::request(&line) {
            return self.clone().follow(uid, name, asked, rd, wr).await;
        }
        let refuse = |rec: &mut Record, reason: String| {
            rec.decision = "denied".into();
            rec.reason = reason;
            rec.decided_by = Some(DecidedBy::hall("hall"));
            rec.latency_ms = Some(arrived.elapsed().as_millis() as u64);
        };
        let (target, secs, reason) = match protocol::parse_asker(&line) {
            Ok(FromAsker::Network {
                target,
                secs,
                reason,
                ..
            }) => (target, secs, reason),
            Ok(FromAsker::Resources { .. }) => {
                let e = format!(
                    "{name} asks for a bigger tier from its pod in the cluster (`nuketown ask resources` there), where the hall's relay picks it up; nothing was changed"
                );
                refuse(&mut rec, e.clone());
                self.append(&rec);
                let _ = send(&mut wr, &deny(&e, DecidedBy::hall("hall"))).await;
                return;
            }
            Err(e) => {
                let e = format!("{e}; nothing was changed");
                refuse(&mut rec, e.clone());
                self.append(&rec);
                let _ = send(&mut wr, &deny(&e, DecidedBy::hall("hall"))).await;
                return;
            }
        };
        rec.argv = vec![
            "nuketown".into(),
            "ask".into(),
            "network".into(),
            target.clone(),
            "--for".into(),
            net::show_duration(secs),
        ];
        // Bad input is refused before anything changes, with the fix.
        let checked: Result<(net::Target, Vec<Net>), String> = async {
            if !agent.network.egress.restricted() {
                return Err(format!(
                    "agents.{name}.network.egress is \"all\": {name} may reach anything already; nothing to ask"
                ));
            }
            let t = net::parse_target(&target)?;
            let nets = match &t.dest {
                Dest::Net(n) => vec![*n],
                Dest::Host(h) => resolve(h.clone()).await?,
            };
            Ok((t, nets))
        }
        .await;
        let (t, nets) = match checked {
            Ok(x) => x,
            Err(e) => {
                let e = format!("{e}; nothing was changed");
                refuse(&mut rec, e.clone());
                self.append(&rec);
                let _ = send(&mut wr, &deny(&e, DecidedBy::hall("hall"))).await;
                return;
            }
        };
        let table = self.cfg.nft_table.clone();
        let rule = net::grant_elements(&table, "add", uid, &nets, t.port, secs);
        let view = NetworkView {
            target: t.to_string(),
            networks: nets.iter().map(Net::to_string).collect(),
            port: t.port,
            secs,
            reason: reason.clone(),
            declared: declared(&agent.network.egress),
            rule: rule.clone(),
        };
        rec.argv[3] = t.to_string();
        rec.network = Some(view.clone());

        let mut rv = RequestView::asked(&id, &name, uid, rec.argv.clone(), agent.sudo.timeout);
        rv.network = Some(Box::new(view.clone()));
        let (outcome, mock) = match self
            .ask_humans(&loaded, rv, agent.sudo.max_pending, &mut rd, &mut wr)
            .await
        {
            Ok(x) => x,
            Err(e) => {
                refuse(&mut rec, e.clone());
                self.append(&rec);
                let _ = send(&mut wr, &deny(&e, DecidedBy::hall("hall"))).await;
                return;
            }
        };
        rec.decided_by = Some(outcome.by.clone());
        rec.mock = mock;
        rec.latency_ms = Some(arrived.elapsed().as_millis() as u64);
        if outcome.by.channel == "requester" {
            rec.decision = "cancelled".into();
            rec.reason = outcome.reason;
            self.append(&rec);
            return;
        }
        let mut approved = outcome.approved;
        let mut why = outcome.reason.clone();
        if approved {
            let started = Instant::now();
            match net::nft(&rule) {
                Ok(()) => {
                    let until = now_ms() + secs * 1000;
                    rec.result = Some(format!(
                        "rule in force {} µs after the decision, until {}",
                        started.elapsed().as_micros(),
                        crate::time::rfc3339(until)
                    ));
                    why = format!(
                        "{why}: {name} may reach {} for {}",
                        t,
                        net::show_duration(secs)
                    );
                    self.clone().expire_later(
                        id.clone(),
                        name.clone(),
                        uid,
                        nets,
                        t.port,
                        secs,
                        view,
                    );
                }
                Err(e) => {
                    approved = false;
                    why = format!("{why}, but the rule could not be added ({e}); denied");
                    rec.result = Some("no rule added".into());
                }
            }
        }
        rec.decision = if approved { "approved" } else { "denied" }.into();
        rec.reason = why.clone();
        self.append(&rec);
        let _ = send(
            &mut wr,
            &ToRequester::Decision {
                id: id.clone(),
                approved,
                by: outcome.by,
                reason: why,
                mock,
            },
        )
        .await;
    }

    /// Ask the humans (or let mock mode stand in, marked as such): put `rv`
    /// in the pending set every approver channel shows, tell the requester
    /// it is pending, and wait for a decision, the deadline or the requester
    /// going away — whichever comes first; whoever takes the request out of
    /// the pending set decides it. The outcome, and whether it was mock.
    pub(crate) async fn ask_humans<R, W>(
        &self,
        loaded: &crate::daemon::Loaded,
        rv: RequestView,
        max_pending: u32,
        rd: &mut R,
        wr: &mut W,
    ) -> Result<(Outcome, bool), String>
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        match policy::mock(&self.cfg.mode_file, &loaded.approvers) {
            Ok(a) => {
                return Ok((
                    Outcome {
                        approved: a.approved,
                        by: a.by,
                        reason: a.reason,
                    },
                    a.mock,
                ))
            }
            Err(MockRefusal::Untrusted(why)) => tracing::warn!("{why}"),
            Err(MockRefusal::Absent) => {}
        }
        let id = rv.id.clone();
        let timeout = rv.deadline_ms.saturating_sub(rv.asked_ms) / 1000;
        let key = GrantKey {
            program: (0, 0),
            cwd: (0, 0),
            grantable: false,
        };
        let decided = self
            .state()
            .submit(rv, key, max_pending)
            .map_err(|e| e.to_string())?;
        let _ = send(
            wr,
            &ToRequester::Pending {
                id: id.clone(),
                timeout_secs: timeout,
            },
        )
        .await;
        let mut probe = [0u8; 1];
        let gone = async {
            let _ = rd.read(&mut probe).await;
            Outcome::hall_denied(
                "requester",
                "the requester went away before the decision; nothing was changed",
            )
        };
        Ok((
            self.state().settle(&id, decided, timeout, gone).await,
            false,
        ))
    }

    /// When the time is up: the kernel has dropped the elements (their
    /// timeout); remove them anyway, in case, and write the expiry down.
    #[allow(clippy::too_many_arguments)]
    fn expire_later(
        self: Arc<Self>,
        id: String,
        name: String,
        uid: u32,
        nets: Vec<Net>,
        port: Option<u16>,
        secs: u64,
        view: NetworkView,
    ) {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let table = self.cfg.nft_table.clone();
            // Already gone by the kernel's timeout, as a rule: an error here is expected.
            let _ = net::nft(&net::grant_elements(
                &table, "delete", uid, &nets, port, secs,
            ));
            let mut r = Record::new(&id, "network", &name, uid);
            r.target = name.clone();
            r.decision = "expired".into();
            r.reason = format!("the time was up ({})", net::show_duration(secs));
            r.decided_by = Some(DecidedBy::hall("hall"));
            r.network = Some(view);
            r.result = Some("rule removed".into());
            self.append(&r);
        });
    }
}

/// At start: install the town's rules from `file` (when `apply` wrote one)
/// and empty the grant sets — a temporary rule never outlives the hall that
/// gave it.
pub fn reset_rules(table: &str, file: Option<&std::path::Path>) {
    if let Some(f) = file.filter(|f| f.is_file()) {
        match std::fs::read_to_string(f) {
            Ok(script) => match net::nft(&script) {
                Ok(()) => tracing::info!("network rules installed from {}", f.display()),
                Err(e) => tracing::error!("network rules from {}: {e}", f.display()),
            },
            Err(e) => tracing::error!("cannot read {}: {e}", f.display()),
        }
    }
    if net::table_exists(table) {
        match net::nft(&net::flush_grants_script(table)) {
            Ok(()) => tracing::info!("temporary network rules of an earlier hall removed"),
            Err(e) => tracing::error!("could not remove earlier temporary network rules: {e}"),
        }
    }
}
