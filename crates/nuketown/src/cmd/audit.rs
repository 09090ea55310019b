//! `nuketown audit [--json]`: who asked, who decided, what ran.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use nuketown_hall::audit::{joined, AuditLog, Record};
use nuketown_hall::protocol::{show_argv, show_str};
use nuketown_town::display::clean;

/// Show the town hall's audit log: every request with its decision (who,
/// through which channel, how fast), the command's exit status, where it
/// ran and the warnings the approvers saw; agent text escaped.
///
/// Approvers (group nuketown-approvers) and root can read it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON object per request (its decision and exit status joined).
    #[arg(long)]
    json: bool,
    /// Check the log's hash chain instead: say where it breaks (exit 1), or
    /// print the hash of its last line to compare with the journal's.
    #[arg(long)]
    verify: bool,
    /// The audit log.
    #[arg(long, env = "NUKETOWN_AUDIT_LOG", default_value = nuketown_hall::AUDIT_LOG)]
    log: PathBuf,
}

/// One record for people: a line with who asked what and how it ended, then
/// (indented) where it ran, how the agent named the program, and every
/// warning the approvers were shown. Everything an agent can influence —
/// argv, paths, the reason, the warnings — is escaped.
pub fn line(r: &Record) -> String {
    let by = r
        .decided_by
        .as_ref()
        .map(|b| {
            if b.who == b.channel {
                format!(" by {}", clean(&b.who))
            } else {
                format!(" by {} via {}", clean(&b.who), clean(&b.channel))
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
    let mut s = format!(
        "{} {} {} (uid {}) as {}: {} -> {}{}{} ({} ms){}{}",
        clean(&r.time),
        clean(&r.id.chars().take(8).collect::<String>()),
        clean(&r.agent),
        r.uid,
        if r.target.is_empty() {
            "?".to_string()
        } else {
            clean(&r.target)
        },
        show_argv(&r.argv),
        clean(&r.decision),
        if r.mock { " [MOCK]" } else { "" },
        by,
        r.latency_ms.unwrap_or(0),
        exit,
        reason,
    );
    if !r.cwd.is_empty() {
        s.push_str(&format!("\n    in       {}", show_str(&r.cwd)));
    }
    if let Some(p) = r
        .program
        .as_ref()
        .filter(|p| r.argv.first() != Some(&p.path))
    {
        s.push_str(&format!("\n    program  {}", show_str(&p.path)));
    }
    if let Some(t) = &r.typed {
        s.push_str(&format!("\n    typed    {}", show_str(t)));
    }
    for w in &r.warnings {
        s.push_str(&format!("\n    WARNING  {}", clean(w)));
    }
    for n in &r.notes {
        s.push_str(&format!("\n    note     {}", clean(n)));
    }
    if let Some(k) = &r.key_use {
        let what = match k.operation.as_str() {
            "sign" => format!(
                "sign, namespace {}, message {}",
                show_str(k.namespace.as_deref().unwrap_or("?")),
                clean(k.message_hash.as_deref().unwrap_or("?"))
            ),
            "authenticate" => format!(
                "authenticate as {} to {}",
                show_str(k.remote_user.as_deref().unwrap_or("?")),
                match (&k.host, &k.host_key) {
                    (Some(h), _) => clean(h),
                    (None, Some(key)) => format!("an undeclared host with key {}", clean(key)),
                    (None, None) => "a host the town could not identify".into(),
                }
            ),
            other => clean(other),
        };
        s.push_str(&format!("\n    key      {} — {what}", clean(&k.key)));
        s.push_str(&format!(
            "\n    data     sha256 {}; caller pid {}, parent {}",
            clean(&k.data_sha256),
            k.caller_pid,
            show_argv(&k.parent)
        ));
        if !k.rule.is_empty() {
            s.push_str(&format!("\n    rule     {}", clean(&k.rule)));
        }
        if let Some(res) = &r.result {
            s.push_str(&format!("\n    result   {}", clean(res)));
        }
    }
    s
}

fn verify(log: &Path) -> Result<ExitCode> {
    let text = std::fs::read(log).with_context(|| format!("reading {}", log.display()))?;
    let v = nuketown_hall::audit::verify(&String::from_utf8_lossy(&text));
    for b in &v.breaks {
        println!("{}: line {}: {}", log.display(), b.line, b.why);
    }
    if v.unchained > 0 {
        println!(
            "{}: the first {} line(s) predate the hash chain and cannot be verified",
            log.display(),
            v.unchained
        );
    }
    if v.breaks.is_empty() {
        println!(
            "{}: {} lines, the chain holds; last hash {} (compare with the last `audit chain` hash in the journal: lines cut off the end leave no other trace)",
            log.display(),
            v.lines,
            v.head
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{}: the chain breaks at line {}",
            log.display(),
            v.breaks[0].line
        );
        Ok(ExitCode::FAILURE)
    }
}

/// Print the log.
pub fn run(_global: Option<&Path>, args: Args) -> Result<ExitCode> {
    if args.verify {
        return verify(&args.log);
    }
    let records = match AuditLog::read(&args.log) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", args.log.display())),
    };
    let records = joined(records);
    for r in &records {
        if args.json {
            println!(
                "{}",
                super::approvals::json_line(&serde_json::to_string(r)?)
            );
        } else {
            println!("{}", line(r));
        }
    }
    if records.is_empty() && !args.json {
        println!("no requests recorded in {}", args.log.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_text_is_escaped() {
        let mut r = Record::new("0123456789abcdef0123456789abcdef", "decision", "ada", 1100);
        r.argv = vec!["/bin/echo".into(), "\u{1b}[2J".into()];
        r.cwd = "/agents/ada/\u{1b}]0;x\u{7}".into();
        r.typed = Some("./e\ncho".into());
        r.warnings = vec!["the argument \u{9b}31m names a file the agent can change".into()];
        r.reason = "denied by policy: \u{202e}".into();
        r.decision = "denied".into();
        r.target = "root".into();
        let l = line(&r);
        assert!(
            !l.chars()
                .any(|c| c != '\n' && nuketown_town::display::is_unsafe_char(c)),
            "{l:?}"
        );
        assert_eq!(l.lines().count(), 4, "{l}");
        assert!(
            l.contains("    WARNING  the argument \\u{9b}31m names"),
            "{l}"
        );
        assert!(l.contains(r#"    typed    "./e\ncho""#), "{l}");
    }
}
