//! The rebuild coordinator: agents (and humans) take turns changing the
//! system. A lease is taken over a Unix socket; waiters queue FIFO and see
//! their position and the holder; the lease dies with the holder's
//! connection. The coordinator (root, in the town hall's process) runs the
//! town's rebuild command for the holder, after a human's approval for the
//! actions that change the running system, and records every generation.

pub mod changes;

use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Mutex};

use changes::Summary;
use nuketown_hall::audit::{AuditLog, Record};
use nuketown_hall::files::Prepared;

/// The coordinator's socket.
pub const SOCKET: &str = "/run/nuketown/rebuild.sock";
/// Generation history (JSON lines).
pub const HISTORY: &str = "/var/lib/nuketown/rebuilds.jsonl";
/// Holder and queue, for `nuketown status`.
pub const STATUS: &str = "/run/nuketown/rebuild-status.json";
/// The protocol version.
pub const VERSION: u32 = 1;

/// Arguments a rebuild may carry: flags that change how much is printed or
/// how far a failing build goes, never what is built, from where, or how Nix
/// is configured (`--option`, `--flake`, `-I`, `--file`, `--impure` … are refused).
pub const ALLOWED_ARGS: &[&str] = &[
    "--show-trace",
    "--verbose",
    "-v",
    "--print-build-logs",
    "-L",
    "--keep-going",
    "--fast",
    "--no-build-nix",
];

/// Why `args` may not be passed to the rebuild command, if they may not.
pub fn check_args(args: &[String]) -> Result<(), String> {
    match args.iter().find(|a| !ALLOWED_ARGS.contains(&a.as_str())) {
        None => Ok(()),
        Some(a) => Err(format!(
            "the argument {} is not one a rebuild may carry: only {} (the command and the configuration are the town's: rebuild.command, rebuild.configRepo)",
            nuketown_town::display::show_str(a),
            ALLOWED_ARGS.join(", ")
        )),
    }
}

/// The actions, and whether they change the running system (run as root, need a human).
pub const ACTIONS: &[(&str, bool)] = &[
    ("build", false),
    ("dry-build", false),
    ("test", true),
    ("switch", true),
    ("boot", true),
];

/// Client → coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Take the lease and run `action` with `args`.
    Rebuild {
        /// Protocol version.
        v: u32,
        /// build, test, switch, boot, dry-build.
        action: String,
        /// Extra arguments for the rebuild command.
        #[serde(default)]
        args: Vec<String>,
    },
}

/// Who holds the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// User name.
    pub who: String,
    /// Action.
    pub action: String,
    /// Since (ms since the epoch).
    pub since_ms: u64,
}

/// Coordinator → client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Waiting: position 1 is next.
    Queued {
        /// Position in the queue.
        position: usize,
        /// The current holder.
        holder: Option<Holder>,
    },
    /// The lease is yours; what changed since your last build.
    Granted {
        /// Summary lines.
        summary: Vec<String>,
    },
    /// Waiting for a human to approve the action.
    Approving,
    /// A line of the rebuild's output.
    Output {
        /// The line.
        line: String,
    },
    /// The rebuild ended; the lease is released.
    Finished {
        /// Exit status (or -1 when it could not run).
        status: i32,
        /// The generation number recorded.
        generation: u64,
    },
    /// Refused.
    Error {
        /// Why.
        message: String,
    },
}

/// One recorded generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// Sequence number.
    pub generation: u64,
    /// Who asked.
    pub who: String,
    /// Their uid.
    pub uid: u32,
    /// Action.
    pub action: String,
    /// Extra arguments.
    pub args: Vec<String>,
    /// Configuration revision built.
    pub revision: Option<String>,
    /// Start (ms since the epoch).
    pub started_ms: u64,
    /// End (ms since the epoch).
    pub ended_ms: u64,
    /// Exit status; -1 when it did not run (denied, no command).
    pub status: i32,
    /// Why it did not run, if it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Where the coordinator listens and writes.
#[derive(Debug, Clone)]
pub struct Config {
    /// Its socket.
    pub socket: PathBuf,
    /// The history file.
    pub history: PathBuf,
    /// The status file.
    pub status: PathBuf,
    /// The town (re-read per request).
    pub town: PathBuf,
    /// The hall's requester socket, for approvals.
    pub hall_socket: PathBuf,
    /// The hall's audit log, where rebuilds the hall does not decide are recorded too.
    pub audit_log: PathBuf,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Read the generation history.
pub fn history(path: &Path) -> Vec<Generation> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

struct Waiter {
    ticket: u64,
    who: String,
    action: String,
}

struct Queue {
    next_ticket: u64,
    holder: Option<(u64, Holder)>,
    waiting: VecDeque<Waiter>,
}

struct Coordinator {
    cfg: Config,
    queue: Mutex<Queue>,
    changed: watch::Sender<u64>,
    history_lock: Mutex<()>,
}

impl Coordinator {
    async fn publish(&self) {
        let q = self.queue.lock().await;
        let status = serde_json::json!({
            "holder": q.holder.as_ref().map(|(_, h)| h),
            "queue": q.waiting.iter().map(|w| serde_json::json!({"who": w.who, "action": w.action})).collect::<Vec<_>>(),
        });
        drop(q);
        let _ = std::fs::write(
            &self.cfg.status,
            serde_json::to_vec_pretty(&status).unwrap_or_default(),
        );
        self.changed.send_modify(|n| *n += 1);
    }

    async fn release(&self, ticket: u64) {
        {
            let mut q = self.queue.lock().await;
            if q.holder.as_ref().is_some_and(|(t, _)| *t == ticket) {
                q.holder = None;
            }
            q.waiting.retain(|w| w.ticket != ticket);
            // Hand the lease to the head of the queue.
            if q.holder.is_none() {
                if let Some(w) = q.waiting.pop_front() {
                    q.holder = Some((
                        w.ticket,
                        Holder {
                            who: w.who,
                            action: w.action,
                            since_ms: now_ms(),
                        },
                    ));
                }
            }
        }
        self.publish().await;
    }

    async fn record(&self, g: &mut Generation) {
        let _guard = self.history_lock.lock().await;
        g.generation = history(&self.cfg.history)
            .last()
            .map_or(1, |l| l.generation + 1);
        if let Some(dir) = self.cfg.history.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut line = serde_json::to_vec(g).expect("serialises");
        line.push(b'\n');
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.cfg.history)
        {
            let _ = std::io::Write::write_all(&mut f, &line);
        }
        tracing::info!(generation = g.generation, who = %g.who, action = %g.action, status = g.status, "rebuild recorded");
    }
}

async fn send(w: &mut tokio::net::unix::OwnedWriteHalf, e: &Event) -> std::io::Result<()> {
    let mut v = serde_json::to_vec(e).expect("serialises");
    v.push(b'\n');
    w.write_all(&v).await
}

/// The hall's answer to a rebuild request, with the connection on which
/// the exit status is reported afterwards.
struct Approved {
    hall: tokio::io::BufReader<UnixStream>,
    id: String,
}

/// Ask the hall (as its root requester) about `prepared` for the agent `uid`;
/// the hall applies the agent's policies, asks a human, audits.
async fn approve(hall: &Path, prepared: &Prepared) -> Result<Approved, String> {
    use nuketown_hall::protocol::{self, FromRequester, ToRequester};
    let mut s = UnixStream::connect(hall)
        .await
        .map_err(|_| "the town hall is not running; denied".to_string())?;
    let ask = FromRequester::Request {
        v: protocol::VERSION,
        ask: prepared.ask.clone(),
    };
    s.write_all(&protocol::encode(&ask))
        .await
        .map_err(|e| e.to_string())?;
    let mut rd = BufReader::new(s);
    loop {
        let mut l = Vec::new();
        if rd
            .read_until(b'\n', &mut l)
            .await
            .map_err(|e| e.to_string())?
            == 0
        {
            return Err("the town hall went away before deciding; denied".into());
        }
        match protocol::parse_to_requester(&l) {
            Ok(ToRequester::Pending { .. }) => continue,
            Ok(ToRequester::Decision {
                id, approved: true, ..
            }) => return Ok(Approved { hall: rd, id }),
            Ok(ToRequester::Decision { reason, .. }) => return Err(reason),
            Err(e) => return Err(format!("malformed answer from the hall: {e}; denied")),
        }
    }
}

/// Record a refused rebuild (nothing ran) in the hall's audit log.
fn refused(log: &Path, who: &str, uid: u32, argv: &[String], reason: &str) {
    let id = nuketown_hall::protocol::new_id().unwrap_or_default();
    audit(log, &id, who, uid, None, argv, "", false, reason);
}

/// Who decided that a rebuild runs, and so where its exit status is recorded.
enum Decided {
    /// The hall (an agent's test/switch/boot): the exit goes back on its connection.
    ByHall(Approved),
    /// The coordinator itself (a build without privilege, a human's or root's own):
    /// recorded under this audit id.
    Here(String),
}

impl Decided {
    async fn exited(self, log: &Path, who: &str, uid: u32, status: i32) {
        match self {
            Decided::ByHall(mut a) => {
                let exit = nuketown_hall::protocol::FromRequester::Exit {
                    v: nuketown_hall::protocol::VERSION,
                    id: a.id,
                    status,
                };
                let _ = a
                    .hall
                    .get_mut()
                    .write_all(&nuketown_hall::protocol::encode(&exit))
                    .await;
            }
            Decided::Here(id) => {
                let mut r = Record::new(&id, "exit", who, uid);
                r.exit_status = Some(status);
                if let Err(e) = AuditLog::new(log).append(&r) {
                    tracing::error!("cannot write the audit log {}: {e}", log.display());
                }
            }
        }
    }
}

/// Who a rebuild runs as.
struct RunAs {
    uid: u32,
    gid: u32,
    groups: Vec<nix::unistd::Gid>,
    home: String,
    name: String,
}

impl RunAs {
    fn of(uid: u32) -> Option<RunAs> {
        let u = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok()??;
        let groups =
            nix::unistd::getgrouplist(&std::ffi::CString::new(u.name.clone()).ok()?, u.gid).ok()?;
        Some(RunAs {
            uid,
            gid: u.gid.as_raw(),
            groups,
            home: u.dir.to_string_lossy().into_owned(),
            name: u.name,
        })
    }
}

/// The rebuild command, ready: the program opened once and executed by
/// descriptor, in the working directory opened once — as the hall decided.
fn command(prepared: &Prepared, run_as: Option<&RunAs>, by: &str) -> tokio::process::Command {
    use std::os::fd::AsRawFd;
    let prog = prepared.program.fd.as_raw_fd();
    let cwd = prepared.cwd.fd.as_raw_fd();
    let mut cmd = tokio::process::Command::new(format!("/proc/self/fd/{prog}"));
    cmd.arg0(&prepared.ask.argv[0])
        .args(&prepared.ask.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0)
        .env("NUKETOWN_REBUILD_BY", by);
    if let Some(r) = run_as {
        cmd.env("HOME", &r.home)
            .env("USER", &r.name)
            .env("LOGNAME", &r.name);
    }
    let ids = run_as.map(|r| (r.uid, r.gid, r.groups.clone()));
    // Safety: only async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::fchdir(cwd)?;
            // A script's interpreter opens it as /proc/self/fd/N after exec.
            nix::fcntl::fcntl(
                prog,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )?;
            if let Some((uid, gid, groups)) = &ids {
                nix::unistd::setgroups(groups)?;
                nix::unistd::setgid(nix::unistd::Gid::from_raw(*gid))?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(*uid))?;
            }
            Ok(())
        });
    }
    cmd
}

/// Record a rebuild the hall did not decide (refused here, or run without
/// privilege, or a human's own) in the hall's audit log.
#[allow(clippy::too_many_arguments)]
fn audit(
    log: &Path,
    id: &str,
    who: &str,
    uid: u32,
    prepared: Option<&Prepared>,
    argv: &[String],
    target: &str,
    approved: bool,
    reason: &str,
) {
    if id.is_empty() {
        tracing::error!("no randomness for an audit id; recording {who}'s rebuild without one");
    }
    let mut r = Record::new(id, "decision", who, uid);
    r.argv = argv.to_vec();
    if let Some(p) = prepared {
        r.program = Some(p.ask.program.clone());
        r.cwd = p.ask.cwd.path.clone();
    }
    r.target = target.to_string();
    r.decision = if approved { "approved" } else { "denied" }.into();
    r.reason = reason.to_string();
    r.decided_by = Some(nuketown_hall::protocol::DecidedBy {
        who: "rebuild".into(),
        channel: "rebuild".into(),
    });
    if let Err(e) = AuditLog::new(log).append(&r) {
        tracing::error!("cannot write the audit log {}: {e}", log.display());
    }
}

async fn serve_client(c: Arc<Coordinator>, stream: UnixStream) {
    let Ok(peer) = stream.peer_cred() else { return };
    let uid = peer.uid();
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = String::new();
    if rd.read_line(&mut line).await.unwrap_or(0) == 0 || line.len() > 64 * 1024 {
        return;
    }
    let Ok(Request::Rebuild { v, action, args }) = serde_json::from_str::<Request>(&line) else {
        let _ = send(
            &mut wr,
            &Event::Error {
                message: "malformed request".into(),
            },
        )
        .await;
        return;
    };
    let town = match nuketown_town::load(&c.cfg.town) {
        Ok(t) => t,
        Err(e) => {
            let _ = send(
                &mut wr,
                &Event::Error {
                    message: format!("the town cannot be read: {e}"),
                },
            )
            .await;
            return;
        }
    };
    let who = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {uid}"));
    let agent = town.host_agents().find(|(_, a)| a.uid == uid);
    let is_human = uid == 0 || town.approvers().contains(&who);
    let refuse = if v != VERSION {
        Some(format!("protocol version {v} is not spoken here"))
    } else if agent.is_none() && !is_human {
        Some(format!(
            "{who} is neither an agent nor an approver of this town"
        ))
    } else if let Some((name, _)) = agent.filter(|(_, a)| !a.rebuild.enable && !is_human) {
        Some(format!(
            "agents.{name}.rebuild.enable is false: this agent may not use the rebuild coordinator"
        ))
    } else if !ACTIONS.iter().any(|(a, _)| *a == action) {
        Some(format!(
            "unknown action {:?}; use build, test, switch, boot or dry-build",
            nuketown_town::display::clean(&action)
        ))
    } else {
        check_args(&args).err()
    };
    let mut argv = town.rebuild.command.clone();
    argv.push(action.clone());
    argv.extend(args.iter().cloned());
    if let Some(message) = refuse {
        if agent.is_some() || is_human {
            refused(&c.cfg.audit_log, &who, uid, &argv, &message);
        }
        let _ = send(&mut wr, &Event::Error { message }).await;
        return;
    }

    // Queue up.
    let ticket = {
        let mut q = c.queue.lock().await;
        q.next_ticket += 1;
        let t = q.next_ticket;
        if q.holder.is_none() && q.waiting.is_empty() {
            q.holder = Some((
                t,
                Holder {
                    who: who.clone(),
                    action: action.clone(),
                    since_ms: now_ms(),
                },
            ));
        } else {
            q.waiting.push_back(Waiter {
                ticket: t,
                who: who.clone(),
                action: action.clone(),
            });
        }
        t
    };
    c.publish().await;
    let mut changed = c.changed.subscribe();
    let mut probe = [0u8; 1];
    let mut last_pos = None;
    loop {
        let (granted, position, holder) = {
            let q = c.queue.lock().await;
            let granted = q.holder.as_ref().is_some_and(|(t, _)| *t == ticket);
            let pos = q
                .waiting
                .iter()
                .position(|w| w.ticket == ticket)
                .map(|p| p + 1);
            (granted, pos, q.holder.as_ref().map(|(_, h)| h.clone()))
        };
        if granted {
            break;
        }
        if position != last_pos {
            last_pos = position;
            if send(
                &mut wr,
                &Event::Queued {
                    position: position.unwrap_or(0),
                    holder,
                },
            )
            .await
            .is_err()
            {
                c.release(ticket).await;
                return;
            }
        }
        tokio::select! {
            _ = changed.changed() => {}
            // The waiter went away: leave the queue.
            _ = rd.read(&mut probe) => { c.release(ticket).await; return; }
        }
    }

    // Holding the lease: it dies with this connection, whatever happens below.
    let started = now_ms();
    let repo = town.rebuild.config_repo.clone();
    let since = history(&c.cfg.history)
        .into_iter()
        .rev()
        .find(|g| g.uid == uid && g.status == 0)
        .and_then(|g| g.revision);
    // git reads the repository as the caller (root only for root), never
    // as root for someone else; with no account to read as, no summary.
    let reader = if uid == 0 {
        Some(None)
    } else {
        RunAs::of(uid).map(|u| Some((u.uid, u.gid)))
    };
    let summary: Summary = match (&repo, reader) {
        (Some(r), Some(reader)) => changes::summarise(r, since.as_deref(), reader),
        _ => Summary::default(),
    };
    let mut gen = Generation {
        generation: 0,
        who: who.clone(),
        uid,
        action: action.clone(),
        args: args.clone(),
        revision: summary.head.clone(),
        started_ms: started,
        ended_ms: 0,
        status: -1,
        refused: None,
    };
    if send(
        &mut wr,
        &Event::Granted {
            summary: summary.lines(),
        },
    )
    .await
    .is_err()
    {
        c.release(ticket).await;
        return;
    }
    let changes_system = ACTIONS.iter().any(|(a, h)| *a == action && *h);
    let cwd = repo
        .as_deref()
        .map_or_else(|| "/".to_string(), |r| r.to_string_lossy().into_owned());
    // Building needs no privilege: it runs as whoever asked. What changes
    // the running system runs as root, and an agent's needs the hall's yes.
    let ready = if changes_system || uid == 0 {
        Ok(None)
    } else {
        RunAs::of(uid)
            .map(Some)
            .ok_or_else(|| format!("{who} has no account to build as"))
    }
    .and_then(|run_as| {
        let target = run_as.as_ref().map_or("root", |r| r.name.as_str());
        nuketown_hall::files::prepare(argv.clone(), &cwd, target, uid)
            .map(|p| (run_as, p))
            .map_err(|e| format!("the rebuild command cannot be run: {e}"))
    });
    let (run_as, prepared) = match ready {
        Ok(r) => r,
        Err(reason) => {
            refused(&c.cfg.audit_log, &who, uid, &argv, &reason);
            gen.refused = Some(reason.clone());
            gen.ended_ms = now_ms();
            c.record(&mut gen).await;
            let _ = send(&mut wr, &Event::Error { message: reason }).await;
            c.release(ticket).await;
            return;
        }
    };
    let decided = if changes_system && agent.is_some() && !is_human {
        let _ = send(&mut wr, &Event::Approving).await;
        let decision = tokio::select! {
            d = approve(&c.cfg.hall_socket, &prepared) => d,
            _ = rd.read(&mut probe) => Err("the requester went away".into()),
        };
        match decision {
            Ok(a) => Decided::ByHall(a),
            Err(reason) => {
                gen.refused = Some(reason.clone());
                gen.ended_ms = now_ms();
                c.record(&mut gen).await;
                let _ = send(&mut wr, &Event::Error { message: reason }).await;
                c.release(ticket).await;
                return;
            }
        }
    } else {
        let id = nuketown_hall::protocol::new_id().unwrap_or_default();
        let reason = match &run_as {
            Some(r) => format!("{action} runs as {}, without privilege", r.name),
            None if uid == 0 => format!("{action} asked by root"),
            None => format!("{action} asked by {who}, an approver of this town"),
        };
        audit(
            &c.cfg.audit_log,
            &id,
            &who,
            uid,
            Some(&prepared),
            &prepared.ask.argv,
            &prepared.ask.user,
            true,
            &reason,
        );
        Decided::Here(id)
    };
    // Run it, streaming its output; a holder that disappears ends it.
    let mut cmd = command(&prepared, run_as.as_ref(), &who);
    let status = match cmd.spawn() {
        Err(e) => {
            let _ = send(
                &mut wr,
                &Event::Output {
                    line: format!("cannot run {}: {e}", prepared.ask.argv[0]),
                },
            )
            .await;
            -1
        }
        Ok(mut child) => {
            let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
            let mut err = BufReader::new(child.stderr.take().expect("piped")).lines();
            let (mut out_done, mut err_done) = (false, false);
            let mut gone = false;
            while !(out_done && err_done) {
                let line = tokio::select! {
                    l = out.next_line(), if !out_done => match l { Ok(Some(l)) => Some(l), _ => { out_done = true; None } },
                    l = err.next_line(), if !err_done => match l { Ok(Some(l)) => Some(l), _ => { err_done = true; None } },
                    _ = rd.read(&mut probe) => { gone = true; break; }
                };
                if let Some(line) = line {
                    if send(&mut wr, &Event::Output { line }).await.is_err() {
                        gone = true;
                        break;
                    }
                }
            }
            if gone {
                // The holder died: stop its rebuild and hand the lease on.
                if let Some(pid) = child.id() {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let status = match child.wait().await {
                    Ok(s) => s.code().unwrap_or(-1),
                    Err(_) => -1,
                };
                decided.exited(&c.cfg.audit_log, &who, uid, status).await;
                gen.refused = Some("the holder went away; stopped".into());
                gen.ended_ms = now_ms();
                c.record(&mut gen).await;
                c.release(ticket).await;
                return;
            }
            match child.wait().await {
                Ok(s) => s.code().unwrap_or(-1),
                Err(_) => -1,
            }
        }
    };
    decided.exited(&c.cfg.audit_log, &who, uid, status).await;
    gen.status = status;
    gen.ended_ms = now_ms();
    c.record(&mut gen).await;
    c.release(ticket).await;
    let _ = send(
        &mut wr,
        &Event::Finished {
            status,
            generation: gen.generation,
        },
    )
    .await;
}

/// Serve leases on `cfg.socket` until the process stops.
pub async fn serve(cfg: Config) -> std::io::Result<()> {
    if let Some(dir) = cfg.socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(&cfg.socket);
    let listener = UnixListener::bind(&cfg.socket)?;
    // Anyone may knock; the coordinator admits agents and approvers by SO_PEERCRED.
    std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o666))?;
    let (changed, _) = watch::channel(0);
    let c = Arc::new(Coordinator {
        cfg,
        queue: Mutex::new(Queue {
            next_ticket: 0,
            holder: None,
            waiting: VecDeque::new(),
        }),
        changed,
        history_lock: Mutex::new(()),
    });
    c.publish().await;
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                tokio::spawn(serve_client(c.clone(), s));
            }
            Err(e) => tracing::warn!("accept on the rebuild socket: {e}"),
        }
    }
}
