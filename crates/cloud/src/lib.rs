//! The town on Kubernetes: every agent with `cloud.enable` rendered to typed
//! manifests (k8s-openapi), for `nuketown cloud render`, the Argo CD plugin
//! and the flake's `lib.toKubeManifests`.
//!
//! Per agent: a single-replica Deployment (`Recreate`, running as the agent's
//! uid under the restricted Pod Security Standard, its home laid down afresh
//! by an init container each round), one PersistentVolumeClaim per persisted
//! path, its own ServiceAccount with the workload-identity bindings, a
//! NetworkPolicy (no ingress, egress as declared) and a ConfigMap with its
//! identity files. Per namespace: the Namespace, a ResourceQuota and a
//! LimitRange. Rendering is pure and deterministic: the same town and
//! revision give the same bytes.

mod laydown;
mod names;
mod plan;
mod quantity;
mod render;

use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use nuketown_town::{Format, Problem, Town};
use serde::Serialize;

pub use plan::{Tier, TIERS};
pub use quantity::Milli;
pub use render::tier_resources;
pub use render::{
    AGENT_LABEL, AUTO_APPROVE_ANNOTATION, DECLARATION_ANNOTATION, IDENTITY_DIR, IDLE_ANNOTATION,
    KEYS_DIR, MAX_TIER_ANNOTATION, PATH_ANNOTATION, PERSIST_DIR, REQUESTS_LABEL, REQUESTS_SUFFIX,
    REQUEST_POLICY, REVISION_ANNOTATION, TIER_ANNOTATION,
};

/// One Kubernetes object of the render.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Manifest {
    /// A namespace holding agents.
    Namespace(Namespace),
    /// The namespace's quota.
    ResourceQuota(ResourceQuota),
    /// The namespace's per-container and per-claim limits.
    LimitRange(LimitRange),
    /// An agent's own account.
    ServiceAccount(ServiceAccount),
    /// An agent's identity files.
    ConfigMap(ConfigMap),
    /// One persisted path of an agent.
    PersistentVolumeClaim(Box<PersistentVolumeClaim>),
    /// An agent's network boundary.
    NetworkPolicy(NetworkPolicy),
    /// An agent's pod.
    Deployment(Box<Deployment>),
    /// What an agent's API token may do: its own request object only.
    Role(k8s_openapi::api::rbac::v1::Role),
    /// The Role, bound to the agent's ServiceAccount.
    RoleBinding(k8s_openapi::api::rbac::v1::RoleBinding),
    /// What an agent's token may change in its request object (RBAC cannot
    /// say it): `data.request` and `data.active` only. Cluster-wide, one a town.
    ValidatingAdmissionPolicy(
        Box<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy>,
    ),
    /// The policy, bound (`Deny`).
    ValidatingAdmissionPolicyBinding(
        Box<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding>,
    ),
}

impl Manifest {
    /// The object's kind, e.g. `Deployment`.
    pub fn kind(&self) -> &'static str {
        match self {
            Manifest::Namespace(_) => "Namespace",
            Manifest::ResourceQuota(_) => "ResourceQuota",
            Manifest::LimitRange(_) => "LimitRange",
            Manifest::ServiceAccount(_) => "ServiceAccount",
            Manifest::ConfigMap(_) => "ConfigMap",
            Manifest::PersistentVolumeClaim(_) => "PersistentVolumeClaim",
            Manifest::NetworkPolicy(_) => "NetworkPolicy",
            Manifest::Deployment(_) => "Deployment",
            Manifest::Role(_) => "Role",
            Manifest::RoleBinding(_) => "RoleBinding",
            Manifest::ValidatingAdmissionPolicy(_) => "ValidatingAdmissionPolicy",
            Manifest::ValidatingAdmissionPolicyBinding(_) => "ValidatingAdmissionPolicyBinding",
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Manifest::Namespace(o) => &o.metadata,
            Manifest::ResourceQuota(o) => &o.metadata,
            Manifest::LimitRange(o) => &o.metadata,
            Manifest::ServiceAccount(o) => &o.metadata,
            Manifest::ConfigMap(o) => &o.metadata,
            Manifest::PersistentVolumeClaim(o) => &o.metadata,
            Manifest::NetworkPolicy(o) => &o.metadata,
            Manifest::Deployment(o) => &o.metadata,
            Manifest::Role(o) => &o.metadata,
            Manifest::RoleBinding(o) => &o.metadata,
            Manifest::ValidatingAdmissionPolicy(o) => &o.metadata,
            Manifest::ValidatingAdmissionPolicyBinding(o) => &o.metadata,
        }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// The object's namespace (none for a Namespace).
    pub fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }
}

/// Why a town cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The town breaks a rule; every problem names its key and the fix.
    #[error("the town cannot be rendered to Kubernetes:\n{}", List(.0))]
    Invalid(Vec<Problem>),
    /// The `--revision` given is unusable.
    #[error("--revision: {0:?} must be one line of printable text, e.g. a git commit id")]
    Revision(String),
    /// The town file names no domain (see [`load`]).
    #[error("{0}: domain: not set; a cloud render must not depend on the machine that renders it (the default is <hostname>.local), so declare it, e.g. domain = \"agents.example.org\"")]
    NoDomain(String),
    /// The town file does not load.
    #[error(transparent)]
    Town(#[from] nuketown_town::TownError),
}

impl CloudError {
    /// The problems, each `key: message`, when the town breaks rules.
    pub fn problems(&self) -> &[Problem] {
        match self {
            CloudError::Invalid(p) => p,
            _ => &[],
        }
    }
}

struct List<'a>(&'a [Problem]);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// The manifests of every enabled agent with `cloud.enable`, in a stable
/// order. `revision` (a git commit, say) is written on every object.
pub fn render(town: &Town, revision: Option<&str>) -> Result<Vec<Manifest>, CloudError> {
    if let Some(rev) = revision {
        if rev.is_empty() || rev.chars().any(char::is_control) {
            return Err(CloudError::Revision(rev.to_string()));
        }
    }
    let plan = plan::plan(town).map_err(CloudError::Invalid)?;
    let manifests = render::manifests(town, &plan, revision);
    // The API server refuses a ConfigMap over 1 MiB; say which declaration made it so.
    let too_big: Vec<Problem> = manifests
        .iter()
        .filter_map(|m| match m {
            Manifest::ConfigMap(c) => Some(c),
            _ => None,
        })
        .filter_map(|c| {
            let size: usize = c.data.iter().flatten().map(|(k, v)| k.len() + v.len()).sum();
            (size > CONFIG_MAP_MAX).then(|| Problem {
                key: format!("agents.{}.claudeCode", c.metadata.name.as_deref().unwrap_or_default()),
                message: format!(
                    "the identity files come to {size} bytes, more than a Kubernetes ConfigMap holds ({CONFIG_MAP_MAX}); shorten extraPrompt (it is in every prompt file) or extraAgents"
                ),
            })
        })
        .collect();
    if too_big.is_empty() {
        Ok(manifests)
    } else {
        Err(CloudError::Invalid(too_big))
    }
}

/// The most a ConfigMap may hold, in bytes.
const CONFIG_MAP_MAX: usize = 1024 * 1024;

/// [`render`] as multi-document YAML, each document starting with `---`.
pub fn render_yaml(town: &Town, revision: Option<&str>) -> Result<String, CloudError> {
    Ok(to_yaml(&render(town, revision)?))
}

/// Manifests as multi-document YAML.
pub fn to_yaml(manifests: &[Manifest]) -> String {
    let mut out = String::new();
    for m in manifests {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(m).expect("manifests serialise to YAML"));
    }
    out
}

/// The hostname a cloud render resolves defaults with: none, since `domain` must be declared.
const NO_HOST: &str = "unset";

/// Parse a town for the cloud: like [`nuketown_town::parse`], but the town
/// must declare its `domain` (on a cluster the default, `<hostname>.local`,
/// would change with whichever machine renders it, and every agent with it).
pub fn load(text: &str, format: Format, origin: &str) -> Result<Town, CloudError> {
    let declares_domain = match format {
        Format::Json => serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .map(|v| v.get("domain").is_some()),
        Format::Toml => toml::from_str::<toml::Table>(text)
            .ok()
            .map(|t| t.contains_key("domain")),
    };
    let town = nuketown_town::parse(text, format, origin, NO_HOST)?;
    let on_cloud = town.enabled_agents().any(|(_, a)| a.cloud.enable);
    if on_cloud && declares_domain == Some(false) {
        return Err(CloudError::NoDomain(origin.to_string()));
    }
    Ok(town)
}
