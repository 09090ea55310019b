//! `nuketown run AGENT [--project P] TASK…`: the agent's backend, once, as
//! the agent, in its clone — the same invocation and the same run as a chat
//! message gets from the bridge (permission prompts to the town hall, `sudo`
//! through it), with the reply on stdout. What a cron job, a CI hook or the
//! human's shell needs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

/// Run AGENT's CLI once on TASK, as AGENT, in its project directory, and
/// print the reply.
///
/// As root it becomes the agent; as the agent it runs as itself; as a human
/// it asks sudo to run it as the agent (the town's `humanAsAgents` grant).
/// The backend is the agent's `chat.backend` (claude-code unless declared).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent.
    agent: String,
    /// The project: a directory under the agent's first project directory
    /// (`projectDirs`, `~/dev`), or a path inside its home.
    #[arg(long)]
    project: Option<String>,
    /// Continue this backend session (the id a reply printed with --session).
    #[arg(long)]
    resume: Option<String>,
    /// Print the backend's session id on stderr after the reply, to --resume later.
    #[arg(long)]
    session: bool,
    /// Longest the backend may run.
    #[arg(long, default_value = "30m")]
    timeout: String,
    /// The task, in words.
    #[arg(required = true, trailing_var_arg = true)]
    task: Vec<String>,
}

/// Where the agent works on `project`: under its first project directory
/// (or a path in its home), which must exist.
fn workdir(town: &nuketown_town::Town, agent: &str, project: Option<&str>) -> Result<PathBuf> {
    let home = town.home_of(agent);
    let base = town
        .project_dirs
        .iter()
        .map(|d| match d.strip_prefix("~/") {
            Some(rest) => home.join(rest),
            None if d == "~" => home.clone(),
            None => PathBuf::from(d),
        })
        .find(|d| d.is_dir())
        .unwrap_or_else(|| home.clone());
    let dir = match project {
        None => base,
        Some(p) if p.contains("..") => bail!("--project {p:?}: name a project, without '..'"),
        Some(p) if p.starts_with('/') => PathBuf::from(p),
        Some(p) => base.join(p),
    };
    if !dir.starts_with(&home) && !town.project_dirs.iter().any(|d| dir.starts_with(d)) {
        bail!(
            "--project: {} is outside {agent}'s home; the agent works in its own clones",
            dir.display()
        );
    }
    if !dir.is_dir() {
        bail!(
            "--project: {} does not exist; clone the project into {agent}'s home first",
            dir.display()
        );
    }
    Ok(dir)
}

/// As a human: run this very command as the agent, through sudo.
fn through_sudo(agent: &str) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding this nuketown")?;
    let e = std::process::Command::new("sudo")
        .args(["-n", "-u", agent, "--"])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .exec();
    bail!("cannot run sudo to become {agent} ({e}); the town's humanAsAgents grant lets its human do so")
}

/// Run the task.
pub fn run(global: Option<&Path>, args: Args) -> Result<ExitCode> {
    let town = super::load_town(None, global)?;
    let agent = town
        .host_agent(&args.agent)
        .map_err(anyhow::Error::msg)?
        .clone();
    let me = nix::unistd::geteuid();
    if !me.is_root() && me.as_raw() != agent.uid {
        return through_sudo(&args.agent);
    }
    let cwd = workdir(&town, &args.agent, args.project.as_deref())?;
    let timeout = std::time::Duration::from_secs(
        nuketown_town::network::parse_duration(&args.timeout)
            .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?,
    );
    #[cfg(not(feature = "chat"))]
    {
        let _ = (agent, cwd, timeout);
        bail!(super::without_feature("chat", "the agent's backend"))
    }
    #[cfg(feature = "chat")]
    {
        use nuketown_chat::backend;
        nuketown_chat::bridge::become_agent(&args.agent)?;
        let hall = nuketown_chat::bridge::nuketown_binary()
            .and_then(|n| backend::HallLink::for_agent(&town, &args.agent, n));
        let b = &agent.chat.backend;
        let task = args.task.join(" ");
        let inv = backend::invocation(b, &task, args.resume.as_deref(), &cwd, hall.as_ref());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let never = tokio::sync::Notify::new();
        let reply = rt.block_on(backend::run(
            b,
            &inv,
            &[("NUKETOWN_SENDER_KIND", "run")],
            timeout,
            &never,
        ));
        match reply {
            Ok(r) => {
                println!("{}", r.text.trim_end());
                if args.session {
                    if let Some(s) = r.session {
                        eprintln!("session {s}");
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("nuketown: {e}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
