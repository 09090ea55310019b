//! The `nuketown gateway` subcommand's body: the town hall (root) spawns the
//! gateway as its own unprivileged user, hands it the config on stdin and
//! reads events from stdout, one JSON line each way.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::error::GatewayError;
use crate::server::Gateway;

/// A message from the town hall after the first (config) line.
#[derive(Deserialize, Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub enum Control {
    /// Replace agents, credentials and limits.
    Update(Box<Config>),
    /// Raise one credential's limits (a human said yes).
    GrantMore(Grant),
    /// Ask for usage; answered with one `{"usage":[...]}` line.
    Usage(Option<()>),
}

/// More allowance for one agent's credential, until the day window passes.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    /// The agent's name.
    pub agent: String,
    /// The credential's name.
    pub credential: String,
    /// Extra requests per hour and per day.
    #[serde(default)]
    pub requests: u64,
    /// Extra tokens per hour and per day.
    #[serde(default)]
    pub tokens: u64,
}

/// Hardens the process, reads the config line, serves, and writes events;
/// returns when stdin closes.
pub async fn serve_stdio() -> Result<(), GatewayError> {
    harden()?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = lines
        .next_line()
        .await
        .map_err(|e| GatewayError::io("cannot read the config from stdin", e))?
        .ok_or_else(|| GatewayError::Config("stdin closed before the config line".into()))?;
    let config: Config = serde_json::from_str(&first)
        .map_err(|e| GatewayError::Config(format!("the first stdin line is not a config: {e}")))?;
    let (gateway, mut events) = Gateway::start(config).await?;

    let (out, mut outgoing) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = outgoing.recv().await {
            if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let event_out = out.clone();
    let forward = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let Ok(json) = serde_json::to_string(&event) {
                if event_out.send(json + "\n").is_err() {
                    break;
                }
            }
        }
    });

    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => return Err(GatewayError::io("cannot read stdin", e)),
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Control>(&line) {
            Ok(Control::Update(config)) => gateway.update(*config),
            Ok(Control::GrantMore(g)) => {
                gateway.grant_more(&g.agent, &g.credential, g.requests, g.tokens)
            }
            Ok(Control::Usage(_)) => {
                let answer = serde_json::json!({ "usage": gateway.usage() });
                let _ = out.send(answer.to_string() + "\n");
            }
            Err(e) => tracing::warn!("ignoring a control line that does not parse: {e}"),
        }
    }
    gateway.shutdown().await;
    forward.abort();
    drop(out);
    let _ = writer.await;
    Ok(())
}

/// No privilege gain through exec, no core dumps or ptrace by the same uid,
/// files private by default.
fn harden() -> Result<(), GatewayError> {
    rustix::thread::set_no_new_privs(true)
        .map_err(|e| GatewayError::io("cannot set no_new_privs", e.into()))?;
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| GatewayError::io("cannot make the process undumpable", e.into()))?;
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines() {
        let c: Control = serde_json::from_str(r#"{"usage":null}"#).unwrap();
        assert!(matches!(c, Control::Usage(None)));
        let c: Control = serde_json::from_str(
            r#"{"grantMore":{"agent":"ada","credential":"anthropic","requests":5,"tokens":1000}}"#,
        )
        .unwrap();
        let Control::GrantMore(g) = c else { panic!() };
        assert_eq!((g.requests, g.tokens), (5, 1000));
        let c: Control =
            serde_json::from_str(r#"{"update":{"listen":"127.0.0.1:1","agents":{}}}"#).unwrap();
        assert!(matches!(c, Control::Update(_)));
        assert!(serde_json::from_str::<Control>(r#"{"bogus":1}"#).is_err());
    }
}
