//! Offline check of the rendered YAML against the real Kubernetes OpenAPI
//! schemas, with `kubernetes-validate` (PyPI), which bundles them: every
//! object must validate strictly (no unknown fields) for Kubernetes 1.33,
//! the version k8s-openapi is built for, and 1.37, the newest bundled.
//!
//! What this proves: field names, types and required fields as the API
//! server's schema states them. What it cannot: server-side rules (name
//! formats, immutable fields, admission such as Pod Security), which only a
//! running API server checks; there is none here (docs/cloud.md).
//!
//! Install: `python3 -m venv /opt/kubernetes-validate-venv &&
//! /opt/kubernetes-validate-venv/bin/pip install kubernetes-validate==1.37.0`;
//! or point NUKETOWN_KUBERNETES_VALIDATE at the program.

use std::path::{Path, PathBuf};
use std::process::Command;

use nuketown_cloud::{load, render_yaml};
use nuketown_town::Format;

const EXAMPLE: &str = include_str!("../../../examples/cloud.toml");
const VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];

fn validator() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NUKETOWN_KUBERNETES_VALIDATE") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from("/opt/kubernetes-validate-venv/bin/kubernetes-validate");
    if venv.is_file() {
        return Some(venv);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubernetes-validate"))
        .find(|p| p.is_file())
}

/// Validate `file` strictly against each version; the tool's output on failure.
fn validate(tool: &Path, file: &Path, version: &str) -> Result<String, String> {
    let out = Command::new(tool)
        .args(["--strict", "-k", version])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", tool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// A town that uses every cloud feature: all tiers, a GPU, egress rules,
/// the three identities, files, odd paths, extra secrets, a declared quota.
const EVERYTHING: &str = r#"
domain = "example.org"
humanUser = "josh"

[agents.ada]
uid = 1100
persist.directories = ["dev", ".cache", "cache", "a very long directory name that goes on and on and on for a while"]
persist.files = [".bash_history", ".config/gh/hosts.yml"]
secrets.extraSecrets.token = { path = ".config/x/token" }
claudeCode.enable = true
claudeCode.extraAgents.reviewer = "---\nname: reviewer\n---\nReview."

[agents.ada.cloud]
enable = true
resources = "large"
image = "nix:0/nix/store/00000000000000000000000000000000-ada.tar"
command = ["claude", "--verbose"]
persist.sizes = { dev = "100Gi", ".bash_history" = "100Mi" }
persist.storageClass = "premium-rwo"
identity = { gcpServiceAccount = "ada@p.iam.gserviceaccount.com", awsRoleArn = "arn:aws:iam::123456789012:role/ada", azureClientId = "0b5e7a9c-1d2f-4e3a-9b8c-7d6e5f4a3b2c" }
scaling = { maxResources = "large", autoApprove = ["large"], quota = { cpu = "16", memory = "64Gi", "requests.nvidia.com/gpu" = "2", "count/deployments.apps" = "4" }, idleTimeout = "1h30m" }

[agents.ada.network]
egress = [{ cidr = "0.0.0.0/0", ports = [443, 80] }, { cidr = "2001:db8::/32" }]

[agents.gus]
uid = 1101
[agents.gus.cloud]
enable = true
resources = "gpu"
image = "registry.example.org/gus@sha256:0000000000000000000000000000000000000000000000000000000000000000"
gpu = { count = 2, resource = "nvidia.com/gpu", nodeSelector = { "cloud.google.com/gke-accelerator" = "nvidia-l4" }, tolerations = ["dedicated"] }

[agents.kit]
uid = 1102
[agents.kit.cloud]
enable = true
resources = "small"
namespace = "tiny"
image = "busybox:1.36"
[agents.kit.chat]
enable = true
homeserver = "https://matrix.example.org"
userId = "@kit:example.org"
"#;

#[test]
fn offline_schema_check_with_kubernetes_validate() {
    let Some(tool) = validator() else {
        eprintln!(
            "\n*** SKIPPED offline_schema_check_with_kubernetes_validate: kubernetes-validate is not installed.\n\
             *** Install it: python3 -m venv /opt/kubernetes-validate-venv && /opt/kubernetes-validate-venv/bin/pip install kubernetes-validate==1.37.0\n"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // sops-kms: the render reads only the file's structure (keys in clear,
    // the sops table), which this file has.
    let sops_file = dir.path().join("secrets.yaml");
    std::fs::write(
        &sops_file,
        "kit:\n    ssh-key: ENC[AES256_GCM,data:AA==,type:str]\n    ssh-key.pub: ENC[AES256_GCM,data:AA==,type:str]\n    matrix-password: ENC[AES256_GCM,data:AA==,type:str]\nsops:\n    mac: ENC[AES256_GCM,data:AA==,type:str]\n",
    )
    .unwrap();
    let sops_kms = EVERYTHING.replace(
        "namespace = \"tiny\"\n",
        &format!(
            "namespace = \"tiny\"\nsecrets = \"sops-kms\"\nsopsFile = \"{}\"\nidentity.awsRoleArn = \"arn:aws:iam::123456789012:role/kit\"\n",
            sops_file.display()
        ),
    );
    for (name, text) in [
        ("example", EXAMPLE),
        ("everything", EVERYTHING),
        ("sops-kms", sops_kms.as_str()),
    ] {
        let town = load(text, Format::Toml, name).unwrap();
        let yaml = render_yaml(&town, Some("4b825dc642cb6eb9a060e54bf8d69288fbee4904")).unwrap();
        let docs = yaml.matches("\n---\n").count() + 1;
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &yaml).unwrap();
        for version in VERSIONS {
            let report = validate(&tool, &file, version)
                .unwrap_or_else(|e| panic!("{name} against {version}:\n{e}"));
            assert_eq!(
                report.matches(" passed ").count(),
                docs,
                "{name} against {version}: every document checked\n{report}"
            );
        }
    }
}

#[test]
fn offline_schema_check_with_kubernetes_validate_refuses_a_broken_manifest() {
    // The control: the same check must fail on a manifest with a wrong type,
    // or the test above would prove nothing.
    let Some(tool) = validator() else {
        eprintln!("\n*** SKIPPED offline_schema_check_with_kubernetes_validate_refuses_a_broken_manifest: kubernetes-validate is not installed\n");
        return;
    };
    let town = load(EXAMPLE, Format::Toml, "example").unwrap();
    let yaml = render_yaml(&town, None)
        .unwrap()
        .replacen("replicas: 1", "replicas: one", 1);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, yaml).unwrap();
    let err =
        validate(&tool, &file, VERSIONS[0]).expect_err("a string for replicas must not validate");
    assert!(err.contains("spec.replicas"), "{err}");
}

/// The operator's and the relay's own manifests (deploy/operator) validate
/// strictly too, and the operator's ConfigMap holds pools the operator accepts
/// (checked in crates/operator).
#[test]
fn the_operator_and_relay_manifests_validate() {
    let Some(tool) = validator() else {
        eprintln!("SKIPPED: kubernetes-validate is not installed (see this file's header)");
        return;
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/operator");
    for name in ["operator.yaml", "relay-rbac.yaml"] {
        for version in VERSIONS {
            if let Err(e) = validate(&tool, &dir.join(name), version) {
                panic!("{name} does not validate for {version}:\n{e}");
            }
        }
    }
}
