//! `nuketown rebuild build|test|switch|boot [-- ARGS…]` and `nuketown rebuild history`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use nuketown_rebuild::{Event, Request, VERSION};

/// Take turns changing the system: take the town hall's rebuild lease (waiting
/// in a FIFO queue, shown with your position and the current holder), see what
/// changed in the configuration since your last build, and let the hall run
/// the town's rebuild command (`rebuild.command`, default nixos-rebuild) with
/// ACTION. test, switch and boot change the running system: an agent's need a
/// human's approval. The lease dies with this process.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// build, dry-build, test, switch, boot — or history.
    action: String,
    /// Extra arguments for the rebuild command (after --).
    #[arg(last = true)]
    args: Vec<String>,
    /// The coordinator's socket.
    #[arg(long, env = "NUKETOWN_REBUILD_SOCKET", default_value = nuketown_rebuild::SOCKET)]
    socket: PathBuf,
    /// The generation history (for `history`).
    #[arg(long, env = "NUKETOWN_REBUILD_HISTORY", default_value = nuketown_rebuild::HISTORY)]
    history: PathBuf,
    /// With history: JSON lines.
    #[arg(long)]
    json: bool,
}

fn ago(ms: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    format!("{} s", now.saturating_sub(ms) / 1000)
}

/// Run the rebuild (or show the history).
pub fn run(_global: Option<&Path>, args: Args) -> Result<ExitCode> {
    if args.action == "history" {
        for g in nuketown_rebuild::history(&args.history) {
            if args.json {
                println!("{}", serde_json::to_string(&g)?);
            } else {
                let rev = g
                    .revision
                    .as_deref()
                    .map(|r| &r[..r.len().min(12)])
                    .unwrap_or("-");
                let result = match (&g.refused, g.status) {
                    (Some(why), _) => format!("not run: {why}"),
                    (None, 0) => "ok".to_string(),
                    (None, s) => format!("failed (exit {s})"),
                };
                println!(
                    "#{} {} {} {} at {} — {} ({} s)",
                    g.generation,
                    nuketown_hall::time::rfc3339(g.started_ms),
                    g.who,
                    g.action,
                    rev,
                    result,
                    g.ended_ms.saturating_sub(g.started_ms) / 1000
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = UnixStream::connect(&args.socket).with_context(|| {
        format!(
            "cannot reach the rebuild coordinator at {} (is the town hall running?)",
            args.socket.display()
        )
    })?;
    let mut line = serde_json::to_vec(&Request::Rebuild {
        v: VERSION,
        action: args.action.clone(),
        args: args.args.clone(),
    })?;
    line.push(b'\n');
    s.write_all(&line)?;
    let rd = BufReader::new(s.try_clone()?);
    for l in rd.lines() {
        let l = l?;
        match serde_json::from_str::<Event>(&l)
            .with_context(|| format!("unexpected answer: {l}"))?
        {
            Event::Queued { position, holder } => {
                let h = holder
                    .map(|h| {
                        format!(
                            "; {} holds the lease ({}) for {}",
                            h.who,
                            h.action,
                            ago(h.since_ms)
                        )
                    })
                    .unwrap_or_default();
                eprintln!("nuketown: waiting for the rebuild lease: position {position}{h}");
            }
            Event::Granted { summary } => {
                eprintln!("nuketown: lease taken for {}", args.action);
                for s in summary {
                    eprintln!("  {s}");
                }
            }
            Event::Approving => eprintln!(
                "nuketown: {} changes the running system: asking a human to approve…",
                args.action
            ),
            Event::Output { line } => println!("{line}"),
            Event::Finished { status, generation } => {
                eprintln!("nuketown: generation {generation} recorded; the rebuild exited with {status}; lease released");
                return Ok(ExitCode::from(status.clamp(0, 255) as u8));
            }
            Event::Error { message } => bail!("{message}"),
        }
    }
    bail!("the coordinator went away; the lease is released")
}
