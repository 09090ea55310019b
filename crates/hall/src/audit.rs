//! The audit log: every decision, and later the approved command's exit
//! status, appended as one JSON line each (and logged through tracing, hence
//! the journal). `nuketown audit` joins the two by request id.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::protocol::DecidedBy;
use crate::time::{now_ms, rfc3339};

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Request id.
    pub id: String,
    /// When (RFC 3339, UTC).
    pub time: String,
    /// `decision` or `exit`.
    pub event: String,
    /// The agent (or the uid's user name when it is not an agent).
    pub agent: String,
    /// The agent's uid, from sudo's `SUDO_UID`.
    pub uid: u32,
    /// Exact argv.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// The executable decided on and run: canonical path, device, inode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<crate::protocol::FileRef>,
    /// How the agent named the program, when that differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typed: Option<String>,
    /// Working directory (canonical).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cwd: String,
    /// Target user.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// Target group, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Whether the agent could change what the request runs or reads (only a human may decide).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agent_can_write: bool,
    /// The warnings the approvers were shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The notes the approvers were shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// `approved`, `denied` or `cancelled` (decision records).
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
    /// From the request's arrival to its decision, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// The command's exit status: exit code, or 128 + signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
}

impl Record {
    /// An empty record stamped now.
    pub fn new(id: &str, event: &str, agent: &str, uid: u32) -> Record {
        Record {
            id: id.to_string(),
            time: rfc3339(now_ms()),
            event: event.to_string(),
            agent: agent.to_string(),
            uid,
            argv: Vec::new(),
            program: None,
            typed: None,
            cwd: String::new(),
            target: String::new(),
            group: None,
            agent_can_write: false,
            warnings: Vec::new(),
            notes: Vec::new(),
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
    /// The log at `path`: created 0640, group `nuketown-approvers` so approvers can read it.
    pub fn new(path: &Path) -> AuditLog {
        AuditLog {
            path: path.to_path_buf(),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append a record (one `write` on an `O_APPEND` file) and log it.
    pub fn append(&self, r: &Record) -> std::io::Result<()> {
        if r.event == "exit" {
            tracing::info!(id = %r.id, agent = %r.agent, uid = r.uid, exit = ?r.exit_status, "command ended");
        } else {
            tracing::info!(
                id = %r.id, agent = %r.agent, uid = r.uid, argv = ?r.argv, cwd = %r.cwd, target = %r.target,
                decision = %r.decision, who = r.decided_by.as_ref().map(|b| b.who.as_str()),
                channel = r.decided_by.as_ref().map(|b| b.channel.as_str()), mock = r.mock,
                latency_ms = r.latency_ms, "{}", r.reason
            );
        }
        if let Some(dir) = self.path.parent() {
            if !dir.exists() {
                std::fs::create_dir_all(dir)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        let mut line = serde_json::to_vec(r).expect("records serialise");
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&self.path)?;
        if f.metadata()?.len() == 0 {
            // New: readable by approvers (`nuketown audit`), whatever the umask.
            f.set_permissions(std::fs::Permissions::from_mode(0o640))?;
            if let Ok(Some(g)) = nix::unistd::Group::from_name(crate::APPROVERS_GROUP) {
                let _ = nix::unistd::fchown(std::os::fd::AsRawFd::as_raw_fd(&f), None, Some(g.gid));
            }
        }
        f.write_all(&line)
    }

    /// Every record, oldest first (lines that are not records are skipped with a warning).
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

/// Decision records with their command's exit status filled in from the
/// matching exit record, oldest first.
pub fn joined(records: Vec<Record>) -> Vec<Record> {
    let exits: HashMap<String, i32> = records
        .iter()
        .filter(|r| r.event == "exit")
        .filter_map(|r| Some((r.id.clone(), r.exit_status?)))
        .collect();
    records
        .into_iter()
        .filter(|r| r.event == "decision")
        .map(|mut r| {
            r.exit_status = r.exit_status.or_else(|| exits.get(&r.id).copied());
            r
        })
        .collect()
}
