//! `nuketown reset AGENT|--all`: a new round, now, without a reboot.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use nuketown_host::HostPaths;

/// Level an agent's home and lay it down again from the declaration: stop its
/// processes and services, unmount its persisted paths, delete the home (a
/// btrfs subvolume when agentsDir is on btrfs), recreate it with identity
/// files, keys and git config, re-bind the persisted paths, restart services.
/// Persisted data is never touched.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent to reset.
    #[arg(
        value_name = "AGENT",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    agent: Option<String>,
    /// Reset every enabled agent (what the boot-time unit runs).
    #[arg(long)]
    all: bool,
}

/// Reset one agent or all.
pub fn run(global: Option<&Path>, args: Args) -> Result<ExitCode> {
    let town = super::load_town(None, global)?;
    let paths = HostPaths::from_env();
    match (&args.agent, args.all) {
        (Some(a), _) => nuketown_host::round::reset(&town, a, &paths, |line| println!("{line}"))?,
        (None, true) => nuketown_host::round::reset_all(&town, &paths, |line| println!("{line}"))?,
        (None, false) => bail!("name an agent or pass --all"),
    }
    Ok(ExitCode::SUCCESS)
}
