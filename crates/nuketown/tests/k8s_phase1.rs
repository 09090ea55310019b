//! Phase 1 of the cloud, as the seed asks: the render works with `kubectl
//! apply` and deploys the example's agents to a cluster — a real one: etcd,
//! kube-apiserver (TLS, Node+RBAC, Pod Security admission), the controller
//! manager and the scheduler, built by `scripts/k8s.sh` (control_plane/).
//!
//! Not real here, and said in the test names: no kubelet (kwok fakes the
//! nodes and marks scheduled pods Running; no container runs, no image is
//! pulled), no CNI (the NetworkPolicies are stored, not enforced), no
//! volume provisioner (the claims bind to PersistentVolumes made here).

mod control_plane;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use control_plane::{
    declared_in, kubectl_ref, live, render_and_apply, rendered, repo, ControlPlane, Parts,
};
use serde_json::Value;

fn kind_name(m: &Value) -> (String, Option<String>, String) {
    (
        m["kind"].as_str().unwrap().to_string(),
        m["metadata"]["namespace"].as_str().map(str::to_string),
        m["metadata"]["name"].as_str().unwrap().to_string(),
    )
}

/// The cluster's nodes, by pool: what the scheduler may choose from.
/// Sized so that each tier fits where it should and nowhere smaller; the
/// large pool is tainted, as a pool a cluster keeps for builds would be.
fn node_pools(cp: &mut ControlPlane) {
    cp.add_node(
        "pool-small-0",
        &[("nuketown.test/pool", "small")],
        &[],
        &[("cpu", "1500m"), ("memory", "3Gi")],
    );
    cp.add_node(
        "pool-standard-0",
        &[("nuketown.test/pool", "standard")],
        &[],
        &[("cpu", "4"), ("memory", "10Gi")],
    );
    cp.add_node(
        "pool-large-0",
        &[("nuketown.test/pool", "large")],
        &["dedicated=large"],
        &[("cpu", "8"), ("memory", "20Gi")],
    );
    cp.add_node(
        "pool-gpu-0",
        &[
            ("nuketown.test/pool", "gpu"),
            ("cloud.google.com/gke-accelerator", "nvidia-l4"),
        ],
        &["gpu-only=true"],
        &[("cpu", "8"), ("memory", "40Gi"), ("nvidia.com/gpu", "1")],
    );
}

/// One PersistentVolume for each claim of the render, of its class and
/// size (no provisioner here), and the example's StorageClass, bound when
/// the pod is scheduled (as disks in a zone are).
fn volumes_for(cp: &ControlPlane, manifests: &[Value]) -> BTreeMap<String, (String, String)> {
    cp.apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: standard-rwo\n\
         provisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: WaitForFirstConsumer\n",
    );
    let mut made = BTreeMap::new();
    for m in manifests
        .iter()
        .filter(|m| m["kind"] == "PersistentVolumeClaim")
    {
        let (_, ns, name) = kind_name(m);
        let class = m["spec"]["storageClassName"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let size = m["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .unwrap()
            .to_string();
        let pv = format!("pv-{}-{name}", ns.unwrap());
        cp.add_volume(&pv, &class, &size);
        made.insert(pv, (class, size));
    }
    made
}

/// Every object as the server has it, less what controllers write on their
/// own (`status`, the resourceVersion that moves with it, and the status
/// writers' managedFields): what an apply could change.
fn declared_state(cp: &ControlPlane, manifests: &[Value]) -> Vec<(String, Value)> {
    manifests
        .iter()
        .map(|m| {
            let mut l = live(cp, m);
            let o = l.as_object_mut().unwrap();
            o.remove("status");
            let meta = o["metadata"].as_object_mut().unwrap();
            meta.remove("resourceVersion");
            if let Some(Value::Array(fields)) = meta.get_mut("managedFields") {
                fields.retain(|f| f["subresource"] != "status");
            }
            (kubectl_ref(m), l)
        })
        .collect()
}

/// The Running pod of `agent` in `ns`, with its node.
fn running_pod(cp: &ControlPlane, ns: &str, agent: &str) -> Option<Value> {
    cp.list(
        "pods",
        &["-n", ns, "-l", &format!("nuketown.dev/agent={agent}")],
    )
    .into_iter()
    .find(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
}

#[test]
fn real_api_server_no_kubelet_kwok_nodes_the_example_town_deploys_with_kubectl_apply_server_side() {
    let Some(mut cp) = ControlPlane::start("k8s_phase1", Parts::all()) else {
        return;
    };
    let town = repo().join("examples/cloud.toml");
    let manifests = rendered(&std::fs::read_to_string(&town).unwrap());
    node_pools(&mut cp);
    let volumes = volumes_for(&cp, &manifests);

    // Accepted, every object, with no warning (Pod Security would warn on
    // the Deployments if their pods broke `restricted`).
    let o = render_and_apply(&cp, Path::new(env!("CARGO_BIN_EXE_nuketown")), &town);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}{err}");
    assert_eq!(err.trim(), "", "the API server warned");
    for m in &manifests {
        let line = format!("{} serverside-applied", kubectl_ref(m));
        assert!(out.lines().any(|l| l == line), "{line} not in:\n{out}");
    }
    assert_eq!(out.lines().count(), manifests.len(), "{out}");

    // Read back, every object is what the render said (server defaults aside).
    for m in &manifests {
        let l = live(&cp, m);
        if let Err(e) = declared_in(m, &l, "") {
            panic!("{}: {e}", kubectl_ref(m));
        }
    }

    // The real scheduler puts each agent where its tier fits: ada
    // (standard: 2 CPUs, 4 GiB) only fits the standard pool; lux (gpu)
    // only on the GPU node, whose taint and label the render names; kwok
    // then marks the pod Running (no container runs).
    for (ns, agent, pool) in [
        ("nuketown", "ada", Some("pool-standard-0")),
        ("research", "lux", Some("pool-gpu-0")),
        ("research", "vox", None),
    ] {
        let pod = cp.wait_for(&format!("{agent}'s pod Running"), |cp| {
            running_pod(cp, ns, agent)
        });
        assert_eq!(pod["spec"]["schedulerName"], "default-scheduler");
        let node = pod["spec"]["nodeName"].as_str().unwrap();
        match pool {
            Some(p) => assert_eq!(node, p, "{agent} on the wrong node"),
            // vox (small) fits the small or standard pool, never a tainted one.
            None => assert!(
                !node.starts_with("pool-large") && !node.starts_with("pool-gpu"),
                "{node}"
            ),
        }
        let scheduled = pod["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "PodScheduled" && c["status"] == "True");
        assert!(scheduled, "{pod}");
        // Its pod runs as the agent, under `restricted`, and is admitted
        // into the namespace's quota and limits as rendered.
        assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    }

    // Every claim bound, to a volume of its class and size.
    for m in manifests
        .iter()
        .filter(|m| m["kind"] == "PersistentVolumeClaim")
    {
        let (_, ns, name) = kind_name(m);
        let ns = ns.unwrap();
        let claim = cp.wait_for(&format!("claim {ns}/{name} Bound"), |cp| {
            let c = cp.get("pvc", Some(&ns), &name)?;
            (c["status"]["phase"] == "Bound").then_some(c)
        });
        let pv = claim["spec"]["volumeName"].as_str().unwrap();
        let (class, size) = volumes
            .get(pv)
            .unwrap_or_else(|| panic!("{name} bound to {pv}"));
        assert_eq!(
            claim["status"]["capacity"]["storage"].as_str(),
            Some(size.as_str()),
            "{name}"
        );
        assert_eq!(
            m["spec"]["storageClassName"].as_str().unwrap_or(""),
            class,
            "{name}"
        );
    }

    // Applying the same render again changes nothing: no conflict, no
    // change to any object (all but what controllers write of their own,
    // byte for byte, managedFields' times included), and kubectl's
    // server-side diff is empty.
    let before = declared_state(&cp, &manifests);
    let o = render_and_apply(&cp, Path::new(env!("CARGO_BIN_EXE_nuketown")), &town);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim(), "");
    assert_eq!(declared_state(&cp, &manifests), before);
    let rendered_yaml = Command::new(env!("CARGO_BIN_EXE_nuketown"))
        .args(["cloud", "render"])
        .arg(&town)
        .output()
        .unwrap()
        .stdout;
    let diff = cp.kubectl_with(
        &cp.admin,
        &[
            "diff",
            "--server-side",
            "--field-manager=kubectl",
            "-f",
            "-",
        ],
        Some(&String::from_utf8_lossy(&rendered_yaml)),
    );
    assert_eq!(
        diff.status.code(),
        Some(0),
        "kubectl diff found changes:\n{}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
}
