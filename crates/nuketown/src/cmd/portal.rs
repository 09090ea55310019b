//! `nuketown portal [AGENT] [PROJECT]`: the agent and the human side by side in tmux.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use nuketown_host::portal::{expand, find_projects, portal, Human, Reach};

/// Open a tmux window named after the agent: the agent's pane on top runs
/// `portal.command` as the agent in its own clone of the project, the human's
/// shell below in the same project, split per `portal.layout`. Without
/// arguments, pick the agent and then the project (fzf when installed).
/// Inside tmux the window opens in the current session; outside, in session
/// `nuketown`, which is then attached. `apply` installs `portal-<agent>` and
/// `portal` for the humans: this with `--pick`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent.
    agent: Option<String>,
    /// The project: a directory name under a project dir (e.g. `nuketown` or
    /// `org/repo`), or the path of the human's checkout there.
    project: Option<String>,
    /// Pick the project even when the agent is given (without it, the agent
    /// alone opens the portal at the homes).
    #[arg(long)]
    pick: bool,
    /// Open the window but do not attach to the session.
    #[arg(long)]
    detach: bool,
    /// The tmux session to use outside tmux.
    #[arg(long, default_value = "nuketown")]
    session: String,
    /// Use the built-in picker even when fzf is installed.
    #[arg(long)]
    no_fzf: bool,
}

/// Pick one of `items`: fzf on a terminal when installed, else a numbered menu on stdin.
fn pick(prompt: &str, items: &[String], no_fzf: bool) -> Result<String> {
    if items.is_empty() {
        bail!("nothing to pick from for {prompt}");
    }
    let fzf = !no_fzf
        && std::io::stdin().is_terminal()
        && Command::new("fzf").arg("--version").output().is_ok();
    if fzf {
        let mut child = Command::new("fzf")
            .args(["--prompt", &format!("{prompt}> "), "--height", "40%"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(items.join("\n").as_bytes())?;
        let out = child.wait_with_output()?;
        let choice = String::from_utf8_lossy(&out.stdout)
            .trim_end_matches('\n')
            .to_string();
        if !out.status.success() || choice.is_empty() {
            bail!("no {prompt} picked");
        }
        return Ok(choice);
    }
    let mut err = std::io::stderr();
    for (i, item) in items.iter().enumerate() {
        writeln!(err, "{:>3}) {item}", i + 1)?;
    }
    write!(err, "{prompt} [1-{}]: ", items.len())?;
    err.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let line = line.trim();
    if let Ok(n) = line.parse::<usize>() {
        if (1..=items.len()).contains(&n) {
            return Ok(items[n - 1].clone());
        }
    }
    items
        .iter()
        .find(|i| i.as_str() == line)
        .cloned()
        .ok_or_else(|| anyhow!("{line:?} is not one of the choices"))
}

/// A project given as the path of the human's checkout under a project dir
/// (`~/dev/nuketown`, `.` inside it): its name there; anything else as given.
fn project_name(given: &str, roots: &[PathBuf]) -> String {
    let path = Path::new(given);
    if !(path.is_absolute() || given.starts_with('.')) {
        return given.to_string();
    }
    let Ok(path) = std::path::absolute(path) else {
        return given.to_string();
    };
    roots
        .iter()
        .find_map(|r| path.strip_prefix(r).ok())
        .map(|rel| rel.to_string_lossy().into_owned())
        .filter(|rel| !rel.is_empty())
        .unwrap_or_else(|| given.to_string())
}

fn tmux(args: &[String]) -> Result<String> {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .context("cannot run tmux (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "tmux {} failed: {}",
            args.first().map(String::as_str).unwrap_or(""),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Open the portal.
pub fn run(global: Option<&Path>, args: Args) -> Result<ExitCode> {
    let town = super::load_town(None, global)?;
    let root = nix::unistd::geteuid().is_root();
    let human = match (
        root,
        std::env::var("SUDO_USER").ok().filter(|u| u != "root"),
    ) {
        (true, Some(u)) => u,
        (true, None) => town
            .human_user
            .clone()
            .ok_or_else(|| anyhow!("run the portal as the human, or set humanUser"))?,
        (false, _) => nix::unistd::User::from_uid(nix::unistd::getuid())?
            .map(|u| u.name)
            .unwrap_or_default(),
    };
    let human_home = nix::unistd::User::from_name(&human)?
        .map(|u| u.dir)
        .ok_or_else(|| anyhow!("the human {human} has no account on this host"))?;

    // `nuketown portal ada` (an agent, no project) opens at the homes without asking.
    let agent_given = args.agent.is_some();
    let agent = match args.agent {
        Some(a) => a,
        None => {
            let names: Vec<String> = town
                .host_agents()
                .filter(|(_, a)| a.portal.enable)
                .map(|(n, _)| n.clone())
                .collect();
            pick("agent", &names, args.no_fzf)?
        }
    };
    let roots: Vec<PathBuf> = town
        .project_dirs
        .iter()
        .map(|d| expand(d, &human_home))
        .collect();
    let project = match args.project {
        Some(p) => Some(project_name(&p, &roots)),
        None if agent_given && !args.pick => None,
        None => {
            let mut names: Vec<String> =
                find_projects(&roots).into_iter().map(|(_, p)| p).collect();
            names.dedup();
            names.insert(0, "(home)".to_string());
            let p = pick("project", &names, args.no_fzf)?;
            (p != "(home)").then_some(p)
        }
    };

    let inside = std::env::var_os("TMUX").is_some();
    let session = (!inside).then_some(args.session.as_str());
    let reach = Reach::detect();
    if reach == Reach::Sudo {
        // As the human: the agent's pane runs through sudo, which must not
        // stop at a password prompt inside a pane nobody is looking at.
        let ok = Command::new("sudo")
            .args(["-n", "-u", &agent, "--", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!(
                "{human} may not act as {agent} without a password; as root, run `nuketown apply` with humanUser = {human:?} and humanAsAgents = true (the default) — it lets {human} run commands as the agents, never as root — or run the portal as root"
            );
        }
    }
    let side = Human {
        user: &human,
        home: &human_home,
        switch_user: root && human != "root",
    };
    let p =
        portal(&town, &agent, project.as_deref(), side, reach, session).map_err(|e| anyhow!(e))?;

    let mut first = p.tmux[0].clone();
    if let Some(s) = session {
        let exists = Command::new("tmux")
            .args(["has-session", "-t", &format!("={s}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|st| st.success());
        if !exists {
            // new-session instead of new-window: same flags, no target.
            let t = first
                .iter()
                .position(|a| a == "-t")
                .expect("session target");
            first.drain(t..t + 2);
            first[0] = "new-session".into();
            first.splice(1..1, ["-d".to_string(), "-s".to_string(), s.to_string()]);
        }
    }
    let pane = tmux(&first)?;
    let split: Vec<String> = p.tmux[1]
        .iter()
        .map(|a| {
            if a == "{pane}" {
                pane.clone()
            } else {
                a.clone()
            }
        })
        .collect();
    tmux(&split)?;
    tmux(&["select-pane".into(), "-t".into(), pane.clone()])?;
    println!(
        "portal to {agent}: {} (agent) / {} ({human})",
        p.agent_dir.display(),
        p.human_dir.display()
    );
    if let Some(s) = session {
        if !args.detach && std::io::stdout().is_terminal() {
            let status = Command::new("tmux")
                .args(["attach-session", "-t", s])
                .status()?;
            return Ok(if status.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
