//! Scale on a real API server (docs/benchmarks.md, "Kubernetes: a thousand
//! agents on a real API server"): `bash bench/k8s.sh` runs it. Ignored in
//! the test suite; it prints `BENCH` lines and asserts no timing, only that
//! what it measured happened (every object applied, every agent moved, the
//! operator's writes counted from the API server's own audit log).
//!
//! etcd and kube-apiserver only (control_plane/): Deployments make no pods
//! here (no controller manager), which the operator does not need.

mod control_plane;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control_plane::{ControlPlane, Parts};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use nuketown_operator::controller::{self, Ctx, Pools};

const AGENTS: usize = 1000;
const NAMESPACES: usize = 10;
const OPERATOR: &str = "system:serviceaccount:nuketown-system:nuketown-operator";

/// A town of `n` agents in ten namespaces, each small, with a persisted
/// directory and a file, allowed to be moved up to large, idle after an hour.
fn town_text(n: usize) -> String {
    let mut text = String::from("domain = \"example.org\"\nhumanUser = \"josh\"\n");
    for i in 0..n {
        text.push_str(&format!(
            "[agents.agent{i:04}]\nuid = {uid}\npersist.directories = [\"dev\"]\npersist.files = [\".bash_history\"]\n\
             [agents.agent{i:04}.cloud]\nenable = true\nresources = \"small\"\nnamespace = \"team{ns}\"\n\
             image = \"registry.invalid/agent:1\"\n\
             scaling = {{ maxResources = \"large\", idleTimeout = \"1h\" }}\n",
            uid = 1100 + i,
            ns = i % NAMESPACES,
        ));
    }
    text
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(mut d: Vec<Duration>) -> String {
    d.sort();
    format!(
        "n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        d.len(),
        percentile(&d, 0.5).as_secs_f64() * 1e3,
        percentile(&d, 0.99).as_secs_f64() * 1e3,
        d.last().unwrap().as_secs_f64() * 1e3
    )
}

/// The operator's requests since `from` (audit events), by verb.
fn operator_calls(cp: &ControlPlane, from: usize) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for e in cp.audit_events().iter().skip(from) {
        if e["user"]["username"] == OPERATOR && e["stage"] == "ResponseComplete" {
            *by.entry(e["verb"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
    }
    by
}

fn writes(calls: &BTreeMap<String, usize>) -> usize {
    ["create", "update", "patch", "delete"]
        .iter()
        .map(|v| calls.get(*v).copied().unwrap_or(0))
        .sum()
}

async fn client(kubeconfig: &Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// What the relay writes on an approval, as the relay (field manager nuketown-hall).
async fn approve(relay: &Client, ns: &str, agent: &str, tier: &str, id: &str) {
    let api: Api<Deployment> = Api::namespaced(relay.clone(), ns);
    let value = nuketown_town::tiers::request_annotation(tier, "josh", "terminal", 1, id);
    api.patch(
        agent,
        &PatchParams {
            field_manager: Some("nuketown-hall".into()),
            ..Default::default()
        },
        &Patch::Merge(serde_json::json!({
            "metadata": { "annotations": { "nuketown.dev/tier-request": value } }
        })),
    )
    .await
    .unwrap();
}

#[test]
#[ignore = "a benchmark: bash bench/k8s.sh"]
fn bench_real_api_server_a_thousand_agents() {
    let Some(cp) = ControlPlane::start(
        "k8s_bench",
        Parts {
            audit: true,
            ..Parts::default()
        },
    ) else {
        return;
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let town = dir.path().join("town.toml");
    std::fs::write(&town, town_text(AGENTS)).unwrap();
    let yaml = std::process::Command::new(env!("CARGO_BIN_EXE_nuketown"))
        .args(["cloud", "render"])
        .arg(&town)
        .output()
        .unwrap();
    assert!(yaml.status.success());
    let yaml = String::from_utf8(yaml.stdout).unwrap();
    let objects = yaml.matches("\n---\n").count() + 1;

    // 1. Server-side apply of the whole render, by kubectl.
    let started = Instant::now();
    let o = cp.apply_as("argocd-controller", &yaml);
    let took = started.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let applied = String::from_utf8_lossy(&o.stdout).lines().count();
    assert_eq!(applied, objects);
    println!(
        "BENCH apply: {AGENTS} agents, {objects} objects ({} KB of YAML): {:.1} s, {:.0} objects/s",
        yaml.len() / 1024,
        took.as_secs_f64(),
        objects as f64 / took.as_secs_f64()
    );
    let started = Instant::now();
    let o = cp.apply_as("argocd-controller", &yaml);
    assert!(o.status.success());
    println!(
        "BENCH apply again (nothing changes): {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The operator's and the relay's accounts, as shipped; their tokens.
    for f in [
        "deploy/operator/operator.yaml",
        "deploy/operator/relay-rbac.yaml",
    ] {
        cp.apply(&std::fs::read_to_string(repo.join(f)).unwrap());
    }
    let op_kc = cp.service_account_kubeconfig("nuketown-system", "nuketown-operator", None);
    let relay_kc = cp.service_account_kubeconfig("nuketown-system", "nuketown-relay", None);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let op = client(&op_kc).await;
        let relay = client(&relay_kc).await;
        let ctx = Arc::new(Ctx {
            client: op.clone(),
            pools: Pools::parse(
                "[tiers.large]\nnodeSelector = { pool = \"large\" }\n[tiers.standard]\nnodeSelector = { pool = \"standard\" }\n",
            )
            .unwrap(),
            now_ms: controller::system_now_ms,
        });
        let all: Api<Deployment> = Api::all(op.clone());
        let lp = ListParams::default().labels("app.kubernetes.io/managed-by=nuketown");

        // 2. Every agent approved for large (as the relay writes it), then
        // each reconciled once by the operator's own code and token.
        for i in 0..AGENTS {
            let ns = format!("team{}", i % NAMESPACES);
            approve(&relay, &ns, &format!("agent{i:04}"), "large", &format!("r{i}")).await;
        }
        let deployments = all.list(&lp).await.unwrap().items;
        assert_eq!(deployments.len(), AGENTS);
        let mark = cp.audit_events().len();
        let mut times = Vec::new();
        let started = Instant::now();
        for d in deployments {
            let t = Instant::now();
            controller::reconcile(Arc::new(d), ctx.clone()).await.unwrap();
            times.push(t.elapsed());
        }
        let total = started.elapsed();
        let calls = operator_calls(&cp, mark);
        println!(
            "BENCH reconcile, {AGENTS} approved moves: {} ({:.1} s in all); API calls {:?} = {:.2} per agent",
            summary(times),
            total.as_secs_f64(),
            calls,
            calls.values().sum::<usize>() as f64 / AGENTS as f64
        );
        assert_eq!(writes(&calls), AGENTS, "one patch per move");
        let moved = all.list(&lp).await.unwrap().items;
        assert!(moved.iter().all(|d| d.annotations().get("nuketown.dev/current-tier").map(String::as_str) == Some("large")));

        // 3. Steady state: the same reconcile on agents already where they
        // should be writes nothing (an agent above its tier is looked at:
        // metrics and its request object, both reads).
        let mark = cp.audit_events().len();
        let mut times = Vec::new();
        for d in moved {
            let t = Instant::now();
            controller::reconcile(Arc::new(d), ctx.clone()).await.unwrap();
            times.push(t.elapsed());
        }
        let calls = operator_calls(&cp, mark);
        println!(
            "BENCH reconcile, {AGENTS} agents in steady state: {}; API calls {:?} = {:.2} per agent, writes {}",
            summary(times),
            calls,
            calls.values().sum::<usize>() as f64 / AGENTS as f64,
            writes(&calls)
        );
        assert_eq!(writes(&calls), 0, "the steady state wrote");

        // 4. The controller itself, watch-driven: its start (list + watch,
        // one reconcile of each agent) writes nothing; then an approval
        // → the Deployment patched, timed from the relay's write to the
        // operator's patch arriving on a watch, one agent after the other.
        let mark = cp.audit_events().len();
        let watch_api: Api<Deployment> = Api::all(op.clone());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
        let mut seen = watcher(watch_api, watcher::Config::default().labels("app.kubernetes.io/managed-by=nuketown"))
            .applied_objects()
            .boxed();
        tokio::spawn(async move {
            while let Some(Ok(d)) = seen.next().await {
                let tier = d.annotations().get("nuketown.dev/current-tier").cloned().unwrap_or_default();
                let _ = tx.send((d.name_any(), tier));
            }
        });
        let run = tokio::spawn(controller::run(op.clone(), ctx.pools.clone()));
        // Its first pass over the thousand, then a quiet while.
        tokio::time::sleep(Duration::from_secs(20)).await;
        let calls = operator_calls(&cp, mark);
        println!(
            "BENCH controller start over {AGENTS} agents, first 20 s: API calls {calls:?}, writes {}",
            writes(&calls)
        );
        assert_eq!(writes(&calls), 0, "the controller's steady state wrote");
        while rx.try_recv().is_ok() {}
        let mut reaction = Vec::new();
        for i in 0..200 {
            let agent = format!("agent{i:04}");
            let ns = format!("team{}", i % NAMESPACES);
            let t = Instant::now();
            approve(&relay, &ns, &agent, "standard", &format!("s{i}")).await;
            loop {
                let (name, tier) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                    .await
                    .expect("the operator moved the agent within 30 s")
                    .unwrap();
                if name == agent && tier == "standard" {
                    break;
                }
            }
            reaction.push(t.elapsed());
        }
        println!(
            "BENCH approved request -> Deployment patched (watch-driven, sequential): {}",
            summary(reaction)
        );
        run.abort();
    });
}
