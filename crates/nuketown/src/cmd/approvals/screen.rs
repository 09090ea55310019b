//! When a dialog is really on screen. A dialog program needs a while to start
//! (zenity took about a second on a loaded 2-core machine), so the settle
//! time counts from the moment its window is viewable on the X display —
//! found by the `_NET_WM_PID` GTK sets on it — not from the moment it was
//! started. Under Wayland the dialog is shown through XWayland for this.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{AtomEnum, ConnectionExt as _, MapState, Window};
use x11rb::rust_connection::RustConnection;

/// How often the display is looked at while a dialog starts.
const LOOK_EVERY: Duration = Duration::from_millis(25);
/// How deep under the root window a dialog may sit (window-manager frames).
const DEPTH: usize = 3;

/// Wait until a window of process `pid` is viewable: the moment it was
/// seen. `None` when the display cannot be read, `stop` was set (the dialog
/// ended), or nothing appeared by `give_up`.
pub fn appeared(pid: u32, stop: Arc<AtomicBool>, give_up: Duration) -> Option<Instant> {
    let (conn, screen) = x11rb::connect(None).ok()?;
    let root = conn.setup().roots.get(screen)?.root;
    let pid_atom = conn
        .intern_atom(false, b"_NET_WM_PID")
        .ok()?
        .reply()
        .ok()?
        .atom;
    let deadline = Instant::now() + give_up;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        if viewable(&conn, root, pid_atom, pid)? {
            return Some(Instant::now());
        }
        std::thread::sleep(LOOK_EVERY);
    }
    None
}

/// Whether a viewable window under `root` belongs to `pid`; `None` on an X error.
fn viewable(conn: &RustConnection, root: Window, pid_atom: u32, pid: u32) -> Option<bool> {
    let mut level = vec![root];
    for _ in 0..DEPTH {
        // One round trip per level: every request first, then every reply.
        let trees: Vec<_> = level
            .iter()
            .map(|w| conn.query_tree(*w).ok())
            .collect::<Option<_>>()?;
        let mut next = Vec::new();
        for t in trees {
            // A window can go away between two requests: skip it.
            if let Ok(t) = t.reply() {
                next.extend(t.children);
            }
        }
        let props: Vec<_> = next
            .iter()
            .map(|w| {
                conn.get_property(false, *w, pid_atom, AtomEnum::CARDINAL, 0, 1)
                    .ok()
            })
            .collect::<Option<_>>()?;
        let mut ours = Vec::new();
        for (w, p) in next.iter().zip(props) {
            if let Ok(p) = p.reply() {
                if p.value32().and_then(|mut v| v.next()) == Some(pid) {
                    ours.push(*w);
                }
            }
        }
        for w in ours {
            if let Ok(a) = conn.get_window_attributes(w).ok()?.reply() {
                if a.map_state == MapState::VIEWABLE {
                    return Some(true);
                }
            }
        }
        level = next;
    }
    Some(false)
}
