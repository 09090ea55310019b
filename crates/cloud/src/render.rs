//! The typed Kubernetes objects of a checked town.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar,
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, ResourceQuota, ResourceQuotaSpec, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, ServiceAccount, Toleration, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use nuketown_town::{Signing, Town};

use crate::laydown::sops::SOPS_KEY;
use crate::laydown::{self, Placed};
use crate::names::{config_key, fnv1a};
use crate::plan::{AgentPlan, NamespacePlan, Plan, Tier, INIT, SSH_PUB, TIERS};
use crate::quantity::Milli;
use crate::Manifest;

/// Label naming the agent an object belongs to; also the pod selector.
pub const AGENT_LABEL: &str = "nuketown.dev/agent";
/// Annotation carrying the town revision (`--revision`) on every object.
pub const REVISION_ANNOTATION: &str = "nuketown.dev/town-revision";
/// Pod-template annotation: a hash of everything the pod is made of, so a pod
/// starts a new round exactly when its agent's declaration changed.
pub const DECLARATION_ANNOTATION: &str = "nuketown.dev/declaration";
/// Annotation on a volume claim naming its home-relative path.
pub const PATH_ANNOTATION: &str = "nuketown.dev/persist-path";
/// Annotation carrying `scaling.idleTimeout`.
pub const IDLE_ANNOTATION: &str = "nuketown.dev/idle-timeout";
/// Deployment annotation: the declared tier (`cloud.resources`), where an idle agent returns.
pub const TIER_ANNOTATION: &str = "nuketown.dev/tier";
/// Deployment annotation: the largest tier the agent may be moved to (`scaling.maxResources`).
pub const MAX_TIER_ANNOTATION: &str = "nuketown.dev/max-tier";
/// Deployment annotation: tiers granted without a human (`scaling.autoApprove`), comma-separated.
pub const AUTO_APPROVE_ANNOTATION: &str = "nuketown.dev/auto-approve";
/// An agent's request object is named `<agent>` + this.
pub const REQUESTS_SUFFIX: &str = "-requests";
/// The label on request objects (the relay watches by it).
pub const REQUESTS_LABEL: &str = "nuketown.dev/requests";
/// Argo CD: never prune or delete persisted data with the application.
const KEEP: (&str, &str) = (
    "argocd.argoproj.io/sync-options",
    "Prune=false,Delete=false",
);

/// Where the lay-down container finds the ConfigMap, the Secret and the file volumes.
pub const IDENTITY_DIR: &str = "/run/nuketown/identity";
/// See [`IDENTITY_DIR`].
pub const KEYS_DIR: &str = "/run/nuketown/keys";
/// See [`IDENTITY_DIR`].
pub const PERSIST_DIR: &str = "/run/nuketown/persist";
/// The memory-backed volume the sops step decrypts the secrets into.
const KEYS_SIZE: Milli = Milli::units(16 << 20);

fn labels(agent: Option<&str>, component: &str) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "nuketown".to_string(),
        ),
        (
            "app.kubernetes.io/part-of".to_string(),
            "nuketown".to_string(),
        ),
    ]);
    if let Some(a) = agent {
        l.insert(AGENT_LABEL.into(), a.into());
    }
    l
}

fn selector(agent: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(AGENT_LABEL.to_string(), agent.to_string())])
}

struct Meta<'a> {
    revision: Option<&'a str>,
}

impl Meta<'_> {
    fn object(
        &self,
        name: &str,
        namespace: Option<&str>,
        labels: BTreeMap<String, String>,
        mut annotations: BTreeMap<String, String>,
    ) -> ObjectMeta {
        if let Some(rev) = self.revision {
            annotations.insert(REVISION_ANNOTATION.into(), rev.into());
        }
        ObjectMeta {
            name: Some(name.into()),
            namespace: namespace.map(str::to_string),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        }
    }
}

fn q(s: String) -> Quantity {
    Quantity(s)
}

/// Every manifest of the plan, in a stable order: namespaces, the request
/// objects' admission policy (when an agent may ask), then per namespace its quota and limits and, agent by agent, the ServiceAccount,
/// ConfigMap, volume claims, NetworkPolicy and Deployment.
pub fn manifests(town: &Town, plan: &Plan<'_>, revision: Option<&str>) -> Vec<Manifest> {
    let meta = Meta { revision };
    let mut out = Vec::with_capacity(plan.namespaces.len() * 3 + plan.agents.len() * 6);
    for ns in &plan.namespaces {
        out.push(Manifest::Namespace(namespace(&meta, ns)));
    }
    // Before any agent gets a token that may write its request object, the
    // policy that keeps that token to the request itself.
    if plan
        .agents
        .iter()
        .any(|a| a.agent.cloud.scaling.max_resources.is_some())
    {
        request_policy(&mut out, &meta);
    }
    // A town without its agents: each agent's identity is projected from a
    // copy holding only that agent, so a thousand agents cost a thousand small copies.
    let base = Town {
        agents: BTreeMap::new(),
        ..town_shell(town)
    };
    for ns in &plan.namespaces {
        out.push(Manifest::ResourceQuota(quota(&meta, ns)));
        out.push(Manifest::LimitRange(limit_range(&meta, ns)));
        for &i in &ns.agents {
            agent(&mut out, &meta, &base, &plan.agents[i]);
        }
    }
    out
}

fn town_shell(town: &Town) -> Town {
    Town {
        enable: town.enable,
        domain: town.domain.clone(),
        agents_dir: town.agents_dir.clone(),
        persist_dir: town.persist_dir.clone(),
        btrfs_device: town.btrfs_device.clone(),
        btrfs_subvolume: town.btrfs_subvolume.clone(),
        sops_file: town.sops_file.clone(),
        base_packages: town.base_packages.clone(),
        project_dirs: town.project_dirs.clone(),
        human_user: town.human_user.clone(),
        human_name: town.human_name.clone(),
        human_email: town.human_email.clone(),
        human_as_agents: town.human_as_agents,
        hall: town.hall.clone(),
        rebuild: town.rebuild.clone(),
        rooms: BTreeMap::new(),
        agents: BTreeMap::new(),
        shared_dirs: BTreeMap::new(),
        cloud: town.cloud.clone(),
    }
}

fn namespace(meta: &Meta<'_>, ns: &NamespacePlan) -> Namespace {
    let mut l = labels(None, "namespace");
    // The agents' pods meet the restricted Pod Security Standard; hold the namespace to it.
    l.insert(
        "pod-security.kubernetes.io/enforce".into(),
        "restricted".into(),
    );
    l.insert(
        "pod-security.kubernetes.io/enforce-version".into(),
        "latest".into(),
    );
    // Deleting the namespace would delete the persisted volumes in it.
    let a = BTreeMap::from([(KEEP.0.to_string(), KEEP.1.to_string())]);
    Namespace {
        metadata: meta.object(&ns.name, None, l, a),
        ..Default::default()
    }
}

fn quota(meta: &Meta<'_>, ns: &NamespacePlan) -> ResourceQuota {
    ResourceQuota {
        metadata: meta.object(
            "nuketown",
            Some(&ns.name),
            labels(None, "namespace"),
            BTreeMap::new(),
        ),
        spec: Some(ResourceQuotaSpec {
            hard: Some(
                ns.quota
                    .iter()
                    .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn limit_range(meta: &Meta<'_>, ns: &NamespacePlan) -> LimitRange {
    let small = TIERS[0];
    let cpu_mem = |cpu: Milli, memory: Milli| {
        Some(BTreeMap::from([
            ("cpu".to_string(), q(cpu.cpu())),
            ("memory".to_string(), q(memory.bytes())),
        ]))
    };
    let mut limits = vec![LimitRangeItem {
        type_: "Container".into(),
        max: cpu_mem(ns.max_cpu, ns.max_memory),
        default: cpu_mem(small.cpu, small.memory),
        default_request: cpu_mem(small.cpu, small.memory),
        ..Default::default()
    }];
    if ns.max_volume > Milli(0) {
        limits.push(LimitRangeItem {
            type_: "PersistentVolumeClaim".into(),
            max: Some(BTreeMap::from([(
                "storage".to_string(),
                q(ns.max_volume.bytes()),
            )])),
            ..Default::default()
        });
    }
    LimitRange {
        metadata: meta.object(
            "nuketown",
            Some(&ns.name),
            labels(None, "namespace"),
            BTreeMap::new(),
        ),
        spec: Some(LimitRangeSpec { limits }),
    }
}

fn agent(out: &mut Vec<Manifest>, meta: &Meta<'_>, base: &Town, a: &AgentPlan<'_>) {
    let name = a.name;
    let ns = Some(a.agent.cloud.namespace.as_str());
    let cloud = &a.agent.cloud;

    // ServiceAccount: the agent's own, carrying its workload identity.
    let mut sa_labels = labels(Some(name), "agent");
    let mut sa_ann = BTreeMap::new();
    if let Some(gsa) = &cloud.identity.gcp_service_account {
        sa_ann.insert("iam.gke.io/gcp-service-account".to_string(), gsa.clone());
    }
    if let Some(arn) = &cloud.identity.aws_role_arn {
        sa_ann.insert("eks.amazonaws.com/role-arn".to_string(), arn.clone());
    }
    if let Some(client) = &cloud.identity.azure_client_id {
        sa_ann.insert(
            "azure.workload.identity/client-id".to_string(),
            client.clone(),
        );
        sa_labels.insert(
            "azure.workload.identity/use".to_string(),
            "true".to_string(),
        );
    }
    // An agent that may ask for a bigger tier gets an API token whose only
    // permission is its own request object; any other agent gets no token
    // (the identity webhooks mount their own).
    let asks = cloud.scaling.max_resources.is_some();
    out.push(Manifest::ServiceAccount(ServiceAccount {
        metadata: meta.object(name, ns, sa_labels, sa_ann),
        automount_service_account_token: Some(asks),
        ..Default::default()
    }));
    if asks {
        request_object(out, meta, name, &cloud.namespace);
    }

    // ConfigMap: the identity projections. Inside the cluster there is no town
    // hall, so the prompt must say the agent has no root.
    let mut town = base.clone();
    let mut declared = a.agent.clone();
    declared.sudo.enable = false;
    town.agents.insert(name.to_string(), declared);
    let identity = town.identity(name);
    let mut data = BTreeMap::new();
    let mut placed = Vec::new();
    for p in town.projections(name) {
        let mut key = config_key(&p.path);
        let mut n = 2;
        while data.contains_key(&key) {
            key = format!("{}-{n}", config_key(&p.path));
            n += 1;
        }
        data.insert(key.clone(), p.contents);
        placed.push(Placed {
            key,
            path: p.path,
            mode: p.mode,
        });
    }
    data.insert("gitconfig".into(), identity.gitconfig(None));
    let signed = identity.signing;
    if signed {
        data.insert(
            "gitconfig-signed".into(),
            identity.gitconfig(Some(&Signing::Ssh(format!(".ssh/{SSH_PUB}")))),
        );
    }
    if let Some(chat) = &a.chat {
        data.insert(
            nuketown_town::chat::POD_CHAT.into(),
            serde_json::to_string_pretty(chat).expect("a bridge's declaration serialises"),
        );
    }
    let script = laydown::script(a, &placed, signed, &identity.email);
    if let Some(sops) = &a.sops {
        // Ciphertext: only the KMS, through the pod's identity, opens it.
        data.insert(SOPS_KEY.into(), sops.text.to_string());
    }
    out.push(Manifest::ConfigMap(ConfigMap {
        metadata: meta.object(name, ns, labels(Some(name), "identity"), BTreeMap::new()),
        data: Some(data.clone()),
        ..Default::default()
    }));

    // Volume claims, one per persisted path.
    for v in &a.volumes {
        let ann = BTreeMap::from([
            (PATH_ANNOTATION.to_string(), v.path.clone()),
            (KEEP.0.to_string(), KEEP.1.to_string()),
        ]);
        out.push(Manifest::PersistentVolumeClaim(Box::new(
            PersistentVolumeClaim {
                metadata: meta.object(&v.claim, ns, labels(Some(name), "persist"), ann),
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: cloud.persist.storage_class.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            q(v.size.bytes()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )));
    }

    out.push(Manifest::NetworkPolicy(network_policy(meta, a)));

    // The pod.
    let home = identity.home.to_string_lossy().into_owned();
    let restricted = SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..Default::default()
    };
    let env = |pairs: &[(&str, &str)]| -> Option<Vec<EnvVar>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| EnvVar {
                    name: k.to_string(),
                    value: Some(v.to_string()),
                    ..Default::default()
                })
                .collect(),
        )
    };
    let mount = |volume: &str, path: String, sub: Option<String>, ro: bool| VolumeMount {
        name: volume.into(),
        mount_path: path,
        sub_path: sub,
        read_only: ro.then_some(true),
        ..Default::default()
    };
    let pull = (a.image.starts_with("nix:") || a.image.contains("@sha256:"))
        .then(|| "IfNotPresent".to_string());

    let mut init_mounts = vec![
        mount("home", home.clone(), None, false),
        mount("identity", IDENTITY_DIR.into(), None, true),
        mount("keys", KEYS_DIR.into(), None, true),
    ];
    let mut mounts = vec![
        mount("home", home.clone(), None, false),
        mount("tmp", "/tmp".into(), None, false),
    ];
    // The chat bridge reads its declaration and the Matrix password itself.
    if a.chat.is_some() {
        mounts.push(mount("identity", IDENTITY_DIR.into(), None, true));
        mounts.push(mount("keys", KEYS_DIR.into(), None, true));
    }
    let mut volumes = vec![
        Volume {
            name: "home".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(q(a.tier.scratch.bytes())),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "identity".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.into(),
                default_mode: Some(0o444),
                ..Default::default()
            }),
            ..Default::default()
        },
        match a.sops {
            // Decrypted secrets live in memory only, for the pod's life.
            Some(_) => Volume {
                name: "keys".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    size_limit: Some(q(KEYS_SIZE.bytes())),
                }),
                ..Default::default()
            },
            None => Volume {
                name: "keys".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(name.into()),
                    optional: Some(true),
                    default_mode: Some(0o400),
                    ..Default::default()
                }),
                ..Default::default()
            },
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    for v in &a.volumes {
        // Claim names are DNS labels, so they serve as the pod's volume names too.
        let vol = v.claim.clone();
        let target = format!("{home}/{}", v.path);
        // The lay-down reaches every volume outside the home (mounting it in
        // the home would make its parent directories root's), and writes the
        // files that belong in it there.
        init_mounts.push(mount(
            &vol,
            format!("{PERSIST_DIR}/{}", v.claim),
            None,
            false,
        ));
        let sub = v.file.then(|| laydown::file_name(&v.path));
        mounts.push(mount(&vol, target, sub, false));
        volumes.push(Volume {
            name: vol,
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: v.claim.clone(),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    // Parents before children: the home before what is mounted into it.
    mounts.sort_by(|x, y| x.mount_path.cmp(&y.mount_path));
    init_mounts.sort_by(|x, y| x.mount_path.cmp(&y.mount_path));

    let mut main_resources = tier_resources(&a.tier);
    let mut node_selector = None;
    let mut tolerations = None;
    if let Some(gpu) = &cloud.gpu {
        for side in [&mut main_resources.requests, &mut main_resources.limits] {
            side.get_or_insert_with(BTreeMap::new)
                .insert(gpu.resource.clone(), q(gpu.count.to_string()));
        }
        node_selector = (!gpu.node_selector.is_empty()).then(|| gpu.node_selector.clone());
        let mut keys: Vec<&String> = gpu.tolerations.iter().chain([&gpu.resource]).collect();
        keys.sort();
        keys.dedup();
        tolerations = Some(
            keys.into_iter()
                .map(|k| Toleration {
                    key: Some(k.clone()),
                    operator: Some("Exists".into()),
                    ..Default::default()
                })
                .collect(),
        );
    }

    let user = name;
    let mut agent_env = vec![
        ("HOME", home.as_str()),
        ("USER", user),
        ("LOGNAME", user),
        ("NUKETOWN_AGENT", user),
    ];
    if let Some(t) = &cloud.scaling.idle_timeout {
        agent_env.push(("NUKETOWN_IDLE_TIMEOUT", t));
    }
    // With chat, the pod runs the agent's bridge, which starts the backend
    // for each message (`nuketown-chat AGENT --pod`, docs/cloud.md).
    let command = match &a.chat {
        Some(_) => {
            agent_env.push(("NUKETOWN_IDENTITY", IDENTITY_DIR));
            agent_env.push(("NUKETOWN_KEYS", KEYS_DIR));
            Some(vec!["nuketown-chat".into(), name.into(), "--pod".into()])
        }
        None => (!cloud.command.is_empty()).then(|| cloud.command.clone()),
    };
    let attach = a.chat.is_none().then_some(true);
    let uid = i64::from(a.agent.uid);
    let mut spec = PodSpec {
        service_account_name: Some(name.into()),
        automount_service_account_token: Some(cloud.scaling.max_resources.is_some()),
        enable_service_links: Some(false),
        hostname: Some(name.into()),
        security_context: Some(PodSecurityContext {
            run_as_user: Some(uid),
            run_as_group: Some(uid),
            fs_group: Some(uid),
            fs_group_change_policy: Some("OnRootMismatch".into()),
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        node_selector,
        tolerations,
        init_containers: Some(
            a.sops
                .as_ref()
                .map(|sops| Container {
                    name: "secrets".into(),
                    image: Some(a.image.into()),
                    image_pull_policy: pull.clone(),
                    command: Some(vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        laydown::sops::script(name, sops),
                    ]),
                    env: env(&[
                        ("HOME", "/tmp"),
                        ("NUKETOWN_IDENTITY", IDENTITY_DIR),
                        ("NUKETOWN_KEYS", KEYS_DIR),
                    ]),
                    resources: Some(tier_resources(&INIT)),
                    security_context: Some(restricted.clone()),
                    volume_mounts: Some(vec![
                        mount("identity", IDENTITY_DIR.into(), None, true),
                        mount("keys", KEYS_DIR.into(), None, false),
                        mount("tmp", "/tmp".into(), None, false),
                    ]),
                    ..Default::default()
                })
                .into_iter()
                .chain([Container {
                    name: "home".into(),
                    image: Some(a.image.into()),
                    image_pull_policy: pull.clone(),
                    command: Some(vec!["/bin/sh".into(), "-c".into(), script]),
                    env: env(&[
                        ("HOME", home.as_str()),
                        ("NUKETOWN_IDENTITY", IDENTITY_DIR),
                        ("NUKETOWN_KEYS", KEYS_DIR),
                        ("NUKETOWN_PERSIST", PERSIST_DIR),
                    ]),
                    resources: Some(tier_resources(&INIT)),
                    security_context: Some(restricted.clone()),
                    volume_mounts: Some(init_mounts),
                    ..Default::default()
                }])
                .collect(),
        ),
        containers: vec![Container {
            name: "agent".into(),
            image: Some(a.image.into()),
            image_pull_policy: pull,
            command,
            working_dir: Some(home.clone()),
            env: env(&agent_env),
            resources: Some(main_resources),
            security_context: Some(restricted),
            // `kubectl attach -it deploy/NAME` is the cloud's portal; a
            // bridge's pod is entered with `kubectl exec -it … -- sh`.
            stdin: attach,
            tty: attach,
            volume_mounts: Some(mounts),
            ..Default::default()
        }],
        volumes: Some(volumes),
        ..Default::default()
    };
    spec.volumes
        .as_mut()
        .expect("set above")
        .sort_by(|x, y| x.name.cmp(&y.name));

    let digest = serde_json::to_vec(&(&spec, &data)).expect("manifests serialise");
    let mut pod_labels = selector(name);
    if cloud.identity.azure_client_id.is_some() {
        pod_labels.insert("azure.workload.identity/use".into(), "true".into());
    }
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(BTreeMap::from([(
                DECLARATION_ANNOTATION.to_string(),
                format!("{:016x}", fnv1a(&digest)),
            )])),
            ..Default::default()
        }),
        spec: Some(spec),
    };

    let mut dep_ann = BTreeMap::new();
    if let Some(t) = &cloud.scaling.idle_timeout {
        dep_ann.insert(IDLE_ANNOTATION.to_string(), t.clone());
    }
    // What the scaling operator may do with this agent; the tier it is at
    // now is the operator's (docs/scaling.md), not git's.
    if let Some(max) = &cloud.scaling.max_resources {
        dep_ann.insert(TIER_ANNOTATION.to_string(), cloud.resources.clone());
        dep_ann.insert(MAX_TIER_ANNOTATION.to_string(), max.clone());
        if !cloud.scaling.auto_approve.is_empty() {
            dep_ann.insert(
                AUTO_APPROVE_ANNOTATION.to_string(),
                cloud.scaling.auto_approve.join(","),
            );
        }
    }
    out.push(Manifest::Deployment(Box::new(Deployment {
        metadata: meta.object(name, ns, labels(Some(name), "agent"), dep_ann),
        spec: Some(DeploymentSpec {
            // One agent is one pod: a second would be a second agent with the same name.
            replicas: Some(1),
            // Never two pods at once, so a ReadWriteOnce volume is never attached twice.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..Default::default()
            }),
            revision_history_limit: Some(3),
            selector: LabelSelector {
                match_labels: Some(selector(name)),
                ..Default::default()
            },
            template,
            ..Default::default()
        }),
        ..Default::default()
    })));
}

/// What a pod of tier `t` requests and is limited to (alike: Guaranteed QoS).
pub fn tier_resources(t: &Tier) -> ResourceRequirements {
    let m = BTreeMap::from([
        ("cpu".to_string(), q(t.cpu.cpu())),
        ("ephemeral-storage".to_string(), q(t.scratch.bytes())),
        ("memory".to_string(), q(t.memory.bytes())),
    ]);
    ResourceRequirements {
        limits: Some(m.clone()),
        requests: Some(m),
        ..Default::default()
    }
}

fn network_policy(meta: &Meta<'_>, a: &AgentPlan<'_>) -> NetworkPolicy {
    let egress_policy = &a.agent.network.egress;
    let rules = egress_policy.rules();
    let ports = |list: &[u16], protocols: &[&str]| -> Option<Vec<NetworkPolicyPort>> {
        (!list.is_empty()).then(|| {
            let mut sorted = list.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            sorted
                .iter()
                .flat_map(|p| {
                    protocols.iter().map(move |proto| NetworkPolicyPort {
                        protocol: Some(proto.to_string()),
                        port: Some(IntOrString::Int(i32::from(*p))),
                        ..Default::default()
                    })
                })
                .collect()
        })
    };
    let egress = if !egress_policy.restricted() {
        // `network.egress = "all"`: all egress.
        vec![NetworkPolicyEgressRule::default()]
    } else {
        // An allow-list still resolves names through the cluster DNS.
        let mut v = vec![NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "kubernetes.io/metadata.name".to_string(),
                        "kube-system".to_string(),
                    )])),
                    ..Default::default()
                }),
                pod_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "k8s-app".to_string(),
                        "kube-dns".to_string(),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ports: ports(&[53], &["TCP", "UDP"]),
        }];
        let block = |cidr: &str, p: &[u16], protocols: &[&str]| NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: cidr.to_string(),
                    except: None,
                }),
                ..Default::default()
            }]),
            ports: ports(p, protocols),
        };
        if a.agent.cloud.identity.gcp_service_account.is_some() {
            // GKE Workload Identity hands out tokens from the GKE metadata
            // server, which GKE asks network policies to allow.
            v.push(block("169.254.169.254/32", &[80], &["TCP"]));
            v.push(block("169.254.169.252/32", &[988], &["TCP"]));
        }
        // Host names are refused for cloud agents by the plan; networks in
        // their normal form (`10.0.0.0/8`, a single address as `/32`).
        for r in rules {
            if let Some(net) = r
                .cidr
                .as_deref()
                .and_then(|c| nuketown_town::network::parse_net(c).ok())
            {
                v.push(block(&net.to_string(), &r.ports, &["TCP", "UDP"]));
            }
        }
        v
    };
    NetworkPolicy {
        metadata: meta.object(
            a.name,
            Some(&a.agent.cloud.namespace),
            labels(Some(a.name), "agent"),
            BTreeMap::new(),
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector(a.name)),
                ..Default::default()
            }),
            // Ingress is listed with no rule: nothing may connect to an agent.
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: None,
            egress: Some(egress),
        }),
    }
}

/// The request object of an agent that may ask for a bigger tier
/// (`nuketown ask resources` in its pod): an empty ConfigMap
/// `<agent>-requests`, and a Role bound to the agent's ServiceAccount that
/// may read and change that one object and nothing else. The decision is
/// never written here by anyone the operator listens to: the hall's relay
/// writes it on the Deployment, which the agent cannot touch.
fn request_object(out: &mut Vec<Manifest>, meta: &Meta<'_>, name: &str, namespace: &str) {
    use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
    let object = format!("{name}{REQUESTS_SUFFIX}");
    let ns = Some(namespace);
    let mut l = labels(Some(name), "requests");
    l.insert(REQUESTS_LABEL.to_string(), name.to_string());
    out.push(Manifest::ConfigMap(ConfigMap {
        // No data: the agent writes `request`, the relay `decision`, each as
        // its own field manager, which Argo CD leaves alone.
        metadata: meta.object(&object, ns, l, BTreeMap::new()),
        ..Default::default()
    }));
    out.push(Manifest::Role(Role {
        metadata: meta.object(&object, ns, labels(Some(name), "requests"), BTreeMap::new()),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec![object.clone()]),
            verbs: ["get", "list", "watch", "patch", "update"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        }]),
    }));
    out.push(Manifest::RoleBinding(RoleBinding {
        metadata: meta.object(&object, ns, labels(Some(name), "requests"), BTreeMap::new()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: object.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.into(),
            namespace: Some(namespace.into()),
            ..Default::default()
        }]),
    }));
}

/// The name of the admission policy and its binding that keep an agent's
/// token to its own request (`data.request`, `data.active`).
pub const REQUEST_POLICY: &str = "nuketown-requests";

/// RBAC cannot reach inside an object: the Role lets an agent's token patch
/// its request ConfigMap, so it could also write `data.decision` there, or
/// drop the label the relay watches by. This ValidatingAdmissionPolicy
/// (cluster-wide, for the render's namespaces) holds every service account
/// of an agents' namespace to what a request needs: on a `<agent>-requests`
/// object only `data.request` and `data.active` may change; creating one is
/// refused (the render makes them). The relay, the operator and Argo CD are
/// not service accounts of those namespaces, so they are not held by it.
fn request_policy(out: &mut Vec<Manifest>, meta: &Meta<'_>) {
    use k8s_openapi::api::admissionregistration::v1::{
        MatchCondition, MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
        ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
        ValidatingAdmissionPolicySpec, Validation,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    let l = labels(None, "requests");
    // Keys the agent may write; every other key of `data` is the relay's.
    let own = format!("['{}', '{}']", "request", "active");
    let rule = |expression: String, message: &str| Validation {
        expression,
        message: Some(message.to_string()),
        reason: Some("Forbidden".into()),
        ..Default::default()
    };
    out.push(Manifest::ValidatingAdmissionPolicy(Box::new(ValidatingAdmissionPolicy {
        metadata: meta.object(REQUEST_POLICY, None, l.clone(), BTreeMap::new()),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".into()),
            match_constraints: Some(MatchResources {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_string(),
                        "nuketown".to_string(),
                    )])),
                    ..Default::default()
                }),
                resource_rules: Some(vec![NamedRuleWithOperations {
                    api_groups: Some(vec![String::new()]),
                    api_versions: Some(vec!["v1".into()]),
                    operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                    resources: Some(vec!["configmaps".into()]),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            match_conditions: Some(vec![MatchCondition {
                name: "an-agent-writes-a-request-object".into(),
                expression: format!(
                    "request.name.endsWith('{REQUESTS_SUFFIX}') && \
                     ('system:serviceaccounts:' + request.namespace) in request.userInfo.groups"
                ),
            }]),
            validations: Some(vec![
                rule(
                    "oldObject != null".into(),
                    "an agent may not create a request object; the render makes it",
                ),
                rule(
                    format!(
                        "oldObject == null || (\
                         object.?data.orValue({{}}).all(k, k in {own} || \
                           (k in oldObject.?data.orValue({{}}) && oldObject.data[k] == object.data[k])) && \
                         oldObject.?data.orValue({{}}).all(k, k in {own} || k in object.?data.orValue({{}})))"
                    ),
                    "an agent may write only data.request and data.active of its request object; \
                     data.decision is the town hall's (nuketown cloud requests)",
                ),
                rule(
                    "oldObject == null || (\
                     object.metadata.?labels.orValue({}) == oldObject.metadata.?labels.orValue({}) && \
                     object.metadata.?annotations.orValue({}) == oldObject.metadata.?annotations.orValue({}) && \
                     object.metadata.?finalizers.orValue([]) == oldObject.metadata.?finalizers.orValue([]) && \
                     object.metadata.?ownerReferences.orValue([]) == oldObject.metadata.?ownerReferences.orValue([]) && \
                     object.?binaryData.orValue({}) == oldObject.?binaryData.orValue({}) && \
                     object.?immutable.orValue(false) == oldObject.?immutable.orValue(false))"
                        .into(),
                    "an agent may not change its request object's labels, annotations, finalizers, \
                     owners, binaryData or immutability",
                ),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    })));
    out.push(Manifest::ValidatingAdmissionPolicyBinding(Box::new(
        ValidatingAdmissionPolicyBinding {
            metadata: meta.object(REQUEST_POLICY, None, l, BTreeMap::new()),
            spec: Some(ValidatingAdmissionPolicyBindingSpec {
                policy_name: Some(REQUEST_POLICY.into()),
                validation_actions: Some(vec!["Deny".into()]),
                ..Default::default()
            }),
        },
    )));
}
