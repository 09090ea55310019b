//! Everything the render needs that can be wrong, checked up front: each
//! problem names its key and the fix, and all of them are reported at once.

use std::collections::BTreeMap;

use nuketown_town::{is_dns_label, is_dns_subdomain, Agent, Problem, Town};

use crate::names::{self, is_config_key, is_label_key, is_label_value};
use crate::quantity::Milli;

/// A resource tier: what one agent's pod gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// `small`, `standard`, `large` or `gpu`.
    pub name: &'static str,
    /// CPU, requested and limited alike.
    pub cpu: Milli,
    /// Memory, requested and limited alike.
    pub memory: Milli,
    /// Scratch space for the home and /tmp (ephemeral storage).
    pub scratch: Milli,
}

const GI: u128 = 1 << 30;

const fn tier(i: usize) -> Tier {
    let s = nuketown_town::tiers::SIZES[i];
    Tier {
        name: nuketown_town::tiers::ORDER[i],
        cpu: Milli::units(s.cpus as u128),
        memory: Milli::units(s.memory_gib as u128 * GI),
        scratch: Milli::units(s.scratch_gib as u128 * GI),
    }
}

/// The tiers, smallest first (`nuketown_town::tiers`). Requests equal limits
/// (Guaranteed QoS), so a tier is exactly what the agent may use and what
/// the quota counts.
pub const TIERS: [Tier; 4] = [tier(0), tier(1), tier(2), tier(3)];

/// The lay-down init container's fixed share.
pub const INIT: Tier = Tier {
    name: "init",
    cpu: Milli(100),
    memory: Milli::units(128 << 20),
    scratch: Milli::units(GI),
};

/// The volume of a persisted file unless `persist.sizes` names it
/// (`persist.size` is for directories).
pub const FILE_SIZE: Milli = Milli::units(GI);

/// The volume of the chat bridge's Matrix store in a pod, unless
/// `persist.sizes` names it.
pub const CHAT_STORE_SIZE: Milli = Milli::units(GI);

/// One persisted path and its volume claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Path relative to the home, as declared.
    pub path: String,
    /// The PersistentVolumeClaim's name.
    pub claim: String,
    /// Requested size.
    pub size: Milli,
    /// A single file (mounted by subPath) rather than a directory.
    pub file: bool,
}

/// One agent with `cloud.enable`, checked.
#[derive(Debug, Clone)]
pub struct AgentPlan<'t> {
    /// The agent's name.
    pub name: &'t str,
    /// Its declaration.
    pub agent: &'t Agent,
    /// Its tier.
    pub tier: Tier,
    /// The largest tier it may be moved to (`scaling.maxResources`, else its tier):
    /// what the namespace's quota must hold for it.
    pub ceiling: Tier,
    /// Its image.
    pub image: &'t str,
    /// Its volumes, sorted by path.
    pub volumes: Vec<Volume>,
    /// Its secrets from the sops file (`cloud.secrets = "sops-kms"`); none: from its Secret.
    pub sops: Option<crate::laydown::sops::Sops>,
    /// Its chat bridge, when it runs in the pod (chat on a cloud-only agent).
    pub chat: Option<nuketown_town::BridgeTown>,
}

/// One namespace and the limits its agents share.
#[derive(Debug, Clone)]
pub struct NamespacePlan {
    /// The namespace.
    pub name: String,
    /// Its agents: indices into [`Plan::agents`], by name.
    pub agents: Vec<usize>,
    /// ResourceQuota `hard`: the declared `scaling.quota`, or exactly what the agents need.
    pub quota: BTreeMap<String, String>,
    /// The largest tier CPU and memory in the namespace (LimitRange max).
    pub max_cpu: Milli,
    /// See `max_cpu`.
    pub max_memory: Milli,
    /// The largest volume (LimitRange max for claims).
    pub max_volume: Milli,
}

/// The checked town: namespaces and agents, sorted.
#[derive(Debug, Clone)]
pub struct Plan<'t> {
    /// By name.
    pub namespaces: Vec<NamespacePlan>,
    /// By name.
    pub agents: Vec<AgentPlan<'t>>,
}

struct Check {
    problems: Vec<Problem>,
}

impl Check {
    fn fail(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// Namespaces that belong to the cluster, never to agents.
const RESERVED_NAMESPACES: [&str; 4] = ["default", "kube-node-lease", "kube-public", "kube-system"];

/// Secret keys the lay-down reads as the agent's SSH key.
pub const SSH_KEY: &str = "id_ed25519";
/// See [`SSH_KEY`].
pub const SSH_PUB: &str = "id_ed25519.pub";

/// Check the cloud side of `town` (the town's own rules included) and work
/// out everything the render needs.
pub fn plan(town: &Town) -> Result<Plan<'_>, Vec<Problem>> {
    let mut c = Check {
        problems: nuketown_town::validate(town),
    };
    if !c.problems.is_empty() {
        // The cloud checks assume a valid town (DNS-label names, sane paths).
        return Err(c.problems);
    }
    let mut agents = Vec::new();
    let mut sops_files = crate::laydown::sops::Files::new();
    for (name, agent) in town.enabled_agents().filter(|(_, a)| a.cloud.enable) {
        if let Some(a) = check_agent(&mut c, town, &mut sops_files, name, agent) {
            agents.push(a);
        }
    }
    let namespaces = check_namespaces(&mut c, &agents);
    if c.problems.is_empty() {
        Ok(Plan { namespaces, agents })
    } else {
        Err(c.problems)
    }
}

fn quantity(c: &mut Check, key: &str, value: &str, example: &str) -> Option<Milli> {
    match Milli::parse(value) {
        Some(q) if q > Milli(0) => Some(q),
        _ => {
            c.fail(
                key,
                format!("{value:?} is not a positive Kubernetes quantity; write e.g. {example:?}"),
            );
            None
        }
    }
}

fn check_agent<'t>(
    c: &mut Check,
    town: &Town,
    sops_files: &mut crate::laydown::sops::Files,
    name: &'t str,
    agent: &'t Agent,
) -> Option<AgentPlan<'t>> {
    let k = format!("agents.{name}.cloud");
    let cloud = &agent.cloud;
    let before = c.problems.len();

    if RESERVED_NAMESPACES.contains(&cloud.namespace.as_str()) {
        c.fail(
            format!("{k}.namespace"),
            format!("{:?} belongs to the cluster; give the agents a namespace of their own, e.g. \"nuketown\"", cloud.namespace),
        );
    }
    let image = match cloud.image.as_deref() {
        None | Some("") => {
            c.fail(
                format!("{k}.image"),
                "cloud.enable needs a container image: the nix-snapshotter reference the flake builds (e.g. \"nix:0/nix/store/…-nuketown-agent.tar\") or any image with /bin/sh",
            );
            ""
        }
        Some(i) if i.chars().any(|ch| ch.is_whitespace() || ch.is_control()) => {
            c.fail(
                format!("{k}.image"),
                format!("{i:?} contains whitespace; write one image reference"),
            );
            ""
        }
        Some(i) => i,
    };
    let tier = TIERS
        .iter()
        .find(|t| t.name == cloud.resources)
        .copied()
        .unwrap_or(TIERS[1]);

    let size =
        quantity(c, &format!("{k}.persist.size"), &cloud.persist.size, "10Gi").unwrap_or_default();
    let mut sizes = BTreeMap::new();
    for (path, s) in &cloud.persist.sizes {
        if let Some(q) = quantity(c, &format!("{k}.persist.sizes.{path}"), s, "50Gi") {
            sizes.insert(normal(path), q);
        }
    }
    let mut paths: Vec<(String, bool)> = agent
        .persist
        .directories
        .iter()
        .map(|p| (normal(p), false))
        .chain(agent.persist.files.iter().map(|p| (normal(p), true)))
        .collect();
    // The bridge's Matrix store keeps its device across rounds, as on a
    // host (a store lost is a new device, and encrypted rooms forget it).
    let store = nuketown_town::chat::POD_STORE;
    let chat = agent.chats_in_pod().then(|| town.bridge_of(name));
    if chat.is_some()
        && !paths
            .iter()
            .any(|(p, _)| store == p || store.starts_with(&format!("{p}/")))
    {
        paths.push((store.to_string(), false));
        sizes.entry(store.to_string()).or_insert(CHAT_STORE_SIZE);
    }
    let chat = match chat {
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => {
            c.fail(format!("agents.{name}.chat"), e);
            None
        }
        None => None,
    };
    let claims = names::claims(name, paths.iter().map(|(p, _)| p.as_str()));
    let mut volumes: Vec<Volume> = paths
        .into_iter()
        .map(|(path, file)| Volume {
            claim: claims[&path].clone(),
            size: sizes
                .get(&path)
                .copied()
                .unwrap_or(if file { FILE_SIZE } else { size }),
            path,
            file,
        })
        .collect();
    volumes.sort_by(|a, b| a.path.cmp(&b.path));

    let id = &cloud.identity;
    if let Some(gsa) = &id.gcp_service_account {
        let ok = gsa.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.ends_with(".gserviceaccount.com")
                && is_dns_subdomain(domain)
        });
        if !ok {
            c.fail(
                format!("{k}.identity.gcpServiceAccount"),
                format!("{gsa:?} is not a Google service account e-mail; write e.g. \"{name}@my-project.iam.gserviceaccount.com\""),
            );
        }
    }
    if let Some(arn) = &id.aws_role_arn {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let ok = parts.len() == 6
            && parts[0] == "arn"
            && matches!(parts[1], "aws" | "aws-cn" | "aws-us-gov")
            && parts[2] == "iam"
            && parts[3].is_empty()
            && parts[4].len() == 12
            && parts[4].chars().all(|ch| ch.is_ascii_digit())
            && parts[5]
                .strip_prefix("role/")
                .is_some_and(|r| !r.is_empty() && !r.ends_with('/'));
        if !ok {
            c.fail(
                format!("{k}.identity.awsRoleArn"),
                format!("{arn:?} is not an IAM role ARN; write e.g. \"arn:aws:iam::123456789012:role/nuketown-{name}\""),
            );
        }
    }
    if let Some(client) = &id.azure_client_id {
        let groups: Vec<&str> = client.split('-').collect();
        let ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
            && groups
                .iter()
                .all(|g| g.chars().all(|ch| ch.is_ascii_hexdigit()));
        if !ok {
            c.fail(
                format!("{k}.identity.azureClientId"),
                format!("{client:?} is not a managed identity client id; write the identity's UUID, e.g. \"0b5e7a9c-1d2f-4e3a-9b8c-7d6e5f4a3b2c\""),
            );
        }
    }

    // Addresses, networks and ports are checked with the town; a host name
    // cannot be enforced by a NetworkPolicy.
    for (i, rule) in agent.network.egress.rules().iter().enumerate() {
        if let (None, Some(h)) = (&rule.cidr, &rule.host) {
            c.fail(
                format!("agents.{name}.network.egress[{i}].host"),
                format!("{h:?}: a NetworkPolicy cannot name hosts, only networks; write its addresses as cidr rules for a cloud agent (hosts resolve names, the cluster cannot)"),
            );
        }
    }

    match (&cloud.gpu, tier.name) {
        (Some(_), t) if t != "gpu" => c.fail(
            format!("{k}.gpu"),
            format!(
                "is set but resources is {t:?}; set resources = \"gpu\" to use it, or remove gpu"
            ),
        ),
        (Some(gpu), _) => {
            if gpu.count == 0 {
                c.fail(format!("{k}.gpu.count"), "must be at least 1");
            }
            let qualified = gpu.resource.split_once('/').is_some_and(|(domain, res)| {
                is_dns_subdomain(domain)
                    && domain.contains('.')
                    && !domain.ends_with("kubernetes.io")
                    && is_label_value(res)
                    && !res.is_empty()
            });
            if !qualified {
                c.fail(
                    format!("{k}.gpu.resource"),
                    format!("{:?} is not an extended resource name; write e.g. \"nvidia.com/gpu\" or \"amd.com/gpu\"", gpu.resource),
                );
            }
            for (key, value) in &gpu.node_selector {
                if !is_label_key(key) {
                    c.fail(format!("{k}.gpu.nodeSelector.{key}"), format!("{key:?} is not a node label key; write e.g. \"cloud.google.com/gke-accelerator\""));
                } else if !is_label_value(value) {
                    c.fail(format!("{k}.gpu.nodeSelector.{key}"), format!("{value:?} is not a label value (at most 63 letters, digits, '-', '_' or '.')"));
                }
            }
            for (i, key) in gpu.tolerations.iter().enumerate() {
                if !is_label_key(key) {
                    c.fail(
                        format!("{k}.gpu.tolerations[{i}]"),
                        format!("{key:?} is not a taint key; write e.g. \"nvidia.com/gpu\""),
                    );
                }
            }
        }
        _ => {}
    }

    for (key, value) in &cloud.scaling.quota {
        let kk = format!("{k}.scaling.quota.{key}");
        if !is_quota_resource(key) {
            c.fail(
                &kk,
                format!("{key:?} is not a ResourceQuota resource; use cpu, memory, pods, persistentvolumeclaims, requests.storage, requests.ephemeral-storage, requests.nvidia.com/gpu, count/<resource>, …"),
            );
        } else {
            quantity(
                c,
                &kk,
                value,
                if key.contains("memory") || key.contains("storage") {
                    "16Gi"
                } else {
                    "8"
                },
            );
        }
    }

    for sname in agent.secrets.extra_secrets.keys() {
        if !is_config_key(sname) || sname == SSH_KEY || sname == SSH_PUB {
            c.fail(
                format!("agents.{name}.secrets.extraSecrets.{sname}"),
                format!("{sname:?} cannot be a key of the agent's Kubernetes Secret (letters, digits, '-', '_' and '.', not {SSH_KEY:?} or {SSH_PUB:?}); rename it"),
            );
        }
    }

    let sops = crate::laydown::sops::check(
        &mut |key, message| c.fail(key, message),
        sops_files,
        town,
        name,
        agent,
    );

    (c.problems.len() == before).then_some(AgentPlan {
        name,
        agent,
        tier,
        ceiling: cloud
            .scaling
            .max_resources
            .as_deref()
            .and_then(|m| TIERS.iter().find(|t| t.name == m).copied())
            .unwrap_or(tier),
        image,
        volumes,
        sops,
        chat,
    })
}

fn check_namespaces(c: &mut Check, agents: &[AgentPlan<'_>]) -> Vec<NamespacePlan> {
    let mut by_ns: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, a) in agents.iter().enumerate() {
        by_ns
            .entry(a.agent.cloud.namespace.as_str())
            .or_default()
            .push(i);
    }
    let mut out = Vec::new();
    for (ns, indices) in by_ns {
        let members: Vec<&AgentPlan<'_>> = indices.iter().map(|&i| &agents[i]).collect();
        // What the agents of this namespace need, by quota resource.
        let cpu: Milli = members.iter().map(|a| a.ceiling.cpu).sum();
        let memory: Milli = members.iter().map(|a| a.ceiling.memory).sum();
        let scratch: Milli = members.iter().map(|a| a.ceiling.scratch).sum();
        let storage: Milli = members
            .iter()
            .flat_map(|a| &a.volumes)
            .map(|v| v.size)
            .sum();
        let claims = members.iter().map(|a| a.volumes.len()).sum::<usize>();
        let mut need: BTreeMap<String, (Milli, String)> = BTreeMap::new();
        let detail = |f: &dyn Fn(&AgentPlan<'_>) -> String| {
            members.iter().map(|a| f(a)).collect::<Vec<_>>().join(", ")
        };
        for key in ["requests.cpu", "limits.cpu", "cpu"] {
            need.insert(
                key.into(),
                (
                    cpu,
                    format!(
                        "{} CPUs ({})",
                        cpu.cpu(),
                        detail(&|a| format!(
                            "{} {}: {}",
                            a.name,
                            a.ceiling.name,
                            a.ceiling.cpu.cpu()
                        ))
                    ),
                ),
            );
        }
        for key in ["requests.memory", "limits.memory", "memory"] {
            need.insert(
                key.into(),
                (
                    memory,
                    format!(
                        "{} of memory ({})",
                        memory.bytes(),
                        detail(&|a| format!(
                            "{} {}: {}",
                            a.name,
                            a.ceiling.name,
                            a.ceiling.memory.bytes()
                        ))
                    ),
                ),
            );
        }
        for key in [
            "requests.ephemeral-storage",
            "limits.ephemeral-storage",
            "ephemeral-storage",
        ] {
            need.insert(
                key.into(),
                (
                    scratch,
                    format!(
                        "{} of scratch space ({})",
                        scratch.bytes(),
                        detail(&|a| format!(
                            "{} {}: {}",
                            a.name,
                            a.ceiling.name,
                            a.ceiling.scratch.bytes()
                        ))
                    ),
                ),
            );
        }
        need.insert(
            "requests.storage".into(),
            (storage, format!("{} of volumes", storage.bytes())),
        );
        need.insert(
            "persistentvolumeclaims".into(),
            (
                Milli::units(claims as u128),
                format!("{claims} volume claims"),
            ),
        );
        need.insert(
            "pods".into(),
            (
                Milli::units(members.len() as u128),
                format!("{} pods, one per agent", members.len()),
            ),
        );
        need.insert(
            "configmaps".into(),
            (
                Milli::units(members.len() as u128 + 1),
                format!(
                    "{} ConfigMaps (one per agent, and kube-root-ca.crt)",
                    members.len() + 1
                ),
            ),
        );
        for a in &members {
            if let Some(gpu) = &a.agent.cloud.gpu {
                let e = need
                    .entry(format!("requests.{}", gpu.resource))
                    .or_insert((Milli(0), String::new()));
                e.0 = e.0 + Milli::units(u128::from(gpu.count));
                e.1 = format!("{} GPUs", e.0.cpu());
            }
        }

        let declared: Vec<&AgentPlan<'_>> = members
            .iter()
            .copied()
            .filter(|a| !a.agent.cloud.scaling.quota.is_empty())
            .collect();
        let quota = if let Some(first) = declared.first() {
            let max = &first.agent.cloud.scaling.quota;
            for other in &declared[1..] {
                if &other.agent.cloud.scaling.quota != max {
                    c.fail(
                        format!("agents.{}.cloud.scaling.quota", other.name),
                        format!("differs from {}'s; the agents of namespace {ns:?} share one quota, so declare it on one of them (or the same on each)", first.name),
                    );
                }
            }
            for (key, value) in max {
                if let (Some(q), Some((needed, what))) =
                    (Milli::parse(value), need.get(key.as_str()))
                {
                    if q < *needed {
                        c.fail(
                            format!("agents.{}.cloud.scaling.quota.{key}", first.name),
                            format!("{value:?} is less than the {what} the agents of namespace {ns:?} need; raise it, or choose smaller tiers or sizes"),
                        );
                    }
                }
            }
            max.clone()
        } else {
            let mut q: BTreeMap<String, String> = BTreeMap::new();
            for key in ["requests.cpu", "limits.cpu"] {
                q.insert(key.into(), cpu.cpu());
            }
            for key in ["requests.memory", "limits.memory"] {
                q.insert(key.into(), memory.bytes());
            }
            for key in ["requests.ephemeral-storage", "limits.ephemeral-storage"] {
                q.insert(key.into(), scratch.bytes());
            }
            q.insert("pods".into(), members.len().to_string());
            if claims > 0 {
                q.insert("persistentvolumeclaims".into(), claims.to_string());
                q.insert("requests.storage".into(), storage.bytes());
            }
            for (key, (n, _)) in &need {
                if key.starts_with("requests.") && key.contains('/') {
                    q.insert(key.clone(), n.cpu());
                }
            }
            q
        };
        out.push(NamespacePlan {
            name: ns.to_string(),
            agents: indices,
            quota,
            max_cpu: members
                .iter()
                .map(|a| a.ceiling.cpu)
                .max()
                .unwrap_or_default(),
            max_memory: members
                .iter()
                .map(|a| a.ceiling.memory)
                .max()
                .unwrap_or_default(),
            max_volume: members
                .iter()
                .flat_map(|a| &a.volumes)
                .map(|v| v.size)
                .max()
                .unwrap_or_default(),
        });
    }
    out
}

/// A persisted path in normal form: no `.` components, no trailing `/`.
pub fn normal(path: &str) -> String {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether `key` is a resource a ResourceQuota can limit.
fn is_quota_resource(key: &str) -> bool {
    const PLAIN: [&str; 17] = [
        "cpu",
        "memory",
        "ephemeral-storage",
        "requests.cpu",
        "requests.memory",
        "requests.ephemeral-storage",
        "requests.storage",
        "limits.cpu",
        "limits.memory",
        "limits.ephemeral-storage",
        "pods",
        "persistentvolumeclaims",
        "configmaps",
        "secrets",
        "services",
        "services.loadbalancers",
        "services.nodeports",
    ];
    if PLAIN.contains(&key) {
        return true;
    }
    if let Some(rest) = key.strip_prefix("count/") {
        return !rest.is_empty() && rest.split('.').all(|p| !p.is_empty());
    }
    if let Some((class, what)) = key.split_once(".storageclass.storage.k8s.io/") {
        return is_dns_subdomain(class)
            && matches!(what, "requests.storage" | "persistentvolumeclaims");
    }
    if let Some(ext) = key.strip_prefix("requests.") {
        return ext
            .split_once('/')
            .is_some_and(|(d, r)| is_dns_subdomain(d) && d.contains('.') && is_dns_label(r));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_resources() {
        for ok in [
            "cpu",
            "requests.nvidia.com/gpu",
            "count/deployments.apps",
            "fast.storageclass.storage.k8s.io/requests.storage",
        ] {
            assert!(is_quota_resource(ok), "{ok}");
        }
        for bad in ["gpus", "limits.nvidia.com/gpu", "requests.gpu", "count/"] {
            assert!(!is_quota_resource(bad), "{bad}");
        }
    }
}
