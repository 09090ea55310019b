//! The rebuild coordinator with real concurrent processes of real agents:
//! FIFO leases, no overlap, SIGKILL hand-off, failures released and recorded,
//! change summaries from a real git repository, approvals for switch; builds
//! run as the agent, only declared agents and documented arguments are
//! served, and everything is in the audit log. Needs root (CI runs as root).

mod fixture;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use fixture::{stderr, stdout, TestTown};

const N: usize = 20;
/// An agent of the town without `rebuild.enable`.
const NO_REBUILD: &str = "nkr99";

fn agent(i: usize) -> String {
    format!("nkr{i:02}")
}

struct Hall(Child);
impl Drop for Hall {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn git(repo: &Path, args: &[&str]) {
    let o = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=Josh",
            "-c",
            "user.email=josh@test",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
}

fn lock(rev: &str) -> String {
    format!(
        r#"{{"nodes":{{"root":{{"inputs":{{"nixpkgs":"nixpkgs"}}}},"nixpkgs":{{"locked":{{"rev":"{rev}"}}}}}},"root":"root","version":7}}"#
    )
}

struct Setup {
    t: TestTown,
    town: String,
    _hall: Hall,
}

fn setup() -> Setup {
    let names: Vec<String> = (1..=N).map(agent).collect();
    let mut users: Vec<&str> = names.iter().map(String::as_str).collect();
    users.push("nkrh");
    users.push(NO_REBUILD);
    let t = TestTown::new(&users, &[]);
    // Agents must reach the sockets and the binary in the test dir.
    fs::set_permissions(t.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let repo = t.path("config");
    fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    fs::write(repo.join("flake.lock"), lock("aaa")).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "first configuration"]);
    // The build: real work, logged with start and end times and who ran it;
    // agent nkr01 waits at a gate (a named pipe the test opens) so the queue
    // can fill up. Builds run as the agent, so agents may append to the log.
    // In a directory of its own: a script's neighbours are read as its own.
    let script = t.path("bin/rebuild.sh");
    fs::create_dir(t.path("bin")).unwrap();
    fs::set_permissions(t.path("bin"), fs::Permissions::from_mode(0o755)).unwrap();
    let log = t.path("builds.log");
    fs::write(&log, "").unwrap();
    fs::set_permissions(&log, fs::Permissions::from_mode(0o666)).unwrap();
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\necho \"start $NUKETOWN_REBUILD_BY $1 $(date +%s%N) $(id -u)\" >> {log}\n\
[ -p {gate} ] && [ \"$NUKETOWN_REBUILD_BY\" = nkr01 ] && cat {gate} > /dev/null\n\
[ -p {gate2} ] && [ \"$NUKETOWN_REBUILD_BY\" = nkr02 ] && cat {gate2} > /dev/null\n\
seq 1 200000 | sha256sum > /dev/null\n\
[ \"$NUKETOWN_REBUILD_BY\" = nkr03 ] && [ -e {fail} ] && {{ echo 'error: evaluation failed' >&2; exit 3; }}\n\
echo \"end $NUKETOWN_REBUILD_BY $1 $(date +%s%N) $(id -u)\" >> {log}\necho built $1\n",
            log = log.display(),
            gate = t.path("gate").display(),
            gate2 = t.path("gate2").display(),
            fail = t.path("fail").display(),
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let mut text = format!(
        "{}rebuild = {{ command = [\"{}\"], configRepo = \"{}\" }}\n",
        t.header("nkrh"),
        script.display(),
        repo.display()
    );
    for i in 1..=N {
        text.push_str(&format!(
            "[agents.{}]\nuid = {}\nsudo.enable = true\nsudo.timeout = 5\nrebuild.enable = true\n",
            agent(i),
            1800 + i
        ));
    }
    text.push_str(&format!(
        "[agents.{NO_REBUILD}]\nuid = 1899\nsudo.enable = true\n"
    ));
    let town = t.write("town.toml", &text).to_str().unwrap().to_string();
    t.ok(&["apply", &town]);
    let hall_log = fs::File::create(t.path("hall.log")).unwrap();
    let child = t
        .cmd(&[
            "hall",
            "--town",
            &town,
            "--socket",
            t.path("hall.sock").to_str().unwrap(),
            "--approver-socket",
            t.path("approvers.sock").to_str().unwrap(),
            "--rebuild-socket",
            t.path("rebuild.sock").to_str().unwrap(),
            "--rebuild-history",
            t.path("rebuilds.jsonl").to_str().unwrap(),
        ])
        .env("NUKETOWN_MODE_FILE", t.path("mode"))
        .env("NUKETOWN_AUDIT_LOG", t.path("audit.jsonl"))
        .env("NUKETOWN_LOG", "info")
        .stdout(hall_log.try_clone().unwrap())
        .stderr(hall_log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !t.path("rebuild.sock").exists() {
        assert!(Instant::now() < deadline, "no rebuild socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    Setup {
        t,
        town,
        _hall: Hall(child),
    }
}

/// `nuketown rebuild ACTION` as `who`, stderr piped for the test to follow.
fn rebuild(s: &Setup, who: &str, action: &str) -> (Child, BufReader<ChildStderr>) {
    // uid/gid set before exec: the child is the client itself (a kill reaches it).
    let uid = nix::unistd::User::from_name(who)
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let mut c = Command::new(s.t.path("bin/nuketown"))
        .args(["rebuild", action])
        .uid(uid)
        .gid(uid)
        .env("NUKETOWN_REBUILD_SOCKET", s.t.path("rebuild.sock"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = BufReader::new(c.stderr.take().unwrap());
    (c, err)
}

/// Read stderr lines until one contains `needle` (the process announces it).
fn until(err: &mut BufReader<ChildStderr>, needle: &str) -> String {
    let mut all = String::new();
    loop {
        let mut l = String::new();
        assert!(
            err.read_line(&mut l).unwrap() > 0,
            "ended before {needle:?}:\n{all}"
        );
        all.push_str(&l);
        if l.contains(needle) {
            return all;
        }
    }
}

fn mkfifo(p: &Path) {
    assert!(Command::new("mkfifo").arg(p).status().unwrap().success());
}

fn open_gate(p: &Path) {
    // Opening the write end releases the reader; closing it ends its `cat`.
    drop(fs::OpenOptions::new().write(true).open(p).unwrap());
}

fn log_lines(s: &Setup) -> Vec<(String, String, u128)> {
    log_entries(s)
        .into_iter()
        .map(|(what, who, _, at, _)| (what, who, at))
        .collect()
}

/// (start|end, who, action, time, uid it ran as)
fn log_entries(s: &Setup) -> Vec<(String, String, String, u128, u32)> {
    fs::read_to_string(s.t.path("builds.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].to_string(),
                f[1].to_string(),
                f[2].to_string(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
            )
        })
        .collect()
}

fn audit(s: &Setup) -> Vec<nuketown_hall::audit::Record> {
    nuketown_hall::audit::joined(
        nuketown_hall::audit::AuditLog::read(&s.t.path("audit.jsonl")).unwrap_or_default(),
    )
}

#[test]
fn twenty_agents_take_turns_fifo_without_overlap() {
    let s = setup();
    let gate = s.t.path("gate");
    mkfifo(&gate);
    let (first, mut first_err) = rebuild(&s, &agent(1), "build");
    until(&mut first_err, "lease taken");
    let mut waiters = vec![(first, first_err)];
    for i in 2..=N {
        let (c, mut err) = rebuild(&s, &agent(i), "build");
        let seen = until(&mut err, "waiting for the rebuild lease");
        assert!(
            seen.contains(&format!(
                "position {}; nkr01 holds the lease (build)",
                i - 1
            )),
            "{seen}"
        );
        waiters.push((c, err));
    }
    // status shows the holder and the queue.
    let st: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(s.t.path("rebuild-status.json")).unwrap())
            .unwrap();
    assert_eq!(st["holder"]["who"], "nkr01");
    assert_eq!(st["queue"].as_array().unwrap().len(), N - 1);
    open_gate(&gate);
    for (i, (c, err)) in waiters.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        let mut rest = String::new();
        let mut err = err;
        let _ = std::io::Read::read_to_string(&mut err, &mut rest);
        assert!(o.status.success(), "{} failed: {rest}", agent(i + 1));
        assert_eq!(stdout(&o), "built build\n");
    }
    let log = log_lines(&s);
    assert_eq!(log.len(), 2 * N, "{log:?}");
    for (i, pair) in log.chunks(2).enumerate() {
        let who = agent(i + 1);
        assert_eq!(
            (pair[0].0.as_str(), pair[0].1.as_str()),
            ("start", who.as_str()),
            "FIFO order: {log:?}"
        );
        assert_eq!(
            (pair[1].0.as_str(), pair[1].1.as_str()),
            ("end", who.as_str()),
            "no overlap: {log:?}"
        );
        if i > 0 {
            assert!(
                pair[0].2 >= log[2 * i - 1].2,
                "build {i} started before the previous ended"
            );
        }
    }
    let history = s.t.ok(&[
        "rebuild",
        "history",
        "--history",
        s.t.path("rebuilds.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(history.lines().count(), N, "{history}");
    assert!(
        history.lines().next().unwrap().starts_with("#1 ") && history.contains(" nkr01 build at "),
        "{history}"
    );
}

#[test]
fn a_killed_holder_hands_the_lease_on_and_failures_are_recorded() {
    let s = setup();
    let gate2 = s.t.path("gate2");
    mkfifo(&gate2);
    // nkr02 holds the lease, its build blocked; nkr04 waits.
    let (mut holder, mut herr) = rebuild(&s, &agent(2), "build");
    until(&mut herr, "lease taken");
    let (next, mut nerr) = rebuild(&s, &agent(4), "build");
    until(&mut nerr, "position 1");
    let killed = Instant::now();
    holder.kill().unwrap();
    holder.wait().unwrap();
    until(&mut nerr, "lease taken");
    let handoff = killed.elapsed();
    assert!(
        handoff < Duration::from_secs(1),
        "hand-off took {handoff:?}"
    );
    let o = next.wait_with_output().unwrap();
    assert!(o.status.success());
    // A failing rebuild releases the lease and is recorded as failed.
    fs::write(s.t.path("fail"), "").unwrap();
    let (failing, mut ferr) = rebuild(&s, &agent(3), "build");
    let all = until(&mut ferr, "exited with 3");
    let o = failing.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{all}");
    assert!(
        stdout(&o).contains("error: evaluation failed"),
        "the build's output reaches the caller"
    );
    let h = nuketown_rebuild::history(&s.t.path("rebuilds.jsonl"));
    let statuses: Vec<(String, i32, Option<String>)> = h
        .iter()
        .map(|g| (g.who.clone(), g.status, g.refused.clone()))
        .collect();
    assert_eq!(
        statuses[0],
        (
            "nkr02".into(),
            -1,
            Some("the holder went away; stopped".into())
        )
    );
    assert_eq!((statuses[1].0.as_str(), statuses[1].1), ("nkr04", 0));
    assert_eq!((statuses[2].0.as_str(), statuses[2].1), ("nkr03", 3));
    let (after, mut aerr) = rebuild(&s, &agent(5), "build");
    until(&mut aerr, "lease taken");
    assert!(
        after.wait_with_output().unwrap().status.success(),
        "the lease was released after the failure"
    );
}

#[test]
fn the_caller_sees_what_changed_since_its_last_build_and_switch_needs_a_human() {
    let s = setup();
    let repo = s.t.path("config");
    let (c, _stderr) = rebuild(&s, &agent(6), "build");
    assert!(c.wait_with_output().unwrap().status.success());
    fs::write(repo.join("flake.lock"), lock("bbb")).unwrap();
    fs::write(repo.join("hosts.nix"), "{ }").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "bump nixpkgs and add hosts"]);
    let (c, mut err) = rebuild(&s, &agent(6), "build");
    let seen = until(&mut err, "flake input nixpkgs: aaa -> bbb");
    assert!(seen.contains("1 commit(s) since your last build"), "{seen}");
    assert!(seen.contains("Josh — bump nixpkgs and add hosts"), "{seen}");
    assert!(
        !seen.contains("first configuration"),
        "only what is new to nkr06: {seen}"
    );
    assert!(c.wait_with_output().unwrap().status.success());

    // switch changes the running system: an agent's needs a human (mock mode here).
    let mode = s.t.path("mode");
    fs::write(&mode, "MOCK_DENIED\n").unwrap();
    fs::set_permissions(&mode, fs::Permissions::from_mode(0o600)).unwrap();
    let (c, mut err) = rebuild(&s, &agent(6), "switch");
    let seen = until(&mut err, "asking a human to approve");
    assert!(seen.contains("lease taken for switch"), "{seen}");
    let o = c.wait_with_output().unwrap();
    assert!(!o.status.success());
    assert!(
        !fs::read_to_string(s.t.path("builds.log"))
            .unwrap()
            .contains("start nkr06 switch"),
        "a denied switch never runs"
    );
    fs::write(&mode, "MOCK_APPROVED\n").unwrap();
    let (c, _stderr) = rebuild(&s, &agent(6), "switch");
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "approved switch runs");
    assert!(fs::read_to_string(s.t.path("builds.log"))
        .unwrap()
        .contains("start nkr06 switch"));
    // The hall's audit log holds the switch decision, attributed.
    let audit = fs::read_to_string(s.t.path("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"switch\"") && audit.contains("nkr06"),
        "{audit}"
    );
    let h = nuketown_rebuild::history(&s.t.path("rebuilds.jsonl"));
    assert!(
        h.iter()
            .any(|g| g.action == "switch"
                && g.refused.as_deref().is_some_and(|r| r.contains("MOCK"))),
        "{h:?}"
    );
    // The build ran as the agent; the switch, approved, as root.
    let ran: Vec<(String, u32)> = log_entries(&s)
        .into_iter()
        .filter(|e| e.0 == "start" && e.1 == "nkr06")
        .map(|e| (e.2, e.4))
        .collect();
    assert_eq!(
        ran,
        [
            ("build".to_string(), 1806),
            ("build".to_string(), 1806),
            ("switch".to_string(), 0)
        ]
    );
    let _: PathBuf = s.t.path(&s.town);
}

/// Who may rebuild, with which arguments, and the audit of every rebuild.
#[test]
fn only_declared_agents_rebuild_with_documented_arguments_and_all_is_audited() {
    let s = setup();
    // An agent without rebuild.enable: refused, naming the key.
    let (c, _e) = rebuild(&s, NO_REBUILD, "build");
    let o = c.wait_with_output().unwrap();
    assert!(!o.status.success());
    let a = audit(&s);
    let refusal = a.iter().find(|r| r.agent == NO_REBUILD).expect("audited");
    assert_eq!(refusal.decision, "denied");
    assert!(
        refusal
            .reason
            .contains("agents.nkr99.rebuild.enable is false"),
        "{refusal:?}"
    );
    // Arguments that change what is built or how Nix runs: refused before anything runs.
    for bad in [
        &["--option", "build-hook", "/tmp/x"][..],
        &["--flake", "/tmp/other#host"],
        &["-I", "nixpkgs=/tmp/x"],
        &["--impure"],
    ] {
        let uid = 1807;
        let o = Command::new(s.t.path("bin/nuketown"))
            .args(["rebuild", "build", "--"])
            .args(bad)
            .uid(uid)
            .gid(uid)
            .env("NUKETOWN_REBUILD_SOCKET", s.t.path("rebuild.sock"))
            .output()
            .unwrap();
        assert!(!o.status.success(), "{bad:?}");
        assert!(
            stderr(&o).contains("is not one a rebuild may carry"),
            "{bad:?}: {}",
            stderr(&o)
        );
    }
    assert!(
        !log_entries(&s)
            .iter()
            .any(|e| e.1 == "nkr07" || e.1 == NO_REBUILD),
        "nothing ran"
    );
    // A documented argument is passed on, and the build is audited with its exit status.
    let o = Command::new(s.t.path("bin/nuketown"))
        .args(["rebuild", "build", "--", "--show-trace"])
        .uid(1808)
        .gid(1808)
        .env("NUKETOWN_REBUILD_SOCKET", s.t.path("rebuild.sock"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let a = audit(&s);
    let build = a
        .iter()
        .find(|r| r.agent == "nkr08" && r.decision == "approved")
        .expect("the build is audited");
    assert_eq!(build.target, "nkr08", "built as the agent, not root");
    assert_eq!(build.argv.last().map(String::as_str), Some("--show-trace"));
    assert_eq!(build.exit_status, Some(0));
    assert_eq!(build.decided_by.as_ref().unwrap().channel, "rebuild");
    assert!(a
        .iter()
        .filter(|r| r.agent == "nkr07")
        .all(|r| r.decision == "denied"));
}

/// Benchmark, not a test (bench/rebuild.sh): lease hand-off with 20 waiters,
/// from one build's end to the next build's start, read from the build log.
#[test]
#[ignore]
fn rebuild_handoff_benchmark() {
    let s = setup();
    let gate = s.t.path("gate");
    mkfifo(&gate);
    let (first, mut first_err) = rebuild(&s, &agent(1), "build");
    until(&mut first_err, "lease taken");
    let mut all = vec![(first, first_err)];
    for i in 2..=N {
        let (c, mut err) = rebuild(&s, &agent(i), "build");
        until(&mut err, "waiting for the rebuild lease");
        all.push((c, err));
    }
    open_gate(&gate);
    for (c, _err) in all {
        assert!(c.wait_with_output().unwrap().status.success());
    }
    let log = log_lines(&s);
    let mut gaps: Vec<f64> = (1..N)
        .map(|i| (log[2 * i].2 - log[2 * i - 1].2) as f64 / 1e6)
        .collect();
    gaps.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "BENCH rebuild hand-off (build end -> next build start) over {} hand-offs with 20 queued: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        gaps.len(),
        gaps[gaps.len() / 2],
        gaps[(gaps.len() * 95) / 100],
        gaps[gaps.len() - 1]
    );
}
