//! The watch loop both the terminal and the desktop channel run: one
//! connection to the hall streams requests and carries decisions; one
//! request is put before the human at a time, answers count only after the
//! settle time, and a request decided or withdrawn elsewhere closes its
//! question visibly. What is particular to each channel is in
//! [`super::terminal`] and [`super::desktop`].

use super::desktop::*;
use super::terminal::*;
use super::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Channel {
    Terminal,
    Desktop,
}

impl Channel {
    pub(super) fn name(self) -> &'static str {
        match self {
            Channel::Terminal => "terminal",
            Channel::Desktop => "desktop",
        }
    }
}

/// What other threads tell the watch loop.
pub(super) enum Event {
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
pub(super) struct Post {
    pub(super) tx: mpsc::Sender<Event>,
    pub(super) bell: UnixStream,
}

impl Post {
    pub(super) fn send(&self, e: Event) -> bool {
        let ok = self.tx.send(e).is_ok();
        let _ = (&self.bell).write_all(&[1]);
        ok
    }

    pub(super) fn try_clone(&self) -> Result<Post> {
        Ok(Post {
            tx: self.tx.clone(),
            bell: self.bell.try_clone()?,
        })
    }
}

/// The request on screen now.
pub(super) struct Asking {
    pub(super) request: RequestView,
    /// When it was put on screen: printed, or its dialog's window seen
    /// (until then, when the dialog was started).
    pub(super) shown: Instant,
    /// Desktop: whether its dialog has been seen on screen.
    pub(super) appeared: bool,
    /// Whether answers count: the settle time has passed and, in the
    /// terminal, the question is printed.
    pub(super) open: bool,
    /// Desktop: the dialog's serial number and process.
    pub(super) dialog: Option<(u64, u32)>,
}

/// The watch loop's state: one connection to the hall that streams requests
/// and carries decisions; when it closes (this program ends), the hall
/// denies what it showed us, unless another approver is watching.
pub(super) struct Watch {
    pub(super) socket: PathBuf,
    pub(super) channel: Channel,
    pub(super) settle: Duration,
    pub(super) answers: ApproverSender,
    pub(super) rx: mpsc::Receiver<Event>,
    pub(super) post: Post,
    pub(super) bell: UnixStream,
    pub(super) queue: VecDeque<RequestView>,
    pub(super) asking: Option<Asking>,
    /// Decisions we sent, for the hall's `ok`.
    pub(super) decided: Vec<(String, bool)>,
    /// The decision the hall has not answered yet: the next request waits
    /// for it, so its outcome is printed before the next request.
    pub(super) awaiting: Option<String>,
    /// Desktop: why a request is shown again.
    pub(super) again: HashMap<String, String>,
    /// Desktop: no dialog starts before this (the settle time after the last one closed).
    pub(super) next_dialog: Option<Instant>,
    pub(super) serial: u64,
    pub(super) keys: Option<Keys>,
}

impl Watch {
    pub(super) fn new(socket: &Path, channel: Channel, settle: Duration) -> Result<Watch> {
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

    pub(super) fn run(mut self) -> Result<()> {
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

    pub(super) fn serve(&mut self) -> Result<()> {
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
    pub(super) fn next_timer(&self) -> Option<Instant> {
        match &self.asking {
            Some(a) if !a.open && a.appeared => Some(a.shown + self.settle),
            Some(_) => None,
            None if !self.queue.is_empty() => self.next_dialog,
            None => None,
        }
    }

    /// Put the next request on screen, if nothing is.
    pub(super) fn show_next(&mut self) -> Result<()> {
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
    pub(super) fn open_when_settled(&mut self) -> Result<()> {
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
    pub(super) fn event(&mut self, ev: Event) -> Result<()> {
        match ev {
            Event::Hall(Ok(m)) => self.hall(*m)?,
            Event::Hall(Err(e)) => bail!("{}", clean(&e)),
            Event::Dialog { serial, answer, at } => self.dialog_ended(serial, answer, at)?,
            Event::Appeared { serial, at } => self.appeared(serial, at),
        }
        Ok(())
    }

    /// Something the hall said.
    pub(super) fn hall(&mut self, m: ToApprover) -> Result<()> {
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

    /// Bring the queue in line with what the hall says is pending.
    pub(super) fn reconcile(&mut self, pending: Vec<RequestView>) {
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
    pub(super) fn close(&mut self, id: &str, why: &str, ours: bool) {
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
}
