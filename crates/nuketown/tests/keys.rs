//! Keys that never enter the workload, end to end: the real hall serves
//! each agent's ssh-agent socket; real `ssh-add`, `ssh-keygen -Y sign`,
//! `git commit -S` and `git verify-commit` run as the real agent user
//! through it; other users attack it. Root only (CI runs as root).

mod hall_fixture;
mod sshd;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use hall_fixture::*;
use nuketown_hall::audit::{AuditLog, Record};
use sshd::Sshd;

/// A shell prelude for `user`: its socket, git and ssh on PATH.
fn with_socket(t: &TestTown, user: &str, script: &str) -> String {
    format!(
        "export SSH_AUTH_SOCK={} PATH=/usr/local/bin:$PATH && {script}",
        t.key_socket(user).display()
    )
}

fn key_records(t: &TestTown) -> Vec<Record> {
    AuditLog::read(&t.audit_log())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.event == "key")
        .collect()
}

/// ada's town key, published in her home as apply does (`~/.ssh/id_ed25519.pub`)
/// and in an allowed_signers file.
fn town_with_adas_key(opts: Options) -> (TestTown, String) {
    let mut t = TestTown::new(opts);
    let public = t
        .key_store()
        .generate(ADA, "nktada@town")
        .unwrap()
        .to_openssh()
        .unwrap();
    t.start_hall();
    let o = t.agent(
        ADA,
        &format!(
            "mkdir -p .ssh && echo '{public}' > .ssh/id_ed25519.pub && echo 'nktada@town {public}' > .ssh/allowed_signers"
        ),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    (t, public)
}

const SIGN: &str =
    "echo hello > msg && rm -f msg.sig && ssh-keygen -q -Y sign -n git -f .ssh/id_ed25519.pub msg";
const VERIFY: &str =
    "ssh-keygen -q -Y verify -f .ssh/allowed_signers -I nktada@town -n git -s msg.sig < msg";

#[test]
fn ada_signs_through_her_socket_and_nobody_else_can_use_it() {
    let (t, public) = town_with_adas_key(Options::default());

    // Legitimate: the key is listed, signs, and verifies; git signs commits and verifies them.
    let o = t.agent(ADA, &with_socket(&t, ADA, "ssh-add -L"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), public.trim());
    let o = t.agent(ADA, &with_socket(&t, ADA, &format!("{SIGN} && {VERIFY}")));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let git = "git init -q r && cd r && git -c user.name=ada -c user.email=nktada@town -c gpg.format=ssh \
               -c user.signingkey=$HOME/.ssh/id_ed25519.pub commit -S --allow-empty -q -m one && \
               git -c gpg.ssh.allowedSignersFile=$HOME/.ssh/allowed_signers verify-commit HEAD";
    let o = t.agent(ADA, &with_socket(&t, ADA, git));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("Good \"git\" signature"),
        "{}",
        stderr(&o)
    );

    // Every signature is audited: what, the hash of what was signed, who asked, the rule, the result.
    let recs = key_records(&t);
    assert_eq!(recs.len(), 2, "{recs:#?}");
    for r in &recs {
        let k = r.key_use.as_ref().unwrap();
        assert_eq!((r.agent.as_str(), r.uid), (ADA, ADA_UID));
        assert_eq!(k.operation, "sign");
        assert_eq!(k.namespace.as_deref(), Some("git"));
        assert_eq!(k.data_sha256.len(), 64);
        assert!(k.message_hash.as_deref().unwrap().starts_with("sha512:"));
        assert!(r.argv.iter().any(|a| a.contains("ssh-keygen")), "{r:?}");
        assert_eq!(r.decision, "approved");
        assert_eq!(r.result.as_deref(), Some("signed"));
        assert!(r.reason.contains("keys.sign = allow"), "{r:?}");
    }
    assert!(
        recs[1]
            .key_use
            .as_ref()
            .unwrap()
            .parent
            .iter()
            .any(|a| a.contains("git")),
        "the commit's signature names git as the caller's parent: {:?}",
        recs[1]
    );

    // Red team: another agent and the human cannot even connect (the socket's modes) ...
    for who in [VOX, HUMAN] {
        let o = t.agent(who, &with_socket(&t, ADA, "ssh-add -L"));
        assert!(!o.status.success(), "{who} used ada's socket");
        assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    }
    // ... and with the modes opened up by mistake, the hall closes them unheard (SO_PEERCRED).
    let sock = t.key_socket(ADA);
    fs::set_permissions(sock.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o666)).unwrap();
    let o = t.agent(VOX, &with_socket(&t, ADA, &format!("ssh-add -L; {SIGN}")));
    assert!(!o.status.success(), "vox used ada's socket: {}", stdout(&o));
    assert!(!stdout(&o).contains("ssh-ed25519"), "{}", stdout(&o));
    let refused = key_records(&t);
    assert!(
        refused.iter().any(|r| r.uid == VOX_UID
            && r.decided_by.as_ref().is_some_and(|b| b.channel == "peer")),
        "{refused:#?}"
    );
    fs::set_permissions(sock.parent().unwrap(), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o660)).unwrap();

    // A key file planted in the home is ignored: the agent cannot add it, list
    // it, remove the town's key, or sign with anything but the town's key.
    let plant = "ssh-keygen -q -t ed25519 -N '' -C planted -f planted && mv planted .ssh/id_ed25519 && \
                 { ssh-add .ssh/id_ed25519 && echo ADDED; ssh-add -D && echo REMOVED; ssh-add -x </dev/null && echo LOCKED; true; } 2>/dev/null; ssh-add -L";
    let o = t.agent(ADA, &with_socket(&t, ADA, plant));
    assert!(!stdout(&o).contains("ADDED"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("REMOVED"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("LOCKED"), "{}", stdout(&o));
    assert_eq!(
        stdout(&o).trim(),
        public.trim(),
        "only the town's key is listed"
    );
    let o = t.agent(ADA, &with_socket(&t, ADA, &format!("{SIGN} && {VERIFY}")));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    // No private key in the clear anywhere root keeps it: the store holds it sealed.
    for entry in walk(&t.path("persist")) {
        let bytes = fs::read(&entry).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("PRIVATE KEY"),
            "{} holds a private key in the clear",
            entry.display()
        );
    }

    // Pause: the very next use fails at once; resume restores it.
    let o = t.root_nuketown(&["keys", "pause", ADA]);
    assert!(o.status.success(), "{}", stderr(&o));
    let started = Instant::now();
    let o = t.agent(ADA, &with_socket(&t, ADA, SIGN));
    assert!(!o.status.success(), "signed while paused");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        stderr(&o).contains("agent refused operation"),
        "{}",
        stderr(&o)
    );
    let o = t.root_nuketown(&["keys", "list"]);
    assert!(stdout(&o).contains("(paused)"), "{}", stdout(&o));
    let o = t.root_nuketown(&["keys", "resume", ADA]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = t.agent(ADA, &with_socket(&t, ADA, &format!("{SIGN} && {VERIFY}")));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let paused = key_records(&t);
    let p = paused
        .iter()
        .find(|r| r.decided_by.as_ref().is_some_and(|b| b.channel == "paused"))
        .expect("the refused use is audited");
    assert_eq!(p.decision, "denied");
    assert_eq!(p.result.as_deref(), Some("not signed"));

    // The audit chain verifies; one edited line is named.
    let o = t.root_nuketown(&["audit", "--verify"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("the chain holds"), "{}", stdout(&o));
    let text = fs::read_to_string(t.audit_log()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert!(lines.len() >= 4);
    lines[2] = lines[2].replacen("\"agent\":\"", "\"agent\":\"x", 1);
    let forged = t.path("forged.jsonl");
    fs::write(&forged, lines.join("\n") + "\n").unwrap();
    let o = t.root_nuketown(&["audit", "--verify", "--log", forged.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("line 3: its content does not match its hash"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("the chain breaks at line 3"),
        "{}",
        stdout(&o)
    );

    // `nuketown audit` shows key uses, agent text escaped.
    let o = t.root_nuketown(&["audit"]);
    assert!(stdout(&o).contains("namespace \"git\""), "{}", stdout(&o));

    // Rotate: a new key at once, the old one never signs again, and what to re-authorise is said.
    let o = t.root_nuketown(&["keys", "rotate", ADA]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("Authorise it again wherever the old one was"),
        "{}",
        stdout(&o)
    );
    let o = t.agent(ADA, &with_socket(&t, ADA, "ssh-add -L"));
    let new = stdout(&o).trim().to_string();
    assert!(
        new.starts_with("ssh-ed25519 ") && new != public.trim(),
        "{new}"
    );
    assert!(stdout(&t.root_nuketown(&["keys", "list"])).contains(&new));
    // Signing with the old public key finds no such key; with the new one it signs.
    let o = t.agent(ADA, &with_socket(&t, ADA, SIGN));
    assert!(!o.status.success(), "the old key still signs");
    let o = t.agent(
        ADA,
        &with_socket(
            &t,
            ADA,
            &format!("ssh-add -L > .ssh/id_ed25519.pub && {SIGN}"),
        ),
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.extend(walk(&e.path()));
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn a_use_the_policy_asks_about_waits_for_a_human_and_signs_once() {
    let (t, _) = town_with_adas_key(Options {
        ada_keys: "signOther = \"ask\"\ntimeout = 60\n".into(),
        ..Options::default()
    });
    let mut w = t.watch();
    let sign_file = "echo report > doc && rm -f doc.sig && ssh-keygen -q -Y sign -n file -f .ssh/id_ed25519.pub doc && \
                     ssh-keygen -q -Y verify -f .ssh/allowed_signers -I nktada@town -n file -s doc.sig < doc && echo VERIFIED";
    let child = t.spawn_agent(ADA, &with_socket(&t, ADA, sign_file));
    let r = next_request(&mut w);
    let k = r.key_use.clone().expect("a key-use request");
    assert_eq!((r.agent.as_str(), k.operation.as_str()), (ADA, "sign"));
    assert_eq!(k.namespace.as_deref(), Some("file"));
    assert!(k.rule.contains("keys.signOther = ask"), "{k:?}");
    // The hash shown is the hash of the file being signed.
    let sha = std::process::Command::new("sha512sum")
        .arg(t.home(ADA).join("doc"))
        .output()
        .unwrap();
    let sha = stdout(&sha).split_whitespace().next().unwrap().to_string();
    assert_eq!(
        k.message_hash.as_deref(),
        Some(format!("sha512:{sha}").as_str())
    );
    // Every channel's text says what is signed (the human's terminal here).
    let o = t.human(HUMAN, "approvals list");
    assert!(stdout(&o).contains("namespace \"file\""), "{}", stdout(&o));
    assert!(stdout(&o).contains(&sha), "{}", stdout(&o));
    assert!(
        !t.home(ADA).join("doc.sig").exists(),
        "nothing is signed before the human says yes"
    );
    let mut a = nuketown_hall::client::Approver::connect(&t.approver_socket()).unwrap();
    a.set_timeout(Some(DEADLINE)).unwrap();
    a.decide(&r, true, None, "terminal").unwrap();
    let o = finish(child);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("VERIFIED"));
    // Exactly one signature, audited with the approver.
    let recs: Vec<Record> = key_records(&t)
        .into_iter()
        .filter(|x| x.id == r.id)
        .collect();
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(recs[0].result.as_deref(), Some("signed"));
    assert_eq!(
        recs[0]
            .decided_by
            .as_ref()
            .map(|b| (b.who.as_str(), b.channel.as_str())),
        Some(("root", "terminal"))
    );
    // A second one denied: nothing signed.
    let child = t.spawn_agent(ADA, &with_socket(&t, ADA, sign_file));
    let r = next_request(&mut w);
    a.decide(&r, false, None, "terminal").unwrap();
    let o = finish(child);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(!t.home(ADA).join("doc.sig").exists());
    let recs: Vec<Record> = key_records(&t)
        .into_iter()
        .filter(|x| x.id == r.id)
        .collect();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].decision, "denied");
    // The caller going away withdraws the request: the approvers see it
    // cancelled, nothing is signed, the audit log says so.
    let child = t.spawn_agent(
        ADA,
        &with_socket(
            &t,
            ADA,
            "echo x > doc2 && ssh-keygen -q -Y sign -n file -f .ssh/id_ed25519.pub doc2",
        ),
    );
    let r = next_request(&mut w);
    // The process that asked, as the kernel named it to the hall.
    let pid = r.key_use.as_ref().unwrap().caller_pid as i32;
    assert!(r.argv[0].contains("ssh-keygen"), "{:?}", r.argv);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (id, outcome, _, channel) = next_resolution(&mut w);
    assert_eq!(
        (id.as_str(), outcome.as_str(), channel.as_str()),
        (r.id.as_str(), "cancelled", "requester")
    );
    let _ = finish(child);
    let recs: Vec<Record> = key_records(&t)
        .into_iter()
        .filter(|x| x.id == r.id)
        .collect();
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(recs[0].decision, "cancelled");
    assert!(!t.home(ADA).join("doc2.sig").exists());

    // Git signatures are still allowed by the default policy, without asking.
    let o = t.agent(ADA, &with_socket(&t, ADA, &format!("{SIGN} && {VERIFY}")));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn git_push_over_ssh_logs_in_through_the_socket_to_declared_hosts_only() {
    let host_dir = tempfile::tempdir().unwrap();
    let mut t = TestTown::new(Options::default());
    let public = t
        .key_store()
        .generate(ADA, "nktada@town")
        .unwrap()
        .to_openssh()
        .unwrap();
    // sshd refuses accounts whose password is locked ('!'); '*' is no password at all.
    let o = std::process::Command::new("usermod")
        .args(["-p", "*", ADA])
        .output()
        .unwrap();
    assert!(o.status.success());
    let sshd = Sshd::start(&host_dir.path().join("sshd"), ADA, &public);
    let town = fs::read_to_string(&t.town).unwrap();
    let declared = town.replace(
        &format!("[agents.{ADA}.keys]\n"),
        &format!(
            "[agents.{ADA}.keys]\nauthenticateOther = \"deny\"\nhosts.local.hostKey = \"{}\"\n",
            sshd.host_key
        ),
    );
    assert_ne!(declared, town);
    fs::write(&t.town, &declared).unwrap();
    t.start_hall();

    let remote = t.home(ADA).join("remote.git");
    let push = format!(
        "cd && echo '[127.0.0.1]:{port} {hk}' > known_hosts && git init -q --bare remote.git && \
         git init -q w && cd w && git -c user.name=ada -c user.email=nktada@town commit -q --allow-empty -m one && \
         GIT_SSH_COMMAND='ssh -F /dev/null -p {port} -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$HOME/known_hosts' \
         git push -q ssh://{ADA}@127.0.0.1:{port}{remote} HEAD:refs/heads/main",
        port = sshd.port,
        hk = sshd.host_key,
        remote = remote.display()
    );
    let o = t.agent(ADA, &with_socket(&t, ADA, &push));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let log = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&remote)
        .args(["log", "--format=%s", "main"])
        .output()
        .unwrap();
    assert_eq!(stdout(&log).trim(), "one");
    let auth: Vec<Record> = key_records(&t)
        .into_iter()
        .filter(|r| {
            r.key_use
                .as_ref()
                .is_some_and(|k| k.operation == "authenticate")
        })
        .collect();
    assert_eq!(auth.len(), 1, "{auth:#?}");
    let k = auth[0].key_use.as_ref().unwrap();
    assert_eq!(k.remote_user.as_deref(), Some(ADA));
    assert_eq!(
        k.host.as_deref(),
        Some("local"),
        "the host is known by its key: {k:?}"
    );
    assert_eq!(
        k.host_key
            .as_deref()
            .map(|h| h.split_whitespace().take(2).collect::<Vec<_>>().join(" ")),
        Some(sshd.host_key.clone())
    );
    assert_eq!(auth[0].result.as_deref(), Some("signed"));
    assert!(auth[0].reason.contains("keys.hosts.local"), "{:?}", auth[0]);
    assert!(
        k.parent.iter().any(|a| a.contains("git"))
            || auth[0].argv.iter().any(|a| a.contains("ssh")),
        "{:?}",
        auth[0]
    );

    // The same server no longer declared: the town refuses to log in there.
    fs::write(
        &t.town,
        town.replace(
            &format!("[agents.{ADA}.keys]\n"),
            &format!("[agents.{ADA}.keys]\nauthenticateOther = \"deny\"\n"),
        ),
    )
    .unwrap();
    let again = format!(
        "cd w && git -c user.name=ada -c user.email=nktada@town commit -q --allow-empty -m two && \
         GIT_SSH_COMMAND='ssh -F /dev/null -p {port} -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$HOME/known_hosts' \
         git push -q ssh://{ADA}@127.0.0.1:{port}{remote} HEAD:refs/heads/main",
        port = sshd.port,
        remote = remote.display()
    );
    let o = t.agent(ADA, &with_socket(&t, ADA, &again));
    assert!(!o.status.success(), "pushed to an undeclared host");
    let denied: Vec<Record> = key_records(&t)
        .into_iter()
        .filter(|r| {
            r.key_use
                .as_ref()
                .is_some_and(|k| k.operation == "authenticate")
                && r.decision == "denied"
        })
        .collect();
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert!(
        denied[0].reason.contains("keys.authenticateOther = deny"),
        "{:?}",
        denied[0]
    );
    let log = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&remote)
        .args(["log", "--format=%s", "main"])
        .output()
        .unwrap();
    assert_eq!(stdout(&log).trim(), "one");
}

/// The benchmark in docs/benchmarks.md: `ssh-keygen -Y sign` of a commit-sized
/// message, 100 times, with a key file and through the town's socket (policy
/// `allow`, every signature audited), as the agent. Run:
/// `cargo test --release -p nuketown --test keys -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_signing_through_the_socket_against_a_key_file() {
    let (t, _) = town_with_adas_key(Options::default());
    let n = 100;
    let script = format!(
        "ssh-keygen -q -t ed25519 -N '' -f filekey && head -c 600 /dev/urandom | base64 > commit && \
         now() {{ date +%s%N; }}; \
         a=$(now); for i in $(seq {n}); do ssh-keygen -q -Y sign -n git -f filekey commit && rm commit.sig; done; b=$(now); \
         for i in $(seq {n}); do ssh-keygen -q -Y sign -n git -f .ssh/id_ed25519.pub commit && rm commit.sig; done; c=$(now); \
         echo $(( (b - a) / {n} / 1000 )) $(( (c - b) / {n} / 1000 ))"
    );
    let o = t.agent(ADA, &with_socket(&t, ADA, &script));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let us: Vec<u64> = stdout(&o)
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let (file, socket) = (us[0], us[1]);
    println!(
        "ssh-keygen -Y sign, mean of {n}: key file {file} µs, town socket {socket} µs, ratio {:.2}",
        socket as f64 / file as f64
    );
    assert_eq!(key_records(&t).len(), n, "every signature audited");
    assert!(
        (socket as f64) < 2.0 * file as f64,
        "signing through the socket must stay within 2x of a key file"
    );
}

/// Open 100 connections and hold them; print how many the hall closed
/// (waits for the expected count, with a deadline).
const FLOOD: &str = r#"import socket, sys, select, time
socks = []
for i in range(100):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    socks.append(s)
want = int(sys.argv[2])
deadline = time.time() + 30
closed = set()
while time.time() < deadline and len(closed) < want:
    r, _, _ = select.select([s for s in socks if s not in closed], [], [], 1)
    for s in r:
        if s.recv(1) == b"":
            closed.add(s)
print(len(closed))
"#;

/// Announce a 16 MiB message and send it; print where the hall cut it off.
const HUGE: &str = r#"import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall((0xffffff).to_bytes(4, "big"))
n = 0
try:
    while n < 64 << 20:
        s.sendall(bytes(65536))
        n += 65536
    print("sent", n)
except OSError:
    print("cut", n)
"#;

#[test]
fn an_agent_cannot_exhaust_the_hall_through_its_socket() {
    let (t, public) = town_with_adas_key(Options::default());
    // 100 connections held open: past the cap, the hall closes them at once.
    let flood = format!(
        "python3 - {} {} <<'PY'\n{FLOOD}PY",
        t.key_socket(ADA).display(),
        100 - nuketown_keys::agent::MAX_CONNECTIONS
    );
    let o = t.agent(ADA, &flood);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        (100 - nuketown_keys::agent::MAX_CONNECTIONS).to_string()
    );
    // Afterwards the town works: sudo, and ada's own socket.
    let o = t.agent(ADA, "cd / && sudo true");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = t.agent(ADA, &with_socket(&t, ADA, "ssh-add -L"));
    assert_eq!(stdout(&o).trim(), public.trim(), "{}", stderr(&o));
    // One huge message is cut off, not buffered without bound.
    let huge = format!("python3 - {} <<'PY'\n{HUGE}PY", t.key_socket(ADA).display());
    let o = t.agent(ADA, &huge);
    assert!(
        stdout(&o).starts_with("cut"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = t.agent(ADA, &with_socket(&t, ADA, "ssh-add -L"));
    assert_eq!(stdout(&o).trim(), public.trim(), "{}", stderr(&o));
}
