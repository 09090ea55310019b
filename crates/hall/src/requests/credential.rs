//! More of a credential past its limit. The gateway refuses a call over a
//! credential's limit and says so in the CLI's own error; a credential
//! declared with `onLimit = "ask"` may then ask here — as the agent, on the
//! ask socket, known by `SO_PEERCRED` — for one more window's worth of its
//! limits (`nuketown ask credential NAME --reason …`). A human decides on
//! any channel (or the mock file); approving raises exactly that
//! allowance at the gateway, until the day's window passes. The key
//! itself never leaves the town. A credential with `onLimit = "deny"`, or
//! one the agent does not have, is refused without a human.

use std::sync::Arc;
use std::time::Instant;

use nuketown_town::{Agent, Credential};
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::audit::Record;
use crate::connection::send;
use crate::hall::{Denial, Hall};
use crate::protocol::{MoreView, RequestView};
use crate::state::Outcome;
use crate::town::Loaded;

/// One request for more of a credential on the ask socket.
pub(crate) struct Ask<'a> {
    pub(crate) hall: Arc<Hall>,
    pub(crate) loaded: &'a Loaded,
    pub(crate) name: String,
    pub(crate) agent: Agent,
    pub(crate) uid: u32,
    pub(crate) id: String,
    pub(crate) arrived: Instant,
}

/// A credential's limits in words.
fn limits_text(c: &Credential) -> String {
    let l = &c.limits;
    let mut out = Vec::new();
    for (v, what) in [
        (l.requests_per_hour, "requests an hour"),
        (l.requests_per_day, "requests a day"),
        (l.tokens_per_hour, "tokens an hour"),
        (l.tokens_per_day, "tokens a day"),
    ] {
        if let Some(v) = v {
            out.push(format!("{v} {what}"));
        }
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(", ")
    }
}

impl Ask<'_> {
    /// Ask about more of `credential`; answer `nuketown ask`.
    pub(crate) async fn serve(
        self,
        credential: String,
        reason: String,
        rd: &mut BufReader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
    ) {
        let mut rec = Record::new(&self.id, "credential", &self.name, self.uid);
        rec.target = credential.clone();
        rec.argv = vec!["more".into(), credential.clone()];
        let creds = self.loaded.town.credentials_of(&self.name);
        let refuse = |why: String| Denial::hall(why);
        let decided = match creds.get(&credential) {
            None => Err(refuse(format!(
                "{} has no credential {credential:?} (agents.{}.credentials); nothing was changed",
                self.name, self.name
            ))),
            Some(c) if c.on_limit != "ask" => Err(refuse(format!(
                "agents.{}.credentials.{credential}.onLimit is {:?}: its limits ({}) are final, and no human is asked; nothing was changed",
                self.name,
                c.on_limit,
                limits_text(c)
            ))),
            Some(c) if c.limits.is_empty() => Err(refuse(format!(
                "{credential} has no limit to raise; nothing was changed"
            ))),
            Some(c) => {
                let l = &c.limits;
                let view = MoreView {
                    credential: credential.clone(),
                    api: c.api.clone(),
                    limits: limits_text(c),
                    used: crate::gateway::used_text(&self.hall, &self.name, &credential),
                    requests: l.requests_per_hour.or(l.requests_per_day).unwrap_or(0),
                    tokens: l.tokens_per_hour.or(l.tokens_per_day).unwrap_or(0),
                    reason: reason.clone(),
                };
                rec.reason = reason.clone();
                self.decide(view, rec.argv.clone(), rd, wr).await
            }
        };
        rec.latency_ms = Some(self.arrived.elapsed().as_millis() as u64);
        let (outcome, mock, view) = match decided {
            Ok(x) => x,
            Err(d) => {
                rec.decision = "denied".into();
                rec.reason = d.reason.clone();
                rec.decided_by = Some(d.by.clone());
                self.hall.append(&rec);
                let _ = send(wr, &d.to_requester(&self.id)).await;
                return;
            }
        };
        let mut outcome = outcome;
        if outcome.approved
            && !crate::gateway::grant_more(
                &self.hall,
                &self.name,
                &credential,
                view.requests,
                view.tokens,
            )
            .await
        {
            outcome.approved = false;
            outcome.reason = format!(
                "approved, but the gateway is not running: nothing was raised ({})",
                outcome.reason
            );
        }
        super::conclude(&self.hall, rec, outcome, mock, wr).await;
    }

    /// The mock file, or a human on every channel.
    async fn decide(
        &self,
        view: MoreView,
        argv: Vec<String>,
        rd: &mut BufReader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
    ) -> Result<(Outcome, bool, MoreView), Denial> {
        let mut rv = RequestView::asked(
            &self.id,
            &self.name,
            self.uid,
            argv,
            self.agent.sudo.timeout,
        );
        rv.more = Some(Box::new(view.clone()));
        let (o, mock) = super::mock_or_human(
            &self.hall,
            self.loaded,
            rv,
            self.agent.sudo.max_pending,
            rd,
            wr,
            "nuketown ask went away before the decision; nothing was raised",
        )
        .await?;
        Ok((o, mock, view))
    }
}
