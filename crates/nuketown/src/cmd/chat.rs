//! `nuketown chat AGENT`: the agent's Matrix bridge, run as the agent.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};

/// Run AGENT's Matrix bridge: log in as its Matrix account (the device is kept
/// in its persist dir, so it survives rounds), accept invites from its declared
/// humans only, and answer their messages by running its backend in its
/// project directory. Runs as the agent; started as root it switches to the
/// agent first (the systemd unit `nuketown-chat@AGENT` runs it as the agent).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent.
    agent: String,
    /// The town hall's ask socket: the bridge follows the agent's own
    /// escalations there, to show them in chat.
    #[arg(long, env = "NUKETOWN_ASK_SOCKET", default_value = nuketown_hall::ASK_SOCKET)]
    ask_socket: std::path::PathBuf,
}

/// Run the bridge.
pub fn run(global: Option<&Path>, args: Args) -> Result<ExitCode> {
    let town = super::load_town(None, global)?;
    #[cfg(not(feature = "chat"))]
    {
        let _ = (town, args);
        bail!(super::without_feature("chat", "the Matrix bridge"))
    }
    #[cfg(feature = "chat")]
    {
        // The bridge alone, when built beside this binary: a process with
        // only the bridge's code maps far less of it (see benchmarks.md).
        let lean = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("nuketown-chat")))
            .filter(|p| p.is_file());
        if let Some(lean) = lean {
            use std::os::unix::process::CommandExt;
            let path = super::town_path(None, global)?;
            let e = std::process::Command::new(&lean)
                .arg(&args.agent)
                .arg("--town")
                .arg(&path)
                .arg("--ask-socket")
                .arg(&args.ask_socket)
                .exec();
            bail!("cannot run {}: {e}", lean.display());
        }
        let mut cfg = nuketown_chat::BridgeConfig::from_town(&town, &args.agent)?;
        cfg.ask_socket = Some(args.ask_socket);
        nuketown_chat::bridge::become_agent(&args.agent)?;
        // One thread: the bridge waits on the network and its backends, and
        // each worker thread costs memory of its own (benchmarks.md).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(nuketown_chat::bridge::run(cfg))?;
        Ok(ExitCode::SUCCESS)
    }
}
