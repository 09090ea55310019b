//! `nuketown devices [--json]`: declared devices, present now or not, and their ACLs.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

/// Show each declared device: which matching devices are plugged in now and
/// whether the agent's ACL is on their nodes (`apply` puts missing ones in place).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Print the devices.
pub fn run(global: Option<&Path>, args: Args) -> Result<ExitCode> {
    let town = super::load_town(None, global)?;
    let devices = nuketown_host::devices::devices(&town);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&devices)?);
        return Ok(ExitCode::SUCCESS);
    }
    if devices.is_empty() {
        println!("no devices declared");
    }
    for d in &devices {
        println!(
            "{} devices[{}]: {} {} ({})",
            d.agent, d.index, d.subsystem, d.attrs, d.permission
        );
        if d.present.is_empty() {
            println!("  not present");
        }
        for n in &d.present {
            let node = n
                .devnode
                .as_ref()
                .map_or("(no device node)".to_string(), |p| p.display().to_string());
            let acl = if n.devnode.is_none() {
                ""
            } else if n.acl {
                " — ACL in place"
            } else {
                " — ACL missing (run nuketown apply)"
            };
            println!("  present  {node} ({}){acl}", n.syspath.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
