//! `nuketown`: the command line. Thin: one module per subcommand under
//! `cmd/`, the work done by the library crates.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// AI agents as real Unix users on real machines.
///
/// A town declares one human and its agents; `nuketown apply` makes each agent
/// a Unix user with a private home, its own keys and tools, only the devices
/// declared for it, and root only through a human's yes for one exact command.
#[derive(Debug, Parser)]
#[command(name = "nuketown", version, propagate_version = true)]
struct Cli {
    /// The town file (TOML or JSON). Defaults to /etc/nuketown/town.json, then /etc/nuketown/town.toml.
    #[arg(long, global = true, env = "NUKETOWN_TOWN", value_name = "TOWN")]
    town: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Apply(cmd::apply::Args),
    Plan(cmd::plan::Args),
    Status(cmd::status::Args),
    Reset(cmd::reset::Args),
    Devices(cmd::devices::Args),
    Portal(cmd::portal::Args),
    Render(cmd::render::Args),
    Chat(cmd::chat::Args),
    Rooms(cmd::rooms::Args),
    Rebuild(cmd::rebuild::Args),
    Hall(cmd::hall::Args),
    Approvals(cmd::approvals::Args),
    Audit(cmd::audit::Args),
    Keys(cmd::keys::Args),
    Ask(cmd::ask::Args),
    Mcp(cmd::mcp::Args),
    Gateway(cmd::gateway::Args),
    Run(cmd::run::Args),
    Cloud(cmd::cloud::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // NUKETOWN_LOG (tracing's filter syntax) overrides. Daemons say what they
    // do (info); matrix-sdk's complaints about normal conditions (no account
    // data yet, no key backup) are not errors of ours.
    let default = match cli.command {
        #[cfg(feature = "chat")]
        Command::Chat(_) | Command::Rooms(_) => nuketown_chat::bridge::DEFAULT_LOG,
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NUKETOWN_LOG")
                .unwrap_or_else(|_| default.into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    #[cfg(feature = "cloud")]
    nuketown_operator::tls_provider();
    let town = cli.town.as_deref();
    let result = match cli.command {
        Command::Apply(args) => cmd::apply::run(town, args),
        Command::Plan(args) => cmd::plan::run(town, args),
        Command::Status(args) => cmd::status::run(town, args),
        Command::Reset(args) => cmd::reset::run(town, args),
        Command::Devices(args) => cmd::devices::run(town, args),
        Command::Portal(args) => cmd::portal::run(town, args),
        Command::Render(args) => cmd::render::run(town, args),
        Command::Chat(args) => cmd::chat::run(town, args),
        Command::Rooms(args) => cmd::rooms::run(town, args),
        Command::Rebuild(args) => cmd::rebuild::run(town, args),
        Command::Hall(args) => cmd::hall::run(town, args),
        Command::Approvals(args) => cmd::approvals::run(town, args),
        Command::Audit(args) => cmd::audit::run(town, args),
        Command::Keys(args) => cmd::keys::run(town, args),
        Command::Ask(args) => cmd::ask::run(args),
        Command::Mcp(args) => cmd::mcp::run(args),
        Command::Gateway(args) => cmd::gateway::run(args),
        Command::Run(args) => cmd::run::run(town, args),
        Command::Cloud(args) => cmd::cloud::run(town, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nuketown: {e:#}");
            ExitCode::FAILURE
        }
    }
}
