//! The answers to the chat commands the bridge gives itself (`!where`,
//! `!resources`, `!escalations`, `!work`): read from the machine and the
//! bridge's own state, never from the model.

use std::path::Path;

use crate::escalations::Escalation;

/// Where the bridge runs: on a Kubernetes cluster (a pod) or on a host.
pub fn placement() -> String {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into());
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        let ns = std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .map(|n| format!(", namespace {}", n.trim()))
            .unwrap_or_default();
        format!("cluster (pod {host}{ns})")
    } else {
        format!("host {host}")
    }
}

/// `!where`.
pub fn where_text(agent: &str, workdir: &Path) -> String {
    let uid = nix::unistd::getuid();
    format!(
        "{agent} runs on {}, as uid {uid}, in {}",
        placement(),
        nuketown_town::display::show_str(&workdir.display().to_string())
    )
}

/// Memory (bytes resident) and CPU time (seconds) used by every process of `uid`.
pub fn usage_of(uid: u32) -> (u64, f64, usize) {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let (mut rss, mut cpu, mut n) = (0u64, 0f64, 0usize);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0, 0.0, 0);
    };
    for e in dir.flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let p = e.path();
        let Ok(status) = std::fs::read_to_string(p.join("status")) else {
            continue;
        };
        let owner = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok());
        if owner != Some(uid) {
            continue;
        }
        n += 1;
        rss += status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|k| k.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024;
        if let Ok(stat) = std::fs::read_to_string(p.join("stat")) {
            // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let t = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
                cpu += (t(11) + t(12)) / ticks;
            }
        }
    }
    (rss, cpu, n)
}

/// The memory limit of this process's cgroup, if it has one.
fn cgroup_memory() -> Option<(u64, Option<u64>)> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let current = std::fs::read_to_string(dir.join("memory.current"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let max = std::fs::read_to_string(dir.join("memory.max"))
        .ok()
        .and_then(|m| m.trim().parse().ok());
    Some((current, max))
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// `!resources`.
pub fn resources_text(agent: &str, tier: Option<&str>) -> String {
    let uid = nix::unistd::getuid().as_raw();
    let (rss, cpu, n) = usage_of(uid);
    let tier = match tier {
        Some(t) => format!("tier {t}"),
        None => "no tier (a host agent: no resource limits declared)".into(),
    };
    let mut text = format!(
        "{agent}: {tier}; in use now: {} resident in {n} processes of uid {uid}, {cpu:.1} s of CPU time so far",
        mib(rss)
    );
    if let Some((current, max)) = cgroup_memory() {
        text.push_str(&format!(
            "; this bridge's cgroup: {}{}",
            mib(current),
            max.map(|m| format!(" of {}", mib(m))).unwrap_or_default()
        ));
    }
    text
}

/// The agent's use of its credentials through the town's gateway, as the
/// hall publishes it (`<runDir>/usage/<agent>.json`), one line per
/// credential; `None` when there is nothing to say.
pub fn credentials_text(usage: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(usage).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let creds = v.get("credentials")?.as_object()?;
    let mut out = String::from("credentials through the town's gateway:");
    for (name, u) in creds {
        let n = |k: &str| u.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        out.push_str(&format!(
            "\n  {name}: {} requests and {} tokens in the last hour, {} and {} in the last day",
            n("requestsHour"),
            n("tokensHour"),
            n("requestsDay"),
            n("tokensDay")
        ));
    }
    Some(out)
}

fn ago(since_ms: u64, now_ms: u64) -> String {
    format!("{} s", now_ms.saturating_sub(since_ms) / 1000)
}

/// `!escalations`.
pub fn escalations_text(agent: &str, list: &[Escalation], now_ms: u64) -> String {
    if list.is_empty() {
        return format!("{agent}: no escalation is waiting for a decision");
    }
    let mut text = format!(
        "{agent}: {} escalation(s) waiting for a decision:",
        list.len()
    );
    for e in list {
        let room = if e.room.is_empty() {
            "before any turn ran".to_string()
        } else {
            format!("in {}", e.room)
        };
        text.push_str(&format!(
            "\nrequest {} — {} (asked {} ago, {room})",
            e.id,
            nuketown_town::display::clean(&e.what),
            ago(e.since_ms, now_ms),
        ));
    }
    text
}

/// One room's work, for `!work`.
#[derive(Debug, Clone)]
pub struct WorkLine {
    /// The room the command came from.
    pub here: bool,
    /// The room id.
    pub room: String,
    /// Since when and for whom the backend runs.
    pub running: Option<(u64, String)>,
    /// Messages waiting behind it.
    pub queued: usize,
}

/// `!work`.
pub fn work_text(agent: &str, rooms: &[WorkLine], now_ms: u64) -> String {
    if rooms.is_empty() {
        return format!("{agent}: idle (no backend running, nothing waiting)");
    }
    let mut text = format!("{agent}:");
    for w in rooms {
        let place = if w.here {
            "this room".to_string()
        } else {
            w.room.clone()
        };
        match &w.running {
            Some((since, who)) => text.push_str(&format!(
                "\n{place}: backend running for {} (answering {}), {} waiting",
                ago(*since, now_ms),
                nuketown_town::display::clean(who),
                w.queued
            )),
            None => text.push_str(&format!("\n{place}: {} waiting", w.queued)),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_this_process() {
        let (rss, _, n) = usage_of(nix::unistd::getuid().as_raw());
        assert!(n >= 1 && rss > 0);
    }

    #[test]
    fn work_and_escalations_read_plainly() {
        let w = work_text(
            "ada",
            &[WorkLine {
                here: true,
                room: "!r:x".into(),
                running: Some((1_000, "@josh:x".into())),
                queued: 2,
            }],
            61_000,
        );
        assert_eq!(
            w,
            "ada:\nthis room: backend running for 60 s (answering @josh:x), 2 waiting"
        );
        assert!(work_text("ada", &[], 0).contains("idle"));
        let e = escalations_text(
            "ada",
            &[Escalation {
                id: "3f2a1b9c".into(),
                what: "\"/usr/bin/id\"\u{1b}[2J".into(),
                room: "!r:x".into(),
                since_ms: 0,
            }],
            5_000,
        );
        assert!(e.contains("request 3f2a1b9c"), "{e}");
        assert!(!e.contains('\u{1b}'), "escaped: {e}");
    }
}
