//! The Argo CD files in deploy/argocd agree with each other: the
//! Application names the plugin as Argo CD spells it (`<name>-<version>`),
//! sets only parameters the plugin announces, and every announced parameter
//! is read by the generate script under the variable Argo CD gives it
//! (`PARAM_<NAME>`). A static check of the files; Argo CD does not run here.

use std::path::PathBuf;

use serde_norway::Value;

fn file(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/argocd")
        .join(name);
    serde_norway::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

#[test]
fn argocd_files_agree() {
    let plugin = file("plugin.yaml");
    assert_eq!(
        s(&plugin, &["apiVersion"]).as_str(),
        Some("argoproj.io/v1alpha1")
    );
    assert_eq!(
        s(&plugin, &["kind"]).as_str(),
        Some("ConfigManagementPlugin")
    );
    let full_name = format!(
        "{}-{}",
        s(&plugin, &["metadata", "name"]).as_str().unwrap(),
        s(&plugin, &["spec", "version"]).as_str().unwrap()
    );
    let script = s(&plugin, &["spec", "generate", "args"])[0]
        .as_str()
        .unwrap();
    assert!(script.contains("nuketown cloud render"), "{script}");
    assert!(
        script.contains("--revision \"${ARGOCD_APP_REVISION:-}\""),
        "{script}"
    );

    let announced: Vec<String> = s(&plugin, &["spec", "parameters", "static"])
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    for name in &announced {
        let var = format!("PARAM_{}", name.to_uppercase().replace('-', "_"));
        assert!(
            script.contains(&var),
            "parameter {name} is announced but the script never reads {var}"
        );
    }

    let app = file("application.yaml");
    assert_eq!(s(&app, &["kind"]).as_str(), Some("Application"));
    let source = s(&app, &["spec", "source", "plugin"]);
    assert_eq!(source["name"].as_str(), Some(full_name.as_str()));
    for p in source["parameters"].as_sequence().unwrap() {
        let name = p["name"].as_str().unwrap();
        assert!(
            announced.iter().any(|a| a == name),
            "the Application sets {name}, which the plugin does not announce"
        );
    }

    let patch = file("repo-server-patch.yaml");
    let containers = s(&patch, &["spec", "template", "spec", "containers"])
        .as_sequence()
        .unwrap();
    let sidecar = &containers[0];
    assert_eq!(
        sidecar["command"][0].as_str(),
        Some("/var/run/argocd/argocd-cmp-server")
    );
    assert_eq!(
        s(sidecar, &["securityContext", "runAsUser"]).as_u64(),
        Some(999)
    );
    let mounts: Vec<&str> = sidecar["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(
        mounts.contains(&"/home/argocd/cmp-server/config/plugin.yaml"),
        "{mounts:?}"
    );
    assert!(mounts.contains(&"/var/run/argocd"), "{mounts:?}");
}

/// The scaling operator's fields are not git's: the Application ignores
/// them and does not put them back on sync.
#[test]
fn the_application_leaves_the_operators_tier_alone() {
    // The field managers the operator crate writes as (it depends on this
    // crate, so the names are repeated here and checked there too).
    mod nuketown_operator_names {
        pub const AGENT_MANAGER: &str = "nuketown-agent";
        pub const HALL_MANAGER: &str = "nuketown-hall";
    }
    let app = file("application.yaml");
    let opts: Vec<&str> = s(&app, &["spec", "syncPolicy", "syncOptions"])
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(opts.contains(&"RespectIgnoreDifferences=true"), "{opts:?}");
    let ignore = s(&app, &["spec", "ignoreDifferences"])
        .as_sequence()
        .unwrap();
    let dep = ignore
        .iter()
        .find(|i| s(i, &["kind"]).as_str() == Some("Deployment"))
        .expect("Deployments are in ignoreDifferences");
    assert_eq!(s(dep, &["group"]).as_str(), Some("apps"));
    let managers: Vec<&str> = s(dep, &["managedFieldsManagers"])
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(managers, ["nuketown-operator", "nuketown-hall"]);
    // The request objects: the agent's request and the relay's decision.
    let cm = ignore
        .iter()
        .find(|i| s(i, &["kind"]).as_str() == Some("ConfigMap"))
        .expect("request ConfigMaps are in ignoreDifferences");
    let cm_managers: Vec<&str> = s(cm, &["managedFieldsManagers"])
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        cm_managers,
        [
            nuketown_operator_names::AGENT_MANAGER,
            nuketown_operator_names::HALL_MANAGER
        ]
    );
    let pointers: Vec<&str> = s(dep, &["jsonPointers"])
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for p in [
        "/spec/template/spec/nodeSelector",
        "/spec/template/spec/tolerations",
        "/metadata/annotations/nuketown.dev~1current-tier",
    ] {
        assert!(pointers.contains(&p), "{p} not ignored: {pointers:?}");
    }
    let jq = s(dep, &["jqPathExpressions"]).as_sequence().unwrap();
    assert!(jq.iter().any(|e| e
        .as_str()
        .is_some_and(|e| e.contains("\"agent\"") && e.ends_with(".resources"))));
}
