//! Scaling as a conversation, on a real control plane (control_plane/):
//! the agent's own service-account token writes a request for a bigger
//! tier; the relay (`nuketown cloud requests`, its own token, the RBAC of
//! deploy/operator/relay-rbac.yaml) brings it to the real town hall
//! (hall_fixture: real users, the real approver CLI); a human approves; the
//! operator (its own token, the RBAC of deploy/operator/operator.yaml) moves
//! the workload — a real rollout by the real controllers and scheduler onto
//! the tier's node pool — and, idle, back down. No identity here is
//! cluster-admin but the test's own, which sets the stage (as Argo CD would).
//!
//! Beside it, what the agent's token must not do, asked of the real RBAC
//! (`kubectl auth can-i` as that service account) and tried for real.
//!
//! Not real: no kubelet (kwok marks pods Running; no container runs, so the
//! agent's `nuketown ask` runs here with the token a kubelet would mount,
//! bound to its pod), no image registry, no metrics-server (CPU never counts
//! as activity), the operator runs in the test process (its code, its token).

mod control_plane;
mod hall_fixture;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use control_plane::{repo, ControlPlane, Parts};
use hall_fixture::{next_request, stderr, stdout, Options, TestTown, ADA, HUMAN, VOX};
use serde_json::Value;

const NS: &str = "nuketown";

/// ada starts small, may be moved up to large by a human, and goes back
/// after 30 s without activity; vox (also in the cluster) may ask too.
fn options() -> Options {
    Options {
        ada_extra: "host.enable = true\n\
                    cloud = { enable = true, image = \"registry.invalid/nuketown-agent:test\", \
                    resources = \"small\", scaling = { maxResources = \"large\", idleTimeout = \"30s\" } }\n"
            .into(),
        ..Options::default()
    }
}

/// The fixture's town, made a cloud town: its domain declared, vox in the cluster too.
fn cloudify(t: &TestTown) {
    let text = fs::read_to_string(&t.town).unwrap();
    fs::write(
        &t.town,
        format!(
            "domain = \"agents.test\"\n{text}\n[agents.{VOX}.host]\nenable = true\n\
             [agents.{VOX}.cloud]\nenable = true\nimage = \"registry.invalid/nuketown-agent:test\"\n\
             resources = \"small\"\nscaling = {{ maxResources = \"standard\" }}\n"
        ),
    )
    .unwrap();
}

const POOLS: &str = r#"
[tiers.small]
nodeSelector = { "nuketown.test/pool" = "small" }
[tiers.standard]
nodeSelector = { "nuketown.test/pool" = "standard" }
[tiers.large]
nodeSelector = { "nuketown.test/pool" = "large" }
tolerations = ["dedicated"]
[idle]
nodeSelector = { "nuketown.test/pool" = "spot" }
tolerations = ["spot"]
"#;

fn nodes(cp: &mut ControlPlane) {
    let pool = |p| [("nuketown.test/pool", p)];
    cp.add_node(
        "pool-small-0",
        &pool("small"),
        &[],
        &[("cpu", "1500m"), ("memory", "3Gi")],
    );
    cp.add_node(
        "pool-standard-0",
        &pool("standard"),
        &[],
        &[("cpu", "3"), ("memory", "6Gi")],
    );
    cp.add_node(
        "pool-large-0",
        &pool("large"),
        &["dedicated=large"],
        &[("cpu", "8"), ("memory", "20Gi")],
    );
    cp.add_node(
        "pool-spot-0",
        &pool("spot"),
        &["spot=true"],
        &[("cpu", "2"), ("memory", "4Gi")],
    );
}

/// The one live pod of `agent`, when it is Running.
fn running_pod(cp: &ControlPlane, agent: &str) -> Option<Value> {
    let pods: Vec<Value> = cp
        .list(
            "pods",
            &["-n", NS, "-l", &format!("nuketown.dev/agent={agent}")],
        )
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    match pods.as_slice() {
        [p] if p["status"]["phase"] == "Running" => Some(p.clone()),
        _ => None,
    }
}

fn agent_limits(pod: &Value) -> (String, String) {
    let c = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "agent")
        .unwrap();
    let l = &c["resources"]["limits"];
    (
        l["cpu"].as_str().unwrap().to_string(),
        l["memory"].as_str().unwrap().to_string(),
    )
}

fn annotation(d: &Value, key: &str) -> Option<String> {
    d["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_string)
}

/// `kubectl auth can-i VERB RESOURCE` as the identity of `kubeconfig`.
fn can_i(cp: &ControlPlane, kubeconfig: &Path, verb: &str, what: &str, ns: &str) -> bool {
    let o = cp.kubectl_with(kubeconfig, &["auth", "can-i", verb, what, "-n", ns], None);
    match stdout(&o).trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl auth can-i {verb} {what}: {other:?} {}", stderr(&o)),
    }
}

/// A merge PATCH of `resource` `name` in the agents' namespace as the
/// identity of `kubeconfig`: the server's refusal as `CODE: message`.
fn patch_as(kubeconfig: &Path, resource: &str, name: &str, body: &str) -> Result<(), String> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{ConfigMap, ResourceQuota};
    use kube::api::{Api, Patch, PatchParams};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = client(kubeconfig).await;
        let body: Value = serde_json::from_str(body).unwrap();
        let (pp, p) = (PatchParams::default(), Patch::Merge(&body));
        let r = match resource {
            "deployments" => Api::<Deployment>::namespaced(client, NS)
                .patch(name, &pp, &p)
                .await
                .map(drop),
            "resourcequotas" => Api::<ResourceQuota>::namespaced(client, NS)
                .patch(name, &pp, &p)
                .await
                .map(drop),
            "configmaps" => Api::<ConfigMap>::namespaced(client, NS)
                .patch(name, &pp, &p)
                .await
                .map(drop),
            other => panic!("patch_as: {other}"),
        };
        r.map_err(|e| match e {
            kube::Error::Api(s) => format!("{}: {}", s.code, s.message),
            other => panic!("{resource} {name}: not the API server's answer: {other}"),
        })
    })
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// The operator's loop in this process, as its service account.
fn start_operator(kubeconfig: &Path) -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pools = nuketown_operator::controller::Pools::parse(POOLS).unwrap();
    let client = rt.block_on(client(kubeconfig));
    rt.spawn(nuketown_operator::controller::run(client, pools));
    rt
}

/// The relay, `nuketown cloud requests`, as root beside the hall, with its token.
fn start_relay(t: &TestTown, kubeconfig: &Path) -> Child {
    let log = fs::File::create(t.path("relay.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_nuketown"))
        .args(["cloud", "requests"])
        .arg(&t.town)
        .arg("--socket")
        .arg(t.ask_socket())
        .env("KUBECONFIG", kubeconfig)
        .env("NUKETOWN_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn real_api_server_no_kubelet_kwok_pods_a_human_approved_move_up_and_idle_back_down() {
    if control_plane::available("k8s_scaling").is_none() {
        return;
    }
    // The hall's users first (the hall's tests take turns), then the
    // control plane, so it does not idle while the turn comes.
    let mut t = TestTown::new(options());
    cloudify(&t);
    let Some(mut cp) = ControlPlane::start("k8s_scaling", Parts::all()) else {
        return;
    };
    nodes(&mut cp);

    // The stage, as Argo CD would set it: the town's render, the operator's
    // and the relay's manifests as shipped.
    let render = Command::new(env!("CARGO_BIN_EXE_nuketown"))
        .args(["cloud", "render"])
        .arg(&t.town)
        .output()
        .unwrap();
    assert!(render.status.success(), "{}", stderr(&render));
    cp.apply(&stdout(&render));
    for f in [
        "deploy/operator/operator.yaml",
        "deploy/operator/relay-rbac.yaml",
    ] {
        cp.apply(&fs::read_to_string(repo().join(f)).unwrap());
    }
    let first = cp.wait_for("ada's pod Running at small", |cp| running_pod(cp, ADA));
    let first_name = first["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(agent_limits(&first), ("1".into(), "2Gi".into()));

    // Each identity a token of its own: ada's bound to her pod, as a
    // kubelet mounts it; the operator's to its (kwok) pod; the relay's, on
    // the hall's host, unbound.
    let ada = cp.service_account_kubeconfig(NS, ADA, Some(&first_name));
    let op_pod = cp.wait_for("the operator's pod", |cp| {
        cp.list(
            "pods",
            &[
                "-n",
                "nuketown-system",
                "-l",
                "app.kubernetes.io/name=nuketown-operator",
            ],
        )
        .into_iter()
        .find(|p| p["status"]["phase"] == "Running")
    });
    let operator = cp.service_account_kubeconfig(
        "nuketown-system",
        "nuketown-operator",
        op_pod["metadata"]["name"].as_str(),
    );
    let relay = cp.service_account_kubeconfig("nuketown-system", "nuketown-relay", None);

    // --- What the agent's token may and may not do (the real RBAC). ---
    let own = format!("configmaps/{ADA}-requests");
    for verb in ["get", "watch", "patch"] {
        assert!(can_i(&cp, &ada, verb, &own, NS), "{verb} {own}");
    }
    for (verb, what) in [
        ("patch", format!("deployments.apps/{ADA}")),
        ("patch", format!("deployments.apps/{ADA}/scale")),
        ("patch", "resourcequotas/nuketown".to_string()),
        ("patch", "limitranges/nuketown".to_string()),
        ("patch", format!("configmaps/{VOX}-requests")),
        ("delete", own.clone()),
        ("create", "configmaps".into()),
        ("get", "secrets".into()),
        ("create", "pods".into()),
        ("create", "pods/exec".into()),
        (
            "patch",
            "validatingadmissionpolicies.admissionregistration.k8s.io/nuketown-requests".into(),
        ),
    ] {
        assert!(!can_i(&cp, &ada, verb, &what, NS), "ada may {verb} {what}");
    }
    // Its whole permission set: its request object, and asking who it is.
    let list = stdout(&cp.kubectl_with(&ada, &["auth", "can-i", "--list", "-n", NS], None));
    for line in list
        .lines()
        .skip(1)
        .filter(|l| !l.trim_start().starts_with('['))
    {
        let resource = line.split_whitespace().next().unwrap_or_default();
        assert!(
            (resource == "configmaps" && line.contains(&format!(" [{ADA}-requests] ")))
                || resource.starts_with("selfsubject"),
            "ada's token may do more than its request:\n{list}"
        );
    }
    assert!(list.contains(&format!("[{ADA}-requests]")), "{list}");

    // The writes themselves (a real PATCH each, with ada's token), refused
    // by the server, saying who may not do what.
    let forbidden = |what: &str, name: &str, body: &str| {
        let e = patch_as(&ada, what, name, body).expect_err(&format!("ada patched {what} {name}"));
        assert!(
            e.starts_with(&format!("403: {what}"))
                && e.contains(&format!("\"{name}\" is forbidden")),
            "{e}"
        );
        e
    };
    let e = forbidden(
        "deployments",
        ADA,
        r#"{"metadata":{"annotations":{"nuketown.dev/tier-request":"large;approved-by=nkthuman"}}}"#,
    );
    assert!(
        e.contains(&format!(
            "User \"system:serviceaccount:{NS}:{ADA}\" cannot patch resource \"deployments\""
        )),
        "{e}"
    );
    forbidden(
        "resourcequotas",
        "nuketown",
        r#"{"spec":{"hard":{"requests.cpu":"64"}}}"#,
    );
    forbidden(
        "configmaps",
        &format!("{VOX}-requests"),
        r#"{"data":{"request":"{}"}}"#,
    );
    // RBAC lets it patch its own request object, so the admission policy
    // the render ships holds it to data.request and data.active there.
    let own_name = format!("{ADA}-requests");
    for body in [
        r#"{"data":{"decision":"{\"id\":\"x\",\"approved\":true,\"by\":\"nkthuman\",\"via\":\"terminal\",\"reason\":\"\"}"}}"#,
        r#"{"metadata":{"labels":{"nuketown.dev/requests":null}}}"#,
        r#"{"binaryData":{"decision":"eA=="}}"#,
    ] {
        let e = forbidden("configmaps", &own_name, body);
        assert!(
            e.contains("ValidatingAdmissionPolicy 'nuketown-requests' with binding 'nuketown-requests' denied request: an agent may"),
            "{e}"
        );
    }
    patch_as(&ada, "configmaps", &own_name, r#"{"data":{"active":"1"}}"#).unwrap();
    // The operator and the relay: what deploy/ gives them, nothing more.
    for (kc, who) in [(&operator, "operator"), (&relay, "relay")] {
        assert!(
            can_i(&cp, kc, "patch", &format!("deployments.apps/{ADA}"), NS),
            "{who}"
        );
        for (verb, what) in [
            ("get", "secrets"),
            ("create", "pods"),
            ("delete", "deployments.apps"),
            ("patch", "resourcequotas"),
            ("create", "rolebindings.rbac.authorization.k8s.io"),
            (
                "patch",
                "validatingadmissionpolicies.admissionregistration.k8s.io",
            ),
        ] {
            assert!(
                !can_i(&cp, kc, verb, what, NS),
                "the {who} may {verb} {what}"
            );
        }
    }
    assert!(
        !can_i(&cp, &operator, "patch", &own, NS),
        "the operator writes no request object"
    );

    // --- The conversation. ---
    t.start_hall();
    let _relay = Killed(start_relay(&t, &relay));
    let _operator = start_operator(&operator);
    let mut w = t.watch();
    let ask = Command::new(env!("CARGO_BIN_EXE_nuketown"))
        .args([
            "ask",
            "resources",
            "large",
            "--reason",
            "the build needs 8 GiB",
            "--wait",
            "2m",
        ])
        .env("KUBECONFIG", &ada)
        .env("NUKETOWN_AGENT", ADA)
        .env("NUKETOWN_NAMESPACE", NS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let r = next_request(&mut w);
    let x = r.resources.clone().expect("a resources request");
    assert_eq!(
        (r.agent.as_str(), x.tier.as_str(), x.current.as_str()),
        (ADA, "large", "small")
    );
    assert!(
        x.origin.contains(&format!("ConfigMap {NS}/{ADA}-requests")),
        "{x:?}"
    );
    let o = t.human(HUMAN, &format!("approvals approve {}", r.id));
    assert!(o.status.success(), "{}", stderr(&o));
    let asked = hall_fixture::finish(ask);
    assert!(
        asked.status.success(),
        "{}{}",
        stdout(&asked),
        stderr(&asked)
    );
    assert!(stdout(&asked).starts_with("approved"), "{}", stdout(&asked));

    // The decision on the Deployment, written as the hall (the API server's
    // record); the operator moves the workload: a new pod, on the large
    // pool, the size of the tier; the old one gone, and its token with it.
    let d = cp.wait_for("the operator's move to large", |cp| {
        let d = cp.get("deployment", Some(NS), ADA)?;
        (annotation(&d, "nuketown.dev/current-tier").as_deref() == Some("large")).then_some(d)
    });
    let status = annotation(&d, "nuketown.dev/scaling-status").unwrap();
    assert_eq!(
        status,
        format!("approved by {HUMAN} via terminal (request {})", r.id)
    );
    assert_eq!(
        annotation(&d, "nuketown.dev/tier-request"),
        None,
        "the request is used up"
    );
    // The tier's pool, by the operator's node selector and toleration (the
    // pod would fit nowhere else, but the pool is what it was sent to).
    let template = &d["spec"]["template"]["spec"];
    assert_eq!(
        template["nodeSelector"],
        serde_json::json!({ "nuketown.test/pool": "large" })
    );
    assert_eq!(
        template["tolerations"],
        serde_json::json!([{ "key": "dedicated", "operator": "Exists" }])
    );
    let moved = cp.wait_for("ada's pod Running on the large pool", |cp| {
        running_pod(cp, ADA).filter(|p| p["spec"]["nodeName"] == "pool-large-0")
    });
    assert_eq!(agent_limits(&moved), ("4".into(), "8Gi".into()));
    assert_ne!(moved["metadata"]["name"].as_str().unwrap(), first_name);
    assert!(
        cp.get("pod", Some(NS), &first_name).is_none(),
        "the old pod is still there"
    );
    // The token bound to the old pod dies with it (once the API server's
    // cache of good tokens, 10 s, lets go of it).
    cp.wait_for("the old pod's token to be refused", |cp| {
        let o = cp.kubectl_with(&ada, &["auth", "whoami"], None);
        (!o.status.success() && stderr(&o).contains("Unauthorized")).then_some(())
    });
    let rec = t.audit_of(&r.id);
    assert_eq!(
        (rec.event.as_str(), rec.decision.as_str()),
        ("resources", "approved")
    );

    // Idle (no metrics-server, no conversation): back to small, on the idle
    // pool, without anyone asked.
    let d = cp.wait_for("the operator's move back to small", |cp| {
        let d = cp.get("deployment", Some(NS), ADA)?;
        (annotation(&d, "nuketown.dev/current-tier").as_deref() == Some("small")).then_some(d)
    });
    assert!(
        annotation(&d, "nuketown.dev/scaling-status")
            .unwrap()
            .starts_with("idle for"),
        "{d}"
    );
    let template = &d["spec"]["template"]["spec"];
    assert_eq!(
        (&template["nodeSelector"], &template["tolerations"]),
        (
            &serde_json::json!({ "nuketown.test/pool": "spot" }),
            &serde_json::json!([{ "key": "spot", "operator": "Exists" }])
        ),
        "{d}"
    );
    let back = cp.wait_for("ada's pod Running on the idle pool", |cp| {
        running_pod(cp, ADA).filter(|p| p["spec"]["nodeName"] == "pool-spot-0")
    });
    assert_eq!(agent_limits(&back), ("1".into(), "2Gi".into()));

    // A request written by hand, even by an administrator, moves nothing:
    // the operator reads who wrote it from managedFields.
    cp.kubectl_ok(&[
        "annotate",
        "-n",
        NS,
        &format!("deployment/{ADA}"),
        "--overwrite",
        &format!("nuketown.dev/tier-request=large;approved-by={HUMAN}"),
    ]);
    let d = cp.wait_for("the operator's refusal of a hand-written request", |cp| {
        let d = cp.get("deployment", Some(NS), ADA)?;
        annotation(&d, "nuketown.dev/scaling-status")
            .filter(|s| s.contains("written by kubectl-annotate"))
            .map(|_| d)
    });
    assert_eq!(
        annotation(&d, "nuketown.dev/current-tier").as_deref(),
        Some("small")
    );
}
