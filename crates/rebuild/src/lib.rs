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

/// The coordinator's socket.
pub const SOCKET: &str = "/run/nuketown/rebuild.sock";
/// Generation history (JSON lines).
pub const HISTORY: &str = "/var/lib/nuketown/rebuilds.jsonl";
/// Holder and queue, for `nuketown status`.
pub const STATUS: &str = "/run/nuketown/rebuild-status.json";
/// The protocol version.
pub const VERSION: u32 = 1;

/// The actions, and whether they change the running system (need a human).
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

/// Ask the hall (as its root requester) to approve `argv` for `uid`.
async fn approve(hall: &Path, uid: u32, argv: &[String]) -> Result<(), String> {
    let mut s = UnixStream::connect(hall)
        .await
        .map_err(|_| "the town hall is not running; denied".to_string())?;
    let ask = serde_json::json!({"type": "request", "v": 1, "argv": argv, "cwd": "/", "user": "root", "sudo_uid": uid});
    let mut line = serde_json::to_vec(&ask).expect("serialises");
    line.push(b'\n');
    s.write_all(&line).await.map_err(|e| e.to_string())?;
    let mut rd = BufReader::new(s);
    loop {
        let mut l = String::new();
        if rd.read_line(&mut l).await.map_err(|e| e.to_string())? == 0 {
            return Err("the town hall went away before deciding; denied".into());
        }
        let v: serde_json::Value = serde_json::from_str(&l)
            .map_err(|e| format!("malformed answer from the hall: {e}; denied"))?;
        if v["type"] == "decision" {
            return if v["approved"] == true {
                Ok(())
            } else {
                Err(v["reason"].as_str().unwrap_or("denied").to_string())
            };
        }
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
    let is_agent = town.enabled_agents().any(|(_, a)| a.uid == uid);
    let is_human = uid == 0 || town.approvers().contains(&who);
    let refuse = if v != VERSION {
        Some(format!("protocol version {v} is not spoken here"))
    } else if !is_agent && !is_human {
        Some(format!(
            "{who} is neither an agent nor an approver of this town"
        ))
    } else if !ACTIONS.iter().any(|(a, _)| *a == action) {
        Some(format!(
            "unknown action {action:?}; use build, test, switch, boot or dry-build"
        ))
    } else {
        None
    };
    if let Some(message) = refuse {
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
    let summary: Summary = match &repo {
        Some(r) => changes::summarise(r, since.as_deref()),
        None => Summary::default(),
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
    let mut argv = town.rebuild.command.clone();
    argv.push(action.clone());
    argv.extend(args.iter().cloned());
    if let Some(abs) = resolve(&argv[0]) {
        argv[0] = abs;
    }
    let needs_human = ACTIONS.iter().any(|(a, h)| *a == action && *h) && uid != 0 && !is_human;
    if needs_human {
        let _ = send(&mut wr, &Event::Approving).await;
        let decision = tokio::select! {
            d = approve(&c.cfg.hall_socket, uid, &argv) => d,
            _ = rd.read(&mut probe) => Err("the requester went away".into()),
        };
        if let Err(reason) = decision {
            gen.refused = Some(reason.clone());
            gen.ended_ms = now_ms();
            c.record(&mut gen).await;
            let _ = send(&mut wr, &Event::Error { message: reason }).await;
            c.release(ticket).await;
            return;
        }
    }
    // Run it, streaming its output; a holder that disappears ends it.
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(r) = &repo {
        cmd.current_dir(r);
    }
    cmd.env("NUKETOWN_REBUILD_BY", &who);
    let status = match cmd.spawn() {
        Err(e) => {
            let _ = send(
                &mut wr,
                &Event::Output {
                    line: format!("cannot run {}: {e}", argv[0]),
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
                let _ = child.wait().await;
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

fn resolve(program: &str) -> Option<String> {
    if program.contains('/') {
        return Some(program.to_string());
    }
    "/run/current-system/sw/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map(|p| p.to_string_lossy().into_owned())
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
