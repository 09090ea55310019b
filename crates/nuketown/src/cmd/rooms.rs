//! `nuketown rooms [--watch]`: the hall's Matrix account makes the town's
//! declared rooms as declared (created or adopted, members invited, anyone
//! else removed).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

/// Make the town's declared rooms (`rooms.<name>`) as declared, as the
/// hall's Matrix account (`hall.matrix`): a missing room is created
/// invite-only with the hall as its only administrator, an existing one under
/// the alias is adopted; declared humans and agents are invited, anyone else
/// is removed. Prints one line per change. Run it after changing the rooms
/// (`nuketown-rooms.service` runs it with --watch).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep running: remove anyone who joins or is invited without being declared.
    #[arg(long)]
    watch: bool,
    /// Where the hall's Matrix device for the rooms is kept.
    #[arg(long, default_value = "/var/lib/nuketown/matrix-rooms")]
    store: PathBuf,
    /// The hall's Matrix password, instead of `hall.matrix.passwordFile`
    /// (the units give it as a systemd credential: `%d/hall-matrix`).
    #[arg(long)]
    password_file: Option<PathBuf>,
}

/// Keep the rooms.
pub fn run(global: Option<&std::path::Path>, args: Args) -> Result<ExitCode> {
    let town = super::load_town(None, global)?;
    if town.rooms.is_empty() {
        println!("the town declares no rooms");
        return Ok(ExitCode::SUCCESS);
    }
    #[cfg(not(feature = "chat"))]
    {
        let _ = args;
        anyhow::bail!(super::without_feature("chat", "the Matrix room keeper"))
    }
    #[cfg(feature = "chat")]
    {
        let mut cfg = nuketown_chat::rooms::KeeperConfig::from_town(&town, args.store)?;
        if let Some(p) = args.password_file {
            cfg.password_file = p;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let ok = rt.block_on(nuketown_chat::rooms::run(cfg, args.watch, |line| {
            println!("{}", nuketown_town::display::clean(line))
        }))?;
        Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}
