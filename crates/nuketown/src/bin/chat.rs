//! `nuketown-chat AGENT --town TOWN`: an agent's Matrix bridge, alone in its
//! binary. `nuketown chat AGENT` runs it when it sits beside `nuketown`
//! (they are built and installed together): the bridge's process then maps
//! only the bridge's code, not every subcommand's — most of a bridge's
//! resident memory is its binary's code pages (docs/benchmarks.md).
//!
//! `nuketown-chat AGENT --pod`: the same bridge as a cloud agent's pod runs
//! it (docs/cloud.md): its declaration from the ConfigMap the render wrote,
//! its Matrix password from the agent's secrets, as the pod's user.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;

/// Run AGENT's Matrix bridge (see `nuketown chat --help`).
#[derive(Debug, Parser)]
#[command(name = "nuketown-chat", version)]
struct Args {
    /// The agent.
    agent: String,
    /// The town file (TOML or JSON).
    #[arg(
        long,
        env = "NUKETOWN_TOWN",
        required_unless_present = "pod",
        conflicts_with = "pod"
    )]
    town: Option<PathBuf>,
    /// The town hall's ask socket, where the bridge follows the agent's own escalations.
    #[arg(long, env = "NUKETOWN_ASK_SOCKET", default_value = nuketown_hall::ASK_SOCKET)]
    ask_socket: PathBuf,
    /// Run as a cloud agent's pod does: the declaration from
    /// `$NUKETOWN_IDENTITY/chat.json`, the password from `$NUKETOWN_KEYS`.
    #[arg(long)]
    pod: bool,
}

fn run(args: Args) -> anyhow::Result<()> {
    let cfg = match &args.town {
        Some(path) => {
            let town = nuketown_town::load(path)?;
            let mut cfg = nuketown_chat::BridgeConfig::from_town(&town, &args.agent)?;
            cfg.ask_socket = Some(args.ask_socket);
            nuketown_chat::bridge::become_agent(&args.agent)?;
            cfg
        }
        None => {
            if nix::unistd::geteuid().is_root() {
                bail!("--pod runs as the agent (the pod's runAsUser), never as root: it starts the backend as itself");
            }
            let dir = |var: &str, default: &str| {
                std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
            };
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .context("HOME is not set (the render sets it to the agent's home)")?;
            nuketown_chat::BridgeConfig::in_pod(
                &args.agent,
                &dir("NUKETOWN_IDENTITY", "/run/nuketown/identity"),
                &dir("NUKETOWN_KEYS", "/run/nuketown/keys"),
                &home,
            )?
        }
    };
    // One thread: the bridge waits on the network and its backends (benchmarks.md).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(nuketown_chat::bridge::run(cfg))
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NUKETOWN_LOG")
                .unwrap_or_else(|_| nuketown_chat::bridge::DEFAULT_LOG.into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nuketown-chat: {e:#}");
            ExitCode::FAILURE
        }
    }
}
