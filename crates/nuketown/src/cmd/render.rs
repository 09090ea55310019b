//! `nuketown render home|udev`: the files apply writes, rendered for other
//! builders (the NixOS module builds agent homes and udev rules with these).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

/// Render files from the town without touching the host.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// An agent's identity and prompt files (identity.toml, CLAUDE.md, the
    /// Claude Code agent file, AGENTS.md, settings.json) into DIR, as laid into its home.
    Home {
        /// The agent.
        agent: String,
        /// Output directory (created).
        out: PathBuf,
        /// Leave out ~/.claude/settings.json (when something else manages it).
        #[arg(long)]
        no_settings: bool,
    },
    /// The udev rules file for the town's devices, on stdout.
    Udev {
        /// Absolute path of setfacl for the rules' RUN.
        #[arg(long, default_value = nuketown_host::render::SETFACL)]
        setfacl: String,
    },
}

/// Render.
pub fn run(global: Option<&Path>, args: Args) -> Result<ExitCode> {
    let town = super::load_town(None, global)?;
    match args.what {
        What::Home {
            agent,
            out,
            no_settings,
        } => {
            if !town.agents.contains_key(&agent) {
                bail!("{agent} is not an agent of this town");
            }
            for p in town.projections(&agent) {
                if no_settings && p.path == ".claude/settings.json" {
                    continue;
                }
                let dst = out.join(&p.path);
                fs::create_dir_all(dst.parent().expect("has a parent"))
                    .with_context(|| format!("creating {}", dst.display()))?;
                fs::write(&dst, &p.contents)
                    .with_context(|| format!("writing {}", dst.display()))?;
                fs::set_permissions(&dst, fs::Permissions::from_mode(p.mode))?;
            }
        }
        What::Udev { setfacl } => print!("{}", nuketown_host::render::udev_rules(&town, &setfacl)),
    }
    Ok(ExitCode::SUCCESS)
}
