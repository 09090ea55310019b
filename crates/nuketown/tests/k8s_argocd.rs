//! Argo CD's side of the cloud on a real API server (control_plane/), with
//! Argo CD's own CRDs and install manifest (from its Go module, fetched by
//! scripts/k8s.sh): the sample Application and the plugin's ConfigMap are
//! accepted as shipped (strict field validation against the CRD schema),
//! the repo-server patch applies to Argo CD's real repo-server Deployment,
//! and what the plugin's generate step prints — run as Argo CD runs it,
//! `sh -c` in the source directory with the app's revision — is what the
//! cluster ends up holding, applied server-side as Argo CD's
//! `ServerSideApply=true` does.
//!
//! Not real: Argo CD itself does not run (no repo-server process, no CMP
//! server hand-off of the repository tarball, no sync loop); no kubelet.

mod argocd_plugin;
mod control_plane;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use argocd_plugin::plugin_script;
use control_plane::{declared_in, documents, live, repo, ControlPlane, Parts};

const REVISION: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn real_api_server_no_argocd_process_its_crds_accept_the_application_and_the_plugin_output_is_applied(
) {
    let Some(cp) = ControlPlane::start("k8s_argocd", Parts::default()) else {
        return;
    };
    let install = control_plane::install_dir().join("argocd");

    // Argo CD as its release installs it (CRDs included), into `argocd`.
    cp.kubectl_ok(&["create", "namespace", "argocd"]);
    let o = cp.kubectl(&[
        "apply",
        "--server-side",
        "-n",
        "argocd",
        "-f",
        install.join("install.yaml").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    cp.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/applications.argoproj.io",
        "crd/appprojects.argoproj.io",
    ]);

    // The sample Application, as shipped: the CRD's schema accepts every
    // field (kubectl asks the server for strict field validation), and it
    // reads back as written.
    let app_yaml = fs::read_to_string(repo().join("deploy/argocd/application.yaml")).unwrap();
    let o = cp.kubectl_with(
        &cp.admin,
        &["apply", "--server-side", "--validate=strict", "-f", "-"],
        Some(&app_yaml),
    );
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(text(&o.stderr).trim(), "", "the server warned");
    for app in documents(&cp, &app_yaml) {
        declared_in(&app, &live(&cp, &app), "").unwrap_or_else(|e| panic!("Application: {e}"));
    }
    // A field the CRD does not know is refused, naming it: the check above can fail.
    let bad = app_yaml.replacen(
        "  project: default",
        "  project: default\n  projekt: default",
        1,
    );
    let o = cp.kubectl_with(
        &cp.admin,
        &[
            "apply",
            "--server-side",
            "--validate=strict",
            "--dry-run=server",
            "-f",
            "-",
        ],
        Some(&bad),
    );
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("projekt"), "{}", text(&o.stderr));

    // The plugin's ConfigMap, made as docs/cloud.md says, holds plugin.yaml
    // byte for byte; the sidecar patch applies to Argo CD's repo-server.
    let plugin = repo().join("deploy/argocd/plugin.yaml");
    cp.kubectl_ok(&[
        "-n",
        "argocd",
        "create",
        "configmap",
        "nuketown-cmp",
        &format!("--from-file=plugin.yaml={}", plugin.display()),
    ]);
    let cm = cp.get("configmap", Some("argocd"), "nuketown-cmp").unwrap();
    assert_eq!(
        cm["data"]["plugin.yaml"].as_str().unwrap(),
        fs::read_to_string(&plugin).unwrap()
    );
    cp.kubectl_ok(&[
        "-n",
        "argocd",
        "patch",
        "deployment",
        "argocd-repo-server",
        "--patch-file",
        repo()
            .join("deploy/argocd/repo-server-patch.yaml")
            .to_str()
            .unwrap(),
    ]);
    let d = cp
        .get("deployment", Some("argocd"), "argocd-repo-server")
        .unwrap();
    let spec = &d["spec"]["template"]["spec"];
    let names: Vec<&str> = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"argocd-repo-server") && names.contains(&"nuketown"),
        "{names:?}"
    );
    let sidecar = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "nuketown")
        .unwrap();
    assert_eq!(sidecar["command"][0], "/var/run/argocd/argocd-cmp-server");
    // The volumes it mounts are the repo-server's own (var-files, plugins) and the patch's.
    let volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for m in sidecar["volumeMounts"].as_array().unwrap() {
        let n = m["name"].as_str().unwrap();
        assert!(
            volumes.contains(&n),
            "the sidecar mounts {n}, which the pod does not have: {volumes:?}"
        );
    }

    // The generate step, as Argo CD runs it, on a source directory holding
    // the example town; what it prints is applied as Argo CD applies
    // (server-side, its field manager), and the cluster holds exactly that.
    let src = tempfile::tempdir().unwrap();
    fs::copy(
        repo().join("examples/cloud.toml"),
        src.path().join("town.toml"),
    )
    .unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_nuketown")).parent().unwrap();
    let generated = Command::new("sh")
        .arg("-c")
        .arg(plugin_script())
        .current_dir(src.path())
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("HOME", src.path())
        .env("ARGOCD_APP_REVISION", REVISION)
        .env("ARGOCD_APP_NAME", "nuketown")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    let yaml = text(&generated.stdout);
    let o = cp.apply_as("argocd-controller", &yaml);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let objects = documents(&cp, &yaml);
    assert!(objects.len() > 10, "{}", objects.len());
    for m in &objects {
        let l = live(&cp, m);
        declared_in(m, &l, "")
            .unwrap_or_else(|e| panic!("{} {}: {e}", m["kind"], m["metadata"]["name"]));
        assert_eq!(
            l["metadata"]["annotations"]["nuketown.dev/town-revision"],
            REVISION
        );
    }
}
