//! Default deny, end to end: every way a request can fail to get a clear
//! approval — no hall, a hall killed or stopped mid-request, a timeout, a
//! malformed or oversized message, the approver going away, the agent giving
//! up — ends with nothing run and a clear message. Needs root.

mod hall_fixture;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use hall_fixture::*;
use nuketown_hall::protocol::{self, ToRequester};

/// The process `su` started for us (its only child).
fn child_of(pid: u32) -> u32 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    text.split_whitespace()
        .next()
        .expect("a child")
        .parse()
        .unwrap()
}

fn assert_denied(o: &std::process::Output, message: &str) {
    assert_eq!(o.status.code(), Some(1), "{}", stderr(o));
    assert_eq!(stdout(o), "", "nothing ran");
    assert!(
        stderr(o).contains(message),
        "wanted {message:?} in:\n{}",
        stderr(o)
    );
}

#[test]
fn no_hall_no_root() {
    let mut t = TestTown::new(Options::default());
    t.clear_fixed_socket();
    let o = t.agent(ADA, "sudo id -u");
    assert_denied(&o, "nuketown: the town hall is not running; denied");
}

#[test]
fn a_hall_killed_mid_request_denies() {
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    let mut w = t.watch();
    let marker = t.path("killed-marker");
    let child = t.spawn_agent(ADA, &format!("sudo touch {}", marker.display()));
    next_request(&mut w);
    t.kill_hall();
    let o = finish(child);
    assert_denied(
        &o,
        "nuketown: the town hall went away before deciding; denied",
    );
    assert!(!marker.exists());
}

#[test]
fn a_hall_stopping_denies_what_is_pending() {
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    let mut w = t.watch();
    let child = t.spawn_agent(ADA, "sudo id -u");
    next_request(&mut w);
    assert!(t.stop_hall().success());
    assert_denied(
        &finish(child),
        "nuketown: the town hall is stopping, denied",
    );
}

#[test]
fn nobody_answering_is_a_denial_after_the_timeout() {
    let mut t = TestTown::new(Options {
        ada_timeout: 2,
        ..Options::default()
    });
    t.start_hall();
    let mut w = t.watch();
    let child = t.spawn_agent(ADA, "sudo id -u");
    let r = next_request(&mut w);
    let o = finish(child);
    assert_denied(&o, "nuketown: timed out after 2 s, denied");
    assert!(stderr(&o).contains("up to 2 s"), "{}", stderr(&o));
    let rec = t.audit_of(&r.id);
    let by = rec.decided_by.unwrap();
    assert_eq!(
        (rec.decision.as_str(), by.who.as_str(), by.channel.as_str()),
        ("denied", "hall", "timeout")
    );
}

#[test]
fn the_approver_going_away_denies_what_it_was_shown() {
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    // The human's terminal approver is the only watcher; its terminal goes away.
    for how in ["stdin closed", "killed"] {
        let mut watch = t
            .nuketown_as(HUMAN, "approvals watch")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = Stream::new(watch.stdout.take().unwrap());
        out.until("watching for requests");
        let child = t.spawn_agent(ADA, "sudo id -u");
        out.until("approve? ");
        if how == "killed" {
            let pid = child_of(watch.id());
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        } else {
            drop(watch.stdin.take());
        }
        let o = finish(child);
        assert_denied(
            &o,
            &format!("nuketown: the approver went away ({HUMAN}'s terminal approver disconnected), denied"),
        );
        let _ = finish(watch);
    }
}

#[test]
fn half_a_decision_decides_nothing() {
    let mut t = TestTown::new(Options {
        ada_timeout: 3,
        ..Options::default()
    });
    t.start_hall();
    let mut w = t.watch();
    let child = t.spawn_agent(ADA, "sudo id -u");
    let r = next_request(&mut w);
    // The human's approver sends half an approval and hangs up.
    let line = protocol::encode(&protocol::FromApprover::Decide {
        v: protocol::VERSION,
        id: r.id.clone(),
        agent: r.agent.clone(),
        argv: r.argv.clone(),
        approve: true,
        grant_secs: None,
        channel: "terminal".into(),
    });
    let half = String::from_utf8_lossy(&line[..line.len() - 10]).into_owned();
    let o = finish(
        std::process::Command::new("su")
            .args(["-s", "/bin/sh", HUMAN, "-c"])
            .arg(format!(
                "perl -MIO::Socket::UNIX -e '$s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die $!; print $s $ARGV[1]; close $s' {} '{}'",
                t.approver_socket().display(),
                half.replace('\'', r"'\''")
            ))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_denied(&finish(child), "nuketown: timed out after 3 s, denied");
}

#[test]
fn malformed_and_oversized_messages_are_denied() {
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    // Straight to the requester socket, as root (the only peer it hears).
    for raw in [
        b"{not json}\n".to_vec(),
        vec![b'x'; protocol::MAX_LINE + 2],
        b"{\"type\":\"request\",\"v\":1,\"argv\":[\"id\"],\"cwd\":\"/\",\"user\":\"root\",\"sudo_uid\":1950}\n".to_vec(),
        b"{\"type\":\"request\",\"v\":2,\"argv\":[\"/usr/bin/id\"],\"cwd\":\"/\",\"user\":\"root\",\"sudo_uid\":1950}\n".to_vec(),
    ] {
        let mut s = UnixStream::connect(nuketown_hall::REQUESTER_SOCKET).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let _ = s.write_all(&raw);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        match protocol::parse_to_requester(&answer) {
            Ok(ToRequester::Decision { approved: false, .. }) => {}
            other => panic!("{:?} must be denied: {other:?}", String::from_utf8_lossy(&raw[..raw.len().min(60)])),
        }
    }
    // Through sudo: an argv too long to show is refused, not cut.
    let o = t.agent(ADA, "sudo echo \"$(head -c 70000 /dev/zero | tr '\\0' x)\"");
    assert_denied(&o, "message longer than 65536 bytes");
    assert!(t.audit().iter().all(|r| r.decision == "denied"));
}

#[test]
fn an_agent_giving_up_withdraws_its_request() {
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    let mut w = t.watch();
    let child = t.spawn_agent(ADA, "sudo id -u");
    let r = next_request(&mut w);
    // The entry point (root, under sudo) is ended, as sudo would on ^C.
    let o = std::process::Command::new("pkill")
        .args(["-TERM", "-f", &format!("^{} id -u$", t.elevate.display())])
        .output()
        .unwrap();
    assert!(o.status.success(), "the entry point was running");
    assert_eq!(
        next_resolution(&mut w),
        (
            r.id.clone(),
            "cancelled".into(),
            "hall".into(),
            "requester".into()
        )
    );
    let o = finish(child);
    assert!(!o.status.success());
    assert_eq!(stdout(&o), "");
    assert_eq!(t.audit_of(&r.id).decision, "cancelled");
}
