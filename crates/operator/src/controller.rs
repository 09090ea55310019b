//! The controller: watches the agents' Deployments (those the render marks
//! with `nuketown.dev/max-tier`), decides with [`crate::scaling::decide`],
//! and patches the workload — resources, node pool, the tier annotations —
//! as field manager `nuketown-operator`, which the generated Argo CD
//! Application ignores (`ignoreDifferences` + `RespectIgnoreDifferences`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::scaling::{self, Decision, Observed};

/// The field manager the operator patches as (Argo CD ignores its fields).
pub const FIELD_MANAGER: &str = "nuketown-operator";
/// The agent's container in the pod (the render names it).
pub const CONTAINER: &str = "agent";

/// Where a tier's pods run: the node pool the operator declares once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placement {
    /// Node labels, e.g. `{ "cloud.google.com/gke-nodepool" = "large" }`.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Taint keys tolerated (any value, any effect).
    #[serde(default)]
    pub tolerations: Vec<String>,
    /// For the gpu tier: the extended resource and how many.
    #[serde(default)]
    pub gpu_resource: Option<String>,
    /// For the gpu tier: GPUs per pod (default 1).
    #[serde(default)]
    pub gpu_count: Option<u32>,
}

/// The operator's configuration: tier → node pool, and the pool an idle
/// agent at its declared tier goes to (spot/preemptible nodes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pools {
    /// Per tier (`small`, `standard`, `large`, `gpu`).
    #[serde(default)]
    pub tiers: BTreeMap<String, Placement>,
    /// Where an agent that went back to its declared tier for being idle runs.
    #[serde(default)]
    pub idle: Option<Placement>,
    /// Activity: the agent's container using at least this much CPU
    /// (`"100m"`, `"0.5"`), as metrics.k8s.io reports it, counts as activity.
    /// Default 100m.
    #[serde(default)]
    pub idle_cpu_floor: Option<String>,
}

/// How often an agent above its declared tier is looked at for activity.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);

/// CPU in millicores from a Kubernetes quantity (`250m`, `123456789n`,
/// `15u`, `2`, `0.5`); `None` when it is not one.
pub fn millicores(q: &str) -> Option<f64> {
    let q = q.trim();
    let (num, scale) = if let Some(n) = q.strip_suffix('n') {
        (n, 1e-6)
    } else if let Some(n) = q.strip_suffix('u') {
        (n, 1e-3)
    } else if let Some(n) = q.strip_suffix('m') {
        (n, 1.0)
    } else {
        (q, 1000.0)
    };
    num.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v * scale)
}

impl Pools {
    /// Parse the TOML configuration; unknown tiers are errors naming the key.
    pub fn parse(text: &str) -> Result<Pools, String> {
        let p: Pools = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(f) = &p.idle_cpu_floor {
            if millicores(f).is_none() {
                return Err(format!(
                    "idleCpuFloor: {f:?} is not a CPU quantity; write e.g. \"100m\" or \"0.5\""
                ));
            }
        }
        for t in p.tiers.keys() {
            if !scaling::ORDER.contains(&t.as_str()) {
                return Err(format!(
                    "tiers.{t}: not a tier; use {}",
                    scaling::ORDER.join(", ")
                ));
            }
        }
        Ok(p)
    }
}

/// What reconcile needs.
pub struct Ctx {
    /// The API server.
    pub client: Client,
    /// Tier → node pool.
    pub pools: Pools,
    /// Now, ms since the epoch (a function, so tests fix the clock).
    pub now_ms: fn() -> u64,
}

/// Why a reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or was not there.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// The Deployment has no namespace.
    #[error("deployment {0} has no namespace")]
    NoNamespace(String),
}

/// Wall-clock ms since the epoch.
pub fn system_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The scaling state of one Deployment, or `None` when the render did not
/// give it a maximum tier (nothing for the operator to do).
pub fn observed(d: &Deployment, now_ms: u64) -> Option<Observed> {
    let a = d.metadata.annotations.as_ref()?;
    let max = a.get(nuketown_cloud::MAX_TIER_ANNOTATION)?.clone();
    Some(Observed {
        declared: a
            .get(nuketown_cloud::TIER_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| "standard".into()),
        max,
        auto_approve: a
            .get(nuketown_cloud::AUTO_APPROVE_ANNOTATION)
            .map(|s| {
                s.split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        idle_timeout: a
            .get(nuketown_cloud::IDLE_ANNOTATION)
            .and_then(|t| parse_secs(t))
            .map(Duration::from_secs),
        current: a.get(scaling::CURRENT_TIER).cloned(),
        request: a.get(scaling::TIER_REQUEST).cloned(),
        request_by: annotation_manager(d, scaling::TIER_REQUEST),
        last_active_ms: a.get(scaling::LAST_ACTIVE).and_then(|s| s.parse().ok()),
        now_ms,
    })
}

/// The field manager that owns annotation `key` (from `managedFields`):
/// who wrote it, as the API server recorded it — not as the writer says.
pub fn annotation_manager(d: &Deployment, key: &str) -> Option<String> {
    field_manager(
        &d.metadata,
        &["f:metadata", "f:annotations", &format!("f:{key}")],
    )
}

/// The field manager that wrote the field at `path` (`managedFields`'
/// `fieldsV1` spelling: `["f:data", "f:decision"]`): the API server's record.
pub fn field_manager(meta: &ObjectMeta, path: &[&str]) -> Option<String> {
    meta.managed_fields
        .as_ref()?
        .iter()
        .find(|m| {
            path.iter()
                .try_fold(m.fields_v1.as_ref().map(|f| &f.0), |at, key| {
                    at.and_then(|v| v.get(*key)).map(Some)
                })
                .flatten()
                .is_some()
        })
        .and_then(|m| m.manager.clone())
}

fn parse_secs(s: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut n: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            n = Some(n.unwrap_or(0).checked_mul(10)?.checked_add(u64::from(d))?);
        } else {
            let m = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => return None,
            };
            total = total.checked_add(n.take()?.checked_mul(m)?)?;
        }
    }
    match n {
        Some(secs) if total == 0 => Some(secs),
        None => Some(total),
        Some(_) => None,
    }
}

/// What the agent's pod template holds now that a move may have to take
/// away: its node selector's keys, and the agent container's resource names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// `spec.template.spec.nodeSelector`'s keys.
    pub node_selector: Vec<String>,
    /// The agent container's `resources.limits` names.
    pub limits: Vec<String>,
    /// The agent container's `resources.requests` names.
    pub requests: Vec<String>,
}

impl Held {
    /// What `d`'s pod template holds.
    pub fn of(d: &Deployment) -> Held {
        let spec = d.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        let resources = spec
            .and_then(|s| s.containers.iter().find(|c| c.name == CONTAINER))
            .and_then(|c| c.resources.as_ref());
        let keys = |m: Option<
            &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >| { m.map(|m| m.keys().cloned().collect()).unwrap_or_default() };
        Held {
            node_selector: spec
                .and_then(|s| s.node_selector.as_ref())
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            limits: keys(resources.and_then(|r| r.limits.as_ref())),
            requests: keys(resources.and_then(|r| r.requests.as_ref())),
        }
    }
}

/// `new`, with every key of `held` it does not set removed (`null`): a
/// strategic merge that replaces a map whether or not the object has it.
/// (`$patch: replace` does not: on a Deployment without a nodeSelector the
/// API server drops the whole map, directive and keys — seen on a real one.)
fn replacing(mut new: Value, held: &[String]) -> Value {
    for k in held {
        if new.get(k).is_none() {
            new[k] = Value::Null;
        }
    }
    new
}

/// The strategic-merge patch that moves a Deployment to `tier`: its
/// container's resources, the node pool, and the operator's annotations.
/// `held` is what the pod template holds now (see [`Held`]).
pub fn move_patch(
    tier: &str,
    why: &str,
    clear_request: bool,
    idle: bool,
    pools: &Pools,
    now_ms: u64,
    held: &Held,
) -> Value {
    let t = nuketown_cloud::TIERS
        .iter()
        .find(|t| t.name == tier)
        .copied()
        .unwrap_or(nuketown_cloud::TIERS[1]);
    let r = nuketown_cloud::tier_resources(&t);
    let mut limits = serde_json::to_value(&r.limits).unwrap_or(json!({}));
    let mut requests = serde_json::to_value(&r.requests).unwrap_or(json!({}));
    let placement = if idle {
        pools
            .idle
            .clone()
            .or_else(|| pools.tiers.get(tier).cloned())
    } else {
        pools.tiers.get(tier).cloned()
    }
    .unwrap_or_default();
    if tier == "gpu" {
        let res = placement
            .gpu_resource
            .clone()
            .unwrap_or_else(|| "nvidia.com/gpu".into());
        let n = placement.gpu_count.unwrap_or(1).to_string();
        limits[&res] = json!(n);
        requests[&res] = json!(n);
    }
    let mut selector = json!({});
    for (k, v) in &placement.node_selector {
        selector[k] = json!(v);
    }
    let tolerations: Vec<Value> = placement
        .tolerations
        .iter()
        .map(|k| json!({ "key": k, "operator": "Exists" }))
        .collect();
    let mut ann = json!({
        scaling::CURRENT_TIER: tier,
        scaling::STATUS: why,
    });
    if clear_request {
        ann[scaling::TIER_REQUEST] = Value::Null;
    }
    if !idle {
        // A move up is activity: the idle clock starts now.
        ann[scaling::LAST_ACTIVE] = json!(now_ms.to_string());
    }
    json!({
        "metadata": { "annotations": ann },
        "spec": { "template": { "spec": {
            "containers": [{
                "name": CONTAINER,
                "resources": {
                    "limits": replacing(limits, &held.limits),
                    "requests": replacing(requests, &held.requests),
                },
            }],
            "nodeSelector": replacing(selector, &held.node_selector),
            // A list without a merge key: replaced whole.
            "tolerations": tolerations,
        }}}
    })
}

/// The patch that only writes the status (a refused request stays, for the record).
pub fn status_patch(why: &str) -> Value {
    json!({ "metadata": { "annotations": { scaling::STATUS: why } } })
}

/// Whether agent `name`'s container uses at least `floor` millicores now,
/// as metrics.k8s.io says. No metrics (no metrics-server, no pod yet) is
/// no activity.
pub async fn busy(client: &Client, ns: &str, name: &str, floor: f64) -> bool {
    let url = format!(
        "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?labelSelector={}%3D{name}",
        nuketown_cloud::AGENT_LABEL
    );
    let Ok(req) = http::Request::get(url).body(Vec::new()) else {
        return false;
    };
    let list: Value = match client.request(req).await {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(agent = %name, "no pod metrics: {e}");
            return false;
        }
    };
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["containers"].as_array().into_iter().flatten())
        .filter(|c| c["name"] == CONTAINER)
        .filter_map(|c| c["usage"]["cpu"].as_str().and_then(millicores))
        .any(|m| m >= floor)
}

/// When agent `name` last said it was working (its chat bridge, through
/// `nuketown ask active`), from its request object; none without one.
pub async fn chatted(client: &Client, ns: &str, name: &str, now_ms: u64) -> Option<u64> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    match api.get_opt(&crate::requests::config_map_name(name)).await {
        Ok(cm) => crate::requests::active_ms(&cm?, now_ms),
        Err(e) => {
            tracing::debug!(agent = %name, "no request object to read activity from: {e}");
            None
        }
    }
}

/// One reconcile: decide, patch when something must change, say when to look again.
pub async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let now = (ctx.now_ms)();
    let Some(mut o) = observed(&d, now) else {
        return Ok(Action::await_change());
    };
    let name = d.name_any();
    let ns = d
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    // Above its declared tier with an idle timeout: is it working now? CPU
    // above the floor is activity, written down so the idle clock restarts.
    let above = o.idle_timeout.is_some()
        && o.request.is_none()
        && o.current.as_ref().is_some_and(|c| *c != o.declared);
    if above {
        let floor = ctx
            .pools
            .idle_cpu_floor
            .as_deref()
            .and_then(millicores)
            .unwrap_or(100.0);
        let seen = if busy(&ctx.client, &ns, &name, floor).await {
            Some(now)
        } else {
            chatted(&ctx.client, &ns, &name, now)
                .await
                .filter(|&t| t > o.last_active_ms.unwrap_or(0))
        };
        if let Some(t) = seen {
            api.patch(
                &name,
                &pp,
                &Patch::Merge(json!({ "metadata": { "annotations": { scaling::LAST_ACTIVE: t.to_string() } } })),
            )
            .await?;
            o.last_active_ms = Some(t);
        }
    }
    match scaling::decide(&o) {
        Decision::Stay { recheck } => Ok(match (recheck, above) {
            (Some(r), true) => Action::requeue(r.min(CHECK_EVERY)),
            (Some(r), false) => Action::requeue(r),
            (None, true) => Action::requeue(CHECK_EVERY),
            (None, false) => Action::await_change(),
        }),
        Decision::Move {
            tier,
            why,
            clear_request,
        } => {
            let idle = tier == o.declared && why.starts_with("idle");
            let patch = move_patch(
                &tier,
                &why,
                clear_request,
                idle,
                &ctx.pools,
                now,
                &Held::of(&d),
            );
            api.patch(&name, &pp, &Patch::Strategic(patch)).await?;
            tracing::info!(agent = %name, namespace = %ns, tier = %tier, "{why}");
            Ok(Action::await_change())
        }
        Decision::Refuse { why } => {
            let already = d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(scaling::STATUS))
                == Some(&why);
            if !already {
                api.patch(&name, &pp, &Patch::Strategic(status_patch(&why)))
                    .await?;
                tracing::warn!(agent = %name, namespace = %ns, "{why}");
            }
            Ok(Action::await_change())
        }
    }
}

/// Retry a failed reconcile after a short while.
pub fn error_policy(_d: Arc<Deployment>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!("reconcile failed: {e}");
    Action::requeue(Duration::from_secs(15))
}

/// Run the controller over every namespace until the stream ends.
pub async fn run(client: Client, pools: Pools) {
    let api: Api<Deployment> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client,
        pools,
        now_ms: system_now_ms,
    });
    Controller::new(
        api,
        watcher::Config::default().labels("app.kubernetes.io/managed-by=nuketown"),
    )
    .run(reconcile, error_policy, ctx)
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!("{e}");
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_takes_away_what_the_old_pool_and_tier_held() {
        let pools = Pools::parse(
            "[tiers.gpu]\nnodeSelector = { accel = \"l4\" }\n[idle]\nnodeSelector = { spot = \"true\" }\n",
        )
        .unwrap();
        // From nothing: the keys only, no directive (a real API server drops
        // a `$patch: replace` map the object does not have yet).
        let up = move_patch("gpu", "why", true, false, &pools, 1, &Held::default());
        let spec = &up["spec"]["template"]["spec"];
        assert_eq!(spec["nodeSelector"], json!({ "accel": "l4" }));
        assert_eq!(
            spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
            "1"
        );
        // Back down to the idle pool: the GPU pool's key and the GPU go.
        let held = Held {
            node_selector: vec!["accel".into()],
            limits: vec!["cpu".into(), "memory".into(), "nvidia.com/gpu".into()],
            requests: vec!["cpu".into(), "nvidia.com/gpu".into()],
        };
        let down = move_patch("small", "idle", false, true, &pools, 1, &held);
        let spec = &down["spec"]["template"]["spec"];
        assert_eq!(
            spec["nodeSelector"],
            json!({ "spot": "true", "accel": null })
        );
        let r = &spec["containers"][0]["resources"];
        assert_eq!(r["limits"]["nvidia.com/gpu"], Value::Null);
        assert!(r["limits"]
            .as_object()
            .unwrap()
            .contains_key("nvidia.com/gpu"));
        assert_eq!(r["limits"]["cpu"], "1");
        assert_eq!(r["requests"]["nvidia.com/gpu"], Value::Null);
    }

    #[test]
    fn cpu_quantities_read_as_millicores_and_a_bad_floor_is_refused_naming_the_key() {
        for (q, m) in [
            ("250m", 250.0),
            ("2", 2000.0),
            ("0.5", 500.0),
            ("15000000n", 15.0),
            ("40u", 0.04),
        ] {
            assert_eq!(millicores(q), Some(m), "{q}");
        }
        for q in ["", "lots", "-1", "1k", "NaN"] {
            assert_eq!(millicores(q), None, "{q}");
        }
        let e = Pools::parse("idleCpuFloor = \"lots\"").unwrap_err();
        assert!(
            e.starts_with("idleCpuFloor: \"lots\" is not a CPU quantity"),
            "{e}"
        );
        assert!(Pools::parse("idleCpuFloor = \"50m\"").is_ok());
        // The pools shipped in deploy/operator/operator.yaml are accepted.
        let yaml = include_str!("../../../deploy/operator/operator.yaml");
        let block: String = yaml
            .split_once("pools.toml: |\n")
            .unwrap()
            .1
            .lines()
            .take_while(|l| l.starts_with("    "))
            .map(|l| format!("{}\n", &l[4..]))
            .collect();
        assert_eq!(
            Pools::parse(&block).unwrap().idle_cpu_floor.as_deref(),
            Some("100m")
        );
        let e = Pools::parse("[tiers.huge]").unwrap_err();
        assert!(e.starts_with("tiers.huge: not a tier"), "{e}");
    }
}
