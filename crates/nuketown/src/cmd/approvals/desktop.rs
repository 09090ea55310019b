//! The desktop channel (`nuketown approvals desktop`): one dialog per
//! request in the human's session, shown again when it is answered within
//! the settle time after it appeared.

use super::watch::*;
use super::*;

impl Watch {
    /// A dialog's window was seen on screen (or cannot be): the settle time starts.
    pub(super) fn appeared(&mut self, serial: u64, at: Option<Instant>) {
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

    /// A dialog closed. An answer within the settle time after it appeared
    /// was aimed at something else: nothing is decided and the dialog comes back.
    pub(super) fn dialog_ended(
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

pub(super) fn stop_dialog(pid: u32) {
    // Our own zenity: the question is moot.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
}

/// `s` as Pango markup text: every character markup gives a meaning escaped.
pub(super) fn markup_escape(s: &str) -> String {
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
pub(super) const WARNING_COLOUR: &str = "#c01c28";

/// The dialog's text (Pango markup): who asks, then the request's facts in
/// a monospace block, aligned as the terminal shows them, with every
/// warning — and the facts saying the agent can change the program or a
/// file an argument names — in red. Every string from the request is
/// escaped (already quoted by [`facts`], then for markup), so an argv holding
/// `<span>` shows as text.
pub(super) fn dialog_text(r: &RequestView, note: Option<&str>) -> String {
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
pub(super) const GRANT_LABEL: &str = "Approve for _10 minutes";

/// Show a zenity dialog for `r` (its id in the title and text); its answer
/// comes back as an [`Event::Dialog`] with this serial. Deny is the default
/// button; closing the dialog denies; the grant button is there only when a
/// grant is possible; its timeout leaves the request to the hall's.
pub(super) fn dialog(r: &RequestView, note: Option<&str>, serial: u64, post: Post) -> Result<u32> {
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
