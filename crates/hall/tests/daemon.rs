//! The daemon in this process on sockets in a temporary directory, driven by
//! the real clients over real Unix sockets (the sudo path end to end is in
//! crates/nuketown/tests/hall_*.rs). Runs as root: the hall hears only root
//! requesters, and some peers here are other uids.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nuketown_hall::audit::{joined, AuditLog, Record};
use nuketown_hall::client::{Approver, ClientError, Requester};
use nuketown_hall::protocol::{
    self, Ask, FromApprover, RequestView, ToApprover, ToRequester, VERSION,
};
use nuketown_hall::server::{self, Config};

const ADA: u32 = 1990;
const VOX: u32 = 1991;
const STRANGER: u32 = 1992;
const WAIT: Option<Duration> = Some(Duration::from_secs(20));

struct TestHall {
    dir: tempfile::TempDir,
    cfg: Config,
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

fn town_text(ada_timeout: u64) -> String {
    format!(
        "humanUser = \"nkthuman\"\n\
         [agents.nktada]\nuid = {ADA}\n\
         sudo = {{ enable = true, timeout = {ada_timeout}, maxPending = 2, autoApprove = [{{ argv = [\"/usr/bin/true\"] }}], deny = [{{ argv = [\"rm\"], prefix = true }}] }}\n\
         [agents.nktvox]\nuid = {VOX}\nsudo = {{ enable = true, timeout = 60, maxPending = 1000 }}\n\
         [agents.nkteve]\nuid = 1993\n"
    )
}

impl TestHall {
    fn start(town: &str) -> TestHall {
        assert!(
            nix::unistd::geteuid().is_root(),
            "run as root (CI does): the hall hears only root requesters"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("town.toml"), town).unwrap();
        let cfg = Config {
            requester_socket: dir.path().join("hall.sock"),
            approver_socket: dir.path().join("approvers.sock"),
            mode_file: dir.path().join("mode"),
            audit_log: dir.path().join("audit.jsonl"),
            town: dir.path().join("town.toml"),
            ssh_agent_dir: dir.path().join("ssh"),
            sealing_key: dir.path().join("sealing.key"),
            ask_socket: dir.path().join("ask.sock"),
            // Its own table, never touched here: no agent of this town is restricted.
            nft_table: "nuketown_hall_daemon_test".into(),
            nftables_file: None,
            host_state: dir.path().join("state.json"),
            accounts: Default::default(),
            nuketown: "nuketown".into(),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listening = {
            let _in = rt.enter();
            server::listen(cfg.clone()).unwrap()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = rt.spawn(listening.serve(async move {
            let _ = stopped.await;
        }));
        TestHall {
            dir,
            cfg,
            rt,
            stop: Some(stop),
            served: Some(served),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn requester(&self) -> Requester {
        let r = Requester::connect(&self.cfg.requester_socket).unwrap();
        r.set_timeout(WAIT).unwrap();
        r
    }

    fn ask(&self, uid: u32, argv: &[&str]) -> Requester {
        let mut r = self.requester();
        r.ask(opened_ask(uid, argv)).unwrap();
        r
    }

    fn approver(&self) -> Approver {
        let a = Approver::connect(&self.cfg.approver_socket).unwrap();
        a.set_timeout(WAIT).unwrap();
        a
    }

    fn watcher(&self) -> Approver {
        let mut a = self.approver();
        assert!(a.watch("terminal").unwrap().is_empty());
        a
    }

    fn audit(&self) -> Vec<Record> {
        AuditLog::read(&self.cfg.audit_log).unwrap_or_default()
    }

    /// Stop the hall and wait until it has.
    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
            let served = self.served.take().unwrap();
            self.rt.block_on(served).unwrap().unwrap();
        }
    }
}

impl Drop for TestHall {
    fn drop(&mut self) {
        self.stop();
    }
}

fn decision(r: &mut Requester) -> (bool, String, String, String) {
    loop {
        match r.recv().unwrap() {
            ToRequester::Pending { .. } => continue,
            ToRequester::Decision {
                approved,
                by,
                reason,
                ..
            } => return (approved, by.who, by.channel, reason),
        }
    }
}

fn pending_id(r: &mut Requester) -> String {
    match r.recv().unwrap() {
        ToRequester::Pending { id, .. } => id,
        other => panic!("expected pending, got {other:?}"),
    }
}

/// A request as the entry point makes it: run from `/`, the program opened and named canonically.
fn opened_ask(uid: u32, argv: &[&str]) -> Ask {
    let argv = argv.iter().map(|s| s.to_string()).collect();
    nuketown_hall::files::prepare(argv, "/", "root", uid)
        .unwrap()
        .ask
}

fn next_request(a: &mut Approver) -> RequestView {
    loop {
        if let ToApprover::Request { request } = a.recv().unwrap() {
            return request;
        }
    }
}

fn next_reply(a: &mut Approver) -> ToApprover {
    loop {
        match a.recv().unwrap() {
            m @ (ToApprover::Ok { .. } | ToApprover::Error { .. }) => return m,
            _ => continue,
        }
    }
}

#[test]
fn sockets_are_private_and_a_second_hall_is_refused() {
    let h = TestHall::start(&town_text(60));
    let req = std::fs::metadata(&h.cfg.requester_socket).unwrap();
    assert_eq!((req.mode() & 0o777, req.uid(), req.gid()), (0o600, 0, 0));
    let app = std::fs::metadata(&h.cfg.approver_socket).unwrap();
    assert_eq!((app.mode() & 0o777, app.uid()), (0o660, 0));
    if let Ok(Some(g)) = nix::unistd::Group::from_name(nuketown_hall::APPROVERS_GROUP) {
        assert_eq!(app.gid(), g.gid.as_raw());
    }
    let _in = h.rt.enter();
    let e = server::listen(h.cfg.clone())
        .err()
        .expect("a second hall on the same sockets");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
}

#[test]
fn policy_approves_and_the_exit_status_is_audited() {
    let h = TestHall::start(&town_text(60));
    let mut r = h.ask(ADA, &["/usr/bin/true"]);
    let id = match r.recv().unwrap() {
        ToRequester::Decision {
            id,
            approved: true,
            by,
            ..
        } => {
            assert_eq!((by.who.as_str(), by.channel.as_str()), ("policy", "policy"));
            id
        }
        other => panic!("{other:?}"),
    };
    assert!(protocol::is_id(&id));
    r.exit(&id, 3).unwrap();
    drop(r);
    // The exit record is written when the hall reads it: wait for the connection to end.
    let mut r2 = h.ask(ADA, &["rm", "-rf", "/"]);
    let (approved, ..) = decision(&mut r2);
    assert!(!approved);
    let mut h = h;
    h.stop();
    let records = joined(h.audit());
    let first = records.iter().find(|r| r.id == id).unwrap();
    assert_eq!(
        (first.agent.as_str(), first.uid, first.decision.as_str()),
        ("nktada", ADA, "approved")
    );
    assert_eq!(first.argv, ["/usr/bin/true"]);
    assert_eq!(first.target, "root");
    assert_eq!(first.exit_status, Some(3));
    assert!(first.latency_ms.is_some());
    assert!(first.time.ends_with('Z'));
}

#[test]
fn unknown_agents_disabled_sudo_and_malformed_or_oversized_requests_are_denied() {
    let h = TestHall::start(&town_text(60));
    for (uid, why) in [
        (STRANGER, "is not an enabled agent"),
        (1993, "sudo.enable is false"),
    ] {
        let mut r = h.ask(uid, &["/usr/bin/id"]);
        let (approved, _, _, reason) = decision(&mut r);
        assert!(!approved && reason.contains(why), "{reason}");
    }
    let long = "x".repeat(protocol::MAX_LINE + 1);
    for raw in [
        b"{not json}\n".to_vec(),
        format!("{long}\n").into_bytes(),
        long.into_bytes(),
        b"{\"type\":\"request\",\"v\":1,\"argv\":[\"id\"],\"cwd\":\"/\",\"user\":\"root\",\"sudo_uid\":1990}\n".to_vec(),
        b"{\"type\":\"exit\",\"v\":1,\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":0}\n".to_vec(),
        b"{\"type\":\"request\",\"v\":9,\"argv\":[\"/usr/bin/id\"],\"cwd\":\"/\",\"user\":\"root\",\"sudo_uid\":1990}\n".to_vec(),
    ] {
        let mut r = h.requester();
        r.send_raw(&raw).unwrap();
        match r.recv() {
            Ok(ToRequester::Decision { approved: false, .. }) => {}
            other => panic!("{:?} must be denied, got {other:?}", String::from_utf8_lossy(&raw[..raw.len().min(80)])),
        }
    }
    assert!(h.audit().iter().all(|r| r.decision != "approved"));
}

#[test]
fn a_human_decides_and_the_decision_binds_to_one_request_of_one_agent() {
    let h = TestHall::start(&town_text(60));
    let mut w = h.watcher();
    let mut ada = h.ask(ADA, &["/usr/bin/id"]);
    let ra = next_request(&mut w);
    let mut vox = h.ask(VOX, &["/usr/bin/whoami"]);
    let rv = next_request(&mut w);
    assert_eq!((ra.agent.as_str(), rv.agent.as_str()), ("nktada", "nktvox"));
    assert_eq!(pending_id(&mut ada), ra.id);
    assert_eq!(pending_id(&mut vox), rv.id);
    let decide = |w: &mut Approver, id: &str, agent: &str, argv: &[String], approve: bool| {
        w.send(&FromApprover::Decide {
            v: VERSION,
            id: id.into(),
            agent: agent.into(),
            argv: argv.to_vec(),
            approve,
            grant_secs: None,
            channel: "terminal".into(),
        })
        .unwrap();
        next_reply(w)
    };
    // ada's request approved as vox's, or with vox's argv, or vox's id with ada's name: refused.
    for (id, agent, argv) in [
        (&ra.id, "nktvox", &ra.argv),
        (&ra.id, "nktada", &rv.argv),
        (&rv.id, "nktada", &rv.argv),
    ] {
        match decide(&mut w, id, agent, argv, true) {
            ToApprover::Error {
                id: Some(eid),
                message,
            } => assert!(
                eid == *id && message.contains("nothing was decided"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        decide(&mut w, &rv.id, "nktvox", &rv.argv, true),
        ToApprover::Ok { .. }
    ));
    let (approved, who, channel, reason) = decision(&mut vox);
    assert!(approved);
    assert_eq!(
        (who.as_str(), channel.as_str(), reason.as_str()),
        ("root", "terminal", "approved by root via terminal")
    );
    // Replayed: nothing more happens.
    assert!(matches!(
        decide(&mut w, &rv.id, "nktvox", &rv.argv, true),
        ToApprover::Error { .. }
    ));
    // ada still waits; deny her.
    assert!(matches!(
        decide(&mut w, &ra.id, "nktada", &ra.argv, false),
        ToApprover::Ok { .. }
    ));
    let (approved, _, _, reason) = decision(&mut ada);
    assert!(!approved);
    assert_eq!(reason, "denied by root via terminal");
}

#[test]
fn a_time_boxed_grant_approves_the_same_command_again() {
    let h = TestHall::start(&town_text(60));
    let mut w = h.watcher();
    let mut first = h.ask(VOX, &["/usr/bin/id", "-u"]);
    let r = next_request(&mut w);
    w.send(&FromApprover::Decide {
        v: VERSION,
        id: r.id.clone(),
        agent: r.agent.clone(),
        argv: r.argv.clone(),
        approve: true,
        grant_secs: Some(600),
        channel: "terminal".into(),
    })
    .unwrap();
    assert!(matches!(next_reply(&mut w), ToApprover::Ok { .. }));
    assert!(decision(&mut first).0);
    let mut again = h.ask(VOX, &["/usr/bin/id", "-u"]);
    let (approved, who, channel, _) = decision(&mut again);
    assert!(approved);
    assert_eq!((who.as_str(), channel.as_str()), ("root", "grant"));
    // Another argv, or another agent, still asks.
    let mut other = h.ask(VOX, &["/usr/bin/id", "-g"]);
    assert_eq!(pending_id(&mut other), next_request(&mut w).id);
    let mut ada = h.ask(ADA, &["/usr/bin/id", "-u"]);
    assert_eq!(pending_id(&mut ada), next_request(&mut w).id);
}

#[test]
fn timeouts_deny() {
    let h = TestHall::start(&town_text(1));
    let mut r = h.ask(ADA, &["/usr/bin/id"]);
    match r.recv().unwrap() {
        ToRequester::Pending { timeout_secs, .. } => assert_eq!(timeout_secs, 1),
        other => panic!("{other:?}"),
    }
    let (approved, who, channel, reason) = decision(&mut r);
    assert!(!approved);
    assert_eq!(
        (who.as_str(), channel.as_str(), reason.as_str()),
        ("hall", "timeout", "timed out after 1 s")
    );
}

#[test]
fn an_approver_going_away_decides_nothing_and_the_last_watcher_leaving_denies() {
    let h = TestHall::start(&town_text(60));
    let mut w = h.watcher();
    let mut r = h.ask(ADA, &["/usr/bin/id"]);
    let seen = next_request(&mut w);
    // Another approver sends half a decision and hangs up: nothing is decided.
    let mut half = h.approver();
    let line = protocol::encode(&FromApprover::Decide {
        v: VERSION,
        id: seen.id.clone(),
        agent: seen.agent.clone(),
        argv: seen.argv.clone(),
        approve: true,
        grant_secs: None,
        channel: "terminal".into(),
    });
    half.send_raw(&line[..line.len() / 2]).unwrap();
    drop(half);
    let mut lister = h.approver();
    assert_eq!(lister.list().unwrap().len(), 1, "still pending");
    // The watcher that was shown it goes: denied at once, not at the timeout.
    drop(w);
    let (approved, who, channel, reason) = decision(&mut r);
    assert!(!approved);
    assert_eq!((who.as_str(), channel.as_str()), ("root", "approver-gone"));
    assert!(reason.contains("the approver went away"), "{reason}");
    assert!(lister.list().unwrap().is_empty());
}

#[test]
fn a_requester_going_away_withdraws_its_request() {
    let h = TestHall::start(&town_text(60));
    let mut w = h.watcher();
    let mut r = h.ask(ADA, &["/usr/bin/id"]);
    let seen = next_request(&mut w);
    assert_eq!(pending_id(&mut r), seen.id);
    drop(r);
    match w.recv().unwrap() {
        ToApprover::Resolved { id, outcome, .. } => {
            assert_eq!((id, outcome.as_str()), (seen.id.clone(), "cancelled"))
        }
        other => panic!("{other:?}"),
    }
    assert!(w.sender().is_ok());
    let mut h = h;
    h.stop();
    let rec = h.audit().into_iter().find(|r| r.id == seen.id).unwrap();
    assert_eq!(rec.decision, "cancelled");
}

/// Connect to `socket` as `uid` (a real other process, so SO_PEERCRED says so),
/// send `line`, and return what came back before the hall closed.
fn as_uid(uid: u32, socket: &Path, line: &str) -> (bool, String) {
    let o = Command::new("perl")
        .args(["-MIO::Socket::UNIX", "-e", r#"$SIG{PIPE} = "IGNORE"; my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or do { print "CONNECT-FAILED"; exit 3 }; print $s $ARGV[1]; local $/; my $r = <$s>; print $r // "";"#])
        .arg(socket)
        .arg(line)
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn peers_that_are_not_root_or_approvers_get_nothing() {
    let h = TestHall::start(&town_text(60));
    // The file modes keep them out...
    let (ok, out) = as_uid(ADA, &h.cfg.requester_socket, "");
    assert!(!ok && out == "CONNECT-FAILED", "{out}");
    let (ok, out) = as_uid(ADA, &h.cfg.approver_socket, "");
    assert!(!ok && out == "CONNECT-FAILED", "{out}");
    // ...and were they opened up by mistake, SO_PEERCRED still does.
    for s in [&h.cfg.requester_socket, &h.cfg.approver_socket] {
        std::fs::set_permissions(s, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let ask = format!("{{\"type\":\"request\",\"v\":1,\"argv\":[\"/usr/bin/id\"],\"cwd\":\"/\",\"user\":\"root\",\"sudo_uid\":{ADA}}}\n");
    let (ok, out) = as_uid(ADA, &h.cfg.requester_socket, &ask);
    assert!(
        ok && out.is_empty(),
        "an agent on the requester socket got {out:?}"
    );
    let (ok, out) = as_uid(ADA, &h.cfg.approver_socket, "{\"type\":\"list\",\"v\":1}\n");
    assert!(
        ok && out.is_empty(),
        "an agent on the approver socket got {out:?}"
    );
    let mut root = h.approver();
    assert!(
        root.list().unwrap().is_empty(),
        "the agent's request was never held"
    );
}

#[test]
fn the_mock_file_decides_and_is_marked() {
    let h = TestHall::start(&town_text(60));
    std::fs::write(h.path("mode"), "MOCK_DENIED\n").unwrap();
    std::fs::set_permissions(h.path("mode"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut r = h.ask(ADA, &["/usr/bin/id"]);
    match r.recv().unwrap() {
        ToRequester::Decision {
            approved: false,
            mock: true,
            reason,
            by,
            ..
        } => {
            assert_eq!(reason, "[MOCK] denied by root's mock mode file");
            assert_eq!(by.channel, "mock");
        }
        other => panic!("{other:?}"),
    }
    // Deny rules still win over MOCK_APPROVED.
    std::fs::write(h.path("mode"), "MOCK_APPROVED\n").unwrap();
    let mut r = h.ask(ADA, &["/usr/bin/rm", "-rf", "/"]);
    assert!(matches!(
        r.recv().unwrap(),
        ToRequester::Decision {
            approved: false,
            mock: false,
            ..
        }
    ));
    let mut r = h.ask(ADA, &["/usr/bin/id"]);
    assert!(matches!(
        r.recv().unwrap(),
        ToRequester::Decision {
            approved: true,
            mock: true,
            ..
        }
    ));
    // Writable by others: ignored, so the request waits for a human.
    std::fs::set_permissions(h.path("mode"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut r = h.ask(ADA, &["/usr/bin/id"]);
    assert!(matches!(r.recv().unwrap(), ToRequester::Pending { .. }));
}

#[test]
fn a_broken_town_denies_everything_until_it_is_fixed() {
    let h = TestHall::start(&town_text(60));
    std::fs::write(
        h.path("town.toml"),
        "humanUser = \"nkthuman\"\n[agents.nktada]\nuid = \"not a number\"\n",
    )
    .unwrap();
    let mut r = h.ask(ADA, &["/usr/bin/true"]);
    let (approved, _, _, reason) = decision(&mut r);
    assert!(
        !approved && reason.contains("the town cannot be read"),
        "{reason}"
    );
    std::fs::write(h.path("town.toml"), town_text(60)).unwrap();
    let mut r = h.ask(ADA, &["/usr/bin/true"]);
    assert!(decision(&mut r).0, "re-read once fixed");
}

#[test]
fn stopping_denies_what_is_pending() {
    let mut h = TestHall::start(&town_text(60));
    let mut r = h.ask(ADA, &["/usr/bin/id"]);
    pending_id(&mut r);
    h.stop();
    let (approved, _, _, reason) = decision(&mut r);
    assert!(!approved);
    assert_eq!(reason, "the town hall is stopping, denied");
    assert!(!h.cfg.requester_socket.exists(), "its socket is gone");
    assert!(matches!(
        Requester::connect(&h.cfg.requester_socket),
        Err(ClientError::Connect { .. })
    ));
}

#[test]
fn many_pending_requests_are_all_answered() {
    let h = TestHall::start(&town_text(60));
    let mut w = h.watcher();
    let n = 300;
    let mut requesters: Vec<Requester> = (0..n)
        .map(|i| h.ask(VOX, &["/usr/bin/echo", &i.to_string()]))
        .collect();
    let mut seen = Vec::new();
    while seen.len() < n {
        seen.push(next_request(&mut w));
    }
    let mut decider = h.approver();
    assert_eq!(decider.list().unwrap().len(), n);
    for r in &seen {
        decider
            .decide(
                r,
                r.argv[1].parse::<usize>().unwrap() % 2 == 0,
                None,
                "terminal",
            )
            .unwrap();
    }
    for (i, r) in requesters.iter_mut().enumerate() {
        assert_eq!(decision(r).0, i % 2 == 0, "request {i}");
    }
}

#[test]
fn an_agent_cannot_flood_its_approvers() {
    let h = TestHall::start(&town_text(60));
    let mut w = h.watcher();
    // ada may have two requests waiting (maxPending = 2); the third is denied at once.
    let mut first = h.ask(ADA, &["/usr/bin/id", "-u"]);
    let _second = h.ask(ADA, &["/usr/bin/id", "-g"]);
    let seen = [next_request(&mut w), next_request(&mut w)];
    let mut third = h.ask(ADA, &["/usr/bin/id", "-n"]);
    let (approved, who, channel, reason) = decision(&mut third);
    assert!(!approved);
    assert_eq!((who.as_str(), channel.as_str()), ("hall", "hall"));
    assert!(
        reason.contains("already has 2 requests waiting") && reason.contains("maxPending"),
        "{reason}"
    );
    // Another agent is not held back by ada's flood.
    let _vox = h.ask(VOX, &["/usr/bin/id"]);
    assert_eq!(next_request(&mut w).agent, "nktvox");
    // Once one of ada's is decided, ada may ask again.
    let ada_first = seen.iter().find(|r| r.argv[1] == "-u").unwrap();
    h.approver()
        .decide(ada_first, false, None, "terminal")
        .unwrap();
    assert!(!decision(&mut first).0);
    let _again = h.ask(ADA, &["/usr/bin/id", "-n"]);
    assert_eq!(next_request(&mut w).argv[1], "-n");
    // The refusal is in the audit log, attributed.
    assert!(h
        .audit()
        .iter()
        .any(|r| r.agent == "nktada" && r.reason.contains("maxPending") && r.decision == "denied"));
}
