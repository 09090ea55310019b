//! The Matrix channel (`nuketown approvals matrix`): the hall's Matrix
//! account posts each request in the approval room and takes the declared
//! approvers' answers (see the chat crate's approver).

use std::path::{Path, PathBuf};

use anyhow::Result;

/// Run the Matrix approver for the town's `hall.matrix` until stopped.
#[cfg(feature = "chat")]
pub fn run(global: Option<&Path>, socket: PathBuf, store: PathBuf, settle_ms: u64) -> Result<()> {
    let town = crate::cmd::load_town(None, global)?;
    let mut cfg = nuketown_chat::approver::ApproverConfig::from_town(&town, store, socket)?;
    cfg.settle_ms = settle_ms;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(nuketown_chat::approver::run(cfg))
}

/// Without the chat feature there is no Matrix client to run.
#[cfg(not(feature = "chat"))]
pub fn run(global: Option<&Path>, socket: PathBuf, store: PathBuf, settle_ms: u64) -> Result<()> {
    let _ = (global, socket, store, settle_ms);
    anyhow::bail!(crate::cmd::without_feature("chat", "the Matrix approver"))
}
