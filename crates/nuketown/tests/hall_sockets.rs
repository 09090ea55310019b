//! The hall's sockets and who they hear, end to end with real users:
//! requester socket root-only, approver socket for the approvers group, peers
//! known by SO_PEERCRED; decisions bound to one request of one agent, never
//! replayed; the mock mode file believed only from its rightful owner.
//! Needs root.

mod hall_fixture;

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::process::{Command, Output, Stdio};

use hall_fixture::*;
use nuketown_hall::protocol::{FromApprover, ToApprover, VERSION};

/// Connect to `socket` as `user`, send `line`, return what came back before the hall closed.
fn raw_as(user: &str, socket: &std::path::Path, line: &str) -> Output {
    finish(
        Command::new("su")
            .args(["-s", "/bin/sh", user, "-c"])
            .arg(format!(
                "perl -MIO::Socket::UNIX -e '$SIG{{PIPE}} = q(IGNORE); my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or do {{ print qq(CONNECT-FAILED: $!); exit 3 }}; print $s $ARGV[1]; local $/; my $r = <$s>; print $r // q();' {} '{}'",
                socket.display(),
                line
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn an_agent_on_either_socket_gets_nothing() {
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    let req = std::fs::metadata(nuketown_hall::REQUESTER_SOCKET).unwrap();
    assert_eq!((req.mode() & 0o777, req.uid(), req.gid()), (0o600, 0, 0));
    let app = std::fs::metadata(t.approver_socket()).unwrap();
    let group = nix::unistd::Group::from_name(nuketown_hall::APPROVERS_GROUP)
        .unwrap()
        .unwrap();
    assert_eq!(
        (app.mode() & 0o777, app.uid(), app.gid()),
        (0o660, 0, group.gid.as_raw())
    );

    let ask = format!("{{\"type\":\"request\",\"v\":1,\"argv\":[\"/usr/bin/id\"],\"cwd\":\"/\",\"user\":\"root\",\"sudo_uid\":{ADA_UID}}}\n");
    let list = "{\"type\":\"list\",\"v\":1}\n";
    // The modes keep the agent out...
    let o = raw_as(
        ADA,
        std::path::Path::new(nuketown_hall::REQUESTER_SOCKET),
        &ask,
    );
    assert!(
        stdout(&o).starts_with("CONNECT-FAILED: Permission denied"),
        "{}",
        stdout(&o)
    );
    let o = raw_as(ADA, &t.approver_socket(), list);
    assert!(
        stdout(&o).starts_with("CONNECT-FAILED: Permission denied"),
        "{}",
        stdout(&o)
    );
    // ...and were they opened up by mistake, the peer's uid still does.
    std::fs::set_permissions(
        nuketown_hall::REQUESTER_SOCKET,
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    std::fs::set_permissions(t.approver_socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = raw_as(
        ADA,
        std::path::Path::new(nuketown_hall::REQUESTER_SOCKET),
        &ask,
    );
    assert!(
        o.status.success() && stdout(&o).is_empty(),
        "an agent on the requester socket got {:?}",
        stdout(&o)
    );
    let o = raw_as(ADA, &t.approver_socket(), list);
    assert!(
        o.status.success() && stdout(&o).is_empty(),
        "an agent on the approver socket got {:?}",
        stdout(&o)
    );
    let mut root = nuketown_hall::client::Approver::connect(&t.approver_socket()).unwrap();
    assert!(
        root.list().unwrap().is_empty(),
        "the agent's request was never held"
    );
    // The same for a human in the approvers group whom the town does not list.
    let o = t.human(OUTSIDER, "approvals list");
    assert!(
        !o.status.success() && stderr(&o).contains("not one of this town's approvers"),
        "{}",
        stderr(&o)
    );
    // The town's human is heard.
    let o = t.human(HUMAN, "approvals list");
    assert_eq!(stdout(&o), "no pending requests\n", "{}", stderr(&o));
}

#[test]
fn a_decision_for_adas_request_cannot_approve_voxs_nor_be_replayed() {
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    let mut w = t.watch();
    let ada = t.spawn_agent(ADA, "sudo id -un");
    let ra = next_request(&mut w);
    let vox = t.spawn_agent(VOX, "sudo id -u");
    let rv = next_request(&mut w);
    assert_eq!((ra.agent.as_str(), rv.agent.as_str()), (ADA, VOX));
    assert!(
        ra.id != rv.id
            && nuketown_hall::protocol::is_id(&ra.id)
            && nuketown_hall::protocol::is_id(&rv.id)
    );
    let mut forge = nuketown_hall::client::Approver::connect(&t.approver_socket()).unwrap();
    forge.set_timeout(Some(DEADLINE)).unwrap();
    let mut decide = |id: &str, agent: &str, argv: &[String]| {
        forge
            .send(&FromApprover::Decide {
                v: VERSION,
                id: id.into(),
                agent: agent.into(),
                argv: argv.to_vec(),
                approve: true,
                grant_secs: None,
                channel: "terminal".into(),
            })
            .unwrap();
        forge.recv().unwrap()
    };
    for (id, agent, argv) in [
        (&ra.id, VOX, &rv.argv),
        (&ra.id, VOX, &ra.argv),
        (&ra.id, ADA, &rv.argv),
        (&rv.id, ADA, &ra.argv),
    ] {
        match decide(id, agent, argv) {
            ToApprover::Error { message, .. } => {
                assert!(message.contains("nothing was decided"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
    // The human approves vox's request, and only that.
    let o = t.human(HUMAN, &format!("approvals approve {}", rv.id));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&finish(vox)), "0\n");
    // Replayed, by the CLI or on the wire: nothing.
    let o = t.human(HUMAN, &format!("approvals approve {}", rv.id));
    assert!(
        !o.status.success() && stderr(&o).contains("no pending request"),
        "{}",
        stderr(&o)
    );
    assert!(matches!(
        decide(&rv.id, VOX, &rv.argv),
        ToApprover::Error { .. }
    ));
    // ada still waits.
    let pending = t.human(HUMAN, "approvals list --json");
    let ids: Vec<String> = stdout(&pending)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, std::slice::from_ref(&ra.id));
    assert!(t
        .human(HUMAN, &format!("approvals deny {}", &ra.id[..10]))
        .status
        .success());
    let o = finish(ada);
    assert!(
        stderr(&o).contains(&format!("denied by {HUMAN} via terminal")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_mock_file_counts_only_from_root_or_an_approver_and_only_when_nobody_else_can_write_it() {
    let mut t = TestTown::new(Options {
        ada_timeout: 2,
        ..Options::default()
    });
    t.start_hall();
    // The agent's own file, or the human's that others can write: ignored; the request waits and times out.
    for (owner, mode) in [(ADA, 0o600), (HUMAN, 0o666), (HUMAN, 0o620)] {
        t.set_mode_file("MOCK_APPROVED", owner, mode);
        let o = t.agent(ADA, "sudo id -u");
        assert!(
            stderr(&o).contains("timed out after 2 s, denied"),
            "{owner} {mode:o}: {}",
            stderr(&o)
        );
        assert_eq!(stdout(&o), "");
    }
    // A link owned by the human, to a good file: not followed.
    t.set_mode_file("MOCK_APPROVED", HUMAN, 0o600);
    let real = t.path("mode.real");
    std::fs::rename(t.mode_file(), &real).unwrap();
    symlink(&real, t.mode_file()).unwrap();
    let o = t.agent(ADA, "sudo id -u");
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    std::fs::remove_file(t.mode_file()).unwrap();
    // The human's own file: believed (for what is proven root's: run from
    // `/`), and every such decision says [MOCK].
    t.set_mode_file("MOCK_APPROVED", HUMAN, 0o644);
    let o = t.agent(ADA, "cd / && sudo id -u");
    assert_eq!(stdout(&o), "0\n", "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "nuketown: [MOCK] approved by {HUMAN}'s mock mode file"
        )),
        "{}",
        stderr(&o)
    );
    t.set_mode_file("MOCK_DENIED", "root", 0o644);
    let o = t.agent(ADA, "sudo id -u");
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(1), ""));
    assert!(
        stderr(&o).contains("nuketown: [MOCK] denied by root's mock mode file"),
        "{}",
        stderr(&o)
    );
    let audit = t.audit();
    let mock: Vec<(bool, String)> = audit
        .iter()
        .filter(|r| r.mock)
        .map(|r| (r.decision == "approved", r.reason.clone()))
        .collect();
    assert_eq!(mock.len(), 2, "{audit:#?}");
    assert!(mock.iter().all(|(_, reason)| reason.starts_with("[MOCK] ")));
    assert!(audit
        .iter()
        .filter(|r| !r.mock)
        .all(|r| r.decision == "denied"));
    let shown = stdout(&t.human(HUMAN, "audit"));
    assert_eq!(
        shown.matches("[MOCK]").count(),
        4,
        "marked in the decision and its reason:\n{shown}"
    );
}
