//! The audit log: every request, decision and exit status appended as one
//! JSON line (and logged through tracing, hence the journal).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::protocol::DecidedBy;
use crate::time::{now_ms, rfc3339};

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Request id.
    pub id: String,
    /// When (RFC 3339, UTC).
    pub time: String,
    /// `decision` or `exit`.
    pub event: String,
    /// The agent (or the uid's name when not an agent).
    pub agent: String,
    /// The agent's uid.
    pub uid: u32,
    /// Exact argv (decision records).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cwd: String,
    /// Target user.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// approved, denied, cancelled.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub decision: String,
    /// Why.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Who decided, through which channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<DecidedBy>,
    /// A mock-mode decision.
    #[serde(default)]
    pub mock: bool,
    /// From request to decision, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// The command's exit status (exit records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
}

impl Record {
    /// A record stamped now.
    pub fn new(id: &str, event: &str, agent: &str, uid: u32) -> Record {
        Record {
            id: id.to_string(),
            time: rfc3339(now_ms()),
            event: event.to_string(),
            agent: agent.to_string(),
            uid,
            argv: Vec::new(),
            cwd: String::new(),
            target: String::new(),
            decision: String::new(),
            reason: String::new(),
            decided_by: None,
            mock: false,
            latency_ms: None,
            exit_status: None,
        }
    }
}

/// The append-only log file.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    /// The log at `path` (created 0600 on first write).
    pub fn new(path: &Path) -> AuditLog {
        AuditLog {
            path: path.to_path_buf(),
        }
    }

    /// Append a record (one write, O_APPEND) and log it.
    pub fn append(&self, r: &Record) -> std::io::Result<()> {
        tracing::info!(
            id = %r.id, event = %r.event, agent = %r.agent, uid = r.uid, argv = ?r.argv, decision = %r.decision,
            by = ?r.decided_by, mock = r.mock, exit = ?r.exit_status, "{}", r.reason
        );
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut line = serde_json::to_vec(r).expect("records serialise");
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        f.write_all(&line)
    }

    /// Every record, oldest first (unparsable lines are skipped with a warning).
    pub fn read(path: &Path) -> std::io::Result<Vec<Record>> {
        let text = std::fs::read_to_string(path)?;
        Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| match serde_json::from_str(l) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(
                        "{}: skipping a line that is not a record: {e}",
                        path.display()
                    );
                    None
                }
            })
            .collect())
    }
}
