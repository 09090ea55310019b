//! Requests for a bigger tier, from agents in the cluster. An agent in its
//! pod writes the request into its own request object (the one thing its
//! service account may change); the hall's relay (`nuketown cloud
//! requests`, root, on the hall's host) reads it and brings it here on the
//! ask socket. The hall decides as for every escalation — the declaration
//! first (what could never be granted is refused before a human sees it;
//! moving down is free; `scaling.autoApprove` grants its tiers), then a
//! human on any channel — writes the decision in the audit log and answers
//! the relay, which writes exactly the annotation the approvers were shown
//! on the agent's Deployment, as field manager `nuketown-hall`, the only
//! writer the scaling operator obeys.
//!
//! Only root may bring such a request: the agent is named by the relay
//! from the object's name (which the agent cannot change), never by the
//! agent. An agent asking on the host is told where to ask.

use std::sync::Arc;
use std::time::Instant;

use nuketown_town::tiers::{self, Grant};
use tokio::io::BufReader;
use tokio::net::UnixStream;

use crate::audit::Record;
use crate::connection::{first_line, send};
use crate::hall::{Denial, Hall};
use crate::protocol::{self, DecidedBy, FromAsker, RequestView, ResourcesView, ToRequester};
use crate::state::{GrantKey, Outcome};
use crate::time::now_ms;
use crate::town::Loaded;

/// The field manager the relay writes as; the operator obeys no other.
pub const FIELD_MANAGER: &str = "nuketown-hall";

fn by(who: &str, channel: &str) -> DecidedBy {
    DecidedBy {
        who: who.into(),
        channel: channel.into(),
    }
}

/// A connection from root on the ask socket: the relay, with one request.
pub(crate) async fn serve_relay(hall: Arc<Hall>, stream: UnixStream, loaded: Arc<Loaded>) {
    {
        let this = &hall;
        let arrived = Instant::now();
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let Ok(id) = protocol::new_id() else {
            return;
        };
        let deny = |reason: &str, by: DecidedBy| ToRequester::denied(&id, reason, by);
        let line = match first_line(&mut rd).await {
            Ok(Some(l)) => l,
            Err(e) => {
                let _ = send(&mut wr, &deny(&e, by("hall", "hall"))).await;
                return;
            }
            Ok(None) => return,
        };
        let (agent_name, tier, current, reason, origin) = match protocol::parse_asker(&line) {
            Ok(FromAsker::Resources {
                agent,
                tier,
                current,
                reason,
                origin,
                ..
            }) => (agent, tier, current, reason, origin),
            Ok(_) => {
                let e = "root asks the hall only for an agent's resources (the relay); nothing was changed";
                let _ = send(&mut wr, &deny(e, by("hall", "hall"))).await;
                return;
            }
            Err(e) => {
                let e = format!("{e}; nothing was changed");
                let _ = send(&mut wr, &deny(&e, by("hall", "hall"))).await;
                return;
            }
        };
        let Some(agent) = loaded
            .town
            .enabled_agents()
            .find(|(n, _)| **n == agent_name)
            .map(|(_, a)| a.clone())
        else {
            let e = format!(
                "{:?} is not an enabled agent of the town; nothing was changed",
                agent_name
            );
            let _ = send(&mut wr, &deny(&e, by("hall", "hall"))).await;
            return;
        };
        let name = agent_name;
        let uid = agent.uid;
        let mut rec = Record::new(&id, "resources", &name, uid);
        rec.target = name.clone();
        rec.argv = vec![
            "nuketown".into(),
            "ask".into(),
            "resources".into(),
            tier.clone(),
        ];
        let cloud = &agent.cloud;
        let view = ResourcesView {
            tier: tier.clone(),
            size: tiers::size(&tier, cloud.gpu.as_ref().map(|g| g.count)),
            current: current.clone(),
            declared: cloud.resources.clone(),
            max: cloud
                .scaling
                .max_resources
                .clone()
                .unwrap_or_else(|| cloud.resources.clone()),
            reason: reason.clone(),
            origin: origin.clone(),
            rule: format!(
                "on Deployment {}/{name}, as field manager {FIELD_MANAGER}: nuketown.dev/tier-request = {}",
                cloud.namespace,
                tiers::request_annotation(&tier, "APPROVER", "CHANNEL", 0, &id)
                    .replace(";at=0;", ";at=DECIDED;")
            ),
        };
        rec.resources = Some(view.clone());
        let decided: Result<(Outcome, bool), String> = match tiers::check_request(
            &name, &agent, &tier,
        ) {
            Err(e) => Err(e),
            Ok(Grant::Free(why)) => Ok((
                Outcome {
                    approved: true,
                    by: by("policy", "policy"),
                    reason: why,
                },
                false,
            )),
            Ok(Grant::Rule(why)) => Ok((
                Outcome {
                    approved: true,
                    by: by("policy", "scaling.autoApprove"),
                    reason: why,
                },
                false,
            )),
            Ok(Grant::Human) => {
                let mut rv =
                    RequestView::asked(&id, &name, uid, rec.argv.clone(), agent.sudo.timeout);
                rv.notes = vec![
                    "asked in the cluster; the hall's relay brought it from the agent's request object".into(),
                ];
                rv.resources = Some(Box::new(view.clone()));
                match this.mock(&loaded) {
                    Some(a) => Ok((
                        Outcome {
                            approved: a.approved,
                            by: a.by,
                            reason: a.reason,
                        },
                        true,
                    )),
                    None => this
                        .wait_for_human(
                            rv,
                            GrantKey {
                                program: (0, 0),
                                cwd: (0, 0),
                                grantable: false,
                            },
                            agent.sudo.max_pending,
                            &mut rd,
                            &mut wr,
                            "the relay went away before the decision; nothing was changed",
                        )
                        .await
                        .map(|o| (o, false))
                        .map_err(|d: Denial| d.reason),
                }
            }
        };
        rec.latency_ms = Some(arrived.elapsed().as_millis() as u64);
        let (outcome, mock) = match decided {
            Ok(x) => x,
            Err(e) => {
                let e = format!("{e}; nothing was changed");
                rec.decision = "denied".into();
                rec.reason = e.clone();
                rec.decided_by = Some(by("hall", "hall"));
                this.append(&rec);
                let _ = send(&mut wr, &deny(&e, by("hall", "hall"))).await;
                return;
            }
        };
        rec.decided_by = Some(outcome.by.clone());
        rec.mock = mock;
        rec.decision = if outcome.by.channel == "requester" {
            "cancelled"
        } else if outcome.approved {
            "approved"
        } else {
            "denied"
        }
        .into();
        rec.reason = outcome.reason.clone();
        if outcome.approved {
            rec.result = Some(format!(
                "the relay writes nuketown.dev/tier-request = {} on Deployment {}/{name}",
                tiers::request_annotation(
                    &tier,
                    &outcome.by.who,
                    &outcome.by.channel,
                    now_ms(),
                    &id
                ),
                cloud.namespace
            ));
        }
        this.append(&rec);
        let _ = send(
            &mut wr,
            &ToRequester::Decision {
                id: id.clone(),
                approved: outcome.approved,
                by: outcome.by,
                reason: outcome.reason,
                mock,
            },
        )
        .await;
    }
}
