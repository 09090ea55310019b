//! The desktop approver end to end: `nuketown approvals desktop` as the human
//! in an X session (Xvfb), a real zenity dialog per request, keys pressed with
//! xdotool, the agent's real sudo waiting on the answer. Needs root, Xvfb,
//! zenity and xdotool (scripts/deps.sh installs them).

mod hall_fixture;

use std::process::{Child, Command, Stdio};

use hall_fixture::*;

/// An X server of our own; its display number comes back on a pipe when it is ready.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start() -> Option<Xvfb> {
        let mut child = match Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-nolisten",
                "tcp",
                "-screen",
                "0",
                "1280x800x24",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("SKIPPING: cannot run Xvfb ({e}); scripts/deps.sh installs xvfb, zenity and xdotool");
                return None;
            }
        };
        let mut out = Stream::new(child.stdout.take().unwrap());
        let n = out.until("\n");
        Some(Xvfb {
            child,
            display: format!(":{}", n.trim()),
        })
    }

    /// `xdotool ARGS…` on this display, with a deadline.
    fn xdotool(&self, args: &[&str]) -> String {
        let o = finish(
            Command::new("xdotool")
                .env("DISPLAY", &self.display)
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        assert!(o.status.success(), "xdotool {args:?}: {}", stderr(&o));
        stdout(&o)
    }

    /// Wait for a window whose title matches, then press `keys` in it.
    fn answer(&self, title: &str, keys: &[&str]) {
        let win = self.xdotool(&["search", "--sync", "--name", title]);
        let win = win.lines().next().expect("a dialog").to_string();
        let mut args = vec![
            "windowfocus",
            "--sync",
            &win,
            "key",
            "--clearmodifiers",
            "--delay",
            "50",
        ];
        args.extend(keys);
        self.xdotool(&args);
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tools_present() -> bool {
    ["zenity", "xdotool"].iter().all(|t| {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("SKIPPING: {t} is not installed (scripts/deps.sh installs it)");
        }
        ok
    })
}

#[test]
fn the_desktop_approver_asks_with_a_dialog_that_denies_by_default() {
    if !tools_present() {
        return;
    }
    let Some(x) = Xvfb::start() else { return };
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    let desktop = t
        .nuketown_as(HUMAN, "approvals desktop")
        .env("DISPLAY", &x.display)
        .spawn()
        .unwrap();
    let mut w = t.watch();

    // Return presses the focused button, which is Deny.
    let child = t.spawn_agent(VOX, "sudo id -un");
    next_request(&mut w);
    x.answer(
        &format!("Nuketown: {VOX} asks to run a command as root"),
        &["Return"],
    );
    let o = finish(child);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("nuketown: denied by {HUMAN} via desktop")),
        "{}",
        stderr(&o)
    );

    // Alt+A is Approve.
    let child = t.spawn_agent(VOX, "sudo id -un");
    next_request(&mut w);
    x.answer(
        &format!("Nuketown: {VOX} asks to run a command as root"),
        &["alt+a"],
    );
    let o = finish(child);
    assert_eq!(stdout(&o), "root\n", "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("nuketown: approved by {HUMAN} via desktop")),
        "{}",
        stderr(&o)
    );

    // A request decided elsewhere closes its dialog; the next request gets a dialog of its own.
    let first = t.spawn_agent(ADA, "sudo id -u");
    let r = next_request(&mut w);
    x.xdotool(&[
        "search",
        "--sync",
        "--name",
        &format!("Nuketown: {ADA} asks"),
    ]);
    assert!(t
        .human(HUMAN, &format!("approvals approve {}", r.id))
        .status
        .success());
    assert_eq!(stdout(&finish(first)), "0\n");
    let second = t.spawn_agent(ADA, "sudo -u nktvox id -un");
    next_request(&mut w);
    x.answer(
        &format!("Nuketown: {ADA} asks to run a command as {VOX}"),
        &["alt+a"],
    );
    assert_eq!(stdout(&finish(second)), format!("{VOX}\n"));

    // Alt+1 approves for ten minutes: the same command again needs no dialog.
    let child = t.spawn_agent(VOX, "sudo id -u");
    next_request(&mut w);
    x.answer(
        &format!("Nuketown: {VOX} asks to run a command as root"),
        &["alt+1"],
    );
    let o = finish(child);
    assert_eq!(stdout(&o), "0\n", "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "approved by {HUMAN} via desktop, and for the next 600 s"
        )),
        "{}",
        stderr(&o)
    );
    let o = t.agent(VOX, "sudo id -u");
    assert_eq!(stdout(&o), "0\n", "{}", stderr(&o));

    let channels: Vec<String> = t
        .audit()
        .iter()
        .map(|r| r.decided_by.as_ref().unwrap().channel.clone())
        .collect();
    assert_eq!(
        channels,
        ["desktop", "desktop", "terminal", "desktop", "desktop", "grant"]
    );
    // The approver (su's child) ends on SIGTERM; su then ends too.
    let su = desktop.id();
    let approver: i32 = std::fs::read_to_string(format!("/proc/{su}/task/{su}/children"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(approver),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = finish(desktop);
}
