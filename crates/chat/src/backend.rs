//! The program behind an agent's chat account. Each message from an allowed
//! human runs it once, as the agent, in the agent's project directory; the
//! conversation continues per room (the backend's session id is kept).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use std::collections::VecDeque;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::Notify;

use nuketown_town::ChatBackend;

/// Why a backend produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The program could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The program exited unsuccessfully.
    #[error("{program} exited with {status}: {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// A human stopped the turn (`!stop`).
    #[error("{program} was stopped")]
    Cancelled {
        /// The program.
        program: String,
    },
    /// The program ran longer than allowed.
    #[error("{program} did not answer within {0:?}; stopped it", .timeout)]
    Timeout {
        /// The program.
        program: String,
        /// The limit.
        timeout: Duration,
    },
}

/// One invocation: what to run, where, with what on stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Text for stdin.
    pub stdin: String,
    /// Working directory.
    pub cwd: PathBuf,
}

/// The reply, and the backend session to resume next time (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Text to post.
    pub text: String,
    /// Session id to resume in this room next time.
    pub session: Option<String>,
}

/// Build the invocation for `message` in a room whose previous session is `session`.
pub fn invocation(
    backend: &ChatBackend,
    message: &str,
    session: Option<&str>,
    cwd: &Path,
) -> Invocation {
    let s = |x: &str| x.to_string();
    let argv = match backend.kind.as_str() {
        "command" => backend.command.clone(),
        "claude-code" => {
            let mut a = vec![
                s("claude"),
                s("-p"),
                s("--output-format"),
                s("stream-json"),
                s("--verbose"),
            ];
            if let Some(id) = session {
                a.extend([s("--resume"), id.to_string()]);
            }
            a
        }
        "codex" => {
            let mut a = vec![
                s("codex"),
                s("exec"),
                s("--json"),
                s("--skip-git-repo-check"),
            ];
            if let Some(id) = session {
                a.extend([s("resume"), id.to_string()]);
            }
            a.push(s("-"));
            a
        }
        // aider keeps its chat history per directory; --message runs one turn.
        _ => vec![
            s("aider"),
            s("--yes-always"),
            s("--no-pretty"),
            s("--no-stream"),
            s("--message"),
            message.to_string(),
        ],
    };
    let stdin = if backend.kind == "aider" {
        String::new()
    } else {
        message.to_string()
    };
    Invocation {
        argv,
        stdin,
        cwd: cwd.to_path_buf(),
    }
}

#[derive(Deserialize)]
struct StreamLine {
    #[serde(rename = "type")]
    kind: Option<String>,
    result: Option<String>,
    session_id: Option<String>,
    thread_id: Option<String>,
    msg: Option<serde_json::Value>,
    item: Option<serde_json::Value>,
}

/// Read the backend's output into a reply.
pub fn parse_output(kind: &str, stdout: &str) -> Reply {
    match kind {
        "claude-code" => {
            let mut reply = Reply {
                text: String::new(),
                session: None,
            };
            for line in stdout.lines() {
                let Ok(l) = serde_json::from_str::<StreamLine>(line) else {
                    continue;
                };
                if let Some(id) = l.session_id {
                    reply.session = Some(id);
                }
                if l.kind.as_deref() == Some("result") {
                    reply.text = l.result.unwrap_or_default();
                }
            }
            reply
        }
        "codex" => {
            let mut reply = Reply {
                text: String::new(),
                session: None,
            };
            for line in stdout.lines() {
                let Ok(l) = serde_json::from_str::<StreamLine>(line) else {
                    continue;
                };
                if let Some(id) = l.thread_id.or(l.session_id) {
                    reply.session = Some(id);
                }
                let text = l
                    .item
                    .as_ref()
                    .filter(|i| i["type"] == "agent_message")
                    .and_then(|i| i["text"].as_str())
                    .or_else(|| {
                        l.msg
                            .as_ref()
                            .filter(|m| m["type"] == "agent_message")
                            .and_then(|m| m["message"].as_str())
                    });
                if let Some(t) = text {
                    reply.text = t.to_string();
                }
            }
            reply
        }
        _ => Reply {
            text: stdout.trim_end().to_string(),
            session: None,
        },
    }
}

/// Run the backend once; the reply, or why there is none. The program runs
/// in a process group of its own: a timeout or `cancel` ends the whole
/// group (the tools it started too). Its stderr is the agent's word: only
/// its tail is kept, for the error message (escalations are heard from the
/// hall, never from here).
pub async fn run(
    backend: &ChatBackend,
    inv: &Invocation,
    env: &[(&str, &str)],
    timeout: Duration,
    cancel: &Notify,
) -> Result<Reply, BackendError> {
    let program = inv.argv.first().cloned().unwrap_or_default();
    let mut cmd = Command::new(&program);
    cmd.args(&inv.argv[1..])
        .current_dir(&inv.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|source| BackendError::Spawn {
        program: program.clone(),
        source,
    })?;
    let group = child.id().map(|p| Pid::from_raw(p as i32));
    let mut stdin = child.stdin.take().expect("piped");
    let text = inv.stdin.clone();
    let feed = tokio::spawn(async move {
        let _ = stdin.write_all(text.as_bytes()).await;
    });
    let mut stdout = child.stdout.take().expect("piped");
    let read_out = tokio::spawn(async move {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b).await;
        b
    });
    let stderr = child.stderr.take().expect("piped");
    let read_err = tokio::spawn(async move {
        let mut tail: VecDeque<String> = VecDeque::new();
        let mut r = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = r.next_line().await {
            tail.push_back(line);
            if tail.len() > 20 {
                tail.pop_front();
            }
        }
        Vec::from(tail).join("\n")
    });
    let kill_group = || {
        if let Some(g) = group {
            let _ = killpg(g, Signal::SIGKILL);
        }
    };
    let status = tokio::select! {
        r = child.wait() => r.map_err(|source| BackendError::Spawn { program: program.clone(), source })?,
        _ = tokio::time::sleep(timeout) => {
            kill_group();
            return Err(BackendError::Timeout { program, timeout });
        }
        _ = cancel.notified() => {
            kill_group();
            return Err(BackendError::Cancelled { program });
        }
    };
    let _ = feed.await;
    let out = read_out.await.unwrap_or_default();
    let err = read_err.await.unwrap_or_default();
    if !status.success() {
        return Err(BackendError::Failed {
            program,
            status: status.to_string(),
            stderr: err,
        });
    }
    Ok(parse_output(&backend.kind, &String::from_utf8_lossy(&out)))
}

/// Split `text` into messages of at most `max` bytes, on line boundaries where possible.
pub fn chunks(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.split_inclusive('\n') {
        let mut line = line;
        while !line.is_empty() {
            if cur.len() + line.len() <= max {
                cur.push_str(line);
                break;
            }
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            // A single line longer than max: cut at a char boundary.
            let mut cut = max.min(line.len());
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push(line[..cut].to_string());
            line = &line[cut..];
        }
    }
    if !cur.is_empty() || out.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_keep_lines_and_bound_size() {
        let text = "a\n".repeat(10);
        let c = chunks(&text, 6);
        assert!(c.iter().all(|x| x.len() <= 6));
        assert_eq!(c.concat(), text);
        let long = "é".repeat(10);
        let c = chunks(&long, 5);
        assert!(c.iter().all(|x| x.len() <= 5));
        assert_eq!(c.concat(), long);
        assert_eq!(chunks("", 10), vec![String::new()]);
    }

    #[test]
    fn claude_stream_json_gives_text_and_session() {
        let out = r#"{"type":"system","subtype":"init","session_id":"s-1"}
{"type":"assistant","message":{}}
{"type":"result","subtype":"success","result":"hello","session_id":"s-1"}"#;
        assert_eq!(
            parse_output("claude-code", out),
            Reply {
                text: "hello".into(),
                session: Some("s-1".into())
            }
        );
    }

    #[test]
    fn claude_resumes_the_room_session() {
        let b = ChatBackend {
            kind: "claude-code".into(),
            command: vec![],
        };
        let inv = invocation(&b, "hi", Some("s-1"), Path::new("/tmp"));
        assert_eq!(
            inv.argv,
            [
                "claude",
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--resume",
                "s-1"
            ]
        );
        assert_eq!(inv.stdin, "hi");
    }

    #[test]
    fn command_backend_gets_the_message_on_stdin() {
        let b = ChatBackend {
            kind: "command".into(),
            command: vec!["/bin/cat".into()],
        };
        let inv = invocation(&b, "hi; $(x)", None, Path::new("/tmp"));
        assert_eq!(inv.argv, ["/bin/cat"]);
        assert_eq!(inv.stdin, "hi; $(x)");
    }
}
