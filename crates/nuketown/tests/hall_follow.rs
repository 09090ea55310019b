//! An agent follows its own requests through the real hall (the ask socket,
//! `SO_PEERCRED`), as its chat bridge does: it hears its own sudo requests
//! asked and decided, and nothing of another agent's — the attack is vox
//! following while ada escalates. A user who is not an agent hears nothing
//! at all. Needs root (real users, real sudo).

mod hall_fixture;

use hall_fixture::*;
use nuketown_hall::client::Approver;

/// Follow the ask socket as whoever runs it, printing each line the hall sends.
const FOLLOW: &str = r#"import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"type":"follow","v":2}\n')
    for line in s.makefile():
        print(line, end="", flush=True)
except OSError:
    pass  # closed before the request was read
print("CLOSED", flush=True)"#;

/// Everything up to the end of the next line holding `needle`.
fn line_with(s: &mut Stream, needle: &str) -> String {
    s.until(needle) + &s.until("\n")
}

fn follow_script(t: &TestTown) -> String {
    format!(
        "exec python3 -c \"$(printf %s '{}' | base64 -d)\" {}",
        base64(FOLLOW),
        t.ask_socket().display()
    )
}

fn base64(s: &str) -> String {
    use std::io::Write;
    let mut c = std::process::Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap()
}

#[test]
fn an_agent_follows_its_own_requests_and_never_another_agents() {
    let mut t = TestTown::new(Options::default());
    t.start_hall();

    // Not an agent of the town: the hall closes without a byte.
    let o = t.agent(OUTSIDER, &follow_script(&t));
    assert_eq!(stdout(&o), "CLOSED\n", "{}", stderr(&o));

    let mut vox_follower = t.spawn_agent(VOX, &follow_script(&t));
    let mut vox = Stream::new(vox_follower.stdout.take().unwrap());
    let mut ada_follower = t.spawn_agent(ADA, &follow_script(&t));
    let mut ada = Stream::new(ada_follower.stdout.take().unwrap());
    let mut watcher = t.watch();
    let mut decider = Approver::connect(&t.approver_socket()).unwrap();
    decider.set_timeout(Some(DEADLINE)).unwrap();
    let mut vox_saw = String::new();
    let mut ada_saw = String::new();

    // vox's own request, denied: heard asked and decided, so vox follows from here on.
    let v1 = t.spawn_agent(VOX, "sudo /usr/bin/id -u 2>/dev/null");
    let r1 = next_request(&mut watcher);
    assert_eq!(r1.agent, VOX);
    let asked = line_with(&mut vox, &r1.id);
    assert!(asked.contains(r#""type":"asked""#), "{asked}");
    assert!(asked.contains(r#""kind":"sudo""#), "{asked}");
    vox_saw += &asked;
    decider.decide(&r1, false, None, "terminal").unwrap();
    let decided = line_with(&mut vox, r#""decision":"denied""#);
    assert!(decided.contains(r#""channel":"terminal""#), "{decided}");
    vox_saw += &decided;
    assert!(!finish(v1).status.success());

    // ada escalates while vox follows: asked, approved by a human, and one
    // approved by policy (no human asked).
    let a1 = t.spawn_agent(ADA, "sudo /bin/echo ada-secret-7 2>/dev/null");
    let ra = next_request(&mut watcher);
    assert_eq!(ra.agent, ADA);
    let asked = line_with(&mut ada, &ra.id);
    assert!(asked.contains("ada-secret-7"), "{asked}");
    assert!(
        asked.contains(r#"\"/usr/bin/echo\" \"ada-secret-7\" as root"#),
        "{asked}"
    );
    ada_saw += &asked;
    decider.decide(&ra, true, None, "terminal").unwrap();
    let decided = line_with(&mut ada, r#""decision":"approved""#);
    assert!(decided.contains(&ra.id), "{decided}");
    assert!(
        decided.contains("approved by root via terminal"),
        "{decided}"
    );
    ada_saw += &decided;
    assert_eq!(stdout(&finish(a1)), "ada-secret-7\n");
    let o = t.agent(ADA, "cd / && sudo true");
    assert!(o.status.success(), "{}", stderr(&o));
    let policy = line_with(&mut ada, "/usr/bin/true");
    assert!(policy.contains(r#""type":"decided""#), "{policy}");
    assert!(policy.contains(r#""channel":"policy""#), "{policy}");
    ada_saw += &policy;

    // vox asks again; once vox hears that decision, it has been told
    // everything published before it — and none of it was ada's.
    let v2 = t.spawn_agent(VOX, "sudo /usr/bin/id -g 2>/dev/null");
    let r2 = next_request(&mut watcher);
    assert_eq!(r2.agent, VOX);
    decider.decide(&r2, false, None, "terminal").unwrap();
    vox_saw += &line_with(&mut vox, &r2.id);
    vox_saw += &line_with(&mut vox, r#""decision":"denied""#);
    assert!(!finish(v2).status.success());
    for secret in [ra.id.as_str(), "ada-secret-7", "/usr/bin/true", ADA] {
        assert!(
            !vox_saw.contains(secret),
            "vox saw {secret:?} of ada's: {vox_saw}"
        );
    }
    for theirs in [r1.id.as_str(), r2.id.as_str()] {
        assert!(
            !ada_saw.contains(theirs),
            "ada saw vox's {theirs}: {ada_saw}"
        );
    }

    // The hall going away ends the stream (the bridge reconnects).
    t.stop_hall();
    vox.until("CLOSED");
    ada.until("CLOSED");
    let _ = finish(vox_follower);
    let _ = finish(ada_follower);
}
