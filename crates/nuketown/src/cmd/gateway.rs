//! `nuketown gateway`: the town's credential gateway. The town hall runs
//! it as its child, as the gateway's own user (`hall.gateway.user`), and
//! gives it its configuration — the agents' credentials included — on
//! stdin; it writes one JSON line per call on stdout. Not meant to be run
//! by hand.

use std::process::ExitCode;

use anyhow::{Context, Result};

/// The credential gateway (run by the town hall, not by hand).
///
/// Agents' model API calls (`http://127.0.0.1:8399/<credential>/…`) and
/// HTTPS requests to declared hosts (through its proxy) reach the declared
/// upstream with the agent's credential added; the caller is known by the
/// kernel (the owner of its loopback socket). Reads its configuration from
/// stdin, writes its audit events to stdout.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Make a town CA (common name given), print it as JSON and exit (the
    /// hall seals it in the key store).
    #[arg(long, value_name = "COMMON_NAME")]
    make_ca: Option<String>,
}

/// Serve until stdin closes.
pub fn run(args: Args) -> Result<ExitCode> {
    if let Some(cn) = args.make_ca {
        let ca = nuketown_gateway::generate_ca(&cn).context("making the town's CA")?;
        println!("{}", serde_json::to_string(&ca)?);
        return Ok(ExitCode::SUCCESS);
    }
    if nix::unistd::geteuid().is_root() {
        anyhow::bail!("the gateway never runs as root: the town hall runs it as hall.gateway.user");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(nuketown_gateway::serve_stdio())
        .context("the credential gateway stopped")?;
    Ok(ExitCode::SUCCESS)
}
