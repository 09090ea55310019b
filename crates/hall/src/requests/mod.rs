//! Every kind of request the hall decides, one a file: [`sudo`] (from the
//! entry point, root only), [`network`] (an agent asking for more network),
//! [`resources`] (a bigger tier, brought from the cluster by the relay),
//! [`key_use`] (a signature or login with the agent's key, from its key
//! socket), [`tool`] (a tool the agent's own CLI asks to use),
//! [`credential`] (more of a credential past its limit) and [`follow`] (an
//! agent following its own requests, which decides nothing).
//!
//! Agents reach [`network`], [`tool`], [`credential`] and [`follow`] on the ask socket, which anyone
//! may connect to: the hall asks the kernel who the peer is
//! (`SO_PEERCRED`) and serves only an enabled agent of the town, for
//! itself — or root, which is the relay. Nothing the peer says names
//! another uid.

pub mod credential;
pub mod follow;
pub mod key_use;
pub mod network;
pub mod resources;
pub mod sudo;
pub mod tool;

use std::sync::Arc;
use std::time::Instant;

use tokio::io::BufReader;
use tokio::net::UnixStream;

use crate::audit::Record;
use crate::connection::{first_line, send};
use crate::hall::{Denial, Hall};
use crate::protocol::{self, FromAsker};

/// One connection on the ask socket: a network request, or following.
pub(crate) async fn serve_asker(hall: Arc<Hall>, stream: UnixStream) {
    let Some(uid) = stream.peer_cred().ok().map(|p| p.uid()) else {
        return;
    };
    let hall2 = hall.clone();
    let Some(_slot) = hall2.askers.take(uid) else {
        tracing::warn!(uid, "closed an ask connection: too many open for this uid");
        return;
    };
    let Ok(loaded) = hall.loaded() else {
        return;
    };
    if uid == 0 {
        // The hall's relay, with an agent's request from the cluster.
        return resources::serve_relay(hall, stream, loaded).await;
    }
    let Some((name, agent)) =
        crate::policy::agent_by_uid(&loaded.town, uid).map(|(n, a)| (n.clone(), a.clone()))
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
    let line = match first_line(&mut rd).await {
        Ok(Some(l)) => l,
        Ok(None) => return,
        Err(e) => {
            let _ = send(&mut wr, &Denial::hall(e).to_requester(&id)).await;
            return;
        }
    };
    if let Some(asked) = follow::request(&line) {
        return follow::serve(hall, uid, name, asked, rd, wr).await;
    }
    let parsed = protocol::parse_asker(&line);
    let asked = Asked {
        hall,
        loaded: &loaded,
        name,
        agent,
        uid,
        id,
        arrived,
    };
    if let Ok(FromAsker::Tool {
        cli, tool, input, ..
    }) = parsed
    {
        let view = crate::protocol::ToolView { cli, tool, input };
        return tool::serve(asked, view, &mut rd, &mut wr).await;
    }
    if let Ok(FromAsker::Credential {
        credential, reason, ..
    }) = parsed
    {
        return credential::serve(asked, credential, reason, &mut rd, &mut wr).await;
    }
    let Asked {
        hall,
        name,
        agent,
        uid,
        id,
        arrived,
        ..
    } = asked;
    let mut rec = Record::new(&id, "network", &name, uid);
    rec.target = name.clone();
    let mut ask = network::Ask {
        hall: hall.clone(),
        loaded: &loaded,
        name: name.clone(),
        agent,
        uid,
        id: id.clone(),
        arrived,
        rec,
    };
    match parsed {
        Ok(FromAsker::Network {
            target,
            secs,
            reason,
            ..
        }) => ask.serve(target, secs, reason, &mut rd, &mut wr).await,
        Ok(FromAsker::Resources { .. }) => {
            let e = format!(
                "{name} asks for a bigger tier from its pod in the cluster (`nuketown ask resources` there), where the hall's relay picks it up; nothing was changed"
            );
            ask.refuse(&mut wr, &Denial::hall(e)).await;
        }
        // Served above.
        Ok(FromAsker::Tool { .. } | FromAsker::Credential { .. }) => {}
        Err(e) => {
            ask.refuse(&mut wr, &Denial::hall(format!("{e}; nothing was changed")))
                .await
        }
    }
}

/// An agent's request on the ask socket, known by `SO_PEERCRED`: what
/// every kind the agent may ask (network, tool, credential) starts from.
pub(crate) struct Asked<'a> {
    pub(crate) hall: Arc<Hall>,
    pub(crate) loaded: &'a crate::town::Loaded,
    pub(crate) name: String,
    pub(crate) agent: nuketown_town::Agent,
    pub(crate) uid: u32,
    pub(crate) id: String,
    pub(crate) arrived: Instant,
}

type Reader = BufReader<tokio::net::unix::OwnedReadHalf>;
type Writer = tokio::net::unix::OwnedWriteHalf;

impl Asked<'_> {
    /// The mock file's answer, or a human's on every channel, for a request
    /// that grants nothing lasting: `argv` in the asker's words, `what`
    /// adds what it is about; `gone` is what the audit says when the asker
    /// leaves first.
    pub(crate) async fn mock_or_human(
        &self,
        argv: Vec<String>,
        what: impl FnOnce(&mut crate::protocol::RequestView),
        rd: &mut Reader,
        wr: &mut Writer,
        gone: &str,
    ) -> Result<(crate::state::Outcome, bool), Denial> {
        if let Some(a) = self.hall.mock(self.loaded) {
            let o = crate::state::Outcome {
                approved: a.approved,
                by: a.by,
                reason: a.reason,
            };
            return Ok((o, true));
        }
        let mut rv = crate::protocol::RequestView::asked(
            &self.id,
            &self.name,
            self.uid,
            argv,
            self.agent.sudo.timeout,
        );
        what(&mut rv);
        let key = crate::state::GrantKey {
            program: (0, 0),
            cwd: (0, 0),
            grantable: false,
        };
        let o = self
            .hall
            .wait_for_human(rv, key, self.agent.sudo.max_pending, rd, wr, gone)
            .await?;
        Ok((o, false))
    }

    /// A request refused before or instead of a decision: recorded, told.
    pub(crate) async fn refused(&self, mut rec: Record, d: Denial, wr: &mut Writer) {
        rec.latency_ms = Some(self.arrived.elapsed().as_millis() as u64);
        rec.decision = "denied".into();
        rec.reason = d.reason.clone();
        rec.decided_by = Some(d.by.clone());
        self.hall.append(&rec);
        let _ = send(wr, &d.to_requester(&self.id)).await;
    }

    /// The end of a decided request: the decision recorded in `rec` and
    /// the audit log, then told to the asker — unless the asker withdrew
    /// it (`cancelled`), when there is nobody to tell.
    pub(crate) async fn conclude(
        &self,
        mut rec: Record,
        outcome: crate::state::Outcome,
        mock: bool,
        wr: &mut Writer,
    ) {
        rec.latency_ms = Some(self.arrived.elapsed().as_millis() as u64);
        rec.decided_by = Some(outcome.by.clone());
        rec.mock = mock;
        rec.reason = outcome.reason.clone();
        let cancelled = outcome.by.channel == "requester";
        rec.decision = if cancelled {
            "cancelled"
        } else if outcome.approved {
            "approved"
        } else {
            "denied"
        }
        .into();
        self.hall.append(&rec);
        if cancelled {
            return;
        }
        let _ = send(
            wr,
            &crate::protocol::ToRequester::Decision {
                id: self.id.clone(),
                approved: outcome.approved,
                by: outcome.by,
                reason: outcome.reason,
                mock,
            },
        )
        .await;
    }
}
