//! `nuketown approvals [list|approve ID|deny ID|watch|desktop|matrix]`: the human's side.
//!
//! Every answer is bound to one request: it names the request's id (with its
//! agent and argv, which the hall checks), and input that came before that
//! request was on screen — plus a settle time — never decides it. The
//! terminal shows a request, waits the settle time, throws away whatever was
//! typed meanwhile (`tcflush` on a terminal, what is buffered on a pipe) and
//! only then asks; the desktop shows one dialog per request and shows it
//! again when it is answered within the settle time; a request that is
//! withdrawn or decided elsewhere closes its question visibly. See
//! docs/approvals.md.

mod screen;

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nuketown_hall::client::{Approver, ApproverSender, ClientError};
use nuketown_hall::protocol::{RequestView, ToApprover};
use nuketown_hall::show::{facts, seconds, short_id, DEFAULT_SETTLE_MS, MIN_PREFIX};
use nuketown_hall::state::MAX_GRANT_SECS;
use nuketown_hall::time::now_ms;
use nuketown_town::display::{clean, show_argv, show_str};

/// Approve or deny agents' privilege requests.
///
/// You must be an approver: root, or a user the town lists (humanUser, or
/// hall.approvers) who is in group nuketown-approvers. The hall knows you by
/// your Unix identity on its socket, never by what you type.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The hall's approver socket.
    #[arg(long, env = "NUKETOWN_APPROVER_SOCKET", default_value = nuketown_hall::APPROVER_SOCKET, global = true)]
    socket: PathBuf,
    /// How long a request is on screen before an answer counts, in ms (0 to
    /// 60000). Keys typed, dialogs clicked and Matrix answers sent sooner
    /// were meant for something else: they decide nothing.
    #[arg(long, env = "NUKETOWN_APPROVER_SETTLE_MS", default_value_t = DEFAULT_SETTLE_MS,
          value_parser = clap::value_parser!(u64).range(0..=60_000), value_name = "MS", global = true)]
    settle_ms: u64,
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List pending requests (the default).
    List {
        /// One JSON object per request, as the hall sent it (non-ASCII controls escaped).
        #[arg(long)]
        json: bool,
    },
    /// Approve one request (its id, or a unique prefix of at least 8 characters).
    Approve {
        /// Request id.
        id: String,
        /// Also approve this exact command, for this agent, for a while: 30s, 10m, 1h.
        #[arg(long = "for", value_name = "DURATION")]
        grant: Option<String>,
    },
    /// Deny one request.
    Deny {
        /// Request id.
        id: String,
    },
    /// Answer requests as they come, in this terminal: y, n, or a duration like 10m.
    Watch,
    /// Answer requests with dialogs in your graphical session (zenity).
    Desktop,
    /// Post requests to the town's Matrix approval room (hall.matrix) and
    /// decide them by `approve ID` / `deny ID` replies or ✅/❌ reactions from
    /// the declared Matrix approvers.
    Matrix {
        /// Where the hall's Matrix device and keys are kept.
        #[arg(long, default_value = "/var/lib/nuketown/matrix-approver")]
        store: PathBuf,
    },
}

/// Parse `30s`, `10m`, `1h` or plain seconds (more than zero).
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "s" | "sec" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        _ => return None,
    };
    n.checked_mul(mult).filter(|s| *s > 0)
}

/// A request as the human reads it: every string quoted and escaped, one
/// fact per line, every warning the hall sent (the same facts every channel
/// shows: [`nuketown_hall::show::facts`]).
pub fn describe(r: &RequestView) -> String {
    let left = r.deadline_ms.saturating_sub(now_ms()).div_ceil(1000);
    let kind = if r.network.is_some() || r.key_use.is_some() || r.resources.is_some() {
        format!(": {}", nuketown_hall::show::asks(r))
    } else {
        String::new()
    };
    let mut s = format!(
        "request {} from {} (uid {}){kind}\n",
        short_id(&r.id),
        show_str(&r.agent),
        r.uid
    );
    for (label, text) in facts(r) {
        s.push_str(&format!("  {label:<8} {text}\n"));
    }
    s.push_str(&format!("  expires  in {left} s\n"));
    s
}

/// One JSON line safe for a terminal: every character that could steer it
/// (C1 controls, bidi overrides, …) written as a `\uXXXX` escape, which JSON
/// reads back as the same string.
pub fn json_line(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if nuketown_town::display::is_unsafe_char(c) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn find(approver: &mut Approver, id: &str) -> Result<RequestView> {
    if id.len() < MIN_PREFIX || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("give at least {MIN_PREFIX} hex digits of the request id (as `nuketown approvals list` shows it)");
    }
    let id = id.to_ascii_lowercase();
    let matches: Vec<RequestView> = approver
        .list()?
        .into_iter()
        .filter(|r| r.id.starts_with(&id))
        .collect();
    match matches.len() {
        0 => bail!("no pending request {id} (decided, withdrawn or timed out); see `nuketown approvals list`"),
        1 => Ok(matches.into_iter().next().expect("one")),
        _ => bail!("{id} matches several requests; give more of the id"),
    }
}

fn connect(socket: &Path) -> Result<Approver> {
    Approver::connect(socket).map_err(|e| {
        anyhow!("{e}\n(approvers are root or a user the town lists who is in group {}; is the hall running?)", nuketown_hall::APPROVERS_GROUP)
    })
}

/// A hall error, its text escaped (it may quote an agent's argv).
fn hall_error(e: ClientError) -> anyhow::Error {
    let hung_up = match &e {
        ClientError::Closed => true,
        ClientError::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        _ => false,
    };
    if hung_up {
        anyhow!("the town hall closed the connection: you are not one of this town's approvers (humanUser or hall.approvers)")
    } else {
        anyhow!("{}", clean(&e.to_string()))
    }
}

fn found(a: &mut Approver, id: &str) -> Result<RequestView> {
    find(a, id).map_err(|e| match e.downcast::<ClientError>() {
        Ok(c) => hall_error(c),
        Err(e) => e,
    })
}

/// Run the approvals command.
pub fn run(global: Option<&Path>, args: Args) -> Result<ExitCode> {
    let socket = args.socket;
    let settle = Duration::from_millis(args.settle_ms);
    match args.action.unwrap_or(Action::List { json: false }) {
        Action::List { json } => {
            let requests = connect(&socket)?.list().map_err(hall_error)?;
            if json {
                for r in &requests {
                    println!("{}", json_line(&serde_json::to_string(r)?));
                }
            } else if requests.is_empty() {
                println!("no pending requests");
            } else {
                for r in &requests {
                    print!("{}", describe(r));
                    println!("  id       {}\n", clean(&r.id));
                }
            }
        }
        Action::Approve { id, grant } => {
            let secs = match &grant {
                Some(g) => Some(parse_duration(g).ok_or_else(|| {
                    anyhow!("--for {}: give a duration like 30s, 10m or 1h", clean(g))
                })?),
                None => None,
            };
            let mut a = connect(&socket)?;
            let r = found(&mut a, &id)?;
            a.decide(&r, true, secs, "terminal").map_err(hall_error)?;
            let grant = match secs {
                Some(s) if r.grantable => format!(" (and for the next {s} s)"),
                Some(_) => " (this once: no grant covers a request the agent can change)".into(),
                None => String::new(),
            };
            println!(
                "approved {} for {}: {}{grant}",
                short_id(&r.id),
                show_str(&r.agent),
                show_argv(&r.argv),
            );
        }
        Action::Deny { id } => {
            let mut a = connect(&socket)?;
            let r = found(&mut a, &id)?;
            a.decide(&r, false, None, "terminal").map_err(hall_error)?;
            println!(
                "denied {} for {}: {}",
                short_id(&r.id),
                show_str(&r.agent),
                show_argv(&r.argv)
            );
        }
        Action::Watch => Watch::new(&socket, Channel::Terminal, settle)?.run()?,
        Action::Desktop => Watch::new(&socket, Channel::Desktop, settle)?.run()?,
        #[cfg(not(feature = "chat"))]
        Action::Matrix { store } => {
            let _ = (store, global);
            anyhow::bail!(super::without_feature("chat", "the Matrix approver"))
        }
        #[cfg(feature = "chat")]
        Action::Matrix { store } => {
            let town = super::load_town(None, global)?;
            let mut cfg = nuketown_chat::approver::ApproverConfig::from_town(&town, store, socket)?;
            cfg.settle_ms = args.settle_ms;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(nuketown_chat::approver::run(cfg))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Channel {
    Terminal,
    Desktop,
}

impl Channel {
    fn name(self) -> &'static str {
        match self {
            Channel::Terminal => "terminal",
            Channel::Desktop => "desktop",
        }
    }
}

/// What other threads tell the watch loop.
enum Event {
    Hall(Result<Box<ToApprover>, String>),
    /// A dialog ended: which one, with what answer, when.
    Dialog {
        serial: u64,
        answer: Option<(bool, Option<u64>)>,
        at: Instant,
    },
    /// A dialog's window became viewable (`None`: that cannot be seen).
    Appeared {
        serial: u64,
        at: Option<Instant>,
    },
}

/// Hands an event to the watch loop and rings its bell (a socket it polls
/// beside the terminal), so one thread waits on both without a race.
struct Post {
    tx: mpsc::Sender<Event>,
    bell: UnixStream,
}

impl Post {
    fn send(&self, e: Event) -> bool {
        let ok = self.tx.send(e).is_ok();
        let _ = (&self.bell).write_all(&[1]);
        ok
    }

    fn try_clone(&self) -> Result<Post> {
        Ok(Post {
            tx: self.tx.clone(),
            bell: self.bell.try_clone()?,
        })
    }
}

/// The request on screen now.
struct Asking {
    request: RequestView,
    /// When it was put on screen: printed, or its dialog's window seen
    /// (until then, when the dialog was started).
    shown: Instant,
    /// Desktop: whether its dialog has been seen on screen.
    appeared: bool,
    /// Whether answers count: the settle time has passed and, in the
    /// terminal, the question is printed.
    open: bool,
    /// Desktop: the dialog's serial number and process.
    dialog: Option<(u64, u32)>,
}

/// The terminal's input: read only by the watch loop, never buffered ahead,
/// so what was typed before a question can be thrown away when it is asked.
struct Keys {
    tty: bool,
    line: Vec<u8>,
    ended: bool,
    /// Bytes thrown away since the request on screen was shown.
    dropped: usize,
}

fn stdin_fd() -> BorrowedFd<'static> {
    // SAFETY: fd 0 is open for the life of the process (a closed stdin reads as ended).
    unsafe { BorrowedFd::borrow_raw(0) }
}

fn readable(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

impl Keys {
    fn new() -> Keys {
        Keys {
            tty: nix::unistd::isatty(0).unwrap_or(false),
            line: Vec::new(),
            ended: false,
            dropped: 0,
        }
    }

    /// What one read gives (never blocks after poll said so); marks the end.
    fn read(&mut self) -> Vec<u8> {
        let mut buf = [0u8; 4096];
        match nix::unistd::read(0, &mut buf) {
            Ok(0) => {
                self.ended = true;
                Vec::new()
            }
            Ok(n) => buf[..n].to_vec(),
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => Vec::new(),
            Err(_) => {
                self.ended = true;
                Vec::new()
            }
        }
    }

    /// Throw away everything typed so far: the kernel's input queue on a
    /// terminal (tcflush), what is already in the pipe otherwise, and any
    /// unfinished line.
    fn discard(&mut self) {
        if self.tty {
            let _ = nix::sys::termios::tcflush(stdin_fd(), nix::sys::termios::FlushArg::TCIFLUSH);
        }
        while !self.ended && readable(stdin_fd()) {
            let n = self.read().len();
            self.dropped += n;
        }
        self.dropped += self.line.len();
        self.line.clear();
    }
}

/// The watch loop's state: one connection to the hall that streams requests
/// and carries decisions; when it closes (this program ends), the hall
/// denies what it showed us, unless another approver is watching.
struct Watch {
    socket: PathBuf,
    channel: Channel,
    settle: Duration,
    answers: ApproverSender,
    rx: mpsc::Receiver<Event>,
    post: Post,
    bell: UnixStream,
    queue: VecDeque<RequestView>,
    asking: Option<Asking>,
    /// Decisions we sent, for the hall's `ok`.
    decided: Vec<(String, bool)>,
    /// The decision the hall has not answered yet: the next request waits
    /// for it, so its outcome is printed before the next request.
    awaiting: Option<String>,
    /// Desktop: why a request is shown again.
    again: HashMap<String, String>,
    /// Desktop: no dialog starts before this (the settle time after the last one closed).
    next_dialog: Option<Instant>,
    serial: u64,
    keys: Option<Keys>,
}

impl Watch {
    fn new(socket: &Path, channel: Channel, settle: Duration) -> Result<Watch> {
        let mut conn = connect(socket)?;
        let initial = conn.watch(channel.name()).map_err(hall_error)?;
        let answers = conn.sender()?;
        let (bell, ring) = UnixStream::pair()?;
        bell.set_nonblocking(true)?;
        let (tx, rx) = mpsc::channel::<Event>();
        let post = Post { tx, bell: ring };
        let hall = post.try_clone()?;
        std::thread::spawn(move || loop {
            let m = conn.recv().map(Box::new).map_err(|e| e.to_string());
            let stop = m.is_err();
            if !hall.send(Event::Hall(m)) || stop {
                return;
            }
        });
        let keys = (channel == Channel::Terminal).then(Keys::new);
        Ok(Watch {
            socket: socket.to_path_buf(),
            channel,
            settle,
            answers,
            rx,
            post,
            bell,
            queue: initial.into(),
            asking: None,
            decided: Vec::new(),
            awaiting: None,
            again: HashMap::new(),
            next_dialog: None,
            serial: 0,
            keys,
        })
    }

    fn run(mut self) -> Result<()> {
        match self.channel {
            Channel::Terminal => println!(
                "watching for requests as the terminal approver (Ctrl-C to stop)"
            ),
            Channel::Desktop => println!(
                "watching for requests as the desktop approver; a dialog's answer counts {} s after it appears",
                seconds(self.settle.as_millis() as u64)
            ),
        }
        let result = self.serve();
        if let Some(Asking {
            dialog: Some((_, pid)),
            ..
        }) = self.asking
        {
            stop_dialog(pid);
        }
        result
    }

    fn serve(&mut self) -> Result<()> {
        loop {
            self.show_next()?;
            self.open_when_settled()?;
            if self.keys.as_ref().is_some_and(|k| k.ended) {
                return Ok(());
            }
            let wait = self
                .next_timer()
                .map(|t| t.saturating_duration_since(Instant::now()));
            let timeout = match wait {
                Some(d) => PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX),
                None => PollTimeout::NONE,
            };
            let bell_fd = std::os::fd::AsFd::as_fd(&self.bell);
            let mut fds = vec![PollFd::new(bell_fd, PollFlags::POLLIN)];
            if self.keys.is_some() {
                fds.push(PollFd::new(stdin_fd(), PollFlags::POLLIN));
            }
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => bail!("waiting for requests: {e}"),
            }
            let rang = fds[0].any().unwrap_or(false);
            let typed = fds.get(1).and_then(|f| f.any()).unwrap_or(false);
            // The hall first: a request withdrawn meanwhile closes its question
            // before anything typed can answer it.
            if rang {
                let mut sink = [0u8; 256];
                while matches!((&self.bell).read(&mut sink), Ok(n) if n > 0) {}
                while let Ok(ev) = self.rx.try_recv() {
                    self.event(ev)?;
                }
            }
            if typed {
                self.typed()?;
            }
        }
    }

    /// The next moment something is due: a question to open, a dialog to start.
    fn next_timer(&self) -> Option<Instant> {
        match &self.asking {
            Some(a) if !a.open && a.appeared => Some(a.shown + self.settle),
            Some(_) => None,
            None if !self.queue.is_empty() => self.next_dialog,
            None => None,
        }
    }

    /// Put the next request on screen, if nothing is.
    fn show_next(&mut self) -> Result<()> {
        if self.asking.is_some() || self.awaiting.is_some() {
            return Ok(());
        }
        if self.channel == Channel::Desktop && self.next_dialog.is_some_and(|t| Instant::now() < t)
        {
            return Ok(());
        }
        let Some(r) = self.queue.pop_front() else {
            return Ok(());
        };
        match self.channel {
            Channel::Terminal => {
                print!("\n{}", describe(&r));
                std::io::stdout().flush()?;
                // Whatever is still in the line buffer was typed before this request was shown.
                if let Some(k) = &mut self.keys {
                    k.dropped += k.line.len();
                    k.line.clear();
                }
                self.asking = Some(Asking {
                    request: r,
                    shown: Instant::now(),
                    appeared: true,
                    open: false,
                    dialog: None,
                });
            }
            Channel::Desktop => {
                self.serial += 1;
                let note = self.again.remove(&r.id);
                let pid = dialog(&r, note.as_deref(), self.serial, self.post.try_clone()?)?;
                println!("request {}: dialog started", short_id(&r.id));
                self.asking = Some(Asking {
                    request: r,
                    shown: Instant::now(),
                    appeared: false,
                    open: false,
                    dialog: Some((self.serial, pid)),
                });
            }
        }
        Ok(())
    }

    /// Once the request has been on screen for the settle time: throw away
    /// what was typed meanwhile and ask (terminal), or note that the dialog's
    /// answers count from now (desktop).
    fn open_when_settled(&mut self) -> Result<()> {
        let Some(a) = &mut self.asking else {
            return Ok(());
        };
        if a.open || !a.appeared || a.shown.elapsed() < self.settle {
            return Ok(());
        }
        a.open = true;
        let id = short_id(&a.request.id);
        match &mut self.keys {
            Some(k) => {
                k.discard();
                if k.dropped > 0 {
                    println!("  (ignored what was typed before this question: answer it now)");
                }
                k.dropped = 0;
                print!("{}", question(&a.request));
                std::io::stdout().flush()?;
            }
            None => println!("request {id}: answers count from now"),
        }
        Ok(())
    }

    /// Something the hall or a dialog said.
    fn event(&mut self, ev: Event) -> Result<()> {
        match ev {
            Event::Hall(Ok(m)) => self.hall(*m)?,
            Event::Hall(Err(e)) => bail!("{}", clean(&e)),
            Event::Dialog { serial, answer, at } => self.dialog_ended(serial, answer, at)?,
            Event::Appeared { serial, at } => self.appeared(serial, at),
        }
        Ok(())
    }

    /// Something the hall said.
    fn hall(&mut self, m: ToApprover) -> Result<()> {
        match m {
            ToApprover::Request { request } => {
                let known = self.queue.iter().any(|q| q.id == request.id)
                    || self
                        .asking
                        .as_ref()
                        .is_some_and(|a| a.request.id == request.id);
                if !known {
                    self.queue.push_back(request);
                }
            }
            ToApprover::Resolved { id, outcome, by } => {
                self.queue.retain(|r| r.id != id);
                if self.awaiting.as_deref() == Some(id.as_str()) {
                    self.awaiting = None;
                }
                self.again.remove(&id);
                let ours = self.decided.iter().any(|(d, _)| *d == id);
                if self.asking.as_ref().is_some_and(|a| a.request.id == id) {
                    let why = format!(
                        "was {} by {} via {}",
                        clean(&outcome),
                        clean(&by.who),
                        clean(&by.channel)
                    );
                    self.close(&id, &why, ours);
                }
            }
            ToApprover::Ok { id } => {
                if self.awaiting.as_deref() == Some(id.as_str()) {
                    self.awaiting = None;
                }
                if let Some((_, approve)) = self.decided.iter().find(|(d, _)| *d == id) {
                    println!(
                        "{} {}",
                        if *approve { "approved" } else { "denied" },
                        short_id(&id)
                    );
                }
            }
            ToApprover::Error { id, message } => {
                self.awaiting = None;
                eprintln!(
                    "not decided{}: {}",
                    id.as_ref()
                        .map(|i| format!(" {}", short_id(i)))
                        .unwrap_or_default(),
                    clean(&message)
                );
                if message.starts_with("missed ") || id.is_some() {
                    // Events were lost, or a decision refused: ask again what is pending.
                    let now = connect(&self.socket)?.list().map_err(hall_error)?;
                    self.reconcile(now);
                }
            }
            ToApprover::Requests { requests } => self.reconcile(requests),
        }
        Ok(())
    }

    /// A dialog's window was seen on screen (or cannot be): the settle time starts.
    fn appeared(&mut self, serial: u64, at: Option<Instant>) {
        let settle = seconds(self.settle.as_millis() as u64);
        let Some(a) = self
            .asking
            .as_mut()
            .filter(|a| a.dialog.map(|(s, _)| s) == Some(serial))
        else {
            return; // a dialog already closed
        };
        let id = short_id(&a.request.id);
        a.appeared = true;
        match at {
            Some(at) => {
                a.shown = at;
                println!("request {id}: dialog shown (answers count in {settle} s)");
            }
            None => println!(
                "request {id}: cannot see when its dialog appears (no X display?); answers count {settle} s after it was started"
            ),
        }
    }

    /// Bring the queue in line with what the hall says is pending.
    fn reconcile(&mut self, pending: Vec<RequestView>) {
        self.queue.retain(|q| pending.iter().any(|p| p.id == q.id));
        if let Some(id) = self
            .asking
            .as_ref()
            .map(|a| a.request.id.clone())
            .filter(|id| !pending.iter().any(|p| p.id == *id))
        {
            self.close(&id, "is no longer pending", false);
        }
        for p in pending {
            let known = self.queue.iter().any(|q| q.id == p.id)
                || self.asking.as_ref().is_some_and(|a| a.request.id == p.id);
            if !known {
                self.queue.push_back(p);
            }
        }
    }

    /// The request on screen ended elsewhere (or by our answer): close its
    /// question visibly, so nothing typed or clicked now answers it.
    fn close(&mut self, id: &str, why: &str, ours: bool) {
        let Some(a) = self.asking.take() else { return };
        match (self.channel, a.dialog) {
            (Channel::Desktop, Some((_, pid))) => {
                stop_dialog(pid);
                self.next_dialog = Some(Instant::now() + self.settle);
                println!("request {} {why}: its dialog is closed", short_id(id));
            }
            _ => {
                if !ours {
                    println!(
                        "\nrequest {} {why}: this question is closed; nothing typed now answers it",
                        short_id(id)
                    );
                }
                if let Some(k) = &mut self.keys {
                    k.line.clear();
                }
            }
        }
    }

    /// Read what was typed; lines count only while a question is open.
    fn typed(&mut self) -> Result<()> {
        let open = self.asking.as_ref().is_some_and(|a| a.open);
        let Some(k) = &mut self.keys else {
            return Ok(());
        };
        let bytes = k.read();
        if !open {
            k.dropped += bytes.len();
            return Ok(());
        }
        k.line.extend_from_slice(&bytes);
        loop {
            let Some(k) = &mut self.keys else {
                return Ok(());
            };
            let Some(i) = k.line.iter().position(|b| *b == b'\n') else {
                return Ok(());
            };
            if !self.asking.as_ref().is_some_and(|a| a.open) {
                // Typed ahead of the next question: it will not answer it.
                k.dropped += k.line.len();
                k.line.clear();
                return Ok(());
            }
            let line: Vec<u8> = k.line.drain(..=i).collect();
            self.answer(&String::from_utf8_lossy(&line))?;
        }
    }

    /// One line typed at an open question.
    fn answer(&mut self, line: &str) -> Result<()> {
        let Some(a) = &self.asking else {
            return Ok(());
        };
        let r = &a.request;
        let answer = match line.trim() {
            "y" | "yes" => Some((true, None)),
            "n" | "no" => Some((false, None)),
            other => match parse_duration(other) {
                Some(s) if r.grantable && s > MAX_GRANT_SECS => {
                    print!(
                        "request {}: a grant lasts at most 24h; answer again: ",
                        short_id(&r.id)
                    );
                    std::io::stdout().flush()?;
                    return Ok(());
                }
                Some(s) if r.grantable => Some((true, Some(s))),
                Some(_) => {
                    print!(
                        "request {}: no grant is possible for this one (only a human may decide it); answer y (this once) or n: ",
                        short_id(&r.id)
                    );
                    std::io::stdout().flush()?;
                    return Ok(());
                }
                None => None,
            },
        };
        match answer {
            Some((approve, grant)) => {
                self.answers
                    .send_decision(r, approve, grant, self.channel.name())
                    .map_err(hall_error)?;
                self.decided.push((r.id.clone(), approve));
                self.awaiting = Some(r.id.clone());
                self.asking = None;
            }
            None => {
                print!(
                    "request {} — answer {}",
                    short_id(&r.id),
                    if r.grantable {
                        "y, n, or a duration like 10m (approve it for that long): "
                    } else {
                        "y (this once) or n: "
                    }
                );
                std::io::stdout().flush()?;
            }
        }
        Ok(())
    }

    /// A dialog closed. An answer within the settle time after it appeared
    /// was aimed at something else: nothing is decided and the dialog comes back.
    fn dialog_ended(
        &mut self,
        serial: u64,
        answer: Option<(bool, Option<u64>)>,
        at: Instant,
    ) -> Result<()> {
        let Some(a) = &self.asking else {
            return Ok(());
        };
        if a.dialog.map(|(s, _)| s) != Some(serial) {
            return Ok(()); // a dialog we already closed
        }
        let a = self.asking.take().expect("checked");
        self.next_dialog = Some(at + self.settle);
        let id = short_id(&a.request.id);
        let Some((approve, grant)) = answer else {
            // zenity's own timeout: the hall's deadline decides.
            println!("request {id}: its dialog timed out");
            return Ok(());
        };
        let after = at.saturating_duration_since(a.shown);
        if !a.appeared || after < self.settle {
            let when = if a.appeared {
                format!(
                    "{} s after its dialog appeared",
                    seconds(after.as_millis() as u64)
                )
            } else {
                "before its dialog was seen on screen".to_string()
            };
            println!(
                "request {id}: answered {when}, too soon to have been read: nothing decided, showing it again"
            );
            self.again.insert(
                a.request.id.clone(),
                format!(
                    "Your last answer came {}, too soon to have read it: nothing was decided. Read it, then answer.\n\n",
                    when.replace("its dialog", "this dialog")
                ),
            );
            self.queue.push_front(a.request);
            return Ok(());
        }
        let grant = grant.filter(|_| a.request.grantable);
        self.answers
            .send_decision(&a.request, approve, grant, self.channel.name())
            .map_err(hall_error)?;
        self.decided.push((a.request.id.clone(), approve));
        self.awaiting = Some(a.request.id.clone());
        Ok(())
    }
}

/// The terminal's question for an open request; it names the request.
fn question(r: &RequestView) -> String {
    format!(
        "request {} — approve? {}",
        short_id(&r.id),
        if r.grantable {
            "[y]es, [n]o, or a duration like 10m (approve it for that long): "
        } else {
            "[y]es (this once) or [n]o: "
        }
    )
}

fn stop_dialog(pid: u32) {
    // Our own zenity: the question is moot.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
}

/// `s` as Pango markup text: every character markup gives a meaning escaped.
fn markup_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The colour of what an agent could have changed.
const WARNING_COLOUR: &str = "#c01c28";

/// The dialog's text (Pango markup): who asks, then the request's facts in
/// a monospace block, aligned as the terminal shows them, with every
/// warning — and the facts saying the agent can change the program or a
/// file an argument names — in red. Every string from the request is
/// escaped (already quoted by [`facts`], then for markup), so an argv holding
/// `<span>` shows as text.
fn dialog_text(r: &RequestView, note: Option<&str>) -> String {
    let left = r.deadline_ms.saturating_sub(now_ms()).div_ceil(1000);
    let mut s = format!(
        "<b>{}</b> (uid {}) {}.\n",
        markup_escape(&show_str(&r.agent)),
        r.uid,
        match (&r.network, &r.key_use, &r.resources) {
            (None, None, None) => format!(
                "asks to run a command as <b>{}</b>",
                markup_escape(&show_str(&r.user))
            ),
            _ => markup_escape(&nuketown_hall::show::asks(r)),
        }
    );
    if let Some(n) = note {
        s.push_str(&format!("<i>{}</i>\n", markup_escape(n.trim_end())));
    }
    s.push_str("<tt>");
    for (label, text) in facts(r) {
        let line = markup_escape(&format!("{label:<8} {text}"));
        let warn =
            label == "WARNING" || label == "files" || (label == "program" && r.agent_can_write);
        if warn {
            s.push_str(&format!(
                "<span foreground=\"{WARNING_COLOUR}\" weight=\"bold\">{line}</span>\n"
            ));
        } else {
            s.push_str(&line);
            s.push('\n');
        }
    }
    s.push_str(&format!(
        "{}\n{}</tt>",
        markup_escape(&format!("{:<8} in {left} s", "expires")),
        markup_escape(&format!("{:<8} {}", "id", clean(&r.id)))
    ));
    s
}

/// The label of the dialog's grant button (Alt+1); zenity prints it when pressed.
const GRANT_LABEL: &str = "Approve for _10 minutes";

/// Show a zenity dialog for `r` (its id in the title and text); its answer
/// comes back as an [`Event::Dialog`] with this serial. Deny is the default
/// button; closing the dialog denies; the grant button is there only when a
/// grant is possible; its timeout leaves the request to the hall's.
fn dialog(r: &RequestView, note: Option<&str>, serial: u64, post: Post) -> Result<u32> {
    let left = (r.deadline_ms.saturating_sub(now_ms()) / 1000).max(1);
    let mut cmd = Command::new("zenity");
    cmd.args([
        "--question",
        // The text is Pango markup built by `dialog_text`, every string of the
        // request escaped there; Deny is the focused button (Return denies).
        "--default-cancel",
        "--width=720",
        "--ok-label=_Approve",
        "--cancel-label=_Deny",
    ]);
    if r.grantable {
        cmd.arg(format!("--extra-button={GRANT_LABEL}"));
    }
    if std::env::var_os("DISPLAY").is_some() {
        // On X, so its window can be seen appearing (XWayland under Wayland).
        cmd.env("GDK_BACKEND", "x11");
    }
    let mut child = cmd
        .arg(format!(
            "--title=Nuketown: {} {} (request {})",
            clean(&r.agent),
            match (&r.network, &r.key_use, &r.resources) {
                (None, None, None) => format!("asks to run a command as {}", clean(&r.user)),
                _ => nuketown_hall::show::asks(r),
            },
            short_id(&r.id)
        ))
        .arg(format!("--text={}", dialog_text(r, note)))
        .arg(format!("--timeout={left}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run zenity (install it for desktop approvals)")?;
    let pid = child.id();
    let grantable = r.grantable;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = post.try_clone()?;
    let looking = stop.clone();
    std::thread::spawn(move || {
        let at = screen::appeared(pid, looking, Duration::from_secs(30));
        seen.send(Event::Appeared { serial, at });
    });
    std::thread::spawn(move || {
        let mut out = String::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut o, &mut out);
        }
        let status = child.wait().ok().and_then(|s| s.code());
        let at = Instant::now();
        stop.store(true, Ordering::SeqCst);
        let answer = match status {
            Some(0) => Some((true, None)),
            Some(1) if grantable && out.trim() == GRANT_LABEL => Some((true, Some(600))),
            Some(1) => Some((false, None)),
            // 5: zenity's own timeout; killed: closed by us.
            _ => None,
        };
        post.send(Event::Dialog { serial, answer, at });
    });
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Some(600));
        assert_eq!(parse_duration("45"), Some(45));
        assert_eq!(parse_duration("45s"), Some(45));
        assert_eq!(parse_duration("1h"), Some(3600));
        assert_eq!(parse_duration("0m"), None);
        assert_eq!(parse_duration("10x"), None);
        assert_eq!(parse_duration("y"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("99999999999999999999h"), None);
    }

    #[test]
    fn a_request_reads_as_one_request() {
        let r = RequestView {
            id: "0123456789abcdef0123456789abcdef".into(),
            agent: "ada".into(),
            uid: 1100,
            argv: vec![
                "/bin/echo".into(),
                "ok\nrequest 2 from vox\n  run \"/bin/true\"".into(),
            ],
            program: nuketown_hall::protocol::FileRef {
                path: "/bin/echo".into(),
                dev: 2049,
                ino: 7,
            },
            typed: Some("./echo\u{9b}".into()),
            cwd: "/agents/ada".into(),
            user: "root".into(),
            group: None,
            agent_can_write: true,
            agent_writable_args: vec!["./x\u{1b}[2J".into()],
            warnings: vec![
                "the agent can change the program: \u{1b}]0;pwned\u{7}".into(),
                "the argument \"./x\\u{1b}[2J\" names a file the agent can change".into(),
            ],
            notes: vec!["it runs in a working directory an agent can change".into()],
            grantable: false,
            asked_ms: now_ms(),
            deadline_ms: now_ms() + 60_000,
            key_use: None,
            network: None,
            resources: None,
        };
        let d = describe(&r);
        // One header line: the argument's "request 2" stays inside its escaped, quoted string.
        assert_eq!(
            d.lines().filter(|l| l.starts_with("request ")).count(),
            1,
            "{d}"
        );
        assert!(
            d.contains(r#"run      "/bin/echo" "ok\nrequest 2 from vox\n  run \"/bin/true\"""#),
            "{d}"
        );
        // Every warning, escaped; the facts the hall sent.
        assert!(
            d.contains(r#"WARNING  the agent can change the program: \u{1b}]0;pwned\u{7}"#),
            "{d}"
        );
        assert!(
            d.contains(r#"WARNING  the argument "./x\u{1b}[2J" names"#),
            "{d}"
        );
        assert!(d.contains(r#"files    "./x\u{1b}[2J""#), "{d}");
        assert!(d.contains(r#"typed    "./echo\u{9b}""#), "{d}");
        assert!(d.contains("file     device 8:1, inode 7"), "{d}");
        assert!(d.contains("only a human may decide"), "{d}");
        assert!(d.contains("grant    none"), "{d}");
        assert!(
            !d.chars()
                .any(|c| c != '\n' && nuketown_town::display::is_unsafe_char(c)),
            "{d:?}"
        );
        assert!(question(&r).contains("request 01234567 — approve? [y]es (this once) or [n]o"));

        // The dialog: the same facts, markup-escaped, monospace, warnings in red.
        let mut hostile = r.clone();
        hostile.argv[1] = "<span foreground='green'>fine</span> & <b>".into();
        let text = dialog_text(&hostile, None);
        assert!(
            text.starts_with("<b>&quot;ada&quot;</b> (uid 1100) asks to run a command as <b>&quot;root&quot;</b>.\n<tt>"),
            "{text}"
        );
        assert!(
            text.contains("run      &quot;/bin/echo&quot; &quot;&lt;span foreground=&apos;green&apos;&gt;fine&lt;/span&gt; &amp; &lt;b&gt;&quot;\n"),
            "{text}"
        );
        assert!(!text.contains("<span foreground='green'>"), "{text}");
        let red = format!("<span foreground=\"{WARNING_COLOUR}\" weight=\"bold\">");
        for coloured in [
            "WARNING  the agent can change",
            "program  &quot;/bin/echo&quot; (only a human",
            "files    ",
        ] {
            assert!(
                text.contains(&format!("{red}{coloured}")),
                "{coloured} not red: {text}"
            );
        }
        assert!(!text.contains(&format!("{red}run ")), "{text}");
        assert!(text.ends_with(&format!("id       {}</tt>", r.id)), "{text}");
        // Balanced: as many spans and tt blocks opened as closed.
        assert_eq!(
            text.matches("<span").count(),
            text.matches("</span>").count()
        );
        assert_eq!(text.matches("<tt>").count(), 1);
    }

    #[test]
    fn json_lines_escape_what_steers_a_terminal() {
        let raw = serde_json::to_string(&"a\u{9b}b\u{202e}c\u{1b}").unwrap();
        let safe = json_line(&raw);
        assert!(safe.is_ascii(), "{safe}");
        assert_eq!(
            serde_json::from_str::<String>(&safe).unwrap(),
            "a\u{9b}b\u{202e}c\u{1b}"
        );
    }
}
