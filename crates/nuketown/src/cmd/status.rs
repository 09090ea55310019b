//! `nuketown status [--json]`: the town as it is on this host.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

/// List humans, agents, uids, homes, persisted paths, keys and devices as found on this host.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Print the status.
pub fn run(global: Option<&Path>, args: Args) -> Result<ExitCode> {
    let town = super::load_town(None, global)?;
    let status = nuketown_host::status(&town);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{status}");
    }
    Ok(ExitCode::SUCCESS)
}
