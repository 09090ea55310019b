//! `nuketown hall`: the town hall daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

/// Run the town hall: hold agents' privilege requests, apply their policies,
/// ask the approvers, and record every decision.
///
/// Run it as root; the nuketown-hall service does, with its two sockets
/// activated by systemd. The paths below are for tests and unusual hosts: the
/// entry point always asks at /run/nuketown/hall.sock.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Requester socket (the entry point's; root only).
    #[arg(long, env = "NUKETOWN_HALL_SOCKET", default_value = nuketown_hall::REQUESTER_SOCKET)]
    socket: PathBuf,
    /// Approver socket (group nuketown-approvers).
    #[arg(long, env = "NUKETOWN_APPROVER_SOCKET", default_value = nuketown_hall::APPROVER_SOCKET)]
    approver_socket: PathBuf,
    /// Mock mode file: MOCK_APPROVED or MOCK_DENIED, honoured only when root or an approver owns it and nobody else can write it.
    #[arg(long, env = "NUKETOWN_MODE_FILE", default_value = nuketown_hall::MODE_FILE)]
    mode_file: PathBuf,
    /// Audit log (JSON lines).
    #[arg(long, env = "NUKETOWN_AUDIT_LOG", default_value = nuketown_hall::AUDIT_LOG)]
    audit_log: PathBuf,
    /// Where each agent's ssh-agent socket is made (`DIR/AGENT/agent.sock`).
    #[arg(long, env = "NUKETOWN_SSH_AGENT_DIR", default_value = nuketown_keys::agent::SOCKET_DIR)]
    ssh_agent_dir: PathBuf,
    /// The town's sealing key (default: the systemd credential `nuketown-sealing-key`, else /var/lib/nuketown/keys/sealing.key).
    #[arg(long, env = "NUKETOWN_SEALING_KEY")]
    sealing_key: Option<PathBuf>,
    /// The ask socket, where agents ask for network access (`nuketown ask`).
    #[arg(long, env = "NUKETOWN_ASK_SOCKET", default_value = nuketown_hall::ASK_SOCKET)]
    ask_socket: PathBuf,
    /// The nftables table (`inet NAME`) holding the agents' network rules.
    #[arg(long, env = "NUKETOWN_NFT_TABLE", default_value = nuketown_town::network::TABLE)]
    nft_table: String,
    /// The agents' network rules as `apply` wrote them, installed when the hall starts.
    #[arg(long, env = "NUKETOWN_NFTABLES_FILE", default_value = nuketown_hall::NFTABLES_FILE)]
    nftables_file: PathBuf,
    /// Where `nuketown apply` keeps its record of the agents it made
    /// (`state.json`): every user it made is the town's until it is pruned.
    #[arg(long, env = "NUKETOWN_STATE_DIR", default_value = "/var/lib/nuketown")]
    state_dir: PathBuf,
    /// The rebuild coordinator's socket.
    #[arg(long, env = "NUKETOWN_REBUILD_SOCKET", default_value = nuketown_rebuild::SOCKET)]
    rebuild_socket: PathBuf,
    /// The rebuild generation history.
    #[arg(long, env = "NUKETOWN_REBUILD_HISTORY", default_value = nuketown_rebuild::HISTORY)]
    rebuild_history: PathBuf,
}

/// Run the daemon until SIGTERM.
pub fn run(global: Option<&Path>, args: Args) -> Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        tracing::warn!("the town hall is not running as root: the entry point (root) is its only requester, and peers are checked by uid");
    }
    let town = super::town_path(None, global)?;
    let rebuild = nuketown_rebuild::Config {
        status: args.rebuild_socket.with_file_name("rebuild-status.json"),
        socket: args.rebuild_socket,
        history: args.rebuild_history,
        town: town.clone(),
        hall_socket: args.socket.clone(),
        audit_log: args.audit_log.clone(),
    };
    let cfg = nuketown_hall::server::Config {
        requester_socket: args.socket,
        approver_socket: args.approver_socket,
        mode_file: args.mode_file,
        audit_log: args.audit_log,
        town,
        ssh_agent_dir: args.ssh_agent_dir,
        sealing_key: args
            .sealing_key
            .unwrap_or_else(nuketown_keys::sealing::default_path),
        ask_socket: args.ask_socket,
        nft_table: args.nft_table,
        nftables_file: Some(args.nftables_file),
        host_state: args.state_dir.join("state.json"),
        accounts: Default::default(),
        nuketown: std::env::current_exe().context("the nuketown program's path")?,
    };
    if !nuketown_town::network::is_table_name(&cfg.nft_table) {
        anyhow::bail!(
            "--nft-table {:?}: a table name is letters, digits, '_' and '-', starting with a letter",
            cfg.nft_table
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        // The rebuild coordinator lives in the hall's process.
        tokio::spawn(async move {
            if let Err(e) = nuketown_rebuild::serve(rebuild).await {
                tracing::error!("the rebuild coordinator stopped: {e}");
            }
        });
        nuketown_hall::server::run(cfg).await
    })
    .context("the town hall stopped")?;
    Ok(ExitCode::SUCCESS)
}
