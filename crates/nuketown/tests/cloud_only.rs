//! Where an agent runs (`host.enable`, `cloud.enable`), on this real host:
//! an agent declared for the cloud only gets no user, home, key, sudoers
//! line, udev rule or egress rule; one declared for both gets them; one that becomes cloud-only
//! leaves the host exactly as an agent removed from the town does; the
//! cluster render still renders both. Needs root (CI runs as root).

mod fixture;

use std::fs;

use fixture::{id, stat, stderr, TestTown};

const HUMAN: &str = "nkwhh";
const CLOUD: &str = "nkwvox";
const BOTH: &str = "nkwbo";

/// vox in the cluster only (with host-only keys declared, which must not
/// reach the host); bo on both when `bo_on_host`, else cloud-only too.
fn town(t: &TestTown, bo_on_host: bool) -> String {
    format!(
        "{}\
[agents.{CLOUD}]\nuid = 1971\nsudo.enable = true\npersist.directories = [\"notes\"]\n\
network.egress = \"none\"\n\
cloud = {{ enable = true, image = \"busybox\" }}\n\
[[agents.{CLOUD}.devices]]\nsubsystem = \"tty\"\nattrs = {{ idVendor = \"0483\", idProduct = \"374b\" }}\n\
[agents.{BOTH}]\nuid = 1972\nsudo.enable = true\npersist.directories = [\"work\"]\n\
cloud = {{ enable = true, image = \"busybox\" }}\n{}",
        t.header(HUMAN),
        if bo_on_host { "host.enable = true\n" } else { "" }
    )
}

#[test]
fn cloud_only_agents_are_not_users_and_leaving_the_host_is_leaving_the_town() {
    let t = TestTown::new(&[HUMAN, CLOUD, BOTH], &[]);
    let both = t.write("both.toml", &town(&t, true));
    let both = both.to_str().unwrap();

    let planned = t.ok(&["plan", both]);
    assert!(
        planned.contains(&format!("+ user {BOTH} (uid 1972")),
        "{planned}"
    );
    assert!(
        !planned.contains(CLOUD),
        "nothing of the cloud-only agent: {planned}"
    );
    t.ok(&["apply", both]);

    // The cloud-only agent: no user, no home, no persist dir, no sudoers
    // line, no udev rule, no egress rule.
    assert!(id(&[], CLOUD).is_empty(), "no user for {CLOUD}");
    assert!(!t.agents_dir().join(CLOUD).exists());
    assert!(!t.persist_dir().join("agents").join(CLOUD).exists());
    assert!(
        !t.persist_dir()
            .join("agents/.nuketown-keys")
            .join(CLOUD)
            .exists(),
        "no key generated for {CLOUD}"
    );
    assert!(t
        .persist_dir()
        .join("agents/.nuketown-keys")
        .join(BOTH)
        .exists());
    let sudoers = fs::read_to_string(t.path("sudoers.d/nuketown")).unwrap();
    assert!(!sudoers.contains(CLOUD), "{sudoers}");
    assert!(
        sudoers.contains(&format!("\n{BOTH} ALL = (root) NOPASSWD: NOSETENV: ")),
        "{sudoers}"
    );
    let udev = fs::read_to_string(t.path("udev/70-nuketown.rules")).unwrap_or_default();
    assert!(!udev.contains(CLOUD), "{udev}");
    let nft = fs::read_to_string(t.path("etc/nftables.nft")).unwrap_or_default();
    assert!(!nft.contains("1971"), "{nft}");

    // The agent on both: a user of the host like any other.
    assert_eq!(id(&["-u"], BOTH), "1972");
    assert_eq!(
        stat("%a %U", &t.agents_dir().join(BOTH)),
        format!("700 {BOTH}")
    );

    // Status lists the cloud-only agent as such; the host commands refuse it
    // naming the key.
    let status = t.ok(&["status", "--town", both]);
    assert!(
        status.contains(&format!(
            "agent {CLOUD} (uid 1971, software) — cloud only (namespace nuketown): no user on this host"
        )),
        "{status}"
    );
    assert!(
        status.contains(&format!(
            "agent {BOTH} (uid 1972, software) — present, also in the cluster (namespace nuketown)"
        )),
        "{status}"
    );
    let json = t.ok(&["status", "--json", "--town", both]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let vox = json["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == CLOUD)
        .unwrap();
    assert_eq!(vox["host"], false);
    assert_eq!(vox["cloud"], "nuketown");
    for cmd in [vec!["reset", CLOUD], vec!["portal", CLOUD, "--no-fzf"]] {
        let mut args = cmd.clone();
        args.extend(["--town", both]);
        let out = t.run(&args);
        assert!(!out.status.success(), "{cmd:?} must refuse");
        assert!(
            stderr(&out).contains(&format!(
                "{CLOUD} is declared for the cloud only (agents.{CLOUD}.host.enable = false"
            )),
            "{cmd:?}: {}",
            stderr(&out)
        );
    }

    // The cluster render has both.
    #[cfg(feature = "cloud")]
    {
        let yaml = t.ok(&["cloud", "render", both]);
        let deployments: Vec<&str> = yaml
            .split("\n---\n")
            .filter(|doc| doc.contains("\nkind: Deployment\n"))
            .collect();
        assert_eq!(deployments.len(), 2, "{yaml}");
        for name in [CLOUD, BOTH] {
            assert!(
                deployments
                    .iter()
                    .any(|d| d.contains(&format!("\n  name: {name}\n"))),
                "{name} rendered: {yaml}"
            );
        }
    }

    // bo becomes cloud-only: exactly like an agent removed from the town.
    fs::write(t.agents_dir().join(BOTH).join("work/kept.txt"), "keep me").unwrap();
    let cloud = t.write("cloud.toml", &town(&t, false));
    let cloud = cloud.to_str().unwrap();
    let planned = t.ok(&["plan", cloud]);
    assert!(
        planned.contains(&format!(
            "note: agent {BOTH} (uid 1972) is declared for the cloud only now (agents.{BOTH}.host.enable = false); `apply --prune` removes its user and home"
        )),
        "{planned}"
    );
    let applied = t.ok(&["apply", cloud]);
    assert!(
        !applied.contains("- user"),
        "without --prune nothing is removed: {applied}"
    );
    assert_eq!(id(&["-u"], BOTH), "1972");
    let status = t.ok(&["status", "--town", cloud]);
    assert!(
        status.contains(&format!(
            "agent {BOTH} (uid 1972, software) — cloud only (namespace nuketown): its user is still here; `nuketown apply --prune` removes it"
        )),
        "{status}"
    );
    let sudoers = fs::read_to_string(t.path("sudoers.d/nuketown")).unwrap_or_default();
    assert!(
        !sudoers.contains(BOTH),
        "no agent on the host has sudo: {sudoers}"
    );

    let pruned = t.ok(&["apply", "--prune", cloud]);
    assert!(
        pruned.contains(&format!(
            "- user {BOTH} and its home {}",
            t.agents_dir().join(BOTH).display()
        )),
        "{pruned}"
    );
    assert!(id(&[], BOTH).is_empty(), "user removed");
    assert!(!t.agents_dir().join(BOTH).exists(), "home removed");
    assert_eq!(
        fs::read_to_string(
            t.persist_dir()
                .join("agents")
                .join(BOTH)
                .join("work/kept.txt")
        )
        .unwrap(),
        "keep me",
        "its persist dir is kept, as for a removed agent"
    );
    // Nothing left to do.
    let again = t.ok(&["plan", cloud]);
    assert!(!again.contains(BOTH), "{again}");
}
