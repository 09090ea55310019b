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
    /// Environment the town sets for the CLI (its tools wait for humans).
    pub env: Vec<(String, String)>,
}

/// The reply, and the backend session to resume next time (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Text to post.
    pub text: String,
    /// Session id to resume in this room next time.
    pub session: Option<String>,
}

/// The town hall beside the CLI: how its permission prompts reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HallLink {
    /// The `nuketown` binary (`nuketown mcp` is the permission-prompt tool).
    pub nuketown: PathBuf,
    /// How long a human may take to decide (the agent's `sudo.timeout`):
    /// the CLI's tools wait at least that long for the hall.
    pub wait: Duration,
    /// The `sudo` shim's directory, first on the CLI's PATH when the agent
    /// may ask for root (its `sudo` becomes a request to the hall).
    pub shim: Option<PathBuf>,
    /// The agent's key socket (`SSH_AUTH_SOCK`): ssh, git push and git
    /// signing through the town's key.
    pub key_socket: PathBuf,
    /// The hall's ask socket, where `nuketown mcp` asks.
    pub ask_socket: PathBuf,
    /// What points the CLI at the town's credential gateway (base URLs,
    /// placeholder keys, proxy, CA: `Town::gateway_env`); empty without
    /// credentials. The keys themselves never reach the CLI.
    pub gateway: Vec<(String, String)>,
    /// Where the hall publishes the agent's use of its credentials
    /// (`!resources` reads it); none without credentials.
    pub usage: Option<PathBuf>,
}

impl HallLink {
    /// The link for agent `name` of `town`, with `nuketown` as the
    /// permission-prompt tool. The shim is on the PATH only when it is
    /// there and the agent has sudo.
    pub fn for_agent(
        town: &nuketown_town::Town,
        name: &str,
        nuketown: PathBuf,
    ) -> Option<HallLink> {
        let agent = town.agents.get(name)?;
        let shim = town.hall.shim_dir();
        Some(HallLink {
            nuketown,
            wait: Duration::from_secs(agent.sudo.timeout),
            shim: (agent.sudo.enable && shim.is_dir()).then_some(shim),
            key_socket: nuketown_keys::agent::socket_path(
                &std::env::var_os("NUKETOWN_SSH_AGENT_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| nuketown_keys::agent::SOCKET_DIR.into()),
                name,
            ),
            ask_socket: std::env::var_os("NUKETOWN_ASK_SOCKET")
                .map(PathBuf::from)
                .unwrap_or_else(|| nuketown_hall::ASK_SOCKET.into()),
            gateway: town.gateway_env(name),
            usage: town.has_credentials().then(|| {
                town.hall
                    .gateway
                    .run_dir
                    .join(nuketown_town::credentials::USAGE)
                    .join(format!("{name}.json"))
            }),
        })
    }

    /// What the town sets in the CLI's environment: its key socket, its
    /// name, and the shim first on its PATH (after the PATH it was given).
    fn env(&self, agent_path: Option<&std::ffi::OsStr>) -> Vec<(String, String)> {
        let mut env = vec![(
            "SSH_AUTH_SOCK".to_string(),
            self.key_socket.display().to_string(),
        )];
        if let Some(shim) = &self.shim {
            let rest = agent_path
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
            let shim = shim.display().to_string();
            let path = if rest.split(':').next() == Some(shim.as_str()) {
                rest
            } else {
                format!("{shim}:{rest}")
            };
            env.push(("PATH".to_string(), path));
        }
        env.extend(self.gateway.iter().cloned());
        env
    }
}

/// The tools Claude Code uses unasked with `permissions = "own-tree"`:
/// its shell, reads and edits — all as the agent's own user, which is
/// what confines it (its `sudo` asks the town hall).
pub const OWN_TREE_TOOLS: &str =
    "Bash,Edit,MultiEdit,Write,NotebookEdit,Read,Glob,Grep,LS,TodoWrite";

/// How many of aider's confirmations one turn answers.
const AIDER_ANSWERS: usize = 64;

/// The permission-prompt tool Claude Code is pointed at.
pub const PROMPT_TOOL: &str = "mcp__nuketown__approve";

fn s(x: &str) -> String {
    x.to_string()
}

fn claude_argv(
    backend: &ChatBackend,
    session: Option<&str>,
    hall: Option<&HallLink>,
) -> Vec<String> {
    let mut a = vec![
        s("claude"),
        s("-p"),
        s("--output-format"),
        s("stream-json"),
        s("--verbose"),
    ];
    let own = backend.permissions != "ask";
    a.extend([
        s("--permission-mode"),
        s(if own { "acceptEdits" } else { "default" }),
    ]);
    if own {
        a.extend([s("--allowedTools"), s(OWN_TREE_TOOLS)]);
    }
    if let Some(h) = hall {
        let config = serde_json::json!({
            "mcpServers": { "nuketown": {
                "type": "stdio",
                "command": h.nuketown,
                "args": ["mcp", "--cli", "claude-code", "--socket", h.ask_socket],
            }}
        });
        a.extend([
            s("--mcp-config"),
            config.to_string(),
            s("--permission-prompt-tool"),
            s(PROMPT_TOOL),
        ]);
    }
    if let Some(id) = session {
        a.extend([s("--resume"), id.to_string()]);
    }
    a
}

/// Build the invocation for `message` in a room whose previous session is
/// `session`, the CLI's prompts going to `hall` when there is one.
pub fn invocation(
    backend: &ChatBackend,
    message: &str,
    session: Option<&str>,
    cwd: &Path,
    hall: Option<&HallLink>,
) -> Invocation {
    let own = backend.permissions != "ask";
    let argv = match backend.kind.as_str() {
        "command" => backend.command.clone(),
        "claude-code" => claude_argv(backend, session, hall),
        "codex" => {
            let mut a = vec![
                s("codex"),
                s("exec"),
                s("--json"),
                s("--skip-git-repo-check"),
            ];
            // codex exec never asks: either the agent's user confines it
            // (own-tree: codex's own sandbox would also stop `sudo`), or
            // codex's workspace sandbox does.
            if own {
                a.push(s("--dangerously-bypass-approvals-and-sandbox"));
            } else {
                a.extend([s("--sandbox"), s("workspace-write")]);
            }
            if let Some(id) = session {
                a.extend([s("resume"), id.to_string()]);
            }
            a.push(s("-"));
            a
        }
        // aider keeps its chat history per directory; --message runs one
        // turn. Its confirmations are read from stdin (below); it sends
        // nothing the turn does not need (no analytics, no update check,
        // no page fetched because a message names a URL).
        _ => vec![
            s("aider"),
            s("--no-pretty"),
            s("--no-stream"),
            s("--no-check-update"),
            s("--analytics-disable"),
            s("--no-show-release-notes"),
            s("--no-detect-urls"),
            s("--message"),
            message.to_string(),
        ],
    };
    let stdin = if backend.kind == "aider" {
        // aider asks before it runs a shell command, even with --yes-always
        // (which answers those no): its answers come on stdin, yes to all
        // with own-tree (what it runs runs as the agent), no with ask.
        if own { "y\n" } else { "n\n" }.repeat(AIDER_ANSWERS)
    } else {
        message.to_string()
    };
    let mut env = hall
        .map(|h| h.env(std::env::var_os("PATH").as_deref()))
        .unwrap_or_default();
    if let (Some(h), "claude-code") = (hall, backend.kind.as_str()) {
        // A tool waits for a human as long as the hall does, and a little more.
        let ms = (h.wait + Duration::from_secs(30)).as_millis().to_string();
        for k in [
            "MCP_TOOL_TIMEOUT",
            "BASH_DEFAULT_TIMEOUT_MS",
            "BASH_MAX_TIMEOUT_MS",
        ] {
            env.push((k.to_string(), ms.clone()));
        }
    }
    Invocation {
        argv,
        stdin,
        cwd: cwd.to_path_buf(),
        env,
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
    for (k, v) in inv
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(env.iter().copied())
    {
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

    fn backend(kind: &str, permissions: &str) -> ChatBackend {
        ChatBackend {
            kind: kind.into(),
            command: vec!["/bin/cat".into()],
            permissions: permissions.into(),
        }
    }

    #[test]
    fn claude_works_in_its_own_tree_and_asks_the_hall_for_the_rest() {
        let hall = HallLink {
            nuketown: "/usr/local/bin/nuketown".into(),
            wait: Duration::from_secs(120),
            shim: Some("/usr/local/libexec/nuketown/bin".into()),
            key_socket: "/run/nuketown/ssh/ada/agent.sock".into(),
            ask_socket: "/run/nuketown/ask.sock".into(),
            gateway: Vec::new(),
            usage: None,
        };
        let inv = invocation(
            &backend("claude-code", "own-tree"),
            "hi",
            Some("s-1"),
            Path::new("/tmp"),
            Some(&hall),
        );
        let a = inv.argv.join(" ");
        assert!(a.starts_with("claude -p --output-format stream-json --verbose --permission-mode acceptEdits --allowedTools Bash,"), "{a}");
        assert!(
            a.contains("--permission-prompt-tool mcp__nuketown__approve"),
            "{a}"
        );
        assert!(a.ends_with("--resume s-1"), "{a}");
        let config: serde_json::Value = serde_json::from_str(
            &inv.argv[inv.argv.iter().position(|x| x == "--mcp-config").unwrap() + 1],
        )
        .unwrap();
        assert_eq!(
            config["mcpServers"]["nuketown"]["command"],
            "/usr/local/bin/nuketown"
        );
        assert_eq!(
            config["mcpServers"]["nuketown"]["args"],
            serde_json::json!([
                "mcp",
                "--cli",
                "claude-code",
                "--socket",
                "/run/nuketown/ask.sock"
            ])
        );
        assert!(inv
            .env
            .contains(&("MCP_TOOL_TIMEOUT".into(), "150000".into())));
        assert!(inv.env.contains(&(
            "SSH_AUTH_SOCK".into(),
            "/run/nuketown/ssh/ada/agent.sock".into()
        )));
        let path = &inv.env.iter().find(|(k, _)| k == "PATH").unwrap().1;
        assert!(
            path.starts_with("/usr/local/libexec/nuketown/bin:"),
            "sudo is the shim first: {path}"
        );
        assert_eq!(inv.stdin, "hi");
        // ask: nothing unasked, every prompt to the hall.
        let inv = invocation(
            &backend("claude-code", "ask"),
            "hi",
            None,
            Path::new("/tmp"),
            Some(&hall),
        );
        let a = inv.argv.join(" ");
        assert!(
            a.contains("--permission-mode default") && !a.contains("--allowedTools"),
            "{a}"
        );
        // No hall beside (a pod): no prompt tool.
        let inv = invocation(
            &backend("claude-code", "own-tree"),
            "hi",
            None,
            Path::new("/tmp"),
            None,
        );
        assert!(!inv.argv.join(" ").contains("mcp"), "{:?}", inv.argv);
    }

    #[test]
    fn codex_and_aider_never_dead_end_on_a_prompt() {
        let inv = invocation(
            &backend("codex", "own-tree"),
            "hi",
            Some("t-1"),
            Path::new("/tmp"),
            None,
        );
        assert_eq!(
            inv.argv,
            [
                "codex",
                "exec",
                "--json",
                "--skip-git-repo-check",
                "--dangerously-bypass-approvals-and-sandbox",
                "resume",
                "t-1",
                "-"
            ]
        );
        let inv = invocation(
            &backend("codex", "ask"),
            "hi",
            None,
            Path::new("/tmp"),
            None,
        );
        assert!(inv.argv.join(" ").contains("--sandbox workspace-write"));
        let inv = invocation(
            &backend("aider", "own-tree"),
            "fix it",
            None,
            Path::new("/tmp"),
            None,
        );
        assert_eq!(inv.argv[0], "aider");
        assert_eq!(inv.argv.last().unwrap(), "fix it");
        assert!(
            inv.stdin.starts_with("y\ny\n"),
            "every confirmation answered yes"
        );
        let inv = invocation(
            &backend("aider", "ask"),
            "fix it",
            None,
            Path::new("/tmp"),
            None,
        );
        assert!(
            inv.stdin.starts_with("n\nn\n"),
            "every confirmation answered no"
        );
    }

    #[test]
    fn command_backend_gets_the_message_on_stdin() {
        let b = backend("command", "own-tree");
        let inv = invocation(&b, "hi; $(x)", None, Path::new("/tmp"), None);
        assert_eq!(inv.argv, ["/bin/cat"]);
        assert_eq!(inv.stdin, "hi; $(x)");
    }
}
