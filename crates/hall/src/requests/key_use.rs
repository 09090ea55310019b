//! Uses of agents' keys, brokered like privilege requests: the agent's
//! policy (`agents.<name>.keys`) decides or asks the approvers through the
//! same pending set, channels and audit log as sudo; a key use is a request
//! whose view carries [`KeyUseView`].

use std::sync::Arc;

use nuketown_keys::agent::{Gate, KeyUse, Operation, Verdict};
use nuketown_town::{KeyPolicy, Keys};

use crate::audit::Record;
use crate::hall::Hall;
use crate::protocol::{KeyUseView, RequestView};
use crate::state::{GrantKey, Outcome};

/// What the town's policy says about one key use: the policy, the rule
/// that gave it (for the audit log and the approvers), and the declared
/// host it is for, if it is an authentication to one.
pub fn judge(keys: &Keys, u: &KeyUse) -> (KeyPolicy, String, Option<String>) {
    if let Some(why) = &u.refused {
        return (KeyPolicy::Deny, why.clone(), None);
    }
    match &u.operation {
        Operation::Sign { namespace, .. } if namespace == "git" => (
            keys.sign,
            format!("keys.sign = {} (namespace git)", keys.sign.as_str()),
            None,
        ),
        Operation::Sign { namespace, .. } => (
            keys.sign_other,
            format!(
                "keys.signOther = {} (namespace {namespace:?})",
                keys.sign_other.as_str()
            ),
            None,
        ),
        Operation::Authenticate { host_key, .. } => {
            let same = |a: &str, b: &str| {
                a.split_whitespace().take(2).collect::<Vec<_>>()
                    == b.split_whitespace().take(2).collect::<Vec<_>>()
            };
            let declared = host_key.as_deref().and_then(|k| {
                keys.hosts
                    .iter()
                    .find(|(_, h)| same(&h.host_key, k))
                    .map(|(n, h)| (n.clone(), h.authenticate.unwrap_or(keys.authenticate)))
            });
            match declared {
                Some((name, p)) => (p, format!("keys.hosts.{name} ({})", p.as_str()), Some(name)),
                None => (
                    keys.authenticate_other,
                    format!(
                        "keys.authenticateOther = {} ({})",
                        keys.authenticate_other.as_str(),
                        if host_key.is_some() {
                            "a host the town does not declare"
                        } else {
                            "the host could not be identified"
                        }
                    ),
                    None,
                ),
            }
        }
        Operation::Other => (
            KeyPolicy::Deny,
            "neither an SSH signature nor an SSH authentication: the town never signs it".into(),
            None,
        ),
    }
}

/// The view approvers get and the audit log keeps.
pub fn view_of(u: &KeyUse, rule: &str, host: Option<String>) -> KeyUseView {
    let mut v = KeyUseView {
        operation: u.operation.kind().into(),
        key: u.key.clone(),
        data_sha256: u.data_sha256.clone(),
        caller_pid: u.caller.pid,
        parent: u.caller.parent.clone(),
        rule: rule.to_string(),
        host,
        ..KeyUseView::default()
    };
    match &u.operation {
        Operation::Sign {
            namespace,
            hash_alg,
            message_hash,
        } => {
            v.namespace = Some(namespace.clone());
            v.message_hash = Some(format!("{hash_alg}:{message_hash}"));
        }
        Operation::Authenticate { user, host_key } => {
            v.remote_user = Some(user.clone());
            v.host_key = host_key.clone();
        }
        Operation::Other => {}
    }
    v
}

fn caller_argv(u: &KeyUse) -> Vec<String> {
    if u.caller.cmdline.is_empty() {
        vec![format!("(process {})", u.caller.pid)]
    } else {
        u.caller.cmdline.clone()
    }
}

/// The town hall as the gate of every agent's key socket.
pub struct HallGate(pub Arc<Hall>);

fn verdict(id: &str, allowed: bool, who: &str, channel: &str, reason: String) -> Verdict {
    Verdict {
        allowed,
        who: who.into(),
        channel: channel.into(),
        reason,
        id: id.to_string(),
    }
}

#[nuketown_keys::agent::async_trait]
impl Gate for HallGate {
    async fn decide(&self, u: &KeyUse) -> Verdict {
        let hall = &self.0;
        let id = u.id.clone();
        let loaded = match hall.loaded() {
            Ok(l) => l,
            Err(e) => return verdict(&id, false, "hall", "hall", e),
        };
        let Some(agent) = loaded
            .town
            .agents
            .get(&u.agent)
            .filter(|a| a.on_host() && a.uid == u.caller.uid)
        else {
            return verdict(
                &id,
                false,
                "hall",
                "hall",
                format!("{} is not an enabled agent of this town", u.agent),
            );
        };
        let (p, rule, host) = judge(&agent.keys, u);
        match p {
            KeyPolicy::Allow => return verdict(&id, true, "policy", "policy", rule),
            KeyPolicy::Deny => return verdict(&id, false, "policy", "policy", rule),
            KeyPolicy::Ask => {}
        }
        if let Some(a) = hall.mock(&loaded) {
            return verdict(
                &id,
                a.approved,
                &a.by.who,
                &a.by.channel,
                format!("{} ({rule})", a.reason),
            );
        }
        let timeout = agent.keys.timeout;
        let mut view = RequestView::asked(&id, &u.agent, u.caller.uid, caller_argv(u), timeout);
        view.notes = vec![format!(
            "the command line is what {}'s own process says of itself; what would be signed is the hash shown",
            u.agent
        )];
        view.key_use = Some(Box::new(view_of(u, &rule, host)));
        let key = GrantKey {
            program: (0, 0),
            cwd: (0, 0),
            grantable: false,
        };
        let rx = match hall.state().submit(view, key, agent.sudo.max_pending) {
            Ok(rx) => rx,
            Err(e) => return verdict(&id, false, "hall", "hall", e.to_string()),
        };
        // A caller that goes away withdraws the request (`withdraw`).
        let outcome = hall
            .state()
            .settle(&id, rx, timeout, std::future::pending())
            .await;
        verdict(
            &id,
            outcome.approved,
            &outcome.by.who,
            &outcome.by.channel,
            outcome.reason,
        )
    }

    fn record(&self, u: &KeyUse, v: &Verdict, result: Result<(), String>) {
        let decision = if v.allowed { "approved" } else { "denied" };
        let by = crate::protocol::DecidedBy {
            who: v.who.clone(),
            channel: v.channel.clone(),
        };
        let result = match result {
            Ok(()) => "signed".into(),
            Err(e) => e,
        };
        self.append(u, &v.id, decision, &v.reason, by, result);
    }

    fn withdraw(&self, u: &KeyUse) {
        let by = crate::protocol::DecidedBy {
            who: "hall".into(),
            channel: "requester".into(),
        };
        let reason = "the caller went away before the decision; nothing was signed".to_string();
        // Whoever takes it out of the pending set decides it: when an approver
        // got there first, the signature is simply not made.
        self.0.state().resolve(
            &u.id,
            Outcome {
                approved: false,
                by: by.clone(),
                reason: reason.clone(),
            },
        );
        self.append(u, &u.id, "cancelled", &reason, by, "not signed".into());
    }

    fn refused_peer(&self, agent: &str, uid: Option<u32>, pid: Option<u32>) {
        tracing::warn!(
            agent,
            peer_uid = ?uid,
            peer_pid = ?pid,
            "closed a connection to {agent}'s key socket from someone who is not {agent}"
        );
        let id = crate::protocol::new_id().unwrap_or_default();
        let mut r = Record::new(&id, "key", agent, uid.unwrap_or(u32::MAX));
        r.decision = "denied".into();
        r.reason = format!(
            "a connection to {agent}'s key socket from uid {} (pid {}) was closed: only {agent} may use it",
            uid.map_or("?".into(), |u| u.to_string()),
            pid.map_or("?".into(), |p| p.to_string())
        );
        r.decided_by = Some(crate::protocol::DecidedBy {
            who: "hall".into(),
            channel: "peer".into(),
        });
        self.0.append(&r);
    }
}

impl HallGate {
    /// One use of `u`'s key in the audit log, with the rule that judged it.
    fn append(
        &self,
        u: &KeyUse,
        id: &str,
        decision: &str,
        reason: &str,
        by: crate::protocol::DecidedBy,
        result: String,
    ) {
        let hall = &self.0;
        let rule = hall
            .loaded()
            .ok()
            .and_then(|l| l.town.agents.get(&u.agent).map(|a| judge(&a.keys, u)));
        let (rule, host) = rule.map(|(_, r, h)| (r, h)).unwrap_or_default();
        let mut r = Record::new(id, "key", &u.agent, u.caller.uid);
        r.argv = caller_argv(u);
        r.target = u.agent.clone();
        r.decision = decision.into();
        r.reason = reason.into();
        r.mock = by.channel == "mock";
        r.decided_by = Some(by);
        r.key_use = Some(view_of(u, &rule, host));
        r.result = Some(result);
        hall.append(&r);
    }
}

/// Give every enabled agent its key socket, and take departed agents' away.
pub(crate) fn sync_key_sockets(hall: &Arc<Hall>) {
    let Ok(loaded) = hall.loaded() else {
        return;
    };
    let mut sockets = hall.key_sockets.lock().unwrap_or_else(|p| p.into_inner());
    let wanted: std::collections::HashMap<&String, u32> =
        loaded.town.host_agents().map(|(n, a)| (n, a.uid)).collect();
    sockets.retain(|name, (uid, task)| {
        let keep = wanted.get(name) == Some(uid) && !task.is_finished();
        if !keep {
            task.abort();
            let _ = std::fs::remove_file(nuketown_keys::agent::socket_path(
                &hall.cfg.ssh_agent_dir,
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
    let store = match hall.key_store(&loaded.town) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!("the agents' key sockets are not served: {e}");
            return;
        }
    };
    let gate = Arc::new(HallGate(hall.clone()));
    for (name, uid) in missing {
        let Some(gid) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.gid.as_raw())
        else {
            tracing::debug!("{name} (uid {uid}) has no user yet: no key socket");
            continue;
        };
        match nuketown_keys::agent::bind(&hall.cfg.ssh_agent_dir, name, gid) {
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
pub(crate) fn close_key_sockets(hall: &Hall) {
    let mut sockets = hall.key_sockets.lock().unwrap_or_else(|p| p.into_inner());
    for (name, (_, task)) in sockets.drain() {
        task.abort();
        let _ = std::fs::remove_file(nuketown_keys::agent::socket_path(
            &hall.cfg.ssh_agent_dir,
            &name,
        ));
    }
}
