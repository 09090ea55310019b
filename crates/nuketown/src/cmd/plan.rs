//! `nuketown plan [TOWN]`: what apply would change, changing nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use nuketown_host::HostPaths;

/// Show what `apply` would change (users, files, mounts) without changing anything.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The town file (TOML or JSON).
    #[arg(value_name = "TOWN")]
    town: Option<PathBuf>,
    /// Exit with status 2 when there is anything to change (for scripts and CI).
    #[arg(long)]
    check: bool,
    /// Plan with --prune: include removing agents that left the town.
    #[arg(long)]
    prune: bool,
    /// Plan with --prune --purge.
    #[arg(long, requires = "prune")]
    purge: bool,
}

/// Print the plan.
pub fn run(global: Option<&Path>, args: Args) -> Result<ExitCode> {
    let town = super::load_town(args.town.as_deref(), global)?;
    let paths = HostPaths::from_env();
    let opts = super::options(&town, &paths, args.prune, args.purge);
    let plan = nuketown_host::plan(&town, &paths, &opts)?;
    for c in &plan.changes {
        println!("{c}");
    }
    for note in &plan.notes {
        println!("note: {note}");
    }
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    if plan.changes.is_empty() {
        println!("nothing to change: the host matches the town");
        Ok(ExitCode::SUCCESS)
    } else {
        let n = plan.changes.len();
        println!("{n} change{} to apply", if n == 1 { "" } else { "s" });
        Ok(if args.check {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        })
    }
}
