//! `nuketown audit [--json]`: who asked, who decided, what ran.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use nuketown_hall::audit::{joined, AuditLog, Record};
use nuketown_hall::protocol::{show_argv, show_str};

/// Show the town hall's audit log: every request with its decision (who,
/// through which channel, how fast) and the command's exit status.
///
/// Approvers (group nuketown-approvers) and root can read it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON object per request (its decision and exit status joined).
    #[arg(long)]
    json: bool,
    /// The audit log.
    #[arg(long, env = "NUKETOWN_AUDIT_LOG", default_value = nuketown_hall::AUDIT_LOG)]
    log: PathBuf,
}

/// One record as a line for people.
pub fn line(r: &Record) -> String {
    let by = r
        .decided_by
        .as_ref()
        .map(|b| {
            if b.who == b.channel {
                format!(" by {}", b.who)
            } else {
                format!(" by {} via {}", b.who, b.channel)
            }
        })
        .unwrap_or_default();
    let exit = match (r.decision.as_str(), r.exit_status) {
        (_, Some(s)) => format!(", exit {s}"),
        ("approved", None) => ", exit unknown".into(),
        _ => String::new(),
    };
    // The reason, when it says more than the decision and who took it.
    let plain = format!("{}{by}", r.decision);
    let reason = if r.reason.is_empty() || r.reason == plain {
        String::new()
    } else {
        format!(" — {}", show_str(&r.reason))
    };
    format!(
        "{} {} {} (uid {}) as {}: {} -> {}{}{} ({} ms){}{}",
        r.time,
        &r.id[..r.id.len().min(8)],
        r.agent,
        r.uid,
        if r.target.is_empty() { "?" } else { &r.target },
        show_argv(&r.argv),
        r.decision,
        if r.mock { " [MOCK]" } else { "" },
        by,
        r.latency_ms.unwrap_or(0),
        exit,
        reason,
    )
}

/// Print the log.
pub fn run(_global: Option<&Path>, args: Args) -> Result<ExitCode> {
    let records = match AuditLog::read(&args.log) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", args.log.display())),
    };
    let records = joined(records);
    for r in &records {
        if args.json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            println!("{}", line(r));
        }
    }
    if records.is_empty() && !args.json {
        println!("no requests recorded in {}", args.log.display());
    }
    Ok(ExitCode::SUCCESS)
}
