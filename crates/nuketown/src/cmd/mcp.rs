//! `nuketown mcp`: the town hall as an agent CLI's permission-prompt tool.
//!
//! A Model Context Protocol server on stdio (JSON-RPC 2.0, one message a
//! line) with one tool, `approve`. Claude Code, run by the town with
//! `--permission-prompt-tool mcp__nuketown__approve`, calls it whenever its
//! permission mode does not let it use a tool unasked; the call becomes a
//! hall request (`tool`) on the ask socket — as the agent, whom the hall
//! knows by `SO_PEERCRED` — shown on every approver channel with the tool
//! and its exact input, decided by a human (or the mock file) and audited.
//! The answer is Claude Code's: `{"behavior":"allow","updatedInput":…}` or
//! `{"behavior":"deny","message":…}`. Any failure is a denial.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use nuketown_hall::protocol::{self, FromAsker, VERSION};
use serde_json::{json, Value};

/// Serve the permission-prompt tool on stdin/stdout for an agent's CLI.
///
/// Run by the CLI (as the agent), never by hand: the town writes the MCP
/// configuration that starts it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The CLI this serves, as approvers see it.
    #[arg(long, default_value = "claude-code")]
    cli: String,
    /// The town hall's ask socket.
    #[arg(long, env = "NUKETOWN_ASK_SOCKET", default_value = nuketown_hall::ASK_SOCKET)]
    socket: PathBuf,
}

/// The MCP protocol revision answered when the client names none.
const PROTOCOL: &str = "2025-06-18";

fn tools() -> Value {
    json!({
        "tools": [{
            "name": "approve",
            "description": "Ask the town hall whether the agent's CLI may use a tool: a human decides on any approver channel (terminal, desktop, Matrix); every decision is audited.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "tool_name": { "type": "string", "description": "The tool the CLI wants to use." },
                    "input": { "type": "object", "description": "The tool's input." },
                    "tool_use_id": { "type": "string" }
                },
                "required": ["tool_name", "input"]
            }
        }]
    })
}

/// The permission decision for `arguments`, as Claude Code reads it.
fn decide(cli: &str, socket: &std::path::Path, arguments: &Value) -> Value {
    let deny = |message: String| json!({ "behavior": "deny", "message": message });
    let Some(tool) = arguments["tool_name"].as_str() else {
        return deny("the permission request names no tool_name; denied".into());
    };
    let input = arguments.get("input").cloned().unwrap_or(json!({}));
    let text = input.to_string();
    if text.len() > protocol::MAX_TOOL_INPUT {
        return deny(format!(
            "the input of {tool} is longer than the town hall shows ({} bytes); denied",
            protocol::MAX_TOOL_INPUT
        ));
    }
    let msg = FromAsker::Tool {
        v: VERSION,
        cli: cli.to_string(),
        tool: tool.to_string(),
        input: text,
    };
    match nuketown_hall::client::ask(socket, &msg, |id, secs| {
        eprintln!(
            "nuketown: {tool}: request {} is waiting for a human (up to {secs} s)…",
            id.get(..8).unwrap_or(id)
        );
    }) {
        Ok(a) if a.approved => json!({ "behavior": "allow", "updatedInput": input }),
        Ok(a) => deny(format!(
            "denied by the town hall: {} (request {}); do not retry it or look for another way around",
            a.reason,
            a.id.get(..8).unwrap_or(&a.id)
        )),
        Err(e) => deny(format!("the town hall gave no decision ({e}); denied")),
    }
}

/// The answer to one JSON-RPC request; `None` for a notification.
fn answer(cli: &str, socket: &std::path::Path, m: &Value) -> Option<Value> {
    let id = m.get("id")?.clone();
    let method = m["method"].as_str().unwrap_or("");
    let result = match method {
        "initialize" => json!({
            "protocolVersion": m["params"]["protocolVersion"].as_str().unwrap_or(PROTOCOL),
            "capabilities": { "tools": {} },
            "serverInfo": { "name": "nuketown", "version": env!("CARGO_PKG_VERSION") }
        }),
        "ping" => json!({}),
        "tools/list" => tools(),
        "tools/call" if m["params"]["name"] == "approve" => {
            let decision = decide(cli, socket, &m["params"]["arguments"]);
            json!({ "content": [{ "type": "text", "text": decision.to_string() }] })
        }
        "tools/call" => {
            return Some(json!({
                "jsonrpc": "2.0", "id": id,
                "error": { "code": -32602, "message": "the only tool is approve" }
            }))
        }
        _ => {
            return Some(json!({
                "jsonrpc": "2.0", "id": id,
                "error": { "code": -32601, "message": format!("method {method:?} not found") }
            }))
        }
    };
    Some(json!({ "jsonrpc": "2.0", "id": id, "result": result }))
}

/// Serve until stdin ends. A call waits for a human on a thread of its own,
/// so pings and further calls are answered meanwhile.
pub fn run(args: Args) -> Result<ExitCode> {
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let write = |out: &Mutex<std::io::Stdout>, v: &Value| {
        let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(o, "{v}");
        let _ = o.flush();
    };
    let mut calls = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let m: Value = match serde_json::from_str(&line) {
            Ok(m) => m,
            Err(e) => {
                write(
                    &out,
                    &json!({ "jsonrpc": "2.0", "id": null, "error": { "code": -32700, "message": e.to_string() } }),
                );
                continue;
            }
        };
        let (cli, socket, out) = (args.cli.clone(), args.socket.clone(), out.clone());
        if m["method"] == "tools/call" {
            calls.push(std::thread::spawn(move || {
                if let Some(a) = answer(&cli, &socket, &m) {
                    write(&out, &a);
                }
            }));
        } else if let Some(a) = answer(&cli, &socket, &m) {
            write(&out, &a);
        }
    }
    for c in calls {
        let _ = c.join();
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_speaks_enough_mcp_and_denies_without_a_hall() {
        let nowhere = std::path::Path::new("/nonexistent/ask.sock");
        let init = answer(
            "claude-code",
            nowhere,
            &json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26"}}),
        )
        .unwrap();
        assert_eq!(init["result"]["protocolVersion"], "2025-03-26");
        assert!(answer(
            "c",
            nowhere,
            &json!({"jsonrpc":"2.0","method":"notifications/initialized"})
        )
        .is_none());
        let list = answer(
            "c",
            nowhere,
            &json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}),
        )
        .unwrap();
        assert_eq!(list["result"]["tools"][0]["name"], "approve");
        let call = answer(
            "c",
            nowhere,
            &json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"approve","arguments":{"tool_name":"Bash","input":{"command":"touch x"}}}}),
        )
        .unwrap();
        let text = call["result"]["content"][0]["text"].as_str().unwrap();
        let d: Value = serde_json::from_str(text).unwrap();
        assert_eq!(d["behavior"], "deny");
        assert!(
            d["message"].as_str().unwrap().contains("no decision"),
            "{d}"
        );
        let unknown = answer(
            "c",
            nowhere,
            &json!({"jsonrpc":"2.0","id":4,"method":"resources/list"}),
        )
        .unwrap();
        assert_eq!(unknown["error"]["code"], -32601);
    }
}
