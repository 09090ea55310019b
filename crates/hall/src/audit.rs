//! The audit log: every decision, and later the approved command's exit
//! status, every use of an agent's key, appended as one JSON line each (and
//! logged through tracing, hence the journal). `nuketown audit` joins
//! decisions and exits by request id.
//!
//! The log is a hash chain: each line carries `prev`, the hash of the line
//! before it, and ends with `hash`, the SHA-256 of the line itself without
//! that field. Editing, inserting or removing a line breaks the chain where
//! it was done; [`verify`] says where. Cutting lines off the end leaves a
//! valid chain, so every hash is also logged to the journal: compare the
//! head [`verify`] reports with the last one logged there.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::protocol::{DecidedBy, KeyUseView};
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
    /// For a use of an agent's key (event `key`): what was signed, for whom, by whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<KeyUseView>,
    /// For a network request (event `network`): what was asked and the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::protocol::NetworkView>,
    /// For a request for a bigger tier (event `resources`): what was asked and the annotation written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<crate::protocol::ResourcesView>,
    /// For a tool the agent's CLI asked to use (event `tool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<crate::protocol::ToolView>,
    /// For a call through the credential gateway (event `credential`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<crate::protocol::CallView>,
    /// For a use of an agent's key: `signed`, or why nothing was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The hash of the line before this one (the chain), hex; 64 zeros for the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    /// SHA-256 of this line without this field, hex. Always the last field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
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
            key_use: None,
            network: None,
            resources: None,
            tool: None,
            credential: None,
            result: None,
            prev: None,
            hash: None,
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

    /// Append a record to the chain (one `write` on an `O_APPEND` file,
    /// under an exclusive lock of the file) and log it with its hash.
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
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o640)
            .open(&self.path)?;
        // One writer at a time, across processes: the chain needs the last line.
        let mut f = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| std::io::Error::from(e))?;
        let prev = match last_line(&mut f)? {
            None => ZERO.to_string(),
            Some(l) => line_hash(&l),
        };
        let line = chained(r, &prev);
        tracing::info!(id = %r.id, hash = %&line.1, "audit chain");
        let mut line = line.0.into_bytes();
        line.push(b'\n');
        if f.metadata()?.len() == 0 {
            // New: readable by approvers (`nuketown audit`), whatever the umask.
            f.set_permissions(std::fs::Permissions::from_mode(0o640))?;
            if let Ok(Some(g)) = nix::unistd::Group::from_name(crate::APPROVERS_GROUP) {
                let _ =
                    nix::unistd::fchown(std::os::fd::AsRawFd::as_raw_fd(&*f), None, Some(g.gid));
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

/// The hash of the first line's predecessor.
pub const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_FIELD: &str = ",\"hash\":\"";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The line for `r` after a line whose hash is `prev`, and its own hash.
pub fn chained(r: &Record, prev: &str) -> (String, String) {
    let mut r = r.clone();
    r.prev = Some(prev.to_string());
    r.hash = None;
    let body = serde_json::to_string(&r).expect("records serialise");
    let hash = hex(&Sha256::digest(body.as_bytes()));
    let line = format!("{}{HASH_FIELD}{hash}\"}}", &body[..body.len() - 1]);
    (line, hash)
}

/// A line's place in the chain: its own `hash` when it carries one that is
/// right, else the SHA-256 of the whole line (a line from before the chain).
pub fn line_hash(line: &str) -> String {
    match split_hash(line) {
        Some((_, h)) => h.to_string(),
        None => hex(&Sha256::digest(line.as_bytes())),
    }
}

/// (the line without its hash field, the hash) when the line ends with one.
fn split_hash(line: &str) -> Option<(String, &str)> {
    let at = line.rfind(HASH_FIELD)?;
    let h = line[at + HASH_FIELD.len()..].strip_suffix("\"}")?;
    (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (format!("{}}}", &line[..at]), h))
}

/// The last line of the file (without its newline), read from the end.
fn last_line(f: &mut std::fs::File) -> std::io::Result<Option<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut start = f.seek(SeekFrom::End(0))?;
    // The bytes [start, end) read so far, trailing newlines dropped.
    let mut tail: Vec<u8> = Vec::new();
    while start > 0 {
        let step = start.min(8192);
        let mut chunk = vec![0u8; step as usize];
        f.seek(SeekFrom::Start(start - step))?;
        f.read_exact(&mut chunk)?;
        start -= step;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        while tail.last() == Some(&b'\n') {
            tail.pop();
        }
        if let Some(i) = tail.iter().rposition(|b| *b == b'\n') {
            tail.drain(..=i);
            break;
        }
    }
    Ok((!tail.is_empty()).then(|| String::from_utf8_lossy(&tail).into_owned()))
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The line number (1-based) where it breaks.
    pub line: usize,
    /// What is wrong there.
    pub why: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Lines in the log.
    pub lines: usize,
    /// Leading lines written before the log was chained (not verifiable).
    pub unchained: usize,
    /// The hash of the last line: compare it with the last one in the journal.
    pub head: String,
    /// Every break, in order.
    pub breaks: Vec<Break>,
}

/// Check the chain of an audit log's text: every chained line's own hash,
/// and that each names the line before it.
pub fn verify(text: &str) -> Verified {
    let mut v = Verified {
        lines: 0,
        unchained: 0,
        head: ZERO.to_string(),
        breaks: Vec::new(),
    };
    let mut prev: Option<String> = None;
    let mut chained_yet = false;
    for (i, line) in text.split('\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        v.lines += 1;
        let parsed: Option<Record> = serde_json::from_str(line).ok();
        match (split_hash(line), &parsed) {
            (Some((body, h)), Some(r)) => {
                chained_yet = true;
                let own = hex(&Sha256::digest(body.as_bytes()));
                if own != h {
                    v.breaks.push(Break {
                        line: n,
                        why: "its content does not match its hash: this line was changed".into(),
                    });
                }
                let expected = prev.clone().unwrap_or_else(|| ZERO.to_string());
                match &r.prev {
                    Some(p) if *p == expected => {}
                    Some(_) if prev.is_none() => v.breaks.push(Break {
                        line: n,
                        why: "it follows a line that is not here: lines before it were removed".into(),
                    }),
                    _ => v.breaks.push(Break {
                        line: n,
                        why: format!(
                            "it does not follow line {}: a line was changed, inserted or removed between them",
                            n - 1
                        ),
                    }),
                }
            }
            _ if !chained_yet => v.unchained += 1,
            _ => v.breaks.push(Break {
                line: n,
                why: "it carries no valid hash: this line was changed or inserted".into(),
            }),
        }
        let h = line_hash(line);
        prev = Some(h.clone());
        v.head = h;
    }
    v
}

/// Every record but the exit records (decisions, key uses, network and
/// resources requests), commands with their exit status filled in
/// from the matching exit record, oldest first.
pub fn joined(records: Vec<Record>) -> Vec<Record> {
    let exits: HashMap<String, i32> = records
        .iter()
        .filter(|r| r.event == "exit")
        .filter_map(|r| Some((r.id.clone(), r.exit_status?)))
        .collect();
    records
        .into_iter()
        .filter(|r| r.event != "exit")
        .map(|mut r| {
            r.exit_status = r.exit_status.or_else(|| exits.get(&r.id).copied());
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(n: usize) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.jsonl");
        let log = AuditLog::new(&p);
        for i in 0..n {
            let mut r = Record::new(&format!("{i:032x}"), "decision", "ada", 1100);
            r.argv = vec!["/usr/bin/true".into(), "x".repeat(i * 5000)];
            log.append(&r).unwrap();
        }
        (d, p)
    }

    #[test]
    fn an_untouched_chain_verifies_and_names_its_head() {
        let (_d, p) = log_of(4);
        let text = std::fs::read_to_string(&p).unwrap();
        let v = verify(&text);
        assert_eq!((v.lines, v.unchained, v.breaks.len()), (4, 0, 0), "{v:?}");
        assert_eq!(v.head, line_hash(text.lines().last().unwrap()));
        // Every record still reads as a record.
        assert_eq!(AuditLog::read(&p).unwrap().len(), 4);
    }

    #[test]
    fn an_edited_line_is_named() {
        let (_d, p) = log_of(4);
        let text = std::fs::read_to_string(&p).unwrap();
        let edited = text.replacen("\"agent\":\"ada\"", "\"agent\":\"vox\"", 2);
        let edited = edited.replacen("\"agent\":\"vox\"", "\"agent\":\"ada\"", 1);
        let v = verify(&edited);
        assert_eq!(v.breaks.len(), 1, "{v:?}");
        assert_eq!(v.breaks[0].line, 2);
        assert!(v.breaks[0].why.contains("changed"), "{v:?}");
    }

    #[test]
    fn a_line_rehashed_after_editing_breaks_the_link_to_the_next() {
        let (_d, p) = log_of(3);
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut r: Record = serde_json::from_str(lines[1]).unwrap();
        r.agent = "vox".into();
        let (forged, _) = chained(&r, r.prev.as_deref().unwrap());
        let text = format!("{}\n{forged}\n{}\n", lines[0], lines[2]);
        let v = verify(&text);
        assert_eq!(v.breaks.len(), 1, "{v:?}");
        assert_eq!(v.breaks[0].line, 3);
    }

    #[test]
    fn removed_and_old_lines() {
        let (_d, p) = log_of(3);
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // The first line removed.
        let v = verify(&format!("{}\n{}\n", lines[1], lines[2]));
        assert_eq!(v.breaks[0].line, 1, "{v:?}");
        // A middle line removed.
        let v = verify(&format!("{}\n{}\n", lines[0], lines[2]));
        assert_eq!(v.breaks[0].line, 2, "{v:?}");
        // Lines from before the chain, then the chain: not verifiable, not broken.
        let old = r#"{"id":"x","time":"t","event":"decision","agent":"ada","uid":1}"#;
        let d = tempfile::tempdir().unwrap();
        let q = d.path().join("a");
        std::fs::write(&q, format!("{old}\n")).unwrap();
        AuditLog::new(&q)
            .append(&Record::new("y", "decision", "ada", 1))
            .unwrap();
        let v = verify(&std::fs::read_to_string(&q).unwrap());
        assert_eq!((v.unchained, v.breaks.len()), (1, 0), "{v:?}");
        // An unchained line after the chain started is a break.
        let v = verify(&format!("{}{old}\n", std::fs::read_to_string(&q).unwrap()));
        assert_eq!(v.breaks[0].line, 3, "{v:?}");
    }
}
