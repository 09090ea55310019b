//! A sudo request, from the entry point on the requester socket (root
//! only): one request, its decision, the command's exit status.
//!
//! The request passes named stages, each returning the next stage's input
//! or a [`Denial`]: [`Sudo::read`] (the message), [`Sudo::identify`] (the
//! agent, from sudo's `SUDO_UID`), [`Sudo::prove`] (what it runs and reads,
//! proven root's or not), [`Sudo::decide`] (deny rules, then rules, grants
//! and the mock file for what is proven, else a human). A denial from any
//! stage is recorded and sent in one place, [`Sudo::deny`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use nuketown_town::Agent;

use crate::audit::Record;
use crate::connection::{first_line, read_line, send};
use crate::hall::{user_name, Denial, Hall};
use crate::policy;
use crate::proof::Assessment;
use crate::protocol::{self, Ask, DecidedBy, FromRequester, RequestView, ToRequester};
use crate::state::{GrantKey, Outcome};
use crate::time::now_ms;
use crate::town::Loaded;

/// What is known of one request so far, for its audit record.
struct Sudo {
    hall: Arc<Hall>,
    id: String,
    arrived: Instant,
    agent: String,
    uid: u32,
    ask: Option<Ask>,
    /// The argv of a request the entry point refused before asking.
    refused_argv: Vec<String>,
    assessment: Option<Assessment>,
}

/// How a request was decided.
struct Decided {
    outcome: Outcome,
    mock: bool,
}

/// Serve one requester connection (counted, so a stopping hall lets it hear its denial).
pub(crate) async fn serve(hall: Arc<Hall>, stream: UnixStream) {
    hall.in_flight.fetch_add(1, Ordering::SeqCst);
    requester(hall.clone(), stream).await;
    if hall.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
        hall.idle.notify_waiters();
    }
}

async fn requester(hall: Arc<Hall>, stream: UnixStream) {
    let peer = stream.peer_cred().map(|p| p.uid()).ok();
    if peer != Some(0) {
        // Nothing at all for a peer that is not root: not even a denial.
        tracing::warn!(peer_uid = ?peer, "closed a requester connection from a peer that is not root");
        return;
    }
    let Ok(id) = protocol::new_id() else {
        tracing::error!("no randomness for a request id; denying");
        return;
    };
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut r = Sudo {
        hall,
        id,
        arrived: Instant::now(),
        agent: "?".into(),
        uid: 0,
        ask: None,
        refused_argv: Vec::new(),
        assessment: None,
    };
    let decided = match r.pipeline(&mut rd, &mut wr).await {
        Ok(d) => d,
        Err(denial) => return r.deny(&mut wr, &denial).await,
    };
    let Decided { outcome, mock } = decided;
    if outcome.by.channel == "requester" {
        // Withdrawn: nobody is left to tell.
        r.record("cancelled", &outcome.by, &outcome.reason, false);
        return;
    }
    let approved = outcome.approved;
    r.record(
        if approved { "approved" } else { "denied" },
        &outcome.by,
        &outcome.reason,
        mock,
    );
    let decision = ToRequester::Decision {
        id: r.id.clone(),
        approved,
        by: outcome.by,
        reason: outcome.reason,
        mock,
    };
    if send(&mut wr, &decision).await.is_err() || !approved {
        return;
    }
    r.exit_status(&mut rd).await;
}

impl Sudo {
    async fn pipeline(
        &mut self,
        rd: &mut BufReader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
    ) -> Result<Decided, Denial> {
        let ask = self.read(rd).await?;
        let loaded = self.hall.loaded().map_err(|e| {
            tracing::error!("{e}");
            Denial::hall(e)
        })?;
        let (name, agent) = self.identify(&loaded, &ask)?;
        let assessment = self.prove(&loaded, &ask)?;
        self.decide(&loaded, &name, &agent, &ask, &assessment, rd, wr)
            .await
    }

    /// Stage 1: the one request on this connection.
    async fn read(&mut self, rd: &mut BufReader<OwnedReadHalf>) -> Result<Ask, Denial> {
        let line = first_line(rd).await.map_err(Denial::hall)?.ok_or_else(|| {
            Denial::hall("the entry point closed the connection without a request")
        })?;
        match protocol::parse_requester(&line) {
            Ok(FromRequester::Request { ask, .. }) => {
                self.uid = ask.sudo_uid;
                self.agent = format!("uid {}", ask.sudo_uid);
                self.ask = Some(ask.clone());
                Ok(ask)
            }
            Ok(FromRequester::Refused {
                sudo_uid,
                argv,
                reason,
                ..
            }) => {
                self.uid = sudo_uid;
                self.agent = self
                    .hall
                    .loaded()
                    .ok()
                    .and_then(|l| policy::agent_by_uid(&l.town, sudo_uid).map(|(n, _)| n.clone()))
                    .or_else(|| user_name(sudo_uid))
                    .unwrap_or_else(|| format!("uid {sudo_uid}"));
                self.refused_argv = argv;
                Err(Denial::by(reason, DecidedBy::hall("entry")))
            }
            Ok(FromRequester::Exit { .. }) => Err(Denial::hall("an exit status without a request")),
            Err(e) => Err(Denial::hall(e.to_string())),
        }
    }

    /// Stage 2: the agent, from the uid sudo reported (believed only from root).
    fn identify(&mut self, loaded: &Loaded, ask: &Ask) -> Result<(String, Agent), Denial> {
        match policy::agent_by_uid(&loaded.town, ask.sudo_uid) {
            Some((name, agent)) => {
                self.agent = name.clone();
                Ok((name.clone(), agent.clone()))
            }
            None => {
                let who = user_name(ask.sudo_uid).unwrap_or_else(|| self.agent.clone());
                self.agent = who.clone();
                Err(Denial::hall(format!(
                    "{who} is not an enabled agent of this town"
                )))
            }
        }
    }

    /// Stage 3: what the request runs and reads, proven root's or not — on
    /// the very files the entry point opened; if they moved meanwhile,
    /// nothing is decided on them.
    fn prove(&mut self, loaded: &Loaded, ask: &Ask) -> Result<Assessment, Denial> {
        let home = nix::unistd::User::from_name(&ask.user)
            .ok()
            .flatten()
            .map(|u| u.dir.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/nonexistent".into());
        let a = crate::proof::assess(&loaded.trust, ask, &home)
            .map_err(|e| Denial::hall(format!("{e}; denied")))?;
        self.assessment = Some(a.clone());
        Ok(a)
    }

    /// Stage 4: deny rules; for what is proven, rules, grants and the mock
    /// file; else (and for a mock denial) a human on every channel.
    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &mut self,
        loaded: &Loaded,
        name: &str,
        agent: &Agent,
        ask: &Ask,
        assessment: &Assessment,
        rd: &mut BufReader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
    ) -> Result<Decided, Denial> {
        let now = now_ms();
        let grants = self.hall.state().grants();
        if let Some(a) = policy::by_rules(name, agent, ask, assessment, &grants, now) {
            return Ok(Decided {
                outcome: Outcome {
                    approved: a.approved,
                    by: a.by,
                    reason: a.reason,
                },
                mock: false,
            });
        }
        // The mock file stands in for a human: its denial decides anything,
        // its approval only what a rule could.
        if let Some(a) = self.hall.mock(loaded) {
            if !a.approved || assessment.proven() {
                return Ok(Decided {
                    outcome: Outcome {
                        approved: a.approved,
                        by: a.by,
                        reason: a.reason,
                    },
                    mock: true,
                });
            }
        }
        let view = self.view(name, agent, ask, assessment, now);
        let key = GrantKey {
            program: (ask.program.dev, ask.program.ino),
            cwd: (ask.cwd.dev, ask.cwd.ino),
            grantable: assessment.grantable(),
        };
        let outcome = self
            .hall
            .wait_for_human(
                view,
                key,
                agent.sudo.max_pending,
                rd,
                wr,
                "the requester went away",
            )
            .await?;
        Ok(Decided {
            outcome,
            mock: false,
        })
    }

    fn view(
        &self,
        name: &str,
        agent: &Agent,
        ask: &Ask,
        assessment: &Assessment,
        now: u64,
    ) -> RequestView {
        let mut v = RequestView::asked(
            &self.id,
            name,
            self.uid,
            ask.argv.clone(),
            agent.sudo.timeout,
        );
        v.asked_ms = now;
        v.deadline_ms = now + agent.sudo.timeout * 1000;
        v.program = ask.program.clone();
        v.typed = ask.typed.clone();
        v.cwd = ask.cwd.path.clone();
        v.user = ask.user.clone();
        v.group = ask.group.clone();
        v.agent_can_write = assessment.human_only();
        v.agent_writable_args = assessment.args();
        v.warnings = assessment.warnings();
        v.grantable = assessment.grantable();
        v
    }

    /// The one place a denial is recorded and sent.
    async fn deny(&self, wr: &mut OwnedWriteHalf, denial: &Denial) {
        self.record("denied", &denial.by, &denial.reason, false);
        let _ = send(wr, &denial.to_requester(&self.id)).await;
    }

    fn record(&self, decision: &str, by: &DecidedBy, reason: &str, mock: bool) {
        let mut r = Record::new(&self.id, "decision", &self.agent, self.uid);
        match &self.ask {
            Some(ask) => {
                r.argv = ask.argv.clone();
                r.program = Some(ask.program.clone());
                r.typed = ask.typed.clone();
                r.cwd = ask.cwd.path.clone();
                r.target = ask.user.clone();
                r.group = ask.group.clone();
            }
            None => r.argv = self.refused_argv.clone(),
        }
        if let Some(a) = &self.assessment {
            r.agent_can_write = a.human_only();
            r.warnings = a.warnings();
        }
        r.decision = decision.into();
        r.reason = reason.into();
        r.decided_by = Some(by.clone());
        r.mock = mock;
        r.latency_ms = Some(self.arrived.elapsed().as_millis() as u64);
        self.hall.append(&r);
    }

    /// After an approval: the command runs, and its exit status comes back.
    async fn exit_status(&self, rd: &mut BufReader<OwnedReadHalf>) {
        let mut r = Record::new(&self.id, "exit", &self.agent, self.uid);
        match read_line(rd).await {
            Ok(Some(line)) => match protocol::parse_requester(&line) {
                Ok(FromRequester::Exit { id, status, .. }) if id == self.id => {
                    r.exit_status = Some(status);
                }
                Ok(_) => r.reason = "the entry point reported an exit for another request".into(),
                Err(e) => r.reason = format!("the entry point's exit report was refused: {e}"),
            },
            Ok(None) => r.reason = "the entry point ended without reporting the exit status".into(),
            Err(e) => r.reason = format!("the entry point's exit report was refused: {e}"),
        }
        self.hall.append(&r);
    }
}
