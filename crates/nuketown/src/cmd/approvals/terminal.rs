//! The terminal channel (`nuketown approvals watch`): the human types `y`,
//! `n` or a duration at a question that names the request; what was typed
//! before the question was printed is thrown away.

use super::watch::*;
use super::*;

/// The terminal's input: read only by the watch loop, never buffered ahead,
/// so what was typed before a question can be thrown away when it is asked.
pub(super) struct Keys {
    pub(super) tty: bool,
    pub(super) line: Vec<u8>,
    pub(super) ended: bool,
    /// Bytes thrown away since the request on screen was shown.
    pub(super) dropped: usize,
}

pub(super) fn stdin_fd() -> BorrowedFd<'static> {
    // SAFETY: fd 0 is open for the life of the process (a closed stdin reads as ended).
    unsafe { BorrowedFd::borrow_raw(0) }
}

pub(super) fn readable(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

impl Keys {
    pub(super) fn new() -> Keys {
        Keys {
            tty: nix::unistd::isatty(0).unwrap_or(false),
            line: Vec::new(),
            ended: false,
            dropped: 0,
        }
    }

    /// What one read gives (never blocks after poll said so); marks the end.
    pub(super) fn read(&mut self) -> Vec<u8> {
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
    pub(super) fn discard(&mut self) {
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

impl Watch {
    /// Read what was typed; lines count only while a question is open.
    pub(super) fn typed(&mut self) -> Result<()> {
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
    pub(super) fn answer(&mut self, line: &str) -> Result<()> {
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
}

/// The terminal's question for an open request; it names the request.
pub(super) fn question(r: &RequestView) -> String {
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
