//! `nuketown-chat AGENT --town TOWN`: an agent's Matrix bridge, alone in its
//! binary. `nuketown chat AGENT` runs it when it sits beside `nuketown`
//! (they are built and installed together): the bridge's process then maps
//! only the bridge's code, not every subcommand's — most of a bridge's
//! resident memory is its binary's code pages (docs/benchmarks.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Run AGENT's Matrix bridge (see `nuketown chat --help`).
#[derive(Debug, Parser)]
#[command(name = "nuketown-chat", version)]
struct Args {
    /// The agent.
    agent: String,
    /// The town file (TOML or JSON).
    #[arg(long, env = "NUKETOWN_TOWN")]
    town: PathBuf,
    /// The town hall's ask socket, where the bridge follows the agent's own escalations.
    #[arg(long, env = "NUKETOWN_ASK_SOCKET", default_value = nuketown_hall::ASK_SOCKET)]
    ask_socket: PathBuf,
}

fn run(args: Args) -> anyhow::Result<()> {
    let town = nuketown_town::load(&args.town)?;
    let mut cfg = nuketown_chat::BridgeConfig::from_town(&town, &args.agent)?;
    cfg.ask_socket = args.ask_socket;
    nuketown_chat::bridge::become_agent(&args.agent)?;
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
