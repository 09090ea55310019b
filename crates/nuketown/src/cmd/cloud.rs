//! `nuketown cloud render [TOWN]`: the town as Kubernetes manifests.

use std::io::Read;
#[cfg(feature = "cloud")]
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use nuketown_town::Format;

/// Run the town on Kubernetes (docs/cloud.md).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Every agent with cloud.enable as multi-document YAML on stdout: its
    /// Deployment, ServiceAccount, volume claims, NetworkPolicy and identity
    /// ConfigMap, with each namespace's Namespace, ResourceQuota and
    /// LimitRange. The same town and revision always give the same bytes, so
    /// Argo CD (deploy/argocd/plugin.yaml) sees exactly what changed.
    ///
    /// The town must declare its domain: the host default (<hostname>.local)
    /// would change with whichever machine renders it.
    Render {
        /// The town file (TOML, or JSON as the NixOS module writes it); `-`
        /// reads it from stdin. Defaults to --town, then /etc/nuketown/town.json.
        town: Option<PathBuf>,
        /// The town's revision (a git commit), written on every object as
        /// the nuketown.dev/town-revision annotation. Argo CD's plugin passes
        /// ARGOCD_APP_REVISION.
        #[arg(long, env = "NUKETOWN_REVISION", value_name = "REV")]
        revision: Option<String>,
    },
    /// The town hall's relay for requests from the cluster: watch every
    /// agent's request object (`<agent>-requests` ConfigMaps), bring each new
    /// `nuketown ask resources` to the hall (every approver channel, the
    /// audit log), and on a yes write the decision on the agent's Deployment
    /// as field manager nuketown-hall — the only writer the scaling operator
    /// obeys. Run as root beside the hall, with a kubeconfig whose identity
    /// may watch ConfigMaps and patch Deployments and ConfigMaps
    /// (docs/scaling.md).
    Requests {
        /// The town file. Defaults to --town, then /etc/nuketown/town.json.
        town: Option<PathBuf>,
        /// The town hall's ask socket.
        #[arg(long, env = "NUKETOWN_ASK_SOCKET", default_value = nuketown_hall::ASK_SOCKET)]
        socket: PathBuf,
    },
}

/// Run `nuketown cloud`.
pub fn run(global: Option<&Path>, args: Args) -> Result<ExitCode> {
    match args.what {
        What::Render { town, revision } => render(town.as_deref(), global, revision.as_deref()),
        What::Requests { town, socket } => {
            let path = super::town_path(town.as_deref(), global)?;
            relay(path, socket)
        }
    }
}

#[cfg(feature = "cloud")]
fn relay(town: PathBuf, socket: PathBuf) -> Result<ExitCode> {
    nuketown_town::load(&town).with_context(|| format!("town {}", town.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("no Kubernetes API server (a kubeconfig, or run in the cluster)")?;
        eprintln!(
            "nuketown: relaying requests from the cluster to the town hall at {}",
            socket.display()
        );
        nuketown_operator::requests::relay(client, town, socket).await;
        anyhow::bail!("the watch of the request objects ended")
    })
}

#[cfg(not(feature = "cloud"))]
fn relay(_town: PathBuf, _socket: PathBuf) -> Result<ExitCode> {
    anyhow::bail!(
        "this nuketown was built without the cloud feature; build it with `--features cloud`"
    )
}

fn render(
    positional: Option<&Path>,
    global: Option<&Path>,
    revision: Option<&str>,
) -> Result<ExitCode> {
    let (text, format, origin) = if positional == Some(Path::new("-")) {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the town from stdin")?;
        let format = if text.trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Toml
        };
        (text, format, "<stdin>".to_string())
    } else {
        let path = super::town_path(positional, global)?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read town {}", path.display()))?;
        (text, Format::of(&path), path.display().to_string())
    };
    emit(&text, format, &origin, revision)
}

/// Render the town's text as YAML on stdout.
#[cfg(feature = "cloud")]
fn emit(text: &str, format: Format, origin: &str, revision: Option<&str>) -> Result<ExitCode> {
    let town = nuketown_cloud::load(text, format, origin)?;
    let manifests = nuketown_cloud::render(&town, revision.filter(|r| !r.is_empty()))?;
    if manifests.is_empty() {
        eprintln!("nuketown: no agent of {origin} has cloud.enable; nothing to render");
    }
    let mut out = std::io::stdout().lock();
    out.write_all(nuketown_cloud::to_yaml(&manifests).as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Built without the render.
#[cfg(not(feature = "cloud"))]
fn emit(_: &str, _: Format, _: &str, _: Option<&str>) -> Result<ExitCode> {
    anyhow::bail!(super::without_feature("cloud", "the Kubernetes render"))
}
