//! Bad input on a real API server (control_plane/; no kubelet, no
//! controllers needed): what only the server can refuse is refused naming
//! the object, the field and its reason, and the objects that did go in
//! are each named; what the render refuses never reaches the server.

mod control_plane;

use std::fs;
use std::path::Path;

use control_plane::{kubectl_ref, live, render_and_apply, rendered, repo, ControlPlane, Parts};

fn nuketown() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_nuketown"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn real_api_server_no_kubelet_a_change_only_the_server_refuses_names_the_claim_the_field_and_what_went_in(
) {
    let Some(cp) = ControlPlane::start("k8s_bad_input", Parts::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let town = dir.path().join("town.toml");
    let example = fs::read_to_string(repo().join("examples/cloud.toml")).unwrap();
    fs::write(&town, &example).unwrap();
    let o = render_and_apply(&cp, nuketown(), &town);
    assert!(o.status.success(), "{}", text(&o.stderr));

    // A volume claim's class cannot change once made (a disk does not move
    // to another class): the render cannot know what the cluster already
    // holds, the server can. ada's claims are refused, each named with the
    // field and the server's reason; every other object still goes in, and
    // kubectl names each one; the command fails.
    let changed = example.replace(
        "persist.storageClass = \"standard-rwo\"",
        "persist.storageClass = \"premium-rwo\"",
    );
    assert_ne!(changed, example);
    fs::write(&town, &changed).unwrap();
    let o = render_and_apply(&cp, nuketown(), &town);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(!o.status.success(), "{out}");
    let manifests = rendered(&changed);
    for m in &manifests {
        let r = kubectl_ref(m);
        let name = m["metadata"]["name"].as_str().unwrap();
        if m["kind"] == "PersistentVolumeClaim" && name.starts_with("ada--") {
            assert!(
                err.contains(&format!("PersistentVolumeClaim \"{name}\" is invalid: spec: Forbidden: spec is immutable after creation")),
                "{name} not refused with its field and reason:\n{err}"
            );
            assert!(!out.contains(&r), "{r} reported as applied:\n{out}");
            // What the server kept is the claim as it was.
            assert_eq!(live(&cp, m)["spec"]["storageClassName"], "standard-rwo");
        } else {
            assert!(
                out.lines().any(|l| l == format!("{r} serverside-applied")),
                "{r} went in without being named:\n{out}"
            );
        }
    }

    // What the render refuses never reaches the server: nothing is applied,
    // and the message names the key and the fix.
    let before = text(
        &cp.kubectl_ok(&["get", "deployments", "-A", "-o", "json"])
            .into_bytes(),
    );
    fs::write(
        &town,
        example.replace("resources = \"standard\"", "resources = \"huge\""),
    )
    .unwrap();
    let o = render_and_apply(&cp, nuketown(), &town);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("agents.ada.cloud.resources: \"huge\" is not a tier"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(text(&o.stdout).trim(), "");
    assert_eq!(
        cp.kubectl_ok(&["get", "deployments", "-A", "-o", "json"]),
        before
    );
}
