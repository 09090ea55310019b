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
//!
//! One module a channel: [`terminal`] and [`desktop`] over the shared
//! [`watch`] loop, [`matrix`] (the Matrix approver of the chat crate); the
//! one-shot `list`, `approve` and `deny` are here.

mod desktop;
mod matrix;
mod screen;
mod terminal;
mod watch;

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

/// `--for DURATION` of a grant: 1 s to a day, like every grant the hall gives.
pub fn grant_secs(g: &str) -> Result<u64> {
    match parse_duration(g) {
        None => bail!("--for {}: give a duration like 30s, 10m or 1h", clean(g)),
        Some(s) if s > MAX_GRANT_SECS => bail!(
            "--for {}: a grant lasts at most 24h ({MAX_GRANT_SECS} s); approve again later for longer",
            clean(g)
        ),
        Some(s) => Ok(s),
    }
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
                Some(g) => Some(grant_secs(g)?),
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
        Action::Watch => watch::Watch::new(&socket, watch::Channel::Terminal, settle)?.run()?,
        Action::Desktop => watch::Watch::new(&socket, watch::Channel::Desktop, settle)?.run()?,
        Action::Matrix { store } => matrix::run(global, socket, store, args.settle_ms)?,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::desktop::{dialog_text, WARNING_COLOUR};
    use super::terminal::question;
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
        assert_eq!(grant_secs("24h").unwrap(), 86_400);
        assert!(grant_secs("25h")
            .unwrap_err()
            .to_string()
            .contains("at most 24h"));
        assert!(grant_secs("soon").is_err());
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
            tool: None,
            more: None,
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
