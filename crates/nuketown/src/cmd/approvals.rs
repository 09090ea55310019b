//! `nuketown approvals [list|approve ID|deny ID|watch|desktop]`: the human's side.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use nuketown_hall::client::{Approver, ApproverSender, ClientError};
use nuketown_hall::protocol::{show_argv, show_str, RequestView, ToApprover};
use nuketown_hall::time::now_ms;

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
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List pending requests (the default).
    List {
        /// One JSON object per request, as the hall sent it.
        #[arg(long)]
        json: bool,
    },
    /// Approve one request (its id, or a unique prefix of at least 6 characters).
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

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// A request as the human reads it: every string quoted and escaped, one per line.
pub fn describe(r: &RequestView) -> String {
    let left = r.deadline_ms.saturating_sub(now_ms()).div_ceil(1000);
    let mut s = format!(
        "request {} from {} (uid {})\n",
        short(&r.id),
        show_str(&r.agent),
        r.uid
    );
    s.push_str(&format!("  run      {}\n", show_argv(&r.argv)));
    s.push_str(&format!(
        "  as       {}{}\n",
        show_str(&r.user),
        r.group
            .as_ref()
            .map(|g| format!(", group {}", show_str(g)))
            .unwrap_or_default()
    ));
    s.push_str(&format!("  in       {}\n", show_str(&r.cwd)));
    if r.agent_can_write {
        s.push_str(&format!(
            "  program  {}\n  WARNING  {} can change this program (the file, or a directory or link on its path): what runs may not be what you read\n",
            show_str(&r.argv[0]),
            r.agent
        ));
    } else {
        s.push_str(&format!(
            "  program  {} ({} cannot change it)\n",
            show_str(&r.argv[0]),
            r.agent
        ));
    }
    for a in &r.agent_writable_args {
        s.push_str(&format!(
            "  WARNING  {} can change the file {}, named in the arguments\n",
            r.agent,
            show_str(a)
        ));
    }
    s.push_str(&format!("  expires  in {left} s\n"));
    s
}

fn find(approver: &mut Approver, id: &str) -> Result<RequestView> {
    if id.len() < 6 {
        bail!("give at least 6 characters of the request id");
    }
    let matches: Vec<RequestView> = approver
        .list()?
        .into_iter()
        .filter(|r| r.id.starts_with(id))
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

fn closed_hint(e: ClientError) -> anyhow::Error {
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
        e.into()
    }
}

/// Run the approvals command.
pub fn run(global: Option<&Path>, args: Args) -> Result<ExitCode> {
    let socket = args.socket;
    match args.action.unwrap_or(Action::List { json: false }) {
        Action::List { json } => {
            let requests = connect(&socket)?.list().map_err(closed_hint)?;
            if json {
                for r in &requests {
                    println!("{}", serde_json::to_string(r)?);
                }
            } else if requests.is_empty() {
                println!("no pending requests");
            } else {
                for r in &requests {
                    print!("{}", describe(r));
                    println!("  id       {}\n", r.id);
                }
            }
        }
        Action::Approve { id, grant } => {
            let secs = match &grant {
                Some(g) => Some(
                    parse_duration(g)
                        .ok_or_else(|| anyhow!("--for {g}: give a duration like 30s, 10m or 1h"))?,
                ),
                None => None,
            };
            let mut a = connect(&socket)?;
            let r = find(&mut a, &id).map_err(|e| match e.downcast::<ClientError>() {
                Ok(c) => closed_hint(c),
                Err(e) => e,
            })?;
            a.decide(&r, true, secs, "terminal")?;
            println!(
                "approved {} for {}: {}{}",
                short(&r.id),
                r.agent,
                show_argv(&r.argv),
                secs.map(|s| format!(" (and for the next {s} s)"))
                    .unwrap_or_default()
            );
        }
        Action::Deny { id } => {
            let mut a = connect(&socket)?;
            let r = find(&mut a, &id).map_err(|e| match e.downcast::<ClientError>() {
                Ok(c) => closed_hint(c),
                Err(e) => e,
            })?;
            a.decide(&r, false, None, "terminal")?;
            println!(
                "denied {} for {}: {}",
                short(&r.id),
                r.agent,
                show_argv(&r.argv)
            );
        }
        Action::Watch => watch(&socket, Channel::Terminal)?,
        Action::Desktop => watch(&socket, Channel::Desktop)?,
        Action::Matrix { store } => {
            let town = super::load_town(None, global)?;
            let cfg = nuketown_chat::approver::ApproverConfig::from_town(&town, store, socket)?;
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

/// What the watch loop waits for.
enum Event {
    Hall(Result<ToApprover, String>),
    /// A line typed in the terminal; `None` when stdin ended.
    Typed(Option<String>),
    /// A dialog closed: for which request, with what answer.
    Dialog(String, Option<(bool, Option<u64>)>),
}

/// The request being asked about now.
struct Asking {
    request: RequestView,
    /// The dialog's process (desktop).
    dialog: Option<u32>,
}

/// Stream requests and ask about each in turn, on one connection: when it
/// closes (this program ends), the hall denies what it showed us, unless
/// another approver is watching.
fn watch(socket: &Path, channel: Channel) -> Result<()> {
    let mut conn = connect(socket)?;
    let initial = conn.watch(channel.name()).map_err(closed_hint)?;
    let mut answers: ApproverSender = conn.sender()?;
    let (tx, rx) = mpsc::channel::<Event>();
    let hall_tx = tx.clone();
    std::thread::spawn(move || loop {
        let m = conn.recv().map_err(|e| e.to_string());
        let stop = m.is_err();
        if hall_tx.send(Event::Hall(m)).is_err() || stop {
            return;
        }
    });
    if channel == Channel::Terminal {
        let typed = tx.clone();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                if typed.send(Event::Typed(line.ok())).is_err() {
                    return;
                }
            }
            let _ = typed.send(Event::Typed(None));
        });
        println!(
            "watching for requests as the {} approver (Ctrl-C to stop)",
            channel.name()
        );
    }
    let mut queue: VecDeque<RequestView> = initial.into();
    let mut asking: Option<Asking> = None;
    let mut decided: Vec<(String, bool)> = Vec::new();
    loop {
        if asking.is_none() {
            if let Some(r) = queue.pop_front() {
                asking = Some(ask(channel, r, &tx)?);
            }
        }
        let Ok(event) = rx.recv() else { return Ok(()) };
        match event {
            Event::Hall(Ok(ToApprover::Request { request })) => {
                let known = queue.iter().any(|q| q.id == request.id)
                    || asking.as_ref().is_some_and(|a| a.request.id == request.id);
                if !known {
                    queue.push_back(request);
                }
            }
            Event::Hall(Ok(ToApprover::Resolved { id, outcome, by })) => {
                queue.retain(|r| r.id != id);
                if asking.as_ref().is_some_and(|a| a.request.id == id) {
                    let a = asking.take().expect("checked");
                    if let Some(pid) = a.dialog {
                        // Our own zenity: the question is moot.
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGTERM,
                        );
                    }
                    if channel == Channel::Terminal && !decided.iter().any(|(d, _)| *d == id) {
                        println!(
                            "\nrequest {} was {outcome} by {} via {}",
                            short(&id),
                            by.who,
                            by.channel
                        );
                    }
                }
            }
            Event::Hall(Ok(ToApprover::Ok { id })) => {
                if let Some((_, approve)) = decided.iter().find(|(d, _)| *d == id) {
                    if channel == Channel::Terminal {
                        println!(
                            "{} {}",
                            if *approve { "approved" } else { "denied" },
                            short(&id)
                        );
                    }
                }
            }
            Event::Hall(Ok(ToApprover::Error { id, message })) => {
                eprintln!(
                    "not decided{}: {message}",
                    id.map(|i| format!(" {}", short(&i))).unwrap_or_default()
                );
            }
            Event::Hall(Ok(ToApprover::Requests { .. })) => {}
            Event::Hall(Err(e)) => bail!("{e}"),
            Event::Typed(None) => return Ok(()),
            Event::Typed(Some(line)) => {
                let Some(a) = &asking else { continue };
                let answer = match line.trim() {
                    "y" | "yes" => Some((true, None)),
                    "n" | "no" => Some((false, None)),
                    other => parse_duration(other).map(|s| (true, Some(s))),
                };
                match answer {
                    Some((approve, grant)) => {
                        answers.send_decision(&a.request, approve, grant, channel.name())?;
                        decided.push((a.request.id.clone(), approve));
                        asking = None;
                    }
                    None => {
                        print!("answer y, n, or a duration like 10m (approve it for that long): ");
                        std::io::stdout().flush()?;
                    }
                }
            }
            Event::Dialog(id, answer) => {
                let Some(a) = &asking else { continue };
                if a.request.id != id {
                    continue;
                }
                if let Some((approve, grant)) = answer {
                    answers.send_decision(&a.request, approve, grant, channel.name())?;
                    decided.push((id, approve));
                }
                asking = None;
            }
        }
    }
}

/// Put the question: a prompt in the terminal, or a dialog on the desktop.
fn ask(channel: Channel, r: RequestView, tx: &mpsc::Sender<Event>) -> Result<Asking> {
    match channel {
        Channel::Terminal => {
            print!("\n{}", describe(&r));
            print!("approve? [y]es, [n]o, or a duration like 10m (approve it for that long): ");
            std::io::stdout().flush()?;
            Ok(Asking {
                request: r,
                dialog: None,
            })
        }
        Channel::Desktop => {
            let pid = dialog(&r, tx.clone())?;
            Ok(Asking {
                request: r,
                dialog: Some(pid),
            })
        }
    }
}

/// The label of the dialog's grant button (Alt+1); zenity prints it when pressed.
const GRANT_LABEL: &str = "Approve for _10 minutes";

/// Show a zenity dialog for `r`; its answer comes back as an [`Event::Dialog`].
/// Deny is the default button; closing the dialog denies; its timeout leaves
/// the request to the hall's.
fn dialog(r: &RequestView, tx: mpsc::Sender<Event>) -> Result<u32> {
    let left = (r.deadline_ms.saturating_sub(now_ms()) / 1000).max(1);
    let mut child = Command::new("zenity")
        .args([
            "--question",
            // The text is shown as it is: no markup, whatever the argv holds.
            "--no-markup",
            "--default-cancel",
            "--width=720",
            "--ok-label=_Approve",
            "--cancel-label=_Deny",
        ])
        .arg(format!("--extra-button={GRANT_LABEL}"))
        .arg(format!(
            "--title=Nuketown: {} asks to run a command as {}",
            r.agent, r.user
        ))
        .arg(format!("--text={}", describe(r)))
        .arg(format!("--timeout={left}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run zenity (install it for desktop approvals)")?;
    let pid = child.id();
    let id = r.id.clone();
    std::thread::spawn(move || {
        let mut out = String::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut o, &mut out);
        }
        let answer = match child.wait().ok().and_then(|s| s.code()) {
            Some(0) => Some((true, None)),
            Some(1) if out.trim() == GRANT_LABEL => Some((true, Some(600))),
            Some(1) => Some((false, None)),
            // 5: zenity's own timeout; killed: decided elsewhere.
            _ => None,
        };
        let _ = tx.send(Event::Dialog(id, answer));
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
            cwd: "/agents/ada".into(),
            user: "root".into(),
            group: None,
            agent_can_write: true,
            agent_writable_args: vec!["./x\u{1b}[2J".into()],
            asked_ms: now_ms(),
            deadline_ms: now_ms() + 60_000,
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
        assert!(d.contains("WARNING  ada can change this program"), "{d}");
        assert!(d.contains(r#"the file "./x\u{1b}[2J""#), "{d}");
        assert!(!d.chars().any(|c| c.is_control() && c != '\n'), "{d:?}");
    }
}
