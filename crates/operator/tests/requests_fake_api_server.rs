//! The request path in the cluster against a FAKE Kubernetes API server (no
//! API server can run on this machine): kube's client over a
//! `tower_test::mock` service; each test plays the API server and checks
//! every request. The relay's side with the real town hall is tested in
//! `crates/nuketown/tests/resources.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Request, Response};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::client::Body;
use kube::Client;
use nuketown_operator::requests::{self, Answer, Asked, Job};
use serde_json::{json, Value};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// ada's request object, as the API server's path.
const ADA_REQUESTS: &str = "/api/v1/namespaces/nuketown/configmaps/ada-requests";

fn client() -> (Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(svc, "nuketown"), handle)
}

const TOWN: &str = r#"
domain = "agents.example.org"
[agents.ada]
uid = 1100
[agents.ada.cloud]
enable = true
resources = "small"
scaling = { maxResources = "large" }
[agents.vox]
uid = 1101
[agents.vox.cloud]
enable = true
namespace = "other"
[agents.kim]
uid = 1102
"#;

fn town() -> nuketown_town::Town {
    nuketown_town::parse(TOWN, nuketown_town::Format::Toml, "town.toml", "test").unwrap()
}

fn cm(name: &str, ns: &str, data: &[(&str, String)], labels: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        },
        "data": data.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<BTreeMap<_, _>>(),
    }))
    .unwrap()
}

fn asked(id: &str, tier: &str) -> String {
    serde_json::to_string(&Asked {
        id: id.into(),
        tier: tier.into(),
        reason: "tests need 8 GiB".into(),
        at: 1,
    })
    .unwrap()
}

/// The attacks on the relay's reading: the agent owns the object's data
/// and labels, never its name or namespace, so the agent is read from the
/// name and nothing the agent writes can make it speak for another.
#[test]
fn the_relay_names_the_agent_from_the_objects_name_never_from_what_the_agent_wrote() {
    let t = town();
    // ada's object, with labels and data claiming to be vox: it is ada's request.
    let c = cm(
        "ada-requests",
        "nuketown",
        &[("request", asked("r1", "large")), ("agent", "vox".into())],
        &[
            ("nuketown.dev/requests", "vox"),
            ("nuketown.dev/agent", "vox"),
        ],
    );
    let j = requests::job(&c, &t).unwrap().unwrap();
    assert_eq!(
        (j.agent.as_str(), j.namespace.as_str()),
        ("ada", "nuketown")
    );
    // An extra field in the request: refused (deny_unknown_fields), not asked.
    let c = cm(
        "ada-requests",
        "nuketown",
        &[(
            "request",
            r#"{"id":"r1","tier":"large","agent":"vox"}"#.into(),
        )],
        &[],
    );
    assert!(requests::job(&c, &t).unwrap_err().contains("unknown field"));
    // vox's name in ada's namespace: vox lives in "other"; not asked.
    let c = cm(
        "vox-requests",
        "nuketown",
        &[("request", asked("r1", "gpu"))],
        &[],
    );
    assert!(requests::job(&c, &t)
        .unwrap_err()
        .contains("not a cloud agent of namespace"));
    // An agent that is not in the cloud, a name that is no agent, not a request object.
    for name in ["kim-requests", "root-requests", "ada-identity"] {
        let c = cm(name, "nuketown", &[("request", asked("r1", "large"))], &[]);
        assert!(requests::job(&c, &t).is_err(), "{name}");
    }
    // An id that could smuggle text into the annotation.
    let c = cm(
        "ada-requests",
        "nuketown",
        &[("request", asked("a;approved-by=josh", "large"))],
        &[],
    );
    assert!(requests::job(&c, &t).unwrap_err().contains("id must be"));
    // Already answered: nothing to ask; a new id is asked again.
    let answered = serde_json::to_string(&Answer {
        id: "r1".into(),
        approved: false,
        by: "josh".into(),
        via: "terminal".into(),
        reason: "no".into(),
        request: "h1".into(),
    })
    .unwrap();
    let c = cm(
        "ada-requests",
        "nuketown",
        &[
            ("request", asked("r1", "large")),
            ("decision", answered.clone()),
        ],
        &[],
    );
    assert_eq!(requests::job(&c, &t).unwrap(), None);
    let c = cm(
        "ada-requests",
        "nuketown",
        &[("request", asked("r2", "large")), ("decision", answered)],
        &[],
    );
    assert_eq!(requests::job(&c, &t).unwrap().unwrap().asked.id, "r2");
    // No request at all.
    let c = cm("ada-requests", "nuketown", &[], &[]);
    assert_eq!(requests::job(&c, &t).unwrap(), None);
}

fn job() -> Job {
    Job {
        agent: "ada".into(),
        namespace: "nuketown".into(),
        asked: Asked {
            id: "r1".into(),
            tier: "large".into(),
            reason: String::new(),
            at: 1,
        },
    }
}

/// Play the API server for one PATCH: check path, field manager and patch
/// type, answer with an empty object of `kind`; the patch body.
async fn expect_patch(handle: &mut Handle, path: &str, manager: &str) -> Value {
    let (req, send) = handle.next_request().await.expect("a request");
    assert_eq!(req.method(), http::Method::PATCH);
    assert_eq!(req.uri().path(), path);
    assert!(
        req.uri()
            .query()
            .unwrap_or_default()
            .contains(&format!("fieldManager={manager}")),
        "{:?}",
        req.uri()
    );
    assert_eq!(
        req.headers()["content-type"],
        "application/merge-patch+json"
    );
    let body = req.into_body().collect_bytes().await.unwrap();
    let reply = if path.contains("/deployments/") {
        json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"ada","namespace":"nuketown"}})
    } else {
        json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"ada-requests","namespace":"nuketown"}})
    };
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn fake_api_server_an_approval_is_written_on_the_deployment_as_the_hall_then_answered() {
    let (c, mut handle) = client();
    let a = Answer {
        id: "r1".into(),
        approved: true,
        by: "josh".into(),
        via: "terminal".into(),
        reason: "approved".into(),
        request: "0123456789abcdef0123456789abcdef".into(),
    };
    let server = tokio::spawn(async move {
        let d = expect_patch(
            &mut handle,
            "/apis/apps/v1/namespaces/nuketown/deployments/ada",
            "nuketown-hall",
        )
        .await;
        let m = expect_patch(&mut handle, ADA_REQUESTS, "nuketown-hall").await;
        (d, m)
    });
    requests::answer(&c, &job(), &a, 42).await.unwrap();
    let (d, m) = server.await.unwrap();
    assert_eq!(
        d,
        json!({"metadata":{"annotations":{"nuketown.dev/tier-request":
            "large;approved-by=josh;via=terminal;at=42;request=0123456789abcdef0123456789abcdef"}}})
    );
    let written: Answer = serde_json::from_str(m["data"]["decision"].as_str().unwrap()).unwrap();
    assert_eq!(written, a);
}

#[tokio::test]
async fn fake_api_server_a_denial_touches_only_the_request_object() {
    let (c, mut handle) = client();
    let a = Answer {
        id: "r1".into(),
        approved: false,
        by: "josh".into(),
        via: "matrix".into(),
        reason: "not now".into(),
        request: "h".into(),
    };
    let server = tokio::spawn(async move {
        let m = expect_patch(&mut handle, ADA_REQUESTS, "nuketown-hall").await;
        // Nothing else: the client is dropped after answer() returns.
        (m, handle)
    });
    requests::answer(&c, &job(), &a, 42).await.unwrap();
    drop(c);
    let (m, mut handle) = server.await.unwrap();
    assert!(m["data"]["decision"].as_str().unwrap().contains("not now"));
    assert!(
        handle.next_request().await.is_none(),
        "the Deployment was touched"
    );
}

/// In the pod: the request is written as the agent's field manager, then
/// the decision with the same id is read back from the watch; a decision
/// for another id (an old one, or one the agent wrote itself) is not it.
#[tokio::test]
async fn fake_api_server_the_pod_writes_its_request_and_waits_for_its_own_decision() {
    let (c, mut handle) = client();
    let server = tokio::spawn(async move {
        let patch = expect_patch(&mut handle, ADA_REQUESTS, "nuketown-agent").await;
        let sent: Asked = serde_json::from_str(patch["data"]["request"].as_str().unwrap()).unwrap();
        assert_eq!(
            (sent.tier.as_str(), sent.reason.as_str()),
            ("large", "tests need 8 GiB")
        );
        // The watcher lists the one object (field selector by name).
        let (req, send) = handle.next_request().await.expect("the list");
        assert_eq!(req.method(), http::Method::GET);
        assert!(
            req.uri()
                .query()
                .unwrap_or_default()
                .contains("fieldSelector=metadata.name%3Dada-requests"),
            "{:?}",
            req.uri()
        );
        let decision = |id: &str, approved: bool| {
            serde_json::to_string(&Answer {
                id: id.into(),
                approved,
                by: "josh".into(),
                via: "terminal".into(),
                reason: "ok".into(),
                request: "h".into(),
            })
            .unwrap()
        };
        let list = json!({
            "apiVersion": "v1", "kind": "ConfigMapList",
            "metadata": { "resourceVersion": "1" },
            "items": [
                { "metadata": { "name": "ada-requests", "namespace": "nuketown", "resourceVersion": "1" },
                  "data": { "decision": decision("old", true) } }
            ]
        });
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&list).unwrap()))
                .unwrap(),
        );
        // Then the watch: the relay's answer for this request arrives.
        let (req, send) = handle.next_request().await.expect("the watch");
        assert!(
            req.uri().query().unwrap_or_default().contains("watch=true"),
            "{:?}",
            req.uri()
        );
        let ev = json!({
            "type": "MODIFIED",
            "object": { "apiVersion": "v1", "kind": "ConfigMap",
              "metadata": { "name": "ada-requests", "namespace": "nuketown", "resourceVersion": "2" },
              "data": { "decision": decision(&sent.id, true) } }
        });
        let mut body = serde_json::to_vec(&ev).unwrap();
        body.push(b'\n');
        send.send_response(Response::builder().body(Body::from(body)).unwrap());
        sent.id
    });
    let a = requests::ask(
        &c,
        "nuketown",
        "ada",
        "large",
        "tests need 8 GiB",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let id = server.await.unwrap();
    assert_eq!(a.id, id);
    assert!(a.approved);
    assert_eq!((a.by.as_str(), a.via.as_str()), ("josh", "terminal"));
}

#[test]
fn argo_cd_leaves_the_writers_of_the_request_path_alone() {
    let app = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/argocd/application.yaml"
    ))
    .unwrap();
    for m in [
        requests::AGENT_MANAGER,
        nuketown_operator::scaling::HALL_MANAGER,
    ] {
        assert!(
            app.contains(&format!("- {m}\n")),
            "{m} is not ignored by Argo CD"
        );
    }
}

/// `nuketown ask active` (the chat bridge in the pod, on a turn): one
/// PATCH of the agent's own request object, as the agent's field manager,
/// writing only `data.active`.
#[tokio::test]
async fn fake_api_server_activity_is_written_into_the_agents_own_request_object() {
    let (c, mut handle) = client();
    let server = tokio::spawn(async move {
        let patch = expect_patch(&mut handle, ADA_REQUESTS, "nuketown-agent").await;
        (patch, handle)
    });
    let before = nuketown_operator::controller::system_now_ms();
    requests::active(&c, "nuketown", "ada").await.unwrap();
    drop(c);
    let (patch, mut handle) = server.await.unwrap();
    let data = patch["data"].as_object().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["active"], "{patch}");
    let t: u64 = data["active"].as_str().unwrap().parse().unwrap();
    assert!(t >= before, "{t} {before}");
    assert!(handle.next_request().await.is_none(), "one request only");
}

/// `nuketown ask follow` (the chat bridge in the pod shows these in its
/// room): a new request is `Asked` once; its decision is `Decided` once,
/// and only when the API server says the relay (`nuketown-hall`) wrote
/// `data.decision` — the agent's token may write that key too, and a
/// decision it writes for itself is not one. A decision for another id is
/// not this request's.
#[test]
fn the_room_hears_a_decision_only_when_the_relay_wrote_it() {
    use nuketown_hall::follow::Followed;
    let decision = |id: &str, approved: bool| {
        serde_json::to_string(&Answer {
            id: id.into(),
            approved,
            by: "josh".into(),
            via: "matrix:@josh:example.org".into(),
            reason: "go ahead".into(),
            request: "4f2a9c01".into(),
        })
        .unwrap()
    };
    // ada's request r1, and a decision for `id` that `manager` wrote.
    let decided = |id: &str, approved: bool, manager: &str| {
        let mut c = cm(
            "ada-requests",
            "nuketown",
            &[
                ("request", asked("r1", "large")),
                ("decision", decision(id, approved)),
            ],
            &[],
        );
        let entry = json!({
            "manager": manager, "operation": "Update", "apiVersion": "v1",
            "fieldsType": "FieldsV1", "fieldsV1": { "f:data": { "f:decision": {} } }
        });
        c.metadata.managed_fields = Some(vec![serde_json::from_value(entry).unwrap()]);
        c
    };
    let mut f = requests::Follow::default();
    let asking = cm(
        "ada-requests",
        "nuketown",
        &[("request", asked("r1", "large"))],
        &[],
    );
    let ev = f.events(&asking);
    assert!(
        matches!(&ev[..], [Followed::Asked { id, kind, what, .. }]
            if id == "r1" && kind == "resources" && what.starts_with("move to large (")),
        "{ev:?}"
    );
    assert!(f.events(&asking).is_empty(), "asked once");

    // The agent writes an approval for itself: nothing.
    let forged = decided("r1", true, "nuketown-agent");
    assert!(f.events(&forged).is_empty(), "the agent's own decision");
    // The relay's decision for an older request: not this one.
    let other = decided("r0", true, "nuketown-hall");
    assert!(f.events(&other).is_empty(), "another request's decision");
    // The relay's decision: heard once, with the hall's request id.
    let denied = decided("r1", false, "nuketown-hall");
    let ev = f.events(&denied);
    assert!(
        matches!(&ev[..], [Followed::Decided { id, decision, by, reason, .. }]
            if id == "r1" && decision == "denied" && by.who == "josh"
                && reason == "go ahead (town hall request 4f2a9c01)"),
        "{ev:?}"
    );
    assert!(f.events(&denied).is_empty(), "decided once");
}
