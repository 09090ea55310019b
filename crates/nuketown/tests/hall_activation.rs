//! `nuketown hall` under socket activation, as systemd starts it: the two
//! sockets arrive as file descriptors 3 and 4 (LISTEN_FDS, LISTEN_PID,
//! LISTEN_FDNAMES), readiness and stopping go to NOTIFY_SOCKET. Done here
//! the way systemd does it, without systemd. Needs root (the hall hears only
//! root requesters).

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use nuketown_hall::client::{Approver, Requester};
use nuketown_hall::protocol::ToRequester;

#[test]
fn activated_sockets_and_sd_notify() {
    assert!(nix::unistd::geteuid().is_root(), "run as root (CI does)");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(
        p("town.toml"),
        "humanUser = \"nkthuman\"\n[agents.nktact]\nuid = 1994\nsudo = { enable = true, autoApprove = [{ argv = [\"/usr/bin/true\"] }] }\n",
    )
    .unwrap();
    // What systemd's .socket units would have bound.
    let requester = UnixListener::bind(p("activated-hall.sock")).unwrap();
    let approver = UnixListener::bind(p("activated-approvers.sock")).unwrap();
    let notify = UnixDatagram::bind(p("notify.sock")).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let (rfd, afd) = (requester.as_raw_fd(), approver.as_raw_fd());

    let mut cmd = Command::new("sh");
    cmd.args(["-c", "export LISTEN_PID=$$; exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_nuketown"))
        .arg("--town")
        .arg(p("town.toml"))
        .arg("hall")
        .arg("--socket")
        .arg(p("unused-hall.sock"))
        .arg("--approver-socket")
        .arg(p("unused-approvers.sock"))
        .arg("--mode-file")
        .arg(p("mode"))
        .arg("--audit-log")
        .arg(p("audit.jsonl"))
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "requester:approvers")
        .env("NOTIFY_SOCKET", p("notify.sock"))
        .env("NUKETOWN_REBUILD_SOCKET", p("rebuild.sock"))
        .env("NUKETOWN_REBUILD_HISTORY", p("rebuilds.jsonl"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // Safety: between fork and exec, only dup(2)s.
    unsafe {
        cmd.pre_exec(move || {
            // Out of the way first, in case either already sits on 3 or 4.
            let r = nix::fcntl::fcntl(rfd, nix::fcntl::FcntlArg::F_DUPFD(100))?;
            let a = nix::fcntl::fcntl(afd, nix::fcntl::FcntlArg::F_DUPFD(100))?;
            nix::unistd::dup2(r, 3)?;
            nix::unistd::dup2(a, 4)?;
            Ok(())
        });
    }
    let mut hall = cmd.spawn().unwrap();

    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 on NOTIFY_SOCKET");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    assert!(
        !p("unused-hall.sock").exists() && !p("unused-approvers.sock").exists(),
        "it bound nothing of its own"
    );

    let mut r = Requester::connect(&p("activated-hall.sock")).unwrap();
    r.set_timeout(Some(Duration::from_secs(60))).unwrap();
    r.ask(
        nuketown_hall::files::prepare(vec!["/usr/bin/true".into()], "/", "root", 1994)
            .unwrap()
            .ask,
    )
    .unwrap();
    match r.recv().unwrap() {
        ToRequester::Decision { approved, by, .. } => assert!(approved && by.channel == "policy"),
        other => panic!("{other:?}"),
    }
    let mut a = Approver::connect(&p("activated-approvers.sock")).unwrap();
    a.set_timeout(Some(Duration::from_secs(60))).unwrap();
    assert!(a.list().unwrap().is_empty());

    drop(r);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(hall.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let n = notify.recv(&mut buf).expect("STOPPING=1 on NOTIFY_SOCKET");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert!(hall.wait().unwrap().success());
    assert!(
        p("activated-hall.sock").exists(),
        "systemd's socket files are systemd's to remove"
    );
}
