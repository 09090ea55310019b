//! Properties of the render over generated towns: each agent is alone with
//! its account and its data, names are what Kubernetes accepts, and the
//! output depends on the declaration only.

use std::collections::{BTreeMap, BTreeSet};

use nuketown_cloud::{render, to_yaml, Manifest, AGENT_LABEL, PATH_ANNOTATION};
use nuketown_town::{is_dns_label, Agent, Gpu, Town};
use proptest::prelude::*;

fn agent_name() -> impl Strategy<Value = String> {
    // DNS labels that are Unix names too: short, and up to Unix's 32, dashes included.
    prop_oneof![
        "[a-z]{1,6}",
        "[a-z][a-z0-9-]{0,12}[a-z0-9]",
        "[a-z][a-z0-9-]{24,30}[a-z0-9]",
    ]
}

fn segment() -> impl Strategy<Value = String> {
    // Never "." or "..": a first character that is not a dot follows an optional dot.
    "\\.?[a-zA-Z0-9][a-zA-Z0-9._ -]{0,40}"
}

/// Persisted paths with distinct first segments, so none lies inside another.
fn persisted() -> impl Strategy<Value = Vec<(String, bool)>> {
    prop::collection::btree_map(
        segment(),
        (prop::option::of(segment()), any::<bool>()),
        0..6,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(first, (rest, file))| {
                (rest.map_or(first.clone(), |r| format!("{first}/{r}")), file)
            })
            .collect()
    })
}

fn cloud_agent() -> impl Strategy<Value = (bool, bool, String, usize, Vec<(String, bool)>)> {
    (
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.8),
        prop::sample::select(vec!["nuketown", "research", "a"]).prop_map(str::to_string),
        0..4usize,
        persisted(),
    )
}

fn town() -> impl Strategy<Value = Town> {
    prop::collection::btree_map(agent_name(), cloud_agent(), 1..8).prop_map(|agents| {
        let mut town: Town = nuketown_town::parse(
            "domain = \"example.org\"\n",
            nuketown_town::Format::Toml,
            "t",
            "h",
        )
        .unwrap();
        for (i, (name, (enable, cloud, namespace, tier, paths))) in agents.into_iter().enumerate() {
            let mut a: Agent =
                serde_json::from_value(serde_json::json!({ "uid": 1100 + i })).unwrap();
            a.enable = enable;
            a.cloud.enable = cloud;
            a.cloud.namespace = namespace;
            a.cloud.image = Some(format!("registry.example.org/{name}:1"));
            a.cloud.resources = ["small", "standard", "large", "gpu"][tier].to_string();
            if tier == 3 {
                a.cloud.gpu = Some(Gpu {
                    count: 1,
                    resource: "nvidia.com/gpu".into(),
                    node_selector: BTreeMap::new(),
                    tolerations: Vec::new(),
                });
            }
            for (p, file) in paths {
                if file {
                    a.persist.files.push(p)
                } else {
                    a.persist.directories.push(p)
                }
            }
            town.agents.insert(name, a);
        }
        town
    })
}

/// The agents the render must cover: enabled, with cloud.enable.
fn on_cloud(town: &Town) -> BTreeMap<&str, &Agent> {
    town.enabled_agents()
        .filter(|(_, a)| a.cloud.enable)
        .map(|(n, a)| (n.as_str(), a))
        .collect()
}

fn agent_of(m: &Manifest) -> Option<&str> {
    m.metadata()
        .labels
        .as_ref()?
        .get(AGENT_LABEL)
        .map(String::as_str)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_agent_gets_its_own_service_account(town in town()) {
        let out = render(&town, None).unwrap();
        let mut accounts: BTreeMap<&str, Vec<&Manifest>> = BTreeMap::new();
        for m in out.iter().filter(|m| m.kind() == "ServiceAccount") {
            accounts.entry(m.name()).or_default().push(m);
        }
        let agents = on_cloud(&town);
        prop_assert_eq!(accounts.keys().copied().collect::<BTreeSet<_>>(), agents.keys().copied().collect::<BTreeSet<_>>());
        for (name, list) in &accounts {
            prop_assert_eq!(list.len(), 1, "{} has {} accounts", name, list.len());
            prop_assert_eq!(agent_of(list[0]), Some(*name));
        }
        // Each pod runs under its own agent's account, as its own uid.
        for m in &out {
            if let Manifest::Deployment(d) = m {
                let spec = d.spec.as_ref().unwrap();
                let pod = spec.template.spec.as_ref().unwrap();
                prop_assert_eq!(pod.service_account_name.as_deref(), Some(m.name()));
                let uid = i64::from(agents[m.name()].uid);
                let sc = pod.security_context.as_ref().unwrap();
                prop_assert_eq!((sc.run_as_user, sc.run_as_group, sc.fs_group), (Some(uid), Some(uid), Some(uid)));
                prop_assert_eq!(spec.replicas, Some(1));
                prop_assert_eq!(spec.strategy.as_ref().unwrap().type_.as_deref(), Some("Recreate"));
            }
        }
    }

    #[test]
    fn every_persisted_path_gets_exactly_one_claim_and_no_claim_is_shared(town in town()) {
        let out = render(&town, None).unwrap();
        // (namespace, claim) → (agent, path), each seen once.
        let mut claims: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
        for m in out.iter().filter(|m| m.kind() == "PersistentVolumeClaim") {
            let key = (m.namespace().unwrap().to_string(), m.name().to_string());
            let path = m.metadata().annotations.as_ref().unwrap()[PATH_ANNOTATION].clone();
            let owner = (agent_of(m).unwrap().to_string(), path);
            prop_assert!(claims.insert(key.clone(), owner).is_none(), "claim {:?} rendered twice", key);
        }
        for (name, agent) in on_cloud(&town) {
            let mut want: Vec<String> = agent.persist.directories.iter().chain(&agent.persist.files).cloned().collect();
            want.sort();
            let mut got: Vec<String> = claims.values().filter(|(a, _)| a == name).map(|(_, p)| p.clone()).collect();
            got.sort();
            prop_assert_eq!(got, want, "{}", name);
        }
        // Each pod mounts only its own agent's claims, and no claim is mounted by two pods.
        let mut mounted: BTreeMap<(String, String), String> = BTreeMap::new();
        for m in &out {
            if let Manifest::Deployment(d) = m {
                let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
                for v in pod.volumes.as_ref().unwrap() {
                    if let Some(pvc) = &v.persistent_volume_claim {
                        let key = (m.namespace().unwrap().to_string(), pvc.claim_name.clone());
                        prop_assert_eq!(&claims[&key].0, m.name(), "{:?} mounted by another agent", key);
                        prop_assert!(mounted.insert(key.clone(), m.name().to_string()).is_none(), "{:?} mounted twice", key);
                    }
                }
            }
        }
        prop_assert_eq!(mounted.len(), claims.len());
    }

    #[test]
    fn names_are_dns_labels(town in town()) {
        for m in render(&town, None).unwrap() {
            prop_assert!(is_dns_label(m.name()), "{} {:?}", m.kind(), m.name());
            if let Some(ns) = m.namespace() {
                prop_assert!(is_dns_label(ns));
            }
            if let Manifest::Deployment(d) = &m {
                let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
                for v in pod.volumes.as_ref().unwrap() {
                    prop_assert!(is_dns_label(&v.name), "volume {:?}", v.name);
                }
                let mut names = BTreeSet::new();
                for v in pod.volumes.as_ref().unwrap() {
                    prop_assert!(names.insert(v.name.clone()), "volume {:?} twice", v.name);
                }
            }
            if let Manifest::ConfigMap(c) = &m {
                for k in c.data.as_ref().unwrap().keys() {
                    prop_assert!(!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)), "key {:?}", k);
                }
            }
        }
    }

    #[test]
    fn the_render_is_deterministic(town in town()) {
        let a = to_yaml(&render(&town, Some("r1")).unwrap());
        prop_assert_eq!(&a, &to_yaml(&render(&town, Some("r1")).unwrap()));
        // The same declaration through JSON (as the NixOS module writes it) renders the same bytes.
        let json = serde_json::to_string(&town).unwrap();
        let again: Town = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&a, &to_yaml(&render(&again, Some("r1")).unwrap()));
    }
}
