//! The hall's state without sockets: one outcome per request, decisions bound
//! to id + agent + argv, no replay, grants, and what happens when approvers go.

use nuketown_hall::protocol::{DecidedBy, FileRef, RequestView, ToApprover};
use nuketown_hall::state::{GrantKey, Outcome, Refused, State};
use nuketown_hall::time::now_ms;

fn view(id: &str, agent: &str, argv: &[&str]) -> RequestView {
    RequestView {
        id: id.into(),
        agent: agent.into(),
        uid: 1100,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        program: FileRef {
            path: argv[0].into(),
            dev: 1,
            ino: 7,
        },
        typed: None,
        cwd: "/".into(),
        user: "root".into(),
        group: None,
        agent_can_write: false,
        agent_writable_args: vec![],
        warnings: vec![],
        notes: vec![],
        grantable: true,
        asked_ms: now_ms(),
        deadline_ms: now_ms() + 60_000,
        key_use: None,
        tool: None,
        more: None,
        network: None,
        resources: None,
    }
}

const KEY: GrantKey = GrantKey {
    program: (1, 7),
    cwd: (1, 2),
    grantable: true,
};

/// Submit with room for many pending requests.
fn submit(s: &State, v: RequestView) -> tokio::sync::oneshot::Receiver<Outcome> {
    s.submit(v, KEY, 100).unwrap()
}

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const V: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_decision_binds_to_its_request_and_agent_and_is_not_replayed() {
    let s = State::new();
    let mut ada = submit(&s, view(A, "ada", &["/usr/bin/id"]));
    let mut vox = submit(&s, view(V, "vox", &["/usr/bin/whoami"]));
    // ada's id with vox's name or argv, or the other way round: refused, nothing decided.
    for (id, agent, a) in [
        (A, "vox", &["/usr/bin/id"][..]),
        (A, "ada", &["/usr/bin/whoami"]),
        (V, "ada", &["/usr/bin/whoami"]),
        (V, "vox", &["/usr/bin/id"]),
    ] {
        assert!(matches!(
            s.decide("josh", id, agent, &argv(a), true, None, "terminal"),
            Err(Refused::Mismatch { .. })
        ));
    }
    assert_eq!(s.pending().len(), 2);
    assert!(ada.try_recv().is_err() && vox.try_recv().is_err());
    s.decide(
        "josh",
        V,
        "vox",
        &argv(&["/usr/bin/whoami"]),
        true,
        None,
        "terminal",
    )
    .unwrap();
    let o = vox.try_recv().unwrap();
    assert!(o.approved);
    assert_eq!(
        o.by,
        DecidedBy {
            who: "josh".into(),
            channel: "terminal".into()
        }
    );
    assert_eq!(o.reason, "approved by josh via terminal");
    // Replaying the same decision finds nothing.
    assert!(matches!(
        s.decide(
            "josh",
            V,
            "vox",
            &argv(&["/usr/bin/whoami"]),
            true,
            None,
            "terminal"
        ),
        Err(Refused::NotPending(_))
    ));
    assert!(ada.try_recv().is_err(), "ada still waits");
    assert_eq!(s.pending().len(), 1);
}

#[test]
fn unknown_channels_and_bad_grants_are_refused() {
    let s = State::new();
    let _rx = submit(&s, view(A, "ada", &["/usr/bin/id"]));
    let a = argv(&["/usr/bin/id"]);
    assert!(matches!(
        s.decide("josh", A, "ada", &a, true, None, "policy"),
        Err(Refused::Channel(_))
    ));
    assert!(matches!(
        s.decide("josh", A, "ada", &a, true, None, "matrix:josh"),
        Err(Refused::Channel(_))
    ));
    assert!(matches!(
        s.decide("josh", A, "ada", &a, false, Some(60), "terminal"),
        Err(Refused::Grant)
    ));
    assert!(matches!(
        s.decide("josh", A, "ada", &a, true, Some(0), "terminal"),
        Err(Refused::Grant)
    ));
    assert!(matches!(
        s.decide("josh", A, "ada", &a, true, Some(86_401), "terminal"),
        Err(Refused::Grant)
    ));
    assert!(s
        .decide("josh", A, "ada", &a, true, None, "matrix:@josh:example.org")
        .is_ok());
}

#[test]
fn the_first_outcome_wins() {
    let s = State::new();
    let mut rx = submit(&s, view(A, "ada", &["/usr/bin/id"]));
    let timeout = Outcome {
        approved: false,
        by: DecidedBy {
            who: "hall".into(),
            channel: "timeout".into(),
        },
        reason: "timed out after 1 s".into(),
    };
    assert!(s.resolve(A, timeout.clone()));
    assert!(!s.resolve(A, timeout.clone()), "only once");
    assert!(matches!(
        s.decide(
            "josh",
            A,
            "ada",
            &argv(&["/usr/bin/id"]),
            true,
            None,
            "terminal"
        ),
        Err(Refused::NotPending(_))
    ));
    assert_eq!(rx.try_recv().unwrap(), timeout);
}

#[test]
fn a_grant_covers_the_same_argv_for_the_same_agent_only() {
    let s = State::new();
    let _rx = submit(
        &s,
        view(A, "ada", &["/usr/bin/systemctl", "restart", "nginx"]),
    );
    s.decide(
        "josh",
        A,
        "ada",
        &argv(&["/usr/bin/systemctl", "restart", "nginx"]),
        true,
        Some(600),
        "terminal",
    )
    .unwrap();
    let grants = s.grants();
    assert_eq!(grants.len(), 1);
    let g = &grants[0];
    assert_eq!(
        (g.agent.as_str(), g.by.as_str(), g.user.as_str()),
        ("ada", "josh", "root")
    );
    let ask = |a: &[&str], user: &str| nuketown_hall::protocol::Ask {
        argv: argv(a),
        program: FileRef {
            path: a[0].into(),
            dev: 1,
            ino: 7,
        },
        typed: None,
        cwd: FileRef {
            path: "/".into(),
            dev: 1,
            ino: 2,
        },
        user: user.into(),
        group: None,
        sudo_uid: 1,
    };
    let now = now_ms();
    assert!(g.covers(
        "ada",
        &ask(&["/usr/bin/systemctl", "restart", "nginx"], "root"),
        now
    ));
    assert!(!g.covers(
        "vox",
        &ask(&["/usr/bin/systemctl", "restart", "nginx"], "root"),
        now
    ));
    assert!(!g.covers(
        "ada",
        &ask(&["/usr/bin/systemctl", "restart", "nginx", "x"], "root"),
        now
    ));
    assert!(!g.covers(
        "ada",
        &ask(&["/usr/bin/systemctl", "restart", "nginx"], "vox"),
        now
    ));
    assert!(
        !g.covers(
            "ada",
            &ask(&["/usr/bin/systemctl", "restart", "nginx"], "root"),
            now + 601_000
        ),
        "expires"
    );
}

#[test]
fn watchers_see_every_request_once_and_the_last_one_leaving_denies_what_it_saw() {
    let s = State::new();
    let mut unseen = submit(&s, view(A, "ada", &["/usr/bin/id"]));
    // Nobody watches: leaving nothing to deny.
    let (now, mut events) = s.watch();
    assert_eq!(now.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [A]);
    let mut seen = submit(&s, view(V, "vox", &["/usr/bin/id"]));
    match events.try_recv().unwrap() {
        ToApprover::Request { request } => assert_eq!(request.id, V),
        other => panic!("{other:?}"),
    }
    assert!(events.try_recv().is_err(), "each request once");
    // A second watcher: the first leaving denies nothing.
    let (_, _events2) = s.watch();
    assert_eq!(s.unwatch("josh", "desktop"), 0);
    assert_eq!(s.pending().len(), 2);
    // The last one leaving denies both (both were shown to a watcher).
    assert_eq!(s.unwatch("josh", "terminal"), 2);
    assert!(s.pending().is_empty());
    for rx in [&mut unseen, &mut seen] {
        let o = rx.try_recv().unwrap();
        assert!(!o.approved);
        assert_eq!(o.by.channel, "approver-gone");
        assert!(o.reason.contains("the approver went away"), "{}", o.reason);
    }
    // A request nobody was shown stays pending when no watcher is around.
    let _later = submit(
        &s,
        view("cccccccccccccccccccccccccccccccc", "ada", &["/usr/bin/id"]),
    );
    let (_, _e) = s.watch();
    let _quiet = submit(
        &s,
        view("dddddddddddddddddddddddddddddddd", "ada", &["/usr/bin/id"]),
    );
    assert_eq!(s.unwatch("josh", "terminal"), 2);
    let _never_shown = submit(
        &s,
        view("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "ada", &["/usr/bin/id"]),
    );
    assert_eq!(s.pending().len(), 1);
}

#[test]
fn stopping_denies_everything() {
    let s = State::new();
    let mut a = submit(&s, view(A, "ada", &["/usr/bin/id"]));
    let mut b = submit(&s, view(V, "vox", &["/usr/bin/id"]));
    s.deny_all("the town hall is stopping, denied");
    assert!(!a.try_recv().unwrap().approved);
    assert!(!b.try_recv().unwrap().approved);
}
