//! An X server of our own (Xvfb) for the desktop approver's tests, and
//! xdotool to find its dialogs and press keys in them. Tests skip (with a
//! message) when Xvfb, zenity or xdotool are missing; scripts/deps.sh
//! installs them.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

use crate::hall_fixture::{finish, stderr, stdout, Stream};

/// An X server; its display number comes back on a pipe when it is ready.
pub struct Xvfb {
    child: Child,
    pub display: String,
}

impl Xvfb {
    pub fn start() -> Option<Xvfb> {
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

    /// `xdotool ARGS…` on this display, with a deadline; (success, stdout).
    pub fn try_xdotool(&self, args: &[&str]) -> (bool, String) {
        let o = finish(
            Command::new("xdotool")
                .env("DISPLAY", &self.display)
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        (o.status.success(), stdout(&o))
    }

    /// `xdotool ARGS…`, which must succeed.
    pub fn xdotool(&self, args: &[&str]) -> String {
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

    /// Wait for a window whose title matches; its X id.
    pub fn window(&self, title: &str) -> String {
        let win = self.xdotool(&["search", "--sync", "--name", title]);
        win.lines().next().expect("a dialog").to_string()
    }

    /// Press `keys` in window `win`.
    pub fn keys(&self, win: &str, keys: &[&str]) {
        let mut args = vec![
            "windowfocus",
            "--sync",
            win,
            "key",
            "--clearmodifiers",
            "--delay",
            "50",
        ];
        args.extend(keys);
        self.xdotool(&args);
    }

    /// Wait for a window whose title matches, then press `keys` in it.
    pub fn answer(&self, title: &str, keys: &[&str]) {
        let win = self.window(title);
        self.keys(&win, keys);
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether zenity and xdotool are installed (a message says which is not).
pub fn tools_present() -> bool {
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

/// End the approver started through `su` (su's child) and su with it.
pub fn stop_approver(su: Child) {
    let pid = su.id();
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        for c in children.split_whitespace() {
            if let Ok(c) = c.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
    }
    let _ = finish(su);
}

impl Xvfb {
    /// How many pixels of window `win` (an xdotool id) are close to `rgb`:
    /// the window's area read from the screen (GetImage on the root, 24-bit
    /// ZPixmap as Xvfb keeps it).
    pub fn pixels_like(&self, win: &str, rgb: (u8, u8, u8)) -> usize {
        use x11rb::connection::Connection;
        use x11rb::protocol::xproto::{ConnectionExt, ImageFormat};
        let geo = self.xdotool(&["getwindowgeometry", "--shell", win]);
        let field = |k: &str| -> i32 {
            geo.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {k} in {geo}"))
        };
        let (x, y, w, h) = (field("X"), field("Y"), field("WIDTH"), field("HEIGHT"));
        let (conn, screen) = x11rb::connect(Some(&self.display)).unwrap();
        let root = conn.setup().roots[screen].root;
        let img = conn
            .get_image(
                ImageFormat::Z_PIXMAP,
                root,
                x as i16,
                y as i16,
                w as u16,
                h as u16,
                !0,
            )
            .unwrap()
            .reply()
            .unwrap();
        assert_eq!(img.data.len(), (w * h * 4) as usize, "32 bits a pixel");
        let near = |a: u8, b: u8| a.abs_diff(b) < 40;
        img.data
            .chunks_exact(4)
            .filter(|p| near(p[2], rgb.0) && near(p[1], rgb.1) && near(p[0], rgb.2))
            .count()
    }
}
