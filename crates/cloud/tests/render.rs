//! The full render of the example cloud town (examples/cloud.toml): a
//! snapshot of every byte, and the YAML read back into the typed
//! Kubernetes structs it was written from.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use nuketown_cloud::{load, render, to_yaml, Manifest};
use nuketown_town::Format;
use serde::Deserialize;

const EXAMPLE: &str = include_str!("../../../examples/cloud.toml");
const REVISION: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

fn example() -> Vec<Manifest> {
    let town = load(EXAMPLE, Format::Toml, "examples/cloud.toml").unwrap();
    render(&town, Some(REVISION)).unwrap()
}

#[test]
fn snapshot_of_the_example_cloud_town() {
    insta::assert_snapshot!("example_cloud_town", to_yaml(&example()));
}

#[test]
fn the_example_renders_these_objects_in_this_order() {
    let got: Vec<String> = example()
        .iter()
        .map(|m| format!("{} {}/{}", m.kind(), m.namespace().unwrap_or("-"), m.name()))
        .collect();
    assert_eq!(
        got,
        [
            "Namespace -/nuketown",
            "Namespace -/research",
            // vox may ask for a bigger tier: what its token may write is
            // held to its request by an admission policy.
            "ValidatingAdmissionPolicy -/nuketown-requests",
            "ValidatingAdmissionPolicyBinding -/nuketown-requests",
            "ResourceQuota nuketown/nuketown",
            "LimitRange nuketown/nuketown",
            "ServiceAccount nuketown/ada",
            "ConfigMap nuketown/ada",
            "PersistentVolumeClaim nuketown/ada--bash-history",
            "PersistentVolumeClaim nuketown/ada--local-share-direnv",
            "PersistentVolumeClaim nuketown/ada--dev",
            "NetworkPolicy nuketown/ada",
            "Deployment nuketown/ada",
            "ResourceQuota research/nuketown",
            "LimitRange research/nuketown",
            "ServiceAccount research/lux",
            "ConfigMap research/lux",
            "PersistentVolumeClaim research/lux--datasets",
            "PersistentVolumeClaim research/lux--models",
            "NetworkPolicy research/lux",
            "Deployment research/lux",
            "ServiceAccount research/vox",
            "ConfigMap research/vox-requests",
            "Role research/vox-requests",
            "RoleBinding research/vox-requests",
            "ConfigMap research/vox",
            // Its chat bridge's Matrix store (chat in the pod).
            "PersistentVolumeClaim research/vox--nuketown-matrix",
            "PersistentVolumeClaim research/vox--notes",
            "NetworkPolicy research/vox",
            "Deployment research/vox",
        ]
    );
}

/// Read one YAML document back into the typed struct of its kind.
fn read_back(doc: serde_norway::Deserializer<'_>, kind: &str) -> Manifest {
    match kind {
        "Namespace" => Manifest::Namespace(Namespace::deserialize(doc).unwrap()),
        "ResourceQuota" => Manifest::ResourceQuota(ResourceQuota::deserialize(doc).unwrap()),
        "LimitRange" => Manifest::LimitRange(LimitRange::deserialize(doc).unwrap()),
        "ServiceAccount" => Manifest::ServiceAccount(ServiceAccount::deserialize(doc).unwrap()),
        "ConfigMap" => Manifest::ConfigMap(ConfigMap::deserialize(doc).unwrap()),
        "PersistentVolumeClaim" => Manifest::PersistentVolumeClaim(Box::new(
            PersistentVolumeClaim::deserialize(doc).unwrap(),
        )),
        "NetworkPolicy" => Manifest::NetworkPolicy(NetworkPolicy::deserialize(doc).unwrap()),
        "Deployment" => Manifest::Deployment(Box::new(Deployment::deserialize(doc).unwrap())),
        "Role" => Manifest::Role(k8s_openapi::api::rbac::v1::Role::deserialize(doc).unwrap()),
        "RoleBinding" => Manifest::RoleBinding(
            k8s_openapi::api::rbac::v1::RoleBinding::deserialize(doc).unwrap(),
        ),
        "ValidatingAdmissionPolicy" => Manifest::ValidatingAdmissionPolicy(Box::new(
            k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy::deserialize(
                doc,
            )
            .unwrap(),
        )),
        "ValidatingAdmissionPolicyBinding" => Manifest::ValidatingAdmissionPolicyBinding(Box::new(
            k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding::deserialize(doc)
                .unwrap(),
        )),
        other => panic!("unexpected kind {other}"),
    }
}

#[test]
fn the_yaml_reads_back_into_the_same_typed_objects() {
    let manifests = example();
    let yaml = to_yaml(&manifests);
    let docs: Vec<_> = serde_norway::Deserializer::from_str(&yaml).collect();
    assert_eq!(docs.len(), manifests.len());
    for (doc, m) in docs.into_iter().zip(&manifests) {
        // k8s-openapi checks apiVersion and kind while deserialising.
        assert_eq!(&read_back(doc, m.kind()), m, "{} {}", m.kind(), m.name());
    }
}

#[test]
fn the_render_is_byte_for_byte_stable() {
    let a = to_yaml(&example());
    let b = to_yaml(&example());
    assert_eq!(a, b);
}

#[test]
fn the_revision_changes_annotations_but_never_restarts_a_pod() {
    let town = load(EXAMPLE, Format::Toml, "examples/cloud.toml").unwrap();
    let declaration = |rev: Option<&str>| -> Vec<String> {
        render(&town, rev)
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                Manifest::Deployment(d) => {
                    Some(serde_json::to_string(&d.spec.unwrap().template).unwrap())
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(declaration(Some("aaaa")), declaration(Some("bbbb")));
    assert_eq!(declaration(None), declaration(Some("bbbb")));
    // …while a change to one agent restarts that agent only.
    let mut changed = town.clone();
    changed.agents.get_mut("vox").unwrap().description = "Reads papers.".into();
    let before = declaration(None);
    let after: Vec<String> = render(&changed, None)
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            Manifest::Deployment(d) => {
                Some(serde_json::to_string(&d.spec.unwrap().template).unwrap())
            }
            _ => None,
        })
        .collect();
    assert_eq!(before[0], after[0], "ada is untouched");
    assert_eq!(before[1], after[1], "lux is untouched");
    assert_ne!(before[2], after[2], "vox starts a new round");
}

/// An agent that may ask for a bigger tier gets an API token that may read
/// and change its own request object — by name — and nothing else; an
/// agent that may not gets no token at all.
#[test]
fn only_an_agent_that_may_ask_gets_a_token_and_it_reaches_only_its_request_object() {
    let m = example();
    let role = m
        .iter()
        .find_map(|m| match m {
            Manifest::Role(r) => Some(r.clone()),
            _ => None,
        })
        .expect("vox's Role");
    assert_eq!(role.metadata.name.as_deref(), Some("vox-requests"));
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["configmaps".to_string()][..])
    );
    assert_eq!(
        rules[0].resource_names.as_deref(),
        Some(&["vox-requests".to_string()][..])
    );
    assert_eq!(rules[0].api_groups.as_deref(), Some(&[String::new()][..]));
    assert!(!rules[0]
        .verbs
        .iter()
        .any(|v| v == "create" || v == "delete" || v == "*"));
    let roles = m.iter().filter(|m| m.kind() == "Role").count();
    assert_eq!(roles, 1, "only vox declares scaling.maxResources");
    for x in &m {
        if let Manifest::Deployment(d) = x {
            let spec = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            let vox = d.metadata.name.as_deref() == Some("vox");
            assert_eq!(
                spec.automount_service_account_token,
                Some(vox),
                "{:?}",
                d.metadata.name
            );
        }
        if let Manifest::RoleBinding(b) = x {
            let s = &b.subjects.as_ref().unwrap()[0];
            assert_eq!(
                (s.kind.as_str(), s.name.as_str()),
                ("ServiceAccount", "vox")
            );
            assert_eq!(s.namespace.as_deref(), Some("research"));
        }
    }
}
