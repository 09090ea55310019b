//! Network access an agent asks for itself (`nuketown ask network
//! HOST[:PORT] --for 1h`). It goes through the same pending set, approver
//! channels, settle time, mock file and audit log as a sudo request; an
//! approval changes exactly what the approvers were shown
//! (`NetworkView::rule`), and only for the time shown.
//!
//! Temporary rules are elements of the town's grant sets with a kernel
//! timeout. Two grants of the same element overlap: the element lives until
//! the later one ends, and the earlier one's expiry never cuts the later
//! one short (the hall keeps each element's latest end).

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nuketown_town::network::{self as net, Dest, Egress, Net};
use nuketown_town::Agent;
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::audit::Record;
use crate::connection::send;
use crate::hall::{Denial, Hall};
use crate::protocol::{DecidedBy, NetworkView, RequestView, ToRequester};
use crate::state::{GrantKey, Outcome};
use crate::time::now_ms;
use crate::town::Loaded;

/// Most addresses one host name may open.
const MAX_ADDRESSES: usize = 16;

fn element_key(uid: u32, n: &Net, port: Option<u16>) -> String {
    format!("{uid} {n} {}", port.map_or("*".into(), |p| p.to_string()))
}

/// The agent's declared egress, in words for the approvers.
pub fn declared(e: &Egress) -> String {
    match e {
        Egress::All => "all (nothing is restricted)".into(),
        Egress::None => "none (the host's DNS resolvers and loopback only)".into(),
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

/// One network request on the ask socket.
pub(crate) struct Ask<'a> {
    pub(crate) hall: Arc<Hall>,
    pub(crate) loaded: &'a Loaded,
    pub(crate) name: String,
    pub(crate) agent: Agent,
    pub(crate) uid: u32,
    pub(crate) id: String,
    pub(crate) arrived: Instant,
    pub(crate) rec: Record,
}

impl Ask<'_> {
    /// The request `target` for `secs`, with the agent's `reason`.
    pub(crate) async fn serve(
        mut self,
        target: String,
        secs: u64,
        reason: String,
        rd: &mut BufReader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
    ) {
        self.rec.argv = vec![
            "nuketown".into(),
            "ask".into(),
            "network".into(),
            target.clone(),
            "--for".into(),
            net::show_duration(secs),
        ];
        match self.pipeline(target, secs, reason, rd, wr).await {
            Ok(None) => {}
            Ok(Some((outcome, mock))) => self.answer(outcome, mock, wr).await,
            Err(d) => self.deny(wr, &d).await,
        }
    }

    async fn pipeline(
        &mut self,
        target: String,
        secs: u64,
        reason: String,
        rd: &mut BufReader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
    ) -> Result<Option<(Outcome, bool)>, Denial> {
        let (t, nets) = self.check(&target).await?;
        let table = self.hall.cfg.nft_table.clone();
        let view = NetworkView {
            target: t.to_string(),
            networks: nets.iter().map(Net::to_string).collect(),
            port: t.port,
            secs,
            reason,
            declared: declared(&self.agent.network.egress),
            rule: net::grant_elements(&table, "add", self.uid, &nets, t.port, secs),
        };
        self.rec.argv[3] = t.to_string();
        self.rec.network = Some(view.clone());
        let (outcome, mock) = self.decide(view, rd, wr).await?;
        self.rec.decided_by = Some(outcome.by.clone());
        self.rec.mock = mock;
        self.rec.latency_ms = Some(self.arrived.elapsed().as_millis() as u64);
        if outcome.by.channel == "requester" {
            self.rec.decision = "cancelled".into();
            self.rec.reason = outcome.reason;
            self.hall.append(&self.rec);
            return Ok(None);
        }
        if !outcome.approved {
            return Ok(Some((outcome, mock)));
        }
        let outcome = self.grant(outcome, &t, nets, secs)?;
        Ok(Some((outcome, mock)))
    }

    /// Bad input is refused before anything changes, with the fix.
    async fn check(&self, target: &str) -> Result<(net::Target, Vec<Net>), Denial> {
        let name = &self.name;
        if !self.agent.network.egress.restricted() {
            return Err(Denial::hall(format!(
                "agents.{name}.network.egress is \"all\": {name} may reach anything already; nothing to ask; nothing was changed"
            )));
        }
        let nothing = |e: String| Denial::hall(format!("{e}; nothing was changed"));
        let t = net::parse_target(target).map_err(nothing)?;
        let nets = match &t.dest {
            Dest::Net(n) => vec![*n],
            Dest::Host(h) => resolve(h.clone()).await.map_err(nothing)?,
        };
        Ok((t, nets))
    }

    /// The mock file, or a human on every channel.
    async fn decide(
        &self,
        view: NetworkView,
        rd: &mut BufReader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
    ) -> Result<(Outcome, bool), Denial> {
        if let Some(a) = self.hall.mock(self.loaded) {
            let o = Outcome {
                approved: a.approved,
                by: a.by,
                reason: a.reason,
            };
            return Ok((o, true));
        }
        let mut rv = RequestView::asked(
            &self.id,
            &self.name,
            self.uid,
            self.rec.argv.clone(),
            self.agent.sudo.timeout,
        );
        rv.network = Some(Box::new(view));
        let key = GrantKey {
            program: (0, 0),
            cwd: (0, 0),
            grantable: false,
        };
        let o = self
            .hall
            .wait_for_human(
                rv,
                key,
                self.agent.sudo.max_pending,
                rd,
                wr,
                "the requester went away before the decision; nothing was changed",
            )
            .await?;
        Ok((o, false))
    }

    /// Add the approved elements (each lives until its latest grant ends).
    fn grant(
        &mut self,
        outcome: Outcome,
        t: &net::Target,
        nets: Vec<Net>,
        secs: u64,
    ) -> Result<Outcome, Denial> {
        let table = self.hall.cfg.nft_table.clone();
        let until = now_ms() + secs * 1000;
        let started = Instant::now();
        // An element already granted for longer keeps its end; a shorter one is renewed.
        let renew: Vec<Net> = {
            let ends = self
                .hall
                .network_ends
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            nets.iter()
                .filter(|n| {
                    ends.get(&element_key(self.uid, n, t.port))
                        .is_none_or(|e| *e < until)
                })
                .copied()
                .collect()
        };
        let script = format!(
            "{}{}{}",
            // Add first, so the delete below never fails; then put it back with the new time.
            net::grant_elements(&table, "add", self.uid, &renew, t.port, secs),
            net::grant_elements(&table, "delete", self.uid, &renew, t.port, secs),
            net::grant_elements(&table, "add", self.uid, &renew, t.port, secs),
        );
        if let Err(e) = net::nft(&script) {
            self.rec.result = Some("no rule added".into());
            return Err(Denial::by(
                format!(
                    "{}, but the rule could not be added ({e}); denied",
                    outcome.reason
                ),
                outcome.by,
            ));
        }
        {
            let mut ends = self
                .hall
                .network_ends
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for n in &renew {
                ends.insert(element_key(self.uid, n, t.port), until);
            }
        }
        self.rec.result = Some(format!(
            "rule in force {} µs after the decision, until {}",
            started.elapsed().as_micros(),
            crate::time::rfc3339(until)
        ));
        let view = self.rec.network.clone().expect("set before deciding");
        expire_later(
            self.hall.clone(),
            self.id.clone(),
            self.name.clone(),
            self.uid,
            nets,
            t.port,
            until,
            view,
        );
        Ok(Outcome {
            reason: format!(
                "{}: {} may reach {t} for {}",
                outcome.reason,
                self.name,
                net::show_duration(secs)
            ),
            ..outcome
        })
    }

    async fn answer(&mut self, outcome: Outcome, mock: bool, wr: &mut OwnedWriteHalf) {
        self.rec.decision = if outcome.approved {
            "approved"
        } else {
            "denied"
        }
        .into();
        self.rec.reason = outcome.reason.clone();
        self.hall.append(&self.rec);
        let _ = send(
            wr,
            &ToRequester::Decision {
                id: self.id.clone(),
                approved: outcome.approved,
                by: outcome.by,
                reason: outcome.reason,
                mock,
            },
        )
        .await;
    }

    /// Refuse a request that never got as far as a network request.
    pub(crate) async fn refuse(&mut self, wr: &mut OwnedWriteHalf, d: &Denial) {
        self.deny(wr, d).await
    }

    /// The one place a denial is recorded and sent.
    async fn deny(&mut self, wr: &mut OwnedWriteHalf, d: &Denial) {
        self.rec.decision = "denied".into();
        self.rec.reason = d.reason.clone();
        self.rec.decided_by = Some(d.by.clone());
        self.rec.latency_ms = Some(self.arrived.elapsed().as_millis() as u64);
        self.hall.append(&self.rec);
        let _ = send(wr, &d.to_requester(&self.id)).await;
    }
}

/// When the time is up: the kernel has dropped the elements no later grant
/// renewed (their timeout); remove them anyway, in case, and write the
/// expiry down. An element a later grant renewed stays.
#[allow(clippy::too_many_arguments)]
fn expire_later(
    hall: Arc<Hall>,
    id: String,
    name: String,
    uid: u32,
    nets: Vec<Net>,
    port: Option<u16>,
    until: u64,
    view: NetworkView,
) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(until.saturating_sub(now_ms()))).await;
        let ended: Vec<Net> = {
            let mut ends = hall
                .network_ends
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            nets.into_iter()
                .filter(|n| {
                    let k = element_key(uid, n, port);
                    let mine = ends.get(&k).is_some_and(|e| *e <= until);
                    if mine {
                        ends.remove(&k);
                    }
                    mine
                })
                .collect()
        };
        let table = hall.cfg.nft_table.clone();
        if !ended.is_empty() {
            // Already gone by the kernel's timeout, as a rule: an error here is expected.
            let _ = net::nft(&net::grant_elements(&table, "delete", uid, &ended, port, 0));
        }
        let mut r = Record::new(&id, "network", &name, uid);
        r.target = name.clone();
        r.decision = "expired".into();
        r.reason = format!("the time was up ({})", net::show_duration(view.secs));
        r.decided_by = Some(DecidedBy::hall("hall"));
        r.network = Some(view);
        r.result = Some(if ended.is_empty() {
            "rule kept: a later grant of the same access runs longer".into()
        } else {
            "rule removed".into()
        });
        hall.append(&r);
    });
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
