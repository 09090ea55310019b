//! Asking for a bigger tier from inside the cluster, and bringing the ask
//! to the town hall.
//!
//! - **In the pod** (`nuketown ask resources TIER`, [`ask`]): the agent's
//!   service account may change exactly one object, its request ConfigMap
//!   `<agent>-requests` (a Role with that resource name, rendered by
//!   `nuketown cloud render`). The agent writes `data.request` and waits for
//!   `data.decision` with the same id.
//! - **On the hall's host** (`nuketown cloud requests`, [`relay`], root): the
//!   relay watches those ConfigMaps, names the agent from the object's
//!   **name** (which the agent's role cannot change) — never from its data
//!   or labels — and brings each request to the hall's ask socket. The hall
//!   decides as for every escalation; on a yes the relay writes exactly the
//!   annotation the approvers were shown on the agent's Deployment, as field
//!   manager `nuketown-hall`, the only writer the operator obeys, then the
//!   decision into the ConfigMap for the agent to read.
//!
//! What the agent writes is a request, never a decision: the render's
//! admission policy (`nuketown-requests`) refuses its token any write to its
//! request object but `data.request` and `data.active`, and the operator
//! obeys only a tier request the hall's field manager wrote.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use nuketown_hall::protocol::{self, FromAsker, ToRequester, VERSION};
use nuketown_town::Town;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::scaling::{self, HALL_MANAGER};

/// The request ConfigMap's name ends so: `<agent>-requests`.
pub const SUFFIX: &str = nuketown_cloud::REQUESTS_SUFFIX;
/// The label the render puts on request ConfigMaps (the relay watches by it;
/// the agent's name is still read from the object's name).
pub const LABEL: &str = nuketown_cloud::REQUESTS_LABEL;
/// The field manager the agent writes its request as (Argo CD ignores its fields).
pub const AGENT_MANAGER: &str = "nuketown-agent";
/// The key the agent writes.
pub const REQUEST_KEY: &str = "request";
/// The key the relay writes.
pub const DECISION_KEY: &str = "decision";
/// The key the agent writes when it is working (ms since the epoch, its
/// clock): the chat bridge in its pod, on each conversation's turn.
pub const ACTIVE_KEY: &str = "active";

/// The request ConfigMap of `agent`.
pub fn config_map_name(agent: &str) -> String {
    format!("{agent}{SUFFIX}")
}

/// What the agent asks, as it writes it into `data.request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Asked {
    /// The agent's id for this request (1 to 64 of `[0-9a-zA-Z-]`).
    pub id: String,
    /// The tier asked for.
    pub tier: String,
    /// Why, in the agent's words.
    #[serde(default)]
    pub reason: String,
    /// When, ms since the epoch (the agent's clock).
    #[serde(default)]
    pub at: u64,
}

/// The decision, as the relay writes it into `data.decision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// The agent's id of the request this answers.
    pub id: String,
    /// Whether the move was approved (the operator then moves the workload).
    pub approved: bool,
    /// Who decided: an approver, `policy`, or `hall`.
    pub by: String,
    /// Through which channel.
    pub via: String,
    /// Why, in words.
    pub reason: String,
    /// The town hall's request id (its audit log).
    #[serde(default)]
    pub request: String,
}

/// A request the relay is to bring to the hall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The agent, from the ConfigMap's name.
    pub agent: String,
    /// The agent's namespace (the town's `cloud.namespace`).
    pub namespace: String,
    /// What it asked.
    pub asked: Asked,
}

fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The job in a request ConfigMap: `Ok(None)` when there is nothing to ask
/// (no request, or already answered); `Err` (logged, never asked) when the
/// object is not one of the town's agents' or its request does not parse.
pub fn job(cm: &ConfigMap, town: &Town) -> Result<Option<Job>, String> {
    let name = cm.name_any();
    let ns = cm.namespace().unwrap_or_default();
    let Some(agent) = name.strip_suffix(SUFFIX) else {
        return Err(format!(
            "{ns}/{name}: not a request object (<agent>{SUFFIX})"
        ));
    };
    let Some((_, a)) = town.enabled_agents().find(|(n, _)| n.as_str() == agent) else {
        return Err(format!(
            "{ns}/{name}: {agent:?} is not an enabled agent of the town"
        ));
    };
    if !a.cloud.enable || a.cloud.namespace != ns {
        return Err(format!(
            "{ns}/{name}: {agent} is not a cloud agent of namespace {ns:?} (agents.{agent}.cloud)"
        ));
    }
    let data = cm.data.clone().unwrap_or_default();
    let Some(raw) = data.get(REQUEST_KEY) else {
        return Ok(None);
    };
    let asked: Asked =
        serde_json::from_str(raw).map_err(|e| format!("{ns}/{name}: data.{REQUEST_KEY}: {e}"))?;
    if !is_id(&asked.id) {
        return Err(format!(
            "{ns}/{name}: data.{REQUEST_KEY}.id must be 1 to 64 letters, digits or '-'"
        ));
    }
    let answered = data
        .get(DECISION_KEY)
        .and_then(|d| serde_json::from_str::<Answer>(d).ok())
        .is_some_and(|d| d.id == asked.id);
    if answered {
        return Ok(None);
    }
    Ok(Some(Job {
        agent: agent.to_string(),
        namespace: ns,
        asked,
    }))
}

/// The tier the agent's workload is at now, from its Deployment (the
/// operator's annotation, else the declared tier).
pub async fn current_tier(client: &Client, job: &Job) -> Result<String, kube::Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &job.namespace);
    let d = api.get(&job.agent).await?;
    let a = d.metadata.annotations.unwrap_or_default();
    Ok(a.get(scaling::CURRENT_TIER)
        .or_else(|| a.get(nuketown_cloud::TIER_ANNOTATION))
        .cloned()
        .unwrap_or_else(|| "standard".into()))
}

/// Bring the request to the hall (root, on its ask socket) and wait for its
/// decision. Blocking: run it off the async runtime.
pub fn ask_hall(socket: &Path, job: &Job, current: &str) -> Result<Answer, String> {
    let msg = FromAsker::Resources {
        v: VERSION,
        agent: job.agent.clone(),
        tier: job.asked.tier.clone(),
        current: current.to_string(),
        reason: job.asked.reason.clone(),
        origin: format!(
            "ConfigMap {}/{} (the agent's request {})",
            job.namespace,
            config_map_name(&job.agent),
            job.asked.id
        ),
    };
    let mut s = UnixStream::connect(socket)
        .map_err(|e| format!("the town hall at {}: {e}", socket.display()))?;
    s.write_all(&protocol::encode(&msg))
        .map_err(|e| format!("the town hall: {e}"))?;
    let mut rd = BufReader::new(s);
    let mut hall_id = String::new();
    loop {
        let mut line = Vec::new();
        match rd.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => {
                return Err("the town hall closed the connection without a decision".into())
            }
            Ok(_) => {}
        }
        match protocol::parse_to_requester(&line).map_err(|e| e.to_string())? {
            ToRequester::Pending { id, .. } => hall_id = id,
            ToRequester::Decision {
                id,
                approved,
                by,
                reason,
                ..
            } => {
                if hall_id.is_empty() {
                    hall_id = id;
                }
                return Ok(Answer {
                    id: job.asked.id.clone(),
                    approved,
                    by: by.who,
                    via: by.channel,
                    reason,
                    request: hall_id,
                });
            }
        }
    }
}

fn as_hall() -> PatchParams {
    PatchParams {
        field_manager: Some(HALL_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// Carry out the hall's decision: on a yes, the annotation on the agent's
/// Deployment (exactly what the approvers were shown, with who decided and
/// the hall's request id); then the decision in the request ConfigMap.
pub async fn answer(
    client: &Client,
    job: &Job,
    a: &Answer,
    now_ms: u64,
) -> Result<(), kube::Error> {
    if a.approved {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &job.namespace);
        let value = nuketown_town::tiers::request_annotation(
            &job.asked.tier,
            &a.by,
            &a.via,
            now_ms,
            &a.request,
        );
        deployments
            .patch(
                &job.agent,
                &as_hall(),
                &Patch::Merge(
                    json!({ "metadata": { "annotations": { scaling::TIER_REQUEST: value } } }),
                ),
            )
            .await?;
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &job.namespace);
    let decision = serde_json::to_string(a).unwrap_or_default();
    cms.patch(
        &config_map_name(&job.agent),
        &as_hall(),
        &Patch::Merge(json!({ "data": { DECISION_KEY: decision } })),
    )
    .await?;
    Ok(())
}

/// The relay: watch every request ConfigMap, bring each new request to the
/// hall at `socket`, carry out its decision. Runs until the watch ends.
pub async fn relay(client: Client, town_file: PathBuf, socket: PathBuf) {
    let api: Api<ConfigMap> = Api::all(client.clone());
    let busy: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let events = watcher(api, watcher::Config::default().labels(LABEL)).applied_objects();
    futures::pin_mut!(events);
    loop {
        let cm = match events.try_next().await {
            Ok(Some(cm)) => cm,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("watching request objects: {e}");
                continue;
            }
        };
        let town = match nuketown_town::load(&town_file) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("{}: {e}", town_file.display());
                continue;
            }
        };
        let job = match job(&cm, &town) {
            Ok(Some(j)) => j,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("{e}; not asked");
                continue;
            }
        };
        let key = format!("{}/{}", job.namespace, job.agent);
        {
            let mut b = busy.lock().unwrap_or_else(|p| p.into_inner());
            if b.get(&key) == Some(&job.asked.id) {
                continue;
            }
            b.insert(key.clone(), job.asked.id.clone());
        }
        let (client, socket, busy) = (client.clone(), socket.clone(), busy.clone());
        tokio::spawn(async move {
            if let Err(e) = bring(&client, &socket, &job).await {
                tracing::warn!(agent = %job.agent, "request {}: {e}", job.asked.id);
            }
            let mut b = busy.lock().unwrap_or_else(|p| p.into_inner());
            if b.get(&key) == Some(&job.asked.id) {
                b.remove(&key);
            }
        });
    }
}

async fn bring(client: &Client, socket: &Path, job: &Job) -> Result<(), String> {
    let current = current_tier(client, job).await.map_err(|e| e.to_string())?;
    let (s, j, c) = (socket.to_path_buf(), job.clone(), current.clone());
    let a = tokio::task::spawn_blocking(move || ask_hall(&s, &j, &c))
        .await
        .map_err(|e| e.to_string())??;
    tracing::info!(
        agent = %job.agent,
        approved = a.approved,
        by = %a.by,
        via = %a.via,
        "request {} for {}: {}",
        job.asked.id,
        job.asked.tier,
        a.reason
    );
    answer(client, job, &a, crate::controller::system_now_ms())
        .await
        .map_err(|e| e.to_string())
}

/// In the pod: ask for `tier` and wait up to `wait` for the decision.
/// Say in `agent`'s request object that it is working now (`nuketown ask
/// active`): the operator reads it as activity while the agent is above its
/// declared tier. The agent's own word, so it can only keep a tier a human
/// (or a rule) already granted.
pub async fn active(client: &Client, namespace: &str, agent: &str) -> Result<(), String> {
    let name = config_map_name(agent);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let pp = PatchParams {
        field_manager: Some(AGENT_MANAGER.into()),
        ..PatchParams::default()
    };
    let now = crate::controller::system_now_ms();
    api.patch(
        &name,
        &pp,
        &Patch::Merge(json!({ "data": { ACTIVE_KEY: now.to_string() } })),
    )
    .await
    .map(drop)
    .map_err(|e| format!("cannot write activity into ConfigMap {namespace}/{name}: {e}"))
}

/// When the agent last said it was working, from its request object, never
/// later than `now_ms` (its clock is its own).
pub fn active_ms(cm: &ConfigMap, now_ms: u64) -> Option<u64> {
    cm.data
        .as_ref()?
        .get(ACTIVE_KEY)?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|t| t.min(now_ms))
}

/// What the room of an agent's chat bridge is told of its resource
/// requests, read from its request object as it changes: each new request
/// the agent wrote (`Asked`), then its decision (`Decided`) — the same
/// events the town hall's follow stream gives a bridge on a host.
///
/// A decision counts only if the API server's `managedFields` say the relay
/// (`nuketown-hall`) wrote `data.decision`: the agent's token may write that
/// key too, and what it writes there is its own word.
#[derive(Debug, Default)]
pub struct Follow {
    asked: Option<String>,
    decided: Option<String>,
}

impl Follow {
    /// The events `cm`, the request object as it is now, adds.
    pub fn events(&mut self, cm: &ConfigMap) -> Vec<nuketown_hall::follow::Followed> {
        use nuketown_hall::follow::Followed;
        let mut out = Vec::new();
        let data = cm.data.clone().unwrap_or_default();
        let asked = data
            .get(REQUEST_KEY)
            .and_then(|r| serde_json::from_str::<Asked>(r).ok());
        let what = |a: &Asked| {
            format!(
                "move to {} ({})",
                nuketown_town::display::clean(&a.tier),
                nuketown_town::tiers::size(&a.tier, None)
            )
        };
        if let Some(a) = &asked {
            if self.asked.as_deref() != Some(a.id.as_str()) {
                self.asked = Some(a.id.clone());
                out.push(Followed::Asked {
                    id: a.id.clone(),
                    kind: "resources".into(),
                    what: what(a),
                    asked_ms: a.at,
                    deadline_ms: 0,
                });
            }
        }
        let by_hall = crate::controller::field_manager(
            &cm.metadata,
            &["f:data", &format!("f:{DECISION_KEY}")],
        )
        .as_deref()
            == Some(HALL_MANAGER);
        let answer = data
            .get(DECISION_KEY)
            .and_then(|d| serde_json::from_str::<Answer>(d).ok());
        if let (Some(a), Some(answer), true) = (&asked, answer, by_hall) {
            if answer.id == a.id && self.decided.as_deref() != Some(a.id.as_str()) {
                self.decided = Some(a.id.clone());
                out.push(Followed::Decided {
                    id: a.id.clone(),
                    kind: "resources".into(),
                    what: what(a),
                    decision: if answer.approved {
                        "approved"
                    } else {
                        "denied"
                    }
                    .into(),
                    by: protocol::DecidedBy {
                        who: answer.by,
                        channel: answer.via,
                    },
                    reason: if answer.request.is_empty() {
                        answer.reason
                    } else {
                        format!("{} (town hall request {})", answer.reason, answer.request)
                    },
                    mock: false,
                });
            }
        }
        out
    }
}

/// Follow `agent`'s request object (`nuketown ask follow` in its pod): each
/// event as [`Follow::events`] makes it, to `emit`, until the watch ends.
pub async fn follow(
    client: &Client,
    namespace: &str,
    agent: &str,
    mut emit: impl FnMut(nuketown_hall::follow::Followed),
) {
    let name = config_map_name(agent);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let events = watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .applied_objects();
    futures::pin_mut!(events);
    let mut state = Follow::default();
    while let Some(cm) = events.next().await {
        match cm {
            Ok(cm) => state.events(&cm).into_iter().for_each(&mut emit),
            Err(e) => tracing::warn!("watching {namespace}/{name}: {e}"),
        }
    }
}

pub async fn ask(
    client: &Client,
    namespace: &str,
    agent: &str,
    tier: &str,
    reason: &str,
    wait: Duration,
) -> Result<Answer, String> {
    let id = protocol::new_id().map_err(|e| e.to_string())?;
    let asked = Asked {
        id: id.clone(),
        tier: tier.to_string(),
        reason: reason.to_string(),
        at: crate::controller::system_now_ms(),
    };
    let name = config_map_name(agent);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let pp = PatchParams {
        field_manager: Some(AGENT_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(
        &name,
        &pp,
        &Patch::Merge(
            json!({ "data": { REQUEST_KEY: serde_json::to_string(&asked).unwrap_or_default() } }),
        ),
    )
    .await
    .map_err(|e| format!("cannot write the request into ConfigMap {namespace}/{name}: {e}"))?;
    let events = watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .applied_objects();
    let found = async move {
        futures::pin_mut!(events);
        while let Some(cm) = events.next().await {
            let Ok(cm) = cm else { continue };
            if let Some(a) = cm
                .data
                .as_ref()
                .and_then(|d| d.get(DECISION_KEY))
                .and_then(|d| serde_json::from_str::<Answer>(d).ok())
                .filter(|a| a.id == id)
            {
                return Some(a);
            }
        }
        None
    };
    match tokio::time::timeout(wait, found).await {
        Ok(Some(a)) => Ok(a),
        Ok(None) => Err("the watch of the request object ended without a decision".into()),
        Err(_) => Err(format!(
            "no decision within {} s; the request stays asked (ask again to wait again)",
            wait.as_secs()
        )),
    }
}
