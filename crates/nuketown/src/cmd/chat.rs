//! `nuketown chat AGENT`: the agent's Matrix bridge, run as the agent.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use nix::unistd::User;

/// Run AGENT's Matrix bridge: log in as its Matrix account (the device is kept
/// in its persist dir, so it survives rounds), accept invites from its declared
/// humans only, and answer their messages by running its backend in its
/// project directory. Runs as the agent; started as root it switches to the
/// agent first (the systemd unit `nuketown-chat@AGENT` runs it as the agent).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent.
    agent: String,
    /// The town hall's ask socket: the bridge follows the agent's own
    /// escalations there, to show them in chat.
    #[arg(long, env = "NUKETOWN_ASK_SOCKET", default_value = nuketown_hall::ASK_SOCKET)]
    ask_socket: std::path::PathBuf,
}

/// Become `name` (as root), or check that we already are.
#[cfg_attr(not(feature = "chat"), allow(dead_code))]
fn become_agent(name: &str) -> Result<()> {
    let user = User::from_name(name)?
        .with_context(|| format!("{name} has no account on this host; run nuketown apply"))?;
    let me = nix::unistd::geteuid();
    if me == user.uid {
        return Ok(());
    }
    if !me.is_root() {
        bail!("run the bridge as {name} (or as root, which switches to {name})");
    }
    let cname = std::ffi::CString::new(name)?;
    nix::unistd::initgroups(&cname, user.gid)?;
    nix::unistd::setgid(user.gid)?;
    nix::unistd::setuid(user.uid)?;
    // Safety: single-threaded here (before the runtime starts).
    unsafe {
        std::env::set_var("HOME", &user.dir);
        std::env::set_var("USER", name);
        std::env::set_var("LOGNAME", name);
    }
    Ok(())
}

/// Run the bridge.
pub fn run(global: Option<&Path>, args: Args) -> Result<ExitCode> {
    let town = super::load_town(None, global)?;
    #[cfg(not(feature = "chat"))]
    {
        let _ = (town, args);
        bail!(super::without_feature("chat", "the Matrix bridge"))
    }
    #[cfg(feature = "chat")]
    {
        let mut cfg = nuketown_chat::BridgeConfig::from_town(&town, &args.agent)?;
        cfg.ask_socket = args.ask_socket;
        become_agent(&args.agent)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(nuketown_chat::bridge::run(cfg))?;
        Ok(ExitCode::SUCCESS)
    }
}
