//! `nuketown approvals [list|approve ID|deny ID|watch|desktop]`: the human's side.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::mpsc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use nuketown_hall::client::Approver;
use nuketown_hall::protocol::{show_argv, show_str, RequestView, ToApprover};
use nuketown_hall::time::now_ms;

/// Approve or deny agents' privilege requests. You must be an approver: root,
/// or a member of group nuketown-approvers listed in the town (humanUser or
/// hall.approvers); the hall knows you by your Unix identity.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The approver socket.
    #[arg(long, env = "NUKETOWN_APPROVER_SOCKET", default_value = nuketown_hall::APPROVER_SOCKET, global = true)]
    socket: PathBuf,
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List pending requests (the default).
    List,
    /// Approve one request (an id or a unique prefix of at least 6 characters).
    Approve {
        /// Request id.
        id: String,
        /// Also approve this exact command for this agent for a while, e.g. 10m.
        #[arg(long = "for", value_name = "DURATION")]
        grant: Option<String>,
    },
    /// Deny one request.
    Deny {
        /// Request id.
        id: String,
    },
    /// Answer requests as they come, in this terminal: y, n, or a grant like 10m.
    Watch,
    /// Answer requests with desktop dialogs (zenity) in your graphical session.
    Desktop,
}

/// Parse `30s`, `10m`, `1h` or plain seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "s" | "sec" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        _ => return None,
    };
    (n > 0).then_some(n * mult)
}

fn describe(r: &RequestView) -> String {
    let left = r.deadline_ms.saturating_sub(now_ms()) / 1000;
    let mut s = format!("── request {} from {} (uid {}) ──\n", &r.id[..8], r.agent, r.uid);
    s.push_str(&format!("  run      {}\n", show_argv(&r.argv)));
    s.push_str(&format!("  as       {}{}\n", r.user, r.group.as_ref().map(|g| format!(" (group {g})")).unwrap_or_default()));
    s.push_str(&format!("  in       {}\n", show_str(&r.cwd)));
    if r.agent_can_write {
        s.push_str(&format!("  WARNING  {} can write {} or its directory: what runs may not be what you think\n", r.agent, show_str(&r.argv[0])));
    } else {
        s.push_str(&format!("  program  {} ({} cannot change it)\n", show_str(&r.argv[0]), r.agent));
    }
    s.push_str(&format!("  expires  in {left} s\n"));
    s
}

fn find(approver: &mut Approver, id: &str) -> Result<RequestView> {
    if id.len() < 6 {
        bail!("give at least 6 characters of the request id");
    }
    let matches: Vec<RequestView> = approver.list()?.into_iter().filter(|r| r.id.starts_with(id)).collect();
    match matches.len() {
        0 => bail!("no pending request {id} (decided, withdrawn or timed out); see nuketown approvals list"),
        1 => Ok(matches.into_iter().next().expect("one")),
        _ => bail!("{id} matches several requests; give more of the id"),
    }
}

/// Run the approvals command.
pub fn run(_global: Option<&Path>, args: Args) -> Result<ExitCode> {
    let socket = args.socket;
    match args.action.unwrap_or(Action::List) {
        Action::List => {
            let requests = Approver::connect(&socket)?.list()?;
            if requests.is_empty() {
                println!("no pending requests");
            }
            for r in &requests {
                print!("{}", describe(r));
                println!("  id       {}", r.id);
            }
        }
        Action::Approve { id, grant } => {
            let secs = match &grant {
                Some(g) => Some(parse_duration(g).ok_or_else(|| anyhow!("--for {g}: give a duration like 30s, 10m or 1h"))?),
                None => None,
            };
            let mut a = Approver::connect(&socket)?;
            let r = find(&mut a, &id)?;
            a.decide(&r, true, secs, "terminal")?;
            println!("approved {} for {}: {}", &r.id[..8], r.agent, show_argv(&r.argv));
        }
        Action::Deny { id } => {
            let mut a = Approver::connect(&socket)?;
            let r = find(&mut a, &id)?;
            a.decide(&r, false, None, "terminal")?;
            println!("denied {} for {}: {}", &r.id[..8], r.agent, show_argv(&r.argv));
        }
        Action::Watch => watch(&socket, Channel::Terminal)?,
        Action::Desktop => watch(&socket, Channel::Desktop)?,
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Channel {
    Terminal,
    Desktop,
}

/// Stream requests on one connection; answer each on a second one.
fn watch(socket: &Path, channel: Channel) -> Result<()> {
    let mut stream = Approver::connect(socket)?;
    let mut queue: Vec<RequestView> = stream.watch()?;
    let (tx, rx) = mpsc::channel::<Result<ToApprover, String>>();
    std::thread::spawn(move || loop {
        let m = stream.next().map_err(|e| e.to_string());
        let stop = m.is_err();
        if tx.send(m).is_err() || stop {
            return;
        }
    });
    let mut answers = Approver::connect(socket)?;
    let stdin = std::io::stdin();
    if channel == Channel::Terminal {
        println!("watching for requests (Ctrl-C to stop)");
    }
    loop {
        // Take in everything that happened meanwhile.
        let mut block = queue.is_empty();
        loop {
            let m = if block { rx.recv().map_err(|_| ()) } else { rx.try_recv().map_err(|_| ()) };
            block = false;
            match m {
                Ok(Ok(ToApprover::Request { request })) => queue.push(request),
                Ok(Ok(ToApprover::Resolved { id, outcome, by })) => {
                    if queue.iter().any(|r| r.id == id) && channel == Channel::Terminal {
                        println!("request {} was {outcome} by {} via {}", &id[..8], by.who, by.channel);
                    }
                    queue.retain(|r| r.id != id);
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => bail!("{e}"),
                Err(()) => break,
            }
            if queue.is_empty() {
                block = true;
            }
        }
        let Some(r) = queue.first().cloned() else { continue };
        let decision = match channel {
            Channel::Terminal => {
                print!("{}", describe(&r));
                print!("approve? [y]es, [n]o, or a grant like 10m: ");
                std::io::stdout().flush()?;
                let mut line = String::new();
                if stdin.lock().read_line(&mut line)? == 0 {
                    return Ok(()); // stdin closed: leave the rest to the timeout
                }
                match line.trim() {
                    "y" | "yes" => Some((true, None)),
                    "n" | "no" => Some((false, None)),
                    other => match parse_duration(other) {
                        Some(secs) => Some((true, Some(secs))),
                        None => {
                            println!("answer y, n, or a duration like 10m");
                            None
                        }
                    },
                }
            }
            Channel::Desktop => dialog(&r)?,
        };
        queue.retain(|q| q.id != r.id);
        if let Some((approve, grant)) = decision {
            let ch = if channel == Channel::Desktop { "desktop" } else { "terminal" };
            match answers.decide(&r, approve, grant, ch) {
                Ok(()) => {
                    if channel == Channel::Terminal {
                        println!("{} {}", if approve { "approved" } else { "denied" }, &r.id[..8]);
                    }
                }
                Err(e) => println!("not decided: {e}"),
            }
        }
    }
}

/// Ask with a zenity dialog; None when it timed out or was closed.
fn dialog(r: &RequestView) -> Result<Option<(bool, Option<u64>)>> {
    let left = (r.deadline_ms.saturating_sub(now_ms()) / 1000).max(1);
    // --no-markup: the text is shown as is, whatever the argv contains.
    let status = Command::new("zenity")
        .args(["--question", "--no-markup", "--width", "640", "--ok-label", "Approve", "--cancel-label", "Deny"])
        .arg(format!("--title=Nuketown: {} asks for root", r.agent))
        .arg(format!("--text={}", describe(r)))
        .arg(format!("--timeout={left}"))
        .status()
        .context("cannot run zenity (install it for desktop approvals)")?;
    Ok(match status.code() {
        Some(0) => Some((true, None)),
        Some(1) => Some((false, None)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("10m"), Some(600));
        assert_eq!(super::parse_duration("45"), Some(45));
        assert_eq!(super::parse_duration("1h"), Some(3600));
        assert_eq!(super::parse_duration("0m"), None);
        assert_eq!(super::parse_duration("10x"), None);
    }
}
