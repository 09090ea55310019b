//! The hall's state, apart from any socket: pending requests, grants and the
//! approvers watching. A request leaves the pending set exactly once — decided
//! by an approver, timed out, withdrawn, or denied because its approvers went
//! away — and whoever takes it out delivers its one outcome.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{broadcast, oneshot};

use crate::policy::Grant;
use crate::protocol::{self, DecidedBy, RequestView, ToApprover};
use crate::time::now_ms;

/// How a pending request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the command may run.
    pub approved: bool,
    /// Who decided.
    pub by: DecidedBy,
    /// Why, in words for the agent.
    pub reason: String,
}

impl Outcome {
    /// A denial by the hall itself, through `channel` (`timeout`,
    /// `requester`, …): no approver decided.
    pub fn hall_denied(channel: &str, reason: impl Into<String>) -> Outcome {
        Outcome {
            approved: false,
            by: DecidedBy::hall(channel),
            reason: reason.into(),
        }
    }
}

/// Longest time-boxed grant, in seconds (a day).
pub const MAX_GRANT_SECS: u64 = 86_400;

/// Why an approver's decision was refused. Nothing changes when it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No such pending request.
    #[error("no pending request {0} (already decided, withdrawn or timed out)")]
    NotPending(String),
    /// The decision names another agent or argv than the request.
    #[error("request {id} is not {agent}'s {argv}; nothing was decided")]
    Mismatch {
        /// Request id.
        id: String,
        /// The agent the decision named.
        agent: String,
        /// The argv the decision named, shown.
        argv: String,
    },
    /// A channel the hall does not know.
    #[error("unknown channel {0:?}: use terminal, desktop or matrix:@user:server")]
    Channel(String),
    /// A grant that is too long or comes with a denial.
    #[error("a grant must come with an approval and last 1 to {MAX_GRANT_SECS} s")]
    Grant,
}

/// What a grant given on a pending request would be bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantKey {
    /// The program's device and inode.
    pub program: (u64, u64),
    /// The working directory's device and inode.
    pub cwd: (u64, u64),
    /// Whether a grant may be given at all (see `Assessment::grantable`).
    pub grantable: bool,
}

/// The agent already has as many requests waiting as it may.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{agent} already has {max} requests waiting for a human (agents.{agent}.sudo.maxPending); denied until one is decided")]
pub struct TooMany {
    /// The agent.
    pub agent: String,
    /// Its cap.
    pub max: u32,
}

struct Pending {
    view: RequestView,
    key: GrantKey,
    /// Shown to at least one watching approver.
    shown: bool,
    decide: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct Inner {
    pending: HashMap<String, Pending>,
    grants: Vec<Grant>,
    watchers: usize,
}

/// Pending requests, grants and watchers, shared by every connection.
pub struct State {
    inner: Mutex<Inner>,
    events: broadcast::Sender<ToApprover>,
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

fn sort(v: &mut [RequestView]) {
    v.sort_by(|a, b| a.asked_ms.cmp(&b.asked_ms).then(a.id.cmp(&b.id)));
}

/// Whether `channel` is one an approver may name.
pub fn channel_ok(channel: &str) -> bool {
    matches!(channel, "terminal" | "desktop")
        || channel
            .strip_prefix("matrix:@")
            .is_some_and(|rest| rest.contains(':') && !rest.contains(char::is_whitespace))
}

impl State {
    /// An empty hall.
    pub fn new() -> State {
        // Enough room for every pending request's event plus its resolution.
        let (events, _) = broadcast::channel(16 * 1024);
        State {
            inner: Mutex::new(Inner::default()),
            events,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hold a request for a human; the receiver gets its one outcome. An
    /// agent with `max_pending` requests waiting already is refused.
    pub fn submit(
        &self,
        view: RequestView,
        key: GrantKey,
        max_pending: u32,
    ) -> Result<oneshot::Receiver<Outcome>, TooMany> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        let waiting = inner
            .pending
            .values()
            .filter(|p| p.view.agent == view.agent)
            .count();
        if waiting >= max_pending as usize {
            return Err(TooMany {
                agent: view.agent.clone(),
                max: max_pending,
            });
        }
        let shown = inner.watchers > 0;
        // Sent under the lock, so a new watcher sees it either in its snapshot or as an event, once.
        let _ = self.events.send(ToApprover::Request {
            request: view.clone(),
        });
        inner.pending.insert(
            view.id.clone(),
            Pending {
                view,
                key,
                shown,
                decide: tx,
            },
        );
        Ok(rx)
    }

    /// Take a request out with this outcome (timeout, withdrawal); false when
    /// it was already gone — then its receiver holds the outcome that won.
    pub fn resolve(&self, id: &str, outcome: Outcome) -> bool {
        let mut inner = self.lock();
        match inner.pending.remove(id) {
            Some(p) => {
                self.finish(p, outcome);
                true
            }
            None => false,
        }
    }

    /// Wait for request `id`'s decision, its deadline (`timeout_secs`) or
    /// `gone` (the requester going away, with the outcome that means) —
    /// whichever comes first. Whoever takes the request out of the pending
    /// set decides it: when an approver got there at the last moment, theirs
    /// stands. Every kind of request (sudo, network, resources, key use)
    /// settles here.
    pub async fn settle(
        &self,
        id: &str,
        mut decided: oneshot::Receiver<Outcome>,
        timeout_secs: u64,
        gone: impl std::future::Future<Output = Outcome>,
    ) -> Outcome {
        let hall = Outcome::hall_denied;
        let local = tokio::select! {
            o = &mut decided => Err(o.ok()),
            _ = tokio::time::sleep(std::time::Duration::from_secs(timeout_secs)) => {
                Ok(hall("timeout", format!("timed out after {timeout_secs} s")))
            }
            o = gone => Ok(o),
        };
        match local {
            Err(Some(o)) => o,
            Ok(o) if self.resolve(id, o.clone()) => o,
            _ => decided
                .try_recv()
                .unwrap_or_else(|_| hall("hall", "the request was lost; denied".into())),
        }
    }

    fn finish(&self, p: Pending, outcome: Outcome) {
        let _ = self.events.send(ToApprover::Resolved {
            id: p.view.id.clone(),
            outcome: if outcome.approved {
                "approved"
            } else if outcome.by.channel == "requester" {
                "cancelled"
            } else {
                "denied"
            }
            .into(),
            by: outcome.by.clone(),
        });
        let _ = p.decide.send(outcome);
    }

    /// An approver's decision: it must name a pending request by id, with the
    /// same agent and argv, and a known channel.
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &self,
        approver: &str,
        id: &str,
        agent: &str,
        argv: &[String],
        approve: bool,
        grant_secs: Option<u64>,
        channel: &str,
    ) -> Result<(), Refused> {
        if !channel_ok(channel) {
            return Err(Refused::Channel(channel.to_string()));
        }
        if grant_secs.is_some_and(|s| !approve || s == 0 || s > MAX_GRANT_SECS) {
            return Err(Refused::Grant);
        }
        let mut inner = self.lock();
        let Some(p) = inner.pending.get(id) else {
            return Err(Refused::NotPending(id.to_string()));
        };
        if p.view.agent != agent || p.view.argv != argv {
            return Err(Refused::Mismatch {
                id: id.to_string(),
                agent: agent.to_string(),
                argv: protocol::show_argv(argv),
            });
        }
        let p = inner.pending.remove(id).expect("checked above");
        let reason = match (approve, grant_secs) {
            (true, Some(_)) if !p.key.grantable => format!(
                "approved by {approver} via {channel} (this once: the agent can change what it runs or reads, so no grant covers it)"
            ),
            (true, Some(s)) => {
                inner.grants.retain(|g| g.until_ms > now_ms());
                inner.grants.push(Grant {
                    agent: agent.to_string(),
                    argv: argv.to_vec(),
                    program: p.key.program,
                    cwd: p.key.cwd,
                    user: p.view.user.clone(),
                    group: p.view.group.clone(),
                    until_ms: now_ms() + s * 1000,
                    by: approver.to_string(),
                });
                format!("approved by {approver} via {channel}, and for the next {s} s")
            }
            (true, None) => format!("approved by {approver} via {channel}"),
            (false, _) => format!("denied by {approver} via {channel}"),
        };
        self.finish(
            p,
            Outcome {
                approved: approve,
                by: DecidedBy {
                    who: approver.to_string(),
                    channel: channel.to_string(),
                },
                reason,
            },
        );
        Ok(())
    }

    /// The live grants.
    pub fn grants(&self) -> Vec<Grant> {
        let now = now_ms();
        let mut inner = self.lock();
        inner.grants.retain(|g| g.until_ms > now);
        inner.grants.clone()
    }

    /// What is pending, oldest first.
    pub fn pending(&self) -> Vec<RequestView> {
        let mut v: Vec<RequestView> = self
            .lock()
            .pending
            .values()
            .map(|p| p.view.clone())
            .collect();
        sort(&mut v);
        v
    }

    /// Start watching: what is pending now, and every event after it.
    /// Call [`State::unwatch`] when the watcher goes.
    pub fn watch(&self) -> (Vec<RequestView>, broadcast::Receiver<ToApprover>) {
        let mut inner = self.lock();
        let rx = self.events.subscribe();
        inner.watchers += 1;
        for p in inner.pending.values_mut() {
            p.shown = true;
        }
        let mut now: Vec<RequestView> = inner.pending.values().map(|p| p.view.clone()).collect();
        sort(&mut now);
        (now, rx)
    }

    /// Follow without being an approver (no request counts as shown, and
    /// going away denies nothing): what is pending now, and every event after it.
    pub fn follow(&self) -> (Vec<RequestView>, broadcast::Receiver<ToApprover>) {
        let inner = self.lock();
        let rx = self.events.subscribe();
        let mut now: Vec<RequestView> = inner.pending.values().map(|p| p.view.clone()).collect();
        sort(&mut now);
        (now, rx)
    }

    /// A watcher went away. When it was the last, every request that approvers
    /// were shown is denied: nobody is left to decide it.
    pub fn unwatch(&self, approver: &str, channel: &str) -> usize {
        let mut inner = self.lock();
        inner.watchers = inner.watchers.saturating_sub(1);
        if inner.watchers > 0 {
            return 0;
        }
        let orphans: Vec<String> = inner
            .pending
            .iter()
            .filter(|(_, p)| p.shown)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &orphans {
            let p = inner.pending.remove(id).expect("listed above");
            self.finish(
                p,
                Outcome {
                    approved: false,
                    by: DecidedBy {
                        who: approver.to_string(),
                        channel: "approver-gone".into(),
                    },
                    reason: format!(
                        "the approver went away ({approver}'s {channel} approver disconnected), denied"
                    ),
                },
            );
        }
        orphans.len()
    }

    /// Deny everything pending (the hall is stopping).
    pub fn deny_all(&self, reason: &str) {
        let mut inner = self.lock();
        let all: Vec<Pending> = inner.pending.drain().map(|(_, p)| p).collect();
        for p in all {
            self.finish(
                p,
                Outcome {
                    approved: false,
                    by: DecidedBy {
                        who: "hall".into(),
                        channel: "hall".into(),
                    },
                    reason: reason.to_string(),
                },
            );
        }
    }
}
