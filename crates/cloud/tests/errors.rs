//! Bad input is refused with the key that is wrong and the fix, every
//! problem at once. Messages are compared exactly: they are the interface.

use nuketown_cloud::{load, render, CloudError};
use nuketown_town::Format;

/// One agent, ada, on the cloud; `extra` continues its `[agents.ada.cloud]` table.
fn town(extra: &str) -> String {
    format!(
        "domain = \"example.org\"\n\
         [agents.ada]\nuid = 1100\npersist.directories = [\"dev\"]\npersist.files = [\".bash_history\"]\n\
         [agents.ada.cloud]\nenable = true\nimage = \"nix:0/nix/store/00000000000000000000000000000000-ada.tar\"\n{extra}"
    )
}

/// The error of loading `text` (town rules) or, when it loads, of rendering it (cloud rules).
fn error(text: &str) -> String {
    match load(text, Format::Toml, "town.toml") {
        Err(e) => e.to_string(),
        Ok(t) => render(&t, None).expect_err("must be refused").to_string(),
    }
}

/// A render refused for exactly these problems.
fn refused(text: &str, problems: &[&str]) {
    let mut want = String::from("the town cannot be rendered to Kubernetes:");
    for p in problems {
        want.push_str("\n  ");
        want.push_str(p);
    }
    assert_eq!(error(text), want);
}

#[test]
fn the_town_renders_when_nothing_is_wrong() {
    let t = load(&town(""), Format::Toml, "town.toml").unwrap();
    assert!(!render(&t, None).unwrap().is_empty());
}

#[test]
fn unknown_tier() {
    assert_eq!(
        error(&town("resources = \"huge\"\n")),
        "town.toml: the town is invalid:\n  agents.ada.cloud.resources: \"huge\" is not a tier; use \"small\", \"standard\", \"large\" or \"gpu\""
    );
}

#[test]
fn gpu_tier_without_gpu_settings() {
    assert_eq!(
        error(&town("resources = \"gpu\"\n")),
        "town.toml: the town is invalid:\n  agents.ada.cloud.gpu: the gpu tier needs gpu settings, e.g. gpu = { count = 1, nodeSelector = { \"cloud.google.com/gke-accelerator\" = \"nvidia-l4\" } }"
    );
}

#[test]
fn gpu_settings_without_the_gpu_tier() {
    refused(
        &town("gpu = { count = 1 }\n"),
        &["agents.ada.cloud.gpu: is set but resources is \"standard\"; set resources = \"gpu\" to use it, or remove gpu"],
    );
}

#[test]
fn bad_gpu_settings() {
    refused(
        &town("resources = \"gpu\"\ngpu = { count = 0, resource = \"gpu\", nodeSelector = { \"Accel_Type/x\" = \"l4\", \"cloud.google.com/gke-accelerator\" = \"nvidia l4\" }, tolerations = [\"-x\"] }\n"),
        &[
            "agents.ada.cloud.gpu.count: must be at least 1",
            "agents.ada.cloud.gpu.resource: \"gpu\" is not an extended resource name; write e.g. \"nvidia.com/gpu\" or \"amd.com/gpu\"",
            "agents.ada.cloud.gpu.nodeSelector.Accel_Type/x: \"Accel_Type/x\" is not a node label key; write e.g. \"cloud.google.com/gke-accelerator\"",
            "agents.ada.cloud.gpu.nodeSelector.cloud.google.com/gke-accelerator: \"nvidia l4\" is not a label value (at most 63 letters, digits, '-', '_' or '.')",
            "agents.ada.cloud.gpu.tolerations[0]: \"-x\" is not a taint key; write e.g. \"nvidia.com/gpu\"",
        ],
    );
}

#[test]
fn persist_path_outside_the_home() {
    let text = town("").replace(
        "persist.directories = [\"dev\"]",
        "persist.directories = [\"../ada-other\", \"/srv/data\"]",
    );
    assert_eq!(
        error(&text),
        "town.toml: the town is invalid:\n  \
         agents.ada.persist.directories[0]: \"../ada-other\" contains '..' and would escape the home; write a path inside the home\n  \
         agents.ada.persist.directories[1]: \"/srv/data\" is absolute; write it relative to the home, e.g. \"dev\" for ~/dev"
    );
}

#[test]
fn sizes_for_paths_that_are_not_persisted() {
    assert_eq!(
        error(&town("persist.sizes = { cache = \"5Gi\" }\n")),
        "town.toml: the town is invalid:\n  agents.ada.cloud.persist.sizes.cache: is not a persisted path of this agent; list it in persist.directories first"
    );
}

#[test]
fn names_kubernetes_cannot_take() {
    let text = town("namespace = \"Agents\"\n")
        .replace("[agents.ada]", "[agents.ada_lovelace]")
        .replace("[agents.ada.cloud]", "[agents.ada_lovelace.cloud]");
    assert_eq!(
        error(&text),
        "town.toml: the town is invalid:\n  \
         agents.ada_lovelace.cloud: agent name \"ada_lovelace\" is not a valid Kubernetes name (lowercase letters, digits and '-', at most 63); rename the agent or leave cloud.enable off\n  \
         agents.ada_lovelace.cloud.namespace: \"Agents\" is not a valid Kubernetes namespace"
    );
}

#[test]
fn namespaces_of_the_cluster() {
    refused(
        &town("namespace = \"kube-system\"\n"),
        &["agents.ada.cloud.namespace: \"kube-system\" belongs to the cluster; give the agents a namespace of their own, e.g. \"nuketown\""],
    );
}

#[test]
fn an_image_is_required() {
    let text = town("").replace(
        "image = \"nix:0/nix/store/00000000000000000000000000000000-ada.tar\"\n",
        "",
    );
    refused(
        &text,
        &["agents.ada.cloud.image: cloud.enable needs a container image: the nix-snapshotter reference the flake builds (e.g. \"nix:0/nix/store/…-nuketown-agent.tar\") or any image with /bin/sh"],
    );
    let text = town("").replace(
        "nix:0/nix/store/00000000000000000000000000000000-ada.tar",
        "ubuntu 24.04",
    );
    refused(&text, &["agents.ada.cloud.image: \"ubuntu 24.04\" contains whitespace; write one image reference"]);
}

#[test]
fn sizes_must_be_quantities() {
    refused(
        &town("persist.size = \"10 GB\"\npersist.sizes = { dev = \"0\" }\n"),
        &[
            "agents.ada.cloud.persist.size: \"10 GB\" is not a positive Kubernetes quantity; write e.g. \"10Gi\"",
            "agents.ada.cloud.persist.sizes.dev: \"0\" is not a positive Kubernetes quantity; write e.g. \"50Gi\"",
        ],
    );
}

#[test]
fn workload_identities_must_have_their_cloud_s_shape() {
    refused(
        &town("identity = { gcpServiceAccount = \"ada@gmail.com\", awsRoleArn = \"arn:aws:iam::1234:user/ada\", azureClientId = \"ada\" }\n"),
        &[
            "agents.ada.cloud.identity.gcpServiceAccount: \"ada@gmail.com\" is not a Google service account e-mail; write e.g. \"ada@my-project.iam.gserviceaccount.com\"",
            "agents.ada.cloud.identity.awsRoleArn: \"arn:aws:iam::1234:user/ada\" is not an IAM role ARN; write e.g. \"arn:aws:iam::123456789012:role/nuketown-ada\"",
            "agents.ada.cloud.identity.azureClientId: \"ada\" is not a managed identity client id; write the identity's UUID, e.g. \"0b5e7a9c-1d2f-4e3a-9b8c-7d6e5f4a3b2c\"",
        ],
    );
}

#[test]
fn egress_rules_are_networks_and_ports() {
    let e = error(&town(
        "[agents.ada.network]\negress = [{ cidr = \"github.com\", ports = [443] }, { cidr = \"10.0.0.0/8\", ports = [22, 0] }, { cidr = \"10.0.0.1/8\" }]\n",
    ));
    for want in [
        "agents.ada.network.egress[0].cidr: \"github.com\" is not an address or network; write e.g. \"10.0.0.0/8\", \"203.0.113.7\" or \"2001:db8::/32\"",
        "agents.ada.network.egress[1].ports[1]: 0 is not a port; use 1–65535, or list no ports for all of them",
        "agents.ada.network.egress[2].cidr: \"10.0.0.1/8\" has bits set after the first 8; write \"10.0.0.0/8\"",
    ] {
        assert!(e.contains(want), "{want}\nnot in:\n{e}");
    }
}

#[test]
fn a_host_name_cannot_be_a_network_policy() {
    refused(
        &town("[agents.ada.network]\negress = [{ host = \"github.com\", ports = [443] }]\n"),
        &["agents.ada.network.egress[0].host: \"github.com\": a NetworkPolicy cannot name hosts, only networks; write its addresses as cidr rules for a cloud agent (hosts resolve names, the cluster cannot)"],
    );
}

#[test]
fn the_old_cloud_egress_names_its_new_key() {
    let e = error(&town("egress = [{ cidr = \"10.0.0.0/8\" }]\n"));
    assert!(
        e.contains("agents.ada.cloud.egress: `cloud.egress` moved to `agents.ada.network.egress`"),
        "{e}"
    );
}

#[test]
fn tiers_to_ask_for_and_the_idle_timeout() {
    let e = error(&town(
        "resources = \"large\"\nscaling = { maxResources = \"standard\", autoApprove = [\"huge\"], idleTimeout = \"soon\" }\n",
    ));
    for want in [
        "agents.ada.cloud.scaling.maxResources: \"standard\" is below the declared tier \"large\"",
        "agents.ada.cloud.scaling.autoApprove[0]: \"huge\" is not a tier",
        "agents.ada.cloud.scaling.idleTimeout: \"soon\" is not a duration; write e.g. \"90s\", \"30m\", \"1h\" or \"1h30m\"",
    ] {
        assert!(e.contains(want), "{want}\nnot in:\n{e}");
    }
    let e = error(&town("scaling = { maxResources = \"gpu\" }\n"));
    assert!(
        e.contains("agents.ada.cloud.gpu: maxResources = \"gpu\" needs gpu settings"),
        "{e}"
    );
    let e = error(&town(
        "scaling = { maxResources = \"large\", autoApprove = [\"gpu\"] }\n",
    ));
    assert!(
        e.contains(
            "agents.ada.cloud.scaling.autoApprove[0]: \"gpu\" is above maxResources \"large\""
        ),
        "{e}"
    );
    // The quota's old key names its new place.
    let e = error(&town("scaling.maxResources = { cpu = \"8\" }\n"));
    assert!(
        e.contains("the namespace quota moved to `agents.ada.cloud.scaling.quota`"),
        "{e}"
    );
}

#[test]
fn an_agent_that_may_grow_is_counted_at_its_largest_tier() {
    refused(
        &town("resources = \"small\"\nscaling = { maxResources = \"large\", quota = { cpu = \"2\" } }\n"),
        &["agents.ada.cloud.scaling.quota.cpu: \"2\" is less than the 4 CPUs (ada large: 4) the agents of namespace \"nuketown\" need; raise it, or choose smaller tiers or sizes"],
    );
}

#[test]
fn quota_keys_values() {
    refused(
        &town("scaling = { quota = { gpus = \"1\", cpu = \"lots\" } }\n"),
        &[
            "agents.ada.cloud.scaling.quota.cpu: \"lots\" is not a positive Kubernetes quantity; write e.g. \"8\"",
            "agents.ada.cloud.scaling.quota.gpus: \"gpus\" is not a ResourceQuota resource; use cpu, memory, pods, persistentvolumeclaims, requests.storage, requests.ephemeral-storage, requests.nvidia.com/gpu, count/<resource>, …",
        ],
    );
}

#[test]
fn a_quota_smaller_than_the_agents_need() {
    refused(
        &town("resources = \"large\"\nscaling.quota = { cpu = \"2\", \"limits.memory\" = \"4Gi\", pods = \"1\", \"requests.storage\" = \"10Gi\" }\n"),
        &[
            "agents.ada.cloud.scaling.quota.cpu: \"2\" is less than the 4 CPUs (ada large: 4) the agents of namespace \"nuketown\" need; raise it, or choose smaller tiers or sizes",
            "agents.ada.cloud.scaling.quota.limits.memory: \"4Gi\" is less than the 8Gi of memory (ada large: 8Gi) the agents of namespace \"nuketown\" need; raise it, or choose smaller tiers or sizes",
            "agents.ada.cloud.scaling.quota.requests.storage: \"10Gi\" is less than the 11Gi of volumes the agents of namespace \"nuketown\" need; raise it, or choose smaller tiers or sizes",
        ],
    );
}

#[test]
fn agents_sharing_a_namespace_share_its_quota() {
    let text = format!(
        "{}[agents.vox]\nuid = 1101\n[agents.vox.cloud]\nenable = true\nimage = \"busybox\"\nscaling.quota = {{ pods = \"3\" }}\n",
        town("scaling.quota = { pods = \"2\" }\n")
    );
    refused(
        &text,
        &["agents.vox.cloud.scaling.quota: differs from ada's; the agents of namespace \"nuketown\" share one quota, so declare it on one of them (or the same on each)"],
    );
}

#[test]
fn extra_secrets_must_be_secret_keys() {
    let text = town("").replace(
        "[agents.ada.cloud]",
        "secrets.extraSecrets.\"api token\" = { path = \".config/x/token\" }\nsecrets.extraSecrets.id_ed25519 = { path = \"k\" }\n[agents.ada.cloud]",
    );
    refused(
        &text,
        &[
            "agents.ada.secrets.extraSecrets.api token: \"api token\" cannot be a key of the agent's Kubernetes Secret (letters, digits, '-', '_' and '.', not \"id_ed25519\" or \"id_ed25519.pub\"); rename it",
            "agents.ada.secrets.extraSecrets.id_ed25519: \"id_ed25519\" cannot be a key of the agent's Kubernetes Secret (letters, digits, '-', '_' and '.', not \"id_ed25519\" or \"id_ed25519.pub\"); rename it",
        ],
    );
}

#[test]
fn every_problem_of_every_agent_at_once() {
    let text = format!(
        "{}[agents.vox]\nuid = 1101\n[agents.vox.cloud]\nenable = true\nresources = \"small\"\n",
        town("[agents.ada.network]\negress = [{ host = \"github.com\" }]\n")
    );
    match load(&text, Format::Toml, "town.toml").map(|t| render(&t, None)) {
        Ok(Err(e @ CloudError::Invalid(_))) => {
            let keys: Vec<&str> = e.problems().iter().map(|p| p.key.as_str()).collect();
            assert_eq!(
                keys,
                [
                    "agents.ada.network.egress[0].host",
                    "agents.vox.cloud.image"
                ]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_domain_must_be_declared() {
    let text = town("").replace("domain = \"example.org\"\n", "");
    assert_eq!(
        error(&text),
        "town.toml: domain: not set; a cloud render must not depend on the machine that renders it (the default is <hostname>.local), so declare it, e.g. domain = \"agents.example.org\""
    );
    // A town without cloud agents needs no domain (and renders nothing).
    let host_only = text.replace("enable = true", "enable = false");
    let t = load(&host_only, Format::Toml, "town.toml").unwrap();
    assert!(render(&t, None).unwrap().is_empty());
}

#[test]
fn the_revision_is_one_line() {
    let t = load(&town(""), Format::Toml, "town.toml").unwrap();
    assert_eq!(
        render(&t, Some("abc\ndef")).unwrap_err().to_string(),
        "--revision: \"abc\\ndef\" must be one line of printable text, e.g. a git commit id"
    );
}

#[test]
fn identity_files_must_fit_in_a_config_map() {
    let prompt = "x".repeat(300_000);
    let text = town("").replace(
        "[agents.ada.cloud]",
        &format!("claudeCode.extraPrompt = \"{prompt}\"\n[agents.ada.cloud]"),
    );
    refused(
        &text,
        &["agents.ada.claudeCode: the identity files come to 1204908 bytes, more than a Kubernetes ConfigMap holds (1048576); shorten extraPrompt (it is in every prompt file) or extraAgents"],
    );
}
