//! `nuketown apply [TOWN]`: make the host match the town.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use nuketown_host::HostPaths;

/// Make the host match the town: users, homes, persist binds, identity files,
/// keys, udev rules, sudoers. Safe to run again: a second run changes nothing.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The town file (TOML or JSON).
    #[arg(value_name = "TOWN")]
    town: Option<PathBuf>,
    /// Also remove agents that are no longer in the town (user and home; persist dir kept).
    #[arg(long)]
    prune: bool,
    /// With --prune, delete the removed agents' persist dirs too.
    #[arg(long, requires = "prune")]
    purge: bool,
}

/// Apply the town.
pub fn run(global: Option<&Path>, args: Args) -> Result<ExitCode> {
    let town = super::load_town(args.town.as_deref(), global)?;
    let paths = HostPaths::from_env();
    let opts = super::options(&town, &paths, args.prune, args.purge);
    let mut n = 0;
    let plan = nuketown_host::apply_town(&town, &paths, &opts, |c| {
        n += 1;
        println!("{c}");
    })?;
    for note in &plan.notes {
        println!("note: {note}");
    }
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    if n == 0 {
        println!("nothing to change: the host matches the town");
    } else {
        println!("applied {n} change{}", if n == 1 { "" } else { "s" });
    }
    Ok(ExitCode::SUCCESS)
}
