//! The controller's reconcile against a FAKE Kubernetes API server: no API
//! server can run on this machine, so kube's client talks to a
//! `tower_test::mock` service, and each test plays the API server — it
//! checks every request the operator makes (method, path, field manager,
//! patch type and body) and answers it. Everything else is real: the kube-rs
//! client, the reconcile function, the patches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use k8s_openapi::api::apps::v1::Deployment;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::Client;
use nuketown_operator::controller::{reconcile, Ctx, Pools};
use serde_json::{json, Value};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const NOW: u64 = 1_800_000_000_000;

fn now() -> u64 {
    NOW
}

/// A Deployment as the render makes it, with these annotations.
fn deployment(name: &str, ann: &[(&str, &str)]) -> Deployment {
    let mut a: BTreeMap<String, String> = BTreeMap::from([
        ("nuketown.dev/tier".into(), "small".into()),
        ("nuketown.dev/max-tier".into(), "large".into()),
        ("nuketown.dev/idle-timeout".into(), "30m".into()),
    ]);
    for (k, v) in ann {
        a.insert(k.to_string(), v.to_string());
    }
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "namespace": "nuketown", "annotations": a },
        "spec": {
            "selector": { "matchLabels": { "nuketown.dev/agent": name } },
            "template": { "spec": { "containers": [{ "name": "agent", "image": "busybox" }] } }
        }
    }))
    .unwrap()
}

/// As the API server records it: annotation `key` was last written by `manager`.
fn written_by(mut d: Deployment, key: &str, manager: &str) -> Deployment {
    let entry = json!({
        "manager": manager,
        "operation": "Update",
        "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": { "f:metadata": { "f:annotations": { format!("f:{key}"): {} } } }
    });
    d.metadata
        .managed_fields
        .get_or_insert_with(Vec::new)
        .push(serde_json::from_value(entry).unwrap());
    d
}

/// A Deployment with a tier request the town hall's relay wrote.
fn requested(name: &str, request: &str) -> Deployment {
    written_by(
        deployment(name, &[("nuketown.dev/tier-request", request)]),
        "nuketown.dev/tier-request",
        "nuketown-hall",
    )
}

fn ctx(pools: Pools) -> (Arc<Ctx>, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    (
        Arc::new(Ctx {
            client,
            pools,
            now_ms: now,
        }),
        handle,
    )
}

/// Play the API server for one PATCH: check it, answer with the object.
async fn expect_patch(handle: &mut Handle, name: &str) -> Value {
    let (req, send) = handle.next_request().await.expect("a request");
    assert_eq!(req.method(), http::Method::PATCH);
    assert_eq!(
        req.uri().path(),
        format!("/apis/apps/v1/namespaces/nuketown/deployments/{name}")
    );
    assert!(
        req.uri()
            .query()
            .unwrap_or_default()
            .contains("fieldManager=nuketown-operator"),
        "{:?}",
        req.uri()
    );
    assert_eq!(
        req.headers()["content-type"],
        "application/strategic-merge-patch+json"
    );
    let body = req.into_body().collect_bytes().await.unwrap();
    let patch: Value = serde_json::from_slice(&body).unwrap();
    let reply = serde_json::to_vec(&deployment(name, &[])).unwrap();
    send.send_response(Response::builder().body(Body::from(reply)).unwrap());
    patch
}

/// ada moved up to "large", last active `minutes` ago.
fn at_large_since(minutes: u64) -> Deployment {
    let active = (NOW - minutes * 60 * 1000).to_string();
    deployment(
        "ada",
        &[
            ("nuketown.dev/current-tier", "large"),
            ("nuketown.dev/last-active", &active),
        ],
    )
}

/// Play the API server for one PATCH of ada by the operator, of any patch
/// type: its body (answered with the object).
async fn answer_operator_patch(handle: &mut Handle) -> Value {
    let (req, send) = handle.next_request().await.expect("a patch");
    assert_eq!(req.method(), http::Method::PATCH);
    assert!(req
        .uri()
        .query()
        .unwrap()
        .contains("fieldManager=nuketown-operator"));
    let body: Value =
        serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
    let reply = serde_json::to_vec(&deployment("ada", &[])).unwrap();
    send.send_response(Response::builder().body(Body::from(reply)).unwrap());
    body
}

/// The API server's 404.
fn not_found(message: &str) -> http::Result<Response<Body>> {
    Response::builder().status(404).body(Body::from(
        serde_json::to_vec(&json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": message, "reason": "NotFound", "code": 404
        }))
        .unwrap(),
    ))
}

/// Play metrics.k8s.io for one GET of ada's pod metrics: the agent
/// container's CPU, or no metrics API at all (404).
async fn answer_metrics(handle: &mut Handle, cpu: Option<&str>) {
    let (req, send) = handle.next_request().await.expect("a metrics request");
    assert_eq!(req.method(), http::Method::GET);
    assert_eq!(
        req.uri().path(),
        "/apis/metrics.k8s.io/v1beta1/namespaces/nuketown/pods"
    );
    assert_eq!(
        req.uri().query(),
        Some("labelSelector=nuketown.dev/agent%3Dada")
    );
    let resp = match cpu {
        Some(cpu) => Response::builder().body(Body::from(
            serde_json::to_vec(&json!({
                "kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1",
                "items": [{ "metadata": { "name": "ada-5d9f" }, "containers": [
                    { "name": "lay-down", "usage": { "cpu": "900m", "memory": "1Mi" } },
                    { "name": "agent", "usage": { "cpu": cpu, "memory": "700Mi" } }
                ]}]
            }))
            .unwrap(),
        )),
        None => not_found("the server could not find the requested resource"),
    };
    send.send_response(resp.unwrap());
}

/// Play the API server for one GET of ada's request object: `data.active`
/// as its chat bridge wrote it (`nuketown ask active`), or no object (404).
async fn answer_activity(handle: &mut Handle, active: Option<&str>) {
    let (req, send) = handle.next_request().await.expect("a request object read");
    assert_eq!(req.method(), http::Method::GET);
    assert_eq!(
        req.uri().path(),
        "/api/v1/namespaces/nuketown/configmaps/ada-requests"
    );
    let resp = match active {
        Some(t) => Response::builder().body(Body::from(
            serde_json::to_vec(&json!({
                "kind": "ConfigMap", "apiVersion": "v1",
                "metadata": { "name": "ada-requests", "namespace": "nuketown" },
                "data": { "active": t }
            }))
            .unwrap(),
        )),
        None => not_found("configmaps \"ada-requests\" not found"),
    };
    send.send_response(resp.unwrap());
}

fn pools() -> Pools {
    Pools::parse(
        r#"
[tiers.large]
nodeSelector = { "cloud.google.com/gke-nodepool" = "large" }
tolerations = ["dedicated"]
[idle]
nodeSelector = { "cloud.google.com/gke-spot" = "true" }
"#,
    )
    .unwrap()
}

#[tokio::test]
async fn fake_api_server_an_approved_request_moves_the_workload_to_the_tiers_pool() {
    let (ctx, mut handle) = ctx(pools());
    let d = requested(
        "ada",
        "large;approved-by=josh;via=terminal;at=1;request=4f2a9c01",
    );
    let server = tokio::spawn(async move { expect_patch(&mut handle, "ada").await });
    let action = reconcile(Arc::new(d), ctx).await.unwrap();
    assert_eq!(action, Action::await_change());
    let patch = server.await.unwrap();
    let ann = &patch["metadata"]["annotations"];
    assert_eq!(ann["nuketown.dev/current-tier"], "large");
    assert_eq!(
        ann["nuketown.dev/scaling-status"],
        "approved by josh via terminal (request 4f2a9c01)"
    );
    assert_eq!(ann["nuketown.dev/tier-request"], Value::Null);
    assert_eq!(ann["nuketown.dev/last-active"], NOW.to_string());
    let spec = &patch["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    assert_eq!(c["name"], "agent");
    assert_eq!(c["resources"]["limits"]["cpu"], "4");
    assert_eq!(c["resources"]["limits"]["memory"], "8Gi");
    assert_eq!(c["resources"]["requests"], c["resources"]["limits"]);
    assert_eq!(
        spec["nodeSelector"],
        json!({ "cloud.google.com/gke-nodepool": "large" })
    );
    assert_eq!(
        spec["tolerations"],
        json!([{ "key": "dedicated", "operator": "Exists" }])
    );
}

#[tokio::test]
async fn fake_api_server_idle_goes_back_to_the_declared_tier_on_the_idle_pool() {
    // Idle past the deadline, and the container below the CPU floor — or no
    // metrics API at all: back down, on the idle pool.
    for cpu in [Some("2m"), Some("15000000n"), None] {
        let (ctx, mut handle) = ctx(pools());
        let d = at_large_since(31);
        let server = tokio::spawn(async move {
            answer_metrics(&mut handle, cpu).await;
            answer_activity(&mut handle, None).await;
            expect_patch(&mut handle, "ada").await
        });
        reconcile(Arc::new(d), ctx).await.unwrap();
        let patch = server.await.unwrap();
        assert_eq!(
            patch["metadata"]["annotations"]["nuketown.dev/current-tier"], "small",
            "{cpu:?}"
        );
        assert!(
            patch["metadata"]["annotations"]["nuketown.dev/scaling-status"]
                .as_str()
                .unwrap()
                .starts_with("idle for 1860 s")
        );
        // Idle moves never count as activity.
        assert!(patch["metadata"]["annotations"]
            .get("nuketown.dev/last-active")
            .is_none());
        assert_eq!(
            patch["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "1"
        );
        assert_eq!(
            patch["spec"]["template"]["spec"]["nodeSelector"],
            json!({ "cloud.google.com/gke-spot": "true" })
        );
    }
}

/// Idle is: no activity written down (a move up, a request) and the
/// agent's container below the CPU floor at every look (once a minute).
/// A busy agent past its deadline is not moved: the activity is written
/// down and the clock restarts.
#[tokio::test]
async fn fake_api_server_a_busy_agent_past_its_deadline_stays_and_its_activity_is_written() {
    let (ctx, mut handle) = ctx(pools());
    let d = at_large_since(31);
    let server = tokio::spawn(async move {
        answer_metrics(&mut handle, Some("850m")).await;
        let body = answer_operator_patch(&mut handle).await;
        (body, handle)
    });
    let action = reconcile(Arc::new(d), ctx).await.unwrap();
    let (body, mut handle) = server.await.unwrap();
    assert_eq!(
        body,
        json!({ "metadata": { "annotations": { "nuketown.dev/last-active": NOW.to_string() } } })
    );
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    assert!(handle.next_request().await.is_none(), "it was moved");
}

/// A conversation is activity even when the backend waits on the network
/// (its CPU below the floor): the chat bridge in the pod writes when a
/// message started a turn, and an idle agent past its deadline stays. The
/// agent's clock is its own, so a time in the future counts as now, and a
/// time before the activity already written changes nothing.
#[tokio::test]
async fn fake_api_server_a_conversation_is_activity_and_the_agents_clock_is_clamped() {
    let chatted = (NOW - 2 * 60 * 1000).to_string();
    let future = (NOW + 365 * 24 * 3600 * 1000).to_string();
    let stale = (NOW - 40 * 60 * 1000).to_string();
    for (said, written) in [
        (chatted.as_str(), Some(NOW - 2 * 60 * 1000)),
        (future.as_str(), Some(NOW)),
        (stale.as_str(), None),
        ("soon", None),
    ] {
        let (ctx, mut handle) = ctx(pools());
        let d = at_large_since(31);
        let said = said.to_string();
        let server = tokio::spawn(async move {
            answer_metrics(&mut handle, Some("3m")).await;
            answer_activity(&mut handle, Some(&said)).await;
            answer_operator_patch(&mut handle).await
        });
        reconcile(Arc::new(d), ctx).await.unwrap();
        let body = server.await.unwrap();
        let ann = &body["metadata"]["annotations"];
        match written {
            Some(t) => {
                assert_eq!(
                    body,
                    json!({ "metadata": { "annotations": { "nuketown.dev/last-active": t.to_string() } } }),
                    "the conversation is written down as activity and nothing moves"
                );
            }
            None => {
                assert_eq!(ann["nuketown.dev/current-tier"], "small", "{body}");
            }
        }
    }
}

#[tokio::test]
async fn fake_api_server_active_agents_are_left_alone_until_their_idle_deadline() {
    let (ctx, mut handle) = ctx(pools());
    let d = at_large_since(10);
    let server = tokio::spawn(async move {
        answer_metrics(&mut handle, Some("20m")).await;
        answer_activity(&mut handle, None).await;
        handle
    });
    let action = reconcile(Arc::new(d), ctx).await.unwrap();
    // Looked at again in a minute (or at the deadline, were it sooner).
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    // Nothing but the metrics: with the client gone (reconcile held the
    // only one), the fake server's queue is empty and closed.
    let mut handle = server.await.unwrap();
    assert!(
        handle.next_request().await.is_none(),
        "the operator changed something"
    );
}

#[tokio::test]
async fn fake_api_server_a_request_above_the_maximum_moves_nothing_and_says_why() {
    let (ctx, mut handle) = ctx(pools());
    let d = requested("ada", "gpu;approved-by=josh");
    let server = tokio::spawn(async move { expect_patch(&mut handle, "ada").await });
    reconcile(Arc::new(d), ctx).await.unwrap();
    let patch = server.await.unwrap();
    assert!(patch.get("spec").is_none(), "nothing moves: {patch}");
    let why = patch["metadata"]["annotations"]["nuketown.dev/scaling-status"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(why.contains("above the largest tier"), "{why}");
}

/// The attack: the decision is written on the Deployment by someone other
/// than the town hall (a hand-run `kubectl annotate`, or an agent whose
/// role was widened by mistake) claiming a human approved. Nothing moves;
/// the status names the writer. Then the same request written by the hall
/// moves the workload.
#[tokio::test]
async fn fake_api_server_a_request_the_hall_did_not_write_moves_nothing() {
    for writer in ["kubectl-annotate", "ada", "argocd-controller"] {
        let (ctx, mut handle) = ctx(pools());
        let d = written_by(
            deployment(
                "ada",
                &[(
                    "nuketown.dev/tier-request",
                    "large;approved-by=josh;via=terminal",
                )],
            ),
            "nuketown.dev/tier-request",
            writer,
        );
        let server = tokio::spawn(async move { expect_patch(&mut handle, "ada").await });
        reconcile(Arc::new(d), ctx).await.unwrap();
        let patch = server.await.unwrap();
        assert!(patch.get("spec").is_none(), "{writer}: moved: {patch}");
        let why = patch["metadata"]["annotations"]["nuketown.dev/scaling-status"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            why.contains(&format!("written by {writer}, not by the town hall")),
            "{why}"
        );
        assert!(patch["metadata"]["annotations"]
            .get("nuketown.dev/current-tier")
            .is_none());
    }
    // Beside it, the legitimate use: the hall wrote it.
    let (ctx, mut handle) = ctx(pools());
    let d = requested("ada", "large;approved-by=josh;via=terminal");
    let server = tokio::spawn(async move { expect_patch(&mut handle, "ada").await });
    reconcile(Arc::new(d), ctx).await.unwrap();
    let patch = server.await.unwrap();
    assert_eq!(
        patch["metadata"]["annotations"]["nuketown.dev/current-tier"],
        "large"
    );
}

/// 1,000 agents, each with an approved request: one reconcile and one
/// PATCH each, through the kube client, against the fake API server; every
/// PATCH moves its own agent to the approved tier. (The time it takes is
/// printed for docs/benchmarks.md, never asserted: run it with
/// `cargo test --release -p nuketown-operator --test fake_api_server thousand -- --nocapture`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_api_server_reconciles_a_thousand_agents() {
    let (ctx, mut handle) = ctx(pools());
    let n = 1000;
    let server = tokio::spawn(async move {
        let mut moved = std::collections::BTreeSet::new();
        for _ in 0..n {
            let (req, send) = handle.next_request().await.expect("a request");
            let name = req.uri().path().rsplit('/').next().unwrap().to_string();
            let body = req.into_body().collect_bytes().await.unwrap();
            let patch: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                patch["metadata"]["annotations"]["nuketown.dev/current-tier"], "large",
                "{name}"
            );
            moved.insert(name.clone());
            let reply = serde_json::to_vec(&deployment(&name, &[])).unwrap();
            send.send_response(Response::builder().body(Body::from(reply)).unwrap());
        }
        moved
    });
    let ds: Vec<Arc<Deployment>> = (0..n)
        .map(|i| {
            Arc::new(requested(
                &format!("agent{i}"),
                "large;approved-by=josh;request=0123abcd",
            ))
        })
        .collect();
    let started = Instant::now();
    for d in ds {
        reconcile(d, ctx.clone()).await.unwrap();
    }
    let took = started.elapsed();
    let moved = server.await.unwrap();
    assert_eq!(moved.len(), n, "each agent patched once");
    eprintln!(
        "reconciled {n} agents (decide + PATCH through the fake API server) in {took:?}: {:?} each",
        took / n as u32
    );
}
