//! `nuketown audit [--json]`: who asked, who decided, what ran.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use nuketown_hall::audit::{AuditLog, Record};
use nuketown_hall::protocol::show_argv;

/// Show the audit log: every request with its decision (who, through which
/// channel, how fast) and the command's exit status.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the records as JSON lines (decision and exit merged).
    #[arg(long)]
    json: bool,
    /// The audit log.
    #[arg(long, env = "NUKETOWN_AUDIT_LOG", default_value = nuketown_hall::AUDIT_LOG)]
    log: PathBuf,
}

/// Print the log.
pub fn run(_global: Option<&Path>, args: Args) -> Result<ExitCode> {
    let records = match AuditLog::read(&args.log) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", args.log.display())),
    };
    let exits: HashMap<String, i32> = records.iter().filter(|r| r.event == "exit").filter_map(|r| Some((r.id.clone(), r.exit_status?))).collect();
    let decisions: Vec<Record> = records
        .into_iter()
        .filter(|r| r.event == "decision")
        .map(|mut r| {
            r.exit_status = exits.get(&r.id).copied();
            r
        })
        .collect();
    for r in &decisions {
        if args.json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            let by = r.decided_by.as_ref().map(|b| format!("{} via {}", b.who, b.channel)).unwrap_or_default();
            let exit = r.exit_status.map(|s| format!(", exit {s}")).unwrap_or_default();
            println!(
                "{} {} {} (uid {}) as {}: {} — {}{} by {}{} ({} ms){}",
                r.time,
                &r.id[..r.id.len().min(8)],
                r.agent,
                r.uid,
                if r.target.is_empty() { "?" } else { &r.target },
                show_argv(&r.argv),
                r.decision,
                if r.mock { " [MOCK]" } else { "" },
                by,
                if r.reason.is_empty() { String::new() } else { format!(": {}", r.reason) },
                r.latency_ms.unwrap_or(0),
                exit
            );
        }
    }
    if decisions.is_empty() && !args.json {
        println!("no requests recorded in {}", args.log.display());
    }
    Ok(ExitCode::SUCCESS)
}
