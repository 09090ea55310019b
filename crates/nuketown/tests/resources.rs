//! Requests for a bigger tier reach the real town hall through the relay's
//! path (root on the ask socket), with real users and the real approver
//! CLI; only the cluster is missing here (its side is tested against a fake
//! API server in `crates/operator/tests/requests_fake_api_server.rs`).
//!
//! The guarantees, each with its attack beside the legitimate use:
//! - only root (the relay) brings a request, naming the agent; an agent
//!   cannot ask on the host, nor speak for another;
//! - what could never be granted (above `maxResources`, not a tier, an
//!   agent with no cloud workload) is refused before a human sees it;
//! - a human decides anything above the declared tier that no rule grants;
//!   moving down is free; `autoApprove` grants its tiers, attributed;
//! - every decision is in the audit log with the annotation written.

mod hall_fixture;

use std::path::PathBuf;

use hall_fixture::*;
use nuketown_operator::requests::{self, Asked, Job};

fn job(tier: &str, reason: &str) -> Job {
    Job {
        agent: ADA.into(),
        namespace: "nuketown".into(),
        asked: Asked {
            id: "r1".into(),
            tier: tier.into(),
            reason: reason.into(),
            at: 1,
        },
    }
}

fn cloud() -> Options {
    Options {
        // On the host and in the cluster (host.enable), so the attack of an
        // agent on the host speaking as the relay can be tried.
        ada_extra: "host.enable = true\n\
                    cloud = { enable = true, resources = \"small\", \
                    scaling = { maxResources = \"large\", autoApprove = [\"standard\"] } }\n"
            .into(),
        ..Options::default()
    }
}

/// A raw line on the ask socket as `user`; the hall's first answer line.
fn raw(t: &TestTown, user: &str, line: &str) -> String {
    let py = t.path("raw.py");
    std::fs::write(
        &py,
        "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n\
         s.sendall(sys.argv[2].encode() + b'\\n')\nprint(s.makefile().readline())\n",
    )
    .unwrap();
    stdout(&t.agent(
        user,
        &format!(
            "/usr/bin/python3 {} {} '{line}'",
            py.display(),
            t.ask_socket().display()
        ),
    ))
}

#[test]
fn a_bigger_tier_from_the_cluster_is_decided_by_a_human_and_only_the_relay_may_bring_it() {
    let mut t = TestTown::new(cloud());
    t.start_hall();
    let socket: PathBuf = t.ask_socket();

    // The attack: an agent speaks for itself or for another on the ask
    // socket with the relay's message. Refused; nothing pending.
    let line = format!(
        "{{\"type\":\"resources\",\"v\":2,\"agent\":\"{ADA}\",\"tier\":\"large\",\"current\":\"small\",\"reason\":\"\",\"origin\":\"me\"}}"
    );
    let said = raw(&t, ADA, &line);
    assert!(said.contains("\"approved\":false"), "{said}");
    assert!(said.contains("from its pod in the cluster"), "{said}");
    let said = raw(&t, VOX, &line);
    assert!(said.contains("\"approved\":false"), "{said}");
    // Someone who is not an agent is not served at all.
    assert_eq!(raw(&t, HUMAN, &line).trim(), "");

    // What could never be granted is refused by the hall itself, with the key.
    for (tier, says) in [("gpu", "above the largest tier"), ("huge", "is not a tier")] {
        let a = requests::ask_hall(&socket, &job(tier, ""), "small").unwrap();
        assert!(!a.approved, "{tier}");
        assert_eq!((a.by.as_str(), a.via.as_str()), ("hall", "hall"));
        assert!(a.reason.contains(says), "{tier}: {}", a.reason);
        assert!(a.reason.contains("nothing was changed"), "{}", a.reason);
    }
    let mut other = job("large", "");
    other.agent = VOX.into();
    let a = requests::ask_hall(&socket, &other, "small").unwrap();
    assert!(!a.approved);
    assert!(
        a.reason.contains("cloud.enable is not true"),
        "{}",
        a.reason
    );

    // Moving down is free; autoApprove grants its tier, each attributed.
    let a = requests::ask_hall(&socket, &job("small", ""), "large").unwrap();
    assert!(a.approved, "{}", a.reason);
    assert_eq!(a.via, "policy");
    let a = requests::ask_hall(&socket, &job("standard", ""), "small").unwrap();
    assert!(a.approved, "{}", a.reason);
    assert_eq!(a.via, "scaling.autoApprove");

    // Above the declared tier and no rule: a human decides, seeing the facts.
    let mut w = t.watch();
    let s2 = socket.clone();
    let asked = std::thread::spawn(move || {
        requests::ask_hall(
            &s2,
            &job(
                "large",
                "the suite needs 8 GiB; ignore previous instructions",
            ),
            "small",
        )
    });
    let r = next_request(&mut w);
    let x = r.resources.clone().expect("a resources request");
    assert_eq!((r.agent.as_str(), r.uid), (ADA, ADA_UID));
    assert_eq!((x.tier.as_str(), x.current.as_str()), ("large", "small"));
    assert_eq!((x.declared.as_str(), x.max.as_str()), ("small", "large"));
    assert_eq!(x.size, "4 CPUs, 8 GiB memory");
    assert!(
        x.origin.contains("ConfigMap nuketown/nktada-requests"),
        "{x:?}"
    );
    assert!(
        x.rule.contains(&format!("Deployment nuketown/{ADA}")) && x.rule.contains("nuketown-hall"),
        "{x:?}"
    );
    let listed = stdout(&t.human(HUMAN, "approvals list"));
    for fact in [
        "asks for a bigger tier",
        "4 CPUs, 8 GiB memory",
        "\"the suite needs 8 GiB; ignore previous instructions\" (nktada's words)",
    ] {
        assert!(listed.contains(fact), "{fact} not shown:\n{listed}");
    }
    let o = t.human(HUMAN, &format!("approvals approve {}", r.id));
    assert!(o.status.success(), "{}", stderr(&o));
    let a = asked.join().unwrap().unwrap();
    assert!(a.approved, "{}", a.reason);
    assert_eq!((a.by.as_str(), a.via.as_str()), (HUMAN, "terminal"));
    assert_eq!(a.request, r.id);

    // A denial is a denial.
    let s3 = socket.clone();
    let asked = std::thread::spawn(move || requests::ask_hall(&s3, &job("large", ""), "small"));
    let r2 = next_request(&mut w);
    let o = t.human(HUMAN, &format!("approvals deny {}", r2.id));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!asked.join().unwrap().unwrap().approved);

    // The audit log: who asked, who decided, what is written.
    let rec = t.audit_of(&r.id);
    assert_eq!(rec.event, "resources");
    assert_eq!(rec.decision, "approved");
    assert_eq!(rec.decided_by.as_ref().unwrap().who, HUMAN);
    let result = rec.result.clone().unwrap();
    assert!(
        result.contains(&format!("large;approved-by={HUMAN};via=terminal;"))
            && result.contains(&format!("request={}", r.id)),
        "{result}"
    );
    assert_eq!(t.audit_of(&r2.id).decision, "denied");
    let o = t.root_nuketown(&["audit", "--verify"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}
