//! A throw-away town for the town hall's end-to-end tests, on this real host:
//! real users (`nkt*`, uids 1950–1999), a real sudoers drop-in (installed
//! as apply installs it: checked alone and with the host's whole sudoers
//! configuration) naming the real entry point, the real `sudo` shim, and the
//! real daemon on the fixed requester socket `/run/nuketown/hall.sock` (the
//! entry point knows no other). Tests that use it take turns through an
//! exclusive lock; everything it made is removed on drop, even when the test
//! fails. Waiting is on sockets and processes, with deadlines — never sleeps.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nuketown_hall::audit::{joined, AuditLog, Record};
use nuketown_hall::client::Approver;
use nuketown_hall::protocol::{RequestView, ToApprover};

/// The agents, the approving human, and a human in the approvers group the town does not list.
pub const ADA: &str = "nktada";
pub const VOX: &str = "nktvox";
pub const HUMAN: &str = "nkthuman";
pub const OUTSIDER: &str = "nktnobody";
pub const ADA_UID: u32 = 1950;
pub const VOX_UID: u32 = 1951;
const HUMAN_UID: u32 = 1952;
const OUTSIDER_UID: u32 = 1953;
/// Names an interrupted older run may have left behind.
const LEFTOVERS: &[&str] = &["nkth"];

/// Tests on the fixed socket take turns, across test binaries too.
const SERIAL_LOCK: &str = "/run/lock/nuketown-hall-tests.lock";
/// useradd/userdel in parallel fail: every test suite that makes users shares this lock.
const USERS_LOCK: &str = "/run/lock/nuketown-users.lock";
/// The drop-in this fixture installs (no dot in the name, or sudo skips it).
pub const SUDOERS: &str = "/etc/sudoers.d/nuketown-hall-test";
/// The nftables table the tests' hall uses (`inet nuketown_hall_test`).
pub const NFT_TABLE: &str = "nuketown_hall_test";
/// Where a hall that was already running keeps its socket while the tests run.
const SAVED_SOCKET: &str = "/run/nuketown/hall.sock.saved-by-nuketown-tests";

/// How long any one wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

fn lock(path: &str) -> Flock<File> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap()
}

fn run_ok(cmd: &mut Command) {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether every directory above `p` lets other users through.
fn reachable_by_all(p: &Path) -> bool {
    p.ancestors()
        .skip(1)
        .all(|d| fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// The test users; removed on drop (their processes first).
struct Users(Vec<&'static str>);

impl Users {
    fn remove(names: &[&str]) {
        let _l = lock(USERS_LOCK);
        for u in names {
            let _ = Command::new("pkill").args(["-KILL", "-u", u]).output();
            let _ = Command::new("userdel").arg(u).output();
            let _ = Command::new("groupdel").arg(u).output();
        }
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        Users::remove(&self.0);
    }
}

/// The daemon under test.
struct Hall {
    child: Child,
}

/// Policy knobs for the test town.
#[derive(Clone)]
pub struct Options {
    /// Seconds before ada's requests are denied.
    pub ada_timeout: u64,
    /// Seconds before vox's requests are denied.
    pub vox_timeout: u64,
    /// Extra TOML under `[agents.nktada.sudo]`, e.g. autoApprove rules.
    pub ada_sudo: String,
    /// TOML under `[agents.nktada.keys]`: the policy for ada's keys (the
    /// table comes before ada's sudo table, so text added before
    /// `[agents.nktvox]` still lands in ada's sudo).
    pub ada_keys: String,
    /// TOML under `[agents.nktada.network]`, e.g. `egress = "none"`.
    pub ada_network: String,
    /// TOML under `[agents.nktvox.network]`.
    pub vox_network: String,
    /// TOML under `[agents.nktada]` itself, e.g. `cloud = { enable = true }`.
    pub ada_extra: String,
    /// Top-level TOML lines (dotted keys), e.g. `hall.gateway = { … }`.
    pub town_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ada_timeout: 60,
            vox_timeout: 60,
            ada_sudo: "autoApprove = [{ argv = [\"true\"] }]\ndeny = [{ argv = [\"rm\"], prefix = true }]\n".into(),
            ada_keys: String::new(),
            ada_network: String::new(),
            vox_network: String::new(),
            ada_extra: String::new(),
            town_extra: String::new(),
        }
    }
}

/// A town with ada, vox and their human, sudo wired to a real hall.
pub struct TestTown {
    pub dir: tempfile::TempDir,
    pub town: PathBuf,
    pub elevate: PathBuf,
    pub shim_dir: PathBuf,
    /// The nuketown binary, where the test users can run it.
    pub nuketown: PathBuf,
    hall: Option<Hall>,
    saved_socket: bool,
    _users: Users,
    _serial: Flock<File>,
}

impl TestTown {
    /// Make the users, the town, the entry point, the shim and the sudoers drop-in. The hall is not started.
    pub fn new(opts: Options) -> TestTown {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests make real users and install a sudoers drop-in: run them as root (CI does)"
        );
        let serial = lock(SERIAL_LOCK);
        let dir = tempfile::Builder::new()
            .prefix("nuketown-hall-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let names = vec![ADA, VOX, HUMAN, OUTSIDER];
        Users::remove(&names);
        Users::remove(LEFTOVERS);
        let users = Users(names);
        {
            let _l = lock(USERS_LOCK);
            run_ok(Command::new("groupadd").args(["-f", "-r", nuketown_hall::APPROVERS_GROUP]));
            for (name, uid, approver) in [
                (ADA, ADA_UID, false),
                (VOX, VOX_UID, false),
                (HUMAN, HUMAN_UID, true),
                (OUTSIDER, OUTSIDER_UID, true),
            ] {
                let home = dir.path().join("home").join(name);
                fs::create_dir_all(&home).unwrap();
                let mut c = Command::new("useradd");
                c.args(["-M", "-U", "-s", "/bin/sh", "-c", "nuketown hall test"])
                    .arg("-d")
                    .arg(&home)
                    .args(["-u", &uid.to_string()]);
                if approver {
                    c.args(["-G", nuketown_hall::APPROVERS_GROUP]);
                }
                run_ok(c.arg(name));
                run_ok(
                    Command::new("chown")
                        .arg(format!("{name}:{name}"))
                        .arg(&home),
                );
                fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
            }
        }

        // The entry point, root's, in root's directories; the shim beside it, as apply lays them out.
        let libexec = dir.path().join("libexec");
        let shim_dir = libexec.join("bin");
        fs::create_dir_all(&shim_dir).unwrap();
        let elevate = libexec.join("nuketown-elevate");
        fs::copy(env!("CARGO_BIN_EXE_nuketown-elevate"), &elevate).unwrap();
        fs::set_permissions(&elevate, fs::Permissions::from_mode(0o755)).unwrap();
        fs::copy(env!("CARGO_BIN_EXE_nuketown-sudo"), shim_dir.join("sudo")).unwrap();
        fs::set_permissions(shim_dir.join("sudo"), fs::Permissions::from_mode(0o755)).unwrap();

        let built = PathBuf::from(env!("CARGO_BIN_EXE_nuketown"));
        let nuketown = if reachable_by_all(&built) {
            built
        } else {
            let copy = dir.path().join("bin/nuketown");
            fs::create_dir_all(copy.parent().unwrap()).unwrap();
            fs::copy(&built, &copy).unwrap();
            copy
        };

        let town = dir.path().join("town.toml");
        fs::write(
            &town,
            format!(
                "humanUser = \"{HUMAN}\"\nagentsDir = \"{home}\"\npersistDir = \"{persist}\"\n\
                 hall.elevatePath = \"{elevate}\"\n{}\n\
                 [agents.{ADA}]\nuid = {ADA_UID}\n{}\n[agents.{ADA}.network]\n{}\n[agents.{ADA}.keys]\n{}\n\
                 [agents.{ADA}.sudo]\nenable = true\ntimeout = {}\n{}\n\
                 [agents.{VOX}]\nuid = {VOX_UID}\n[agents.{VOX}.network]\n{}\n[agents.{VOX}.sudo]\nenable = true\ntimeout = {}\n",
                opts.town_extra,
                opts.ada_extra,
                opts.ada_network,
                opts.ada_keys,
                opts.ada_timeout,
                opts.ada_sudo,
                opts.vox_network,
                opts.vox_timeout,
                home = dir.path().join("home").display(),
                persist = dir.path().join("persist").display(),
                elevate = elevate.display(),
            ),
        )
        .unwrap();

        let t = TestTown {
            town,
            elevate,
            shim_dir,
            nuketown,
            hall: None,
            saved_socket: false,
            _users: users,
            _serial: serial,
            dir,
        };
        t.install_sudoers();
        t
    }

    /// Render the drop-in for this town and install it as apply does: only
    /// once visudo accepts it alone and with the host's whole configuration,
    /// so the host's sudo is never broken, whatever else is installed.
    fn install_sudoers(&self) {
        let town = nuketown_town::load(&self.town).unwrap();
        let text = nuketown_hall::sudoers::render(&town);
        nuketown_host::sudoers::install(
            Path::new(nuketown_host::sudoers::MAIN),
            Path::new(SUDOERS),
            &text,
        )
        .unwrap();
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn home(&self, user: &str) -> PathBuf {
        self.path("home").join(user)
    }

    pub fn approver_socket(&self) -> PathBuf {
        self.path("approvers.sock")
    }

    pub fn audit_log(&self) -> PathBuf {
        self.path("audit.jsonl")
    }

    pub fn mode_file(&self) -> PathBuf {
        self.path("mode")
    }

    /// The agents' ask socket (`nuketown ask`), served by the hall.
    pub fn ask_socket(&self) -> PathBuf {
        self.path("ask.sock")
    }

    /// The nftables rules file the hall installs when it starts.
    pub fn nftables_file(&self) -> PathBuf {
        self.path("nftables.nft")
    }

    /// The town's sealing key (the hall and `nuketown keys` use it).
    pub fn sealing_key(&self) -> PathBuf {
        self.path("sealing.key")
    }

    /// `user`'s ssh-agent socket, served by the hall.
    pub fn key_socket(&self, user: &str) -> PathBuf {
        nuketown_keys::agent::socket_path(&self.path("ssh"), user)
    }

    /// The town's key store (`persistDir/agents/.nuketown-keys`).
    pub fn key_store(&self) -> nuketown_keys::Store {
        let agents = self.path("persist/agents");
        fs::create_dir_all(&agents).unwrap();
        let sealing = nuketown_keys::SealingKey::load_or_create(&self.sealing_key()).unwrap();
        nuketown_keys::Store::new(&agents.join(nuketown_keys::store::STORE_DIR), sealing)
    }

    /// `nuketown ARGS…` as root, on this town, its sealing key and audit log.
    pub fn root_nuketown(&self, args: &[&str]) -> Output {
        Command::new(&self.nuketown)
            .arg("--town")
            .arg(&self.town)
            .args(args)
            .env("NUKETOWN_SEALING_KEY", self.sealing_key())
            .env("NUKETOWN_AUDIT_LOG", self.audit_log())
            .output()
            .unwrap()
    }

    /// Make sure nothing answers on the fixed requester socket: a stale file
    /// goes, a hall outside the tests is moved out of the way (and put back on drop).
    pub fn clear_fixed_socket(&mut self) {
        let fixed = Path::new(nuketown_hall::REQUESTER_SOCKET);
        fs::create_dir_all(fixed.parent().unwrap()).unwrap();
        if fixed.exists() {
            if UnixStream::connect(fixed).is_ok() && !self.saved_socket {
                fs::rename(fixed, SAVED_SOCKET).unwrap();
                self.saved_socket = true;
            } else {
                fs::remove_file(fixed).unwrap();
            }
        }
    }

    /// Start `nuketown hall` on the fixed requester socket; returns once it told us READY=1 (sd_notify).
    pub fn start_hall(&mut self) {
        assert!(self.hall.is_none(), "the hall is already running");
        self.clear_fixed_socket();
        let notify_path = self.path("notify.sock");
        let _ = fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify.set_read_timeout(Some(DEADLINE)).unwrap();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("hall.log"))
            .unwrap();
        let child = Command::new(&self.nuketown)
            .arg("--town")
            .arg(&self.town)
            .arg("hall")
            .arg("--approver-socket")
            .arg(self.approver_socket())
            .arg("--mode-file")
            .arg(self.mode_file())
            .arg("--audit-log")
            .arg(self.audit_log())
            .arg("--ssh-agent-dir")
            .arg(self.path("ssh"))
            .env("NUKETOWN_SEALING_KEY", self.sealing_key())
            .env("NOTIFY_SOCKET", &notify_path)
            .env("NUKETOWN_LOG", "info")
            // The rebuild coordinator shares the hall's process: keep it in the test's directory too.
            .env("NUKETOWN_REBUILD_SOCKET", self.path("rebuild.sock"))
            .env("NUKETOWN_REBUILD_HISTORY", self.path("rebuilds.jsonl"))
            // Network rules in the tests' own table, never the host's.
            .env("NUKETOWN_ASK_SOCKET", self.ask_socket())
            .env("NUKETOWN_NFT_TABLE", NFT_TABLE)
            .env("NUKETOWN_NFTABLES_FILE", self.nftables_file())
            .env_remove("NUKETOWN_HALL_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.hall = Some(Hall { child });
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "the hall never said READY=1 ({e}):\n{}",
                fs::read_to_string(self.path("hall.log")).unwrap_or_default()
            )
        });
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(msg.contains("READY=1"), "{msg}");
    }

    pub fn hall_pid(&self) -> u32 {
        self.hall.as_ref().expect("the hall runs").child.id()
    }

    /// SIGKILL the hall (our child) and reap it.
    pub fn kill_hall(&mut self) {
        if let Some(mut h) = self.hall.take() {
            let _ = h.child.kill();
            let _ = h.child.wait();
        }
    }

    /// SIGTERM the hall and wait for it to end.
    pub fn stop_hall(&mut self) -> std::process::ExitStatus {
        let mut h = self.hall.take().expect("the hall runs");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(h.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        h.child.wait().unwrap()
    }

    /// An approver connection of this (root) test process, watching.
    pub fn watch(&self) -> Approver {
        let mut a = Approver::connect(&self.approver_socket()).unwrap();
        a.set_timeout(Some(DEADLINE)).unwrap();
        a.watch("terminal").unwrap();
        a
    }

    /// A shell command line run as `user` from its home, the shim first on PATH.
    fn agent_command(&self, user: &str, script: &str) -> Command {
        let mut c = Command::new("su");
        c.args(["-s", "/bin/sh", user, "-c"]).arg(format!(
            "cd \"$HOME\" && PATH={}:/usr/bin:/bin && export PATH && {script}",
            self.shim_dir.display()
        ));
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Run `script` as the agent and wait for it.
    pub fn agent(&self, user: &str, script: &str) -> Output {
        finish(self.agent_command(user, script).spawn().unwrap())
    }

    /// Start `script` as the agent (e.g. a sudo that will wait for a decision).
    pub fn spawn_agent(&self, user: &str, script: &str) -> Child {
        self.agent_command(user, script).spawn().unwrap()
    }

    /// `nuketown ARGS…` as `user` (an approver, usually), on this town's approver socket.
    pub fn nuketown_as(&self, user: &str, args: &str) -> Command {
        let mut c = Command::new("su");
        c.args(["-s", "/bin/sh", user, "-c"]).arg(format!(
            "NUKETOWN_APPROVER_SOCKET={} NUKETOWN_AUDIT_LOG={} exec {} {args}",
            self.approver_socket().display(),
            self.audit_log().display(),
            self.nuketown.display()
        ));
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Run `nuketown ARGS…` as `user` and wait.
    pub fn human(&self, user: &str, args: &str) -> Output {
        finish(self.nuketown_as(user, args).spawn().unwrap())
    }

    /// Write the mock mode file, owned by `owner` with `mode`.
    pub fn set_mode_file(&self, content: &str, owner: &str, mode: u32) {
        let p = self.mode_file();
        fs::write(&p, format!("{content}\n")).unwrap();
        run_ok(Command::new("chown").arg(owner).arg(&p));
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// The audit log, decisions joined with their exit status.
    pub fn audit(&self) -> Vec<Record> {
        joined(AuditLog::read(&self.audit_log()).unwrap_or_default())
    }

    /// The audit record of request `id`, once the hall has written what we wait for.
    pub fn audit_of(&self, id: &str) -> Record {
        self.audit()
            .into_iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("no audit record for {id}:\n{:#?}", self.audit()))
    }

    /// The hall's log so far.
    pub fn hall_log(&self) -> String {
        fs::read_to_string(self.path("hall.log")).unwrap_or_default()
    }
}

impl Drop for TestTown {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- the hall's log ---\n{}", self.hall_log());
        }
        self.kill_hall();
        let fixed = Path::new(nuketown_hall::REQUESTER_SOCKET);
        let _ = fs::remove_file(fixed);
        if self.saved_socket {
            let _ = fs::rename(SAVED_SOCKET, fixed);
        }
        let _ = fs::remove_file(SUDOERS);
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", NFT_TABLE])
            .stderr(Stdio::null())
            .status();
        // Users (and their processes) go with `_users`; the directory with `dir`.
    }
}

/// Wait for a child we started, with a deadline; kill it if it overstays.
pub fn finish(child: Child) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("process {pid} did not finish within {DEADLINE:?}");
        }
    }
}

/// The next new request the watcher is told about.
pub fn next_request(a: &mut Approver) -> RequestView {
    loop {
        match a.recv().unwrap() {
            ToApprover::Request { request } => return request,
            _ => continue,
        }
    }
}

/// The next resolution the watcher is told about: (id, outcome, who, channel).
pub fn next_resolution(a: &mut Approver) -> (String, String, String, String) {
    loop {
        match a.recv().unwrap() {
            ToApprover::Resolved { id, outcome, by } => return (id, outcome, by.who, by.channel),
            _ => continue,
        }
    }
}

/// What a child writes to a pipe, read on a thread so waiting for it has a deadline.
pub struct Stream {
    rx: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
    /// Where the last `until` stopped.
    mark: usize,
}

impl Stream {
    pub fn new(mut r: impl Read + Send + 'static) -> Stream {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        Stream {
            rx,
            seen: Vec::new(),
            mark: 0,
        }
    }

    /// Everything after the last match up to and including the next `needle`.
    pub fn until(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let fresh = String::from_utf8_lossy(&self.seen[self.mark..]).into_owned();
            if let Some(i) = fresh.find(needle) {
                let end = i + needle.len();
                self.mark += fresh[..end].len();
                return fresh[..end].to_string();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.seen.extend(chunk),
                Err(e) => panic!("no {needle:?} ({e:?}); got:\n{fresh}"),
            }
        }
    }
}

/// Write a line to a child's stdin.
pub fn type_line(w: &mut impl Write, line: &str) {
    w.write_all(format!("{line}\n").as_bytes()).unwrap();
    w.flush().unwrap();
}

/// A root-only directory: a file appears there only if something ran as root.
pub fn victim(t: &TestTown) -> PathBuf {
    let d = t.path("victim");
    fs::create_dir_all(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Run `script` as ada; it must succeed. Its output.
pub fn agent_ok(t: &TestTown, script: &str) -> String {
    let o = t.agent(ADA, script);
    assert!(o.status.success(), "{script}: {}{}", stdout(&o), stderr(&o));
    stdout(&o)
}

/// A second approver connection, to decide what a watcher saw.
pub fn decider(t: &TestTown) -> Approver {
    let a = Approver::connect(&t.approver_socket()).unwrap();
    a.set_timeout(Some(DEADLINE)).unwrap();
    a
}

/// The request reached a human, flagged: deny it and make sure nothing ran.
pub fn human_must_decide(t: &TestTown, w: &mut Approver, child: Child) -> RequestView {
    let r = next_request(w);
    assert!(
        r.agent_can_write && !r.grantable && !r.warnings.is_empty(),
        "only a human may decide this, warned: {r:#?}"
    );
    decider(t).decide(&r, false, None, "terminal").unwrap();
    let o = finish(child);
    assert!(!o.status.success(), "{}", stdout(&o));
    r
}
