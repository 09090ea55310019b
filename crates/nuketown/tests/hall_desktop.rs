//! The desktop approver end to end: `nuketown approvals desktop` as the human
//! in an X session (Xvfb), a real zenity dialog per request (its id in the
//! title), keys pressed with xdotool once the approver says answers count
//! (the default settle time), the agent's real sudo waiting on the answer.
//! Needs root, Xvfb, zenity and xdotool (scripts/deps.sh installs them).

mod hall_fixture;
mod xvfb;

use hall_fixture::*;
use xvfb::*;

#[test]
fn the_desktop_approver_asks_with_a_dialog_that_denies_by_default() {
    if !tools_present() {
        return;
    }
    let Some(x) = Xvfb::start() else { return };
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    let mut desktop = t
        .nuketown_as(HUMAN, "approvals desktop")
        .env("DISPLAY", &x.display)
        .spawn()
        .unwrap();
    let mut log = Stream::new(desktop.stdout.take().unwrap());
    log.until("watching for requests as the desktop approver");
    let mut w = t.watch();
    // The dialog of request `r`, once its answers count.
    let mut ready = |r: &nuketown_hall::protocol::RequestView| {
        let s = &r.id[..8];
        log.until(&format!("request {s}: answers count from now"));
        x.window(&format!("request {s}"))
    };

    // Return presses the focused button, which is Deny.
    let child = t.spawn_agent(VOX, "sudo id -un");
    let r = next_request(&mut w);
    let win = ready(&r);
    let title = x.xdotool(&["getwindowname", &win]);
    assert_eq!(
        title.trim(),
        format!(
            "Nuketown: {VOX} asks to run a command as root (request {})",
            &r.id[..8]
        )
    );
    x.keys(&win, &["Return"]);
    let o = finish(child);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("nuketown: denied by {HUMAN} via desktop")),
        "{}",
        stderr(&o)
    );

    // Alt+A is Approve.
    let child = t.spawn_agent(VOX, "sudo id -un");
    let r = next_request(&mut w);
    let win = ready(&r);
    x.keys(&win, &["alt+a"]);
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
    ready(&r);
    assert!(t
        .human(HUMAN, &format!("approvals approve {}", r.id))
        .status
        .success());
    assert_eq!(stdout(&finish(first)), "0\n");
    let second = t.spawn_agent(ADA, "sudo -u nktvox id -un");
    let r2 = next_request(&mut w);
    let win = ready(&r2);
    assert!(
        !x.try_xdotool(&["search", "--name", &format!("request {}", &r.id[..8])])
            .0,
        "the first request's dialog is gone"
    );
    x.keys(&win, &["alt+a"]);
    assert_eq!(stdout(&finish(second)), format!("{VOX}\n"));

    // Alt+1 approves for ten minutes: the same command again, in the same
    // (root's) directory, needs no dialog.
    let child = t.spawn_agent(VOX, "cd / && sudo id -u");
    let r = next_request(&mut w);
    let win = ready(&r);
    x.keys(&win, &["alt+1"]);
    let o = finish(child);
    assert_eq!(stdout(&o), "0\n", "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "approved by {HUMAN} via desktop, and for the next 600 s"
        )),
        "{}",
        stderr(&o)
    );
    let o = t.agent(VOX, "cd / && sudo id -u");
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
    stop_approver(desktop);
}

/// The dialog reads as a request, not a generic question: warnings about
/// what the agent can change are red (the text is markup), a plain request
/// has no red at all, and Return still denies.
#[test]
fn the_dialog_shows_what_the_agent_can_change_in_red() {
    if !tools_present() {
        return;
    }
    let Some(x) = Xvfb::start() else { return };
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    let mut desktop = t
        .nuketown_as(HUMAN, "approvals desktop")
        .env("DISPLAY", &x.display)
        .spawn()
        .unwrap();
    let mut log = Stream::new(desktop.stdout.take().unwrap());
    log.until("watching for requests as the desktop approver");
    let mut w = t.watch();
    let mut ready = |r: &nuketown_hall::protocol::RequestView| {
        let s = &r.id[..8];
        log.until(&format!("request {s}: answers count from now"));
        x.window(&format!("request {s}"))
    };
    let red = (0xc0, 0x1c, 0x28);

    let child = t.spawn_agent(VOX, "cd / && sudo id -un");
    let r = next_request(&mut w);
    assert!(!r.agent_can_write, "{r:?}");
    let win = ready(&r);
    assert_eq!(x.pixels_like(&win, red), 0, "red in a plain request");
    x.keys(&win, &["Return"]);
    assert_eq!(finish(child).status.code(), Some(1));

    // A program in the agent's own home: the agent can change it.
    let child = t.spawn_agent(VOX, "cp /usr/bin/id ~/myid && sudo ~/myid -un");
    let r = next_request(&mut w);
    assert!(r.agent_can_write, "{r:?}");
    let win = ready(&r);
    let n = x.pixels_like(&win, red);
    assert!(n > 100, "the warning is not red ({n} red pixels)");
    x.keys(&win, &["Return"]);
    let o = finish(child);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    stop_approver(desktop);
}
