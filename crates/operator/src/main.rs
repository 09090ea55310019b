//! `nuketown-operator`: the scaling controller, run in the cluster with a
//! service account that may get, list, watch and patch Deployments.
//!
//!     nuketown-operator [POOLS.toml]
//!
//! POOLS.toml maps tiers to node pools (docs/scaling.md); without it every
//! tier runs wherever the scheduler puts it.

use anyhow::{Context, Result};

#[tokio::main]
async fn main() -> Result<()> {
    nuketown_operator::tls_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NUKETOWN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let pools = match std::env::args_os().nth(1) {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{}", path.to_string_lossy()))?;
            nuketown_operator::controller::Pools::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.to_string_lossy()))?
        }
        None => Default::default(),
    };
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes API server (in-cluster service account or kubeconfig)")?;
    nuketown_operator::controller::run(client, pools).await;
    Ok(())
}
