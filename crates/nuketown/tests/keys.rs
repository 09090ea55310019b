//! Keys that never enter the workload, end to end: the real hall serves
//! each agent's ssh-agent socket; real `ssh-add`, `ssh-keygen -Y sign`,
//! `git commit -S` and `git verify-commit` run as the real agent user
//! through it; other users attack it. Root only (CI runs as root).

mod hall_fixture;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use hall_fixture::*;
use nuketown_hall::audit::{AuditLog, Record};

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
    // Git signatures are still allowed by the default policy, without asking.
    let o = t.agent(ADA, &with_socket(&t, ADA, &format!("{SIGN} && {VERIFY}")));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}
