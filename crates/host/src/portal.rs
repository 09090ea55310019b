//! The portal: a tmux window with the agent on top and the human below, in
//! the same project. Everything handed to tmux is an argv (tmux ≥ 3.0 runs a
//! multi-argument command directly, without a shell), and the only shell
//! script is built with quoting, so directory names cannot inject commands.

use std::fs;
use std::path::{Path, PathBuf};

use nuketown_town::{Agent, Town};

use crate::system;

/// Quote `s` for a POSIX shell: one single-quoted word.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Expand a `projectDirs` entry (`~/dev`, `/srv/src`) for a user's home.
pub fn expand(dir: &str, home: &Path) -> PathBuf {
    if dir == "~" {
        home.to_path_buf()
    } else if let Some(rest) = dir.strip_prefix("~/") {
        home.join(rest)
    } else {
        PathBuf::from(dir)
    }
}

/// Projects under `roots`: directories holding `.git`, at depth 1 or 2,
/// hidden directories skipped. Returned relative to their root, sorted.
pub fn find_projects(roots: &[PathBuf]) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let visible_dirs = |d: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(d)
            .map(|r| {
                r.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    for root in roots {
        for one in visible_dirs(root) {
            if one.join(".git").exists() {
                out.push((root.clone(), rel(root, &one)));
                continue;
            }
            for two in visible_dirs(&one) {
                if two.join(".git").exists() {
                    out.push((root.clone(), rel(root, &two)));
                }
            }
        }
    }
    out
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// How the agent is reached from the human's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// `machinectl shell` (systemd is PID 1).
    Machinectl,
    /// `runuser -l` (we are root).
    Runuser,
    /// `sudo -u AGENT -i` (the human's own sudo).
    Sudo,
}

impl Reach {
    /// The way that works on this host for this caller: as root,
    /// `machinectl` where systemd runs (a clean login session), else
    /// `runuser`; as the human, `sudo -u AGENT`, which the town's sudoers
    /// drop-in lets the human run without a password (`humanAsAgents`).
    pub fn detect() -> Reach {
        if !system::is_root() {
            return Reach::Sudo;
        }
        let machinectl = [
            "/usr/bin/machinectl",
            "/bin/machinectl",
            "/run/current-system/sw/bin/machinectl",
        ]
        .iter()
        .any(|p| Path::new(p).exists());
        if Path::new("/run/systemd/system").is_dir() && machinectl {
            Reach::Machinectl
        } else {
            Reach::Runuser
        }
    }
}

/// The argv that runs `script` (a shell script) as `user` in a login shell.
pub fn as_user_argv(reach: Reach, user: &str, script: &str) -> Vec<String> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match reach {
        Reach::Machinectl => v(&[
            "machinectl",
            "shell",
            &format!("{user}@"),
            "/bin/bash",
            "-lc",
            script,
        ]),
        Reach::Runuser => v(&["runuser", "-l", user, "-c", script]),
        // -n: never stop at the human's own password prompt; without the
        // grant, sudo says why and the pane shows it.
        Reach::Sudo => v(&[
            "sudo",
            "-n",
            "-u",
            user,
            "-i",
            "--",
            "/bin/bash",
            "-lc",
            script,
        ]),
    }
}

/// The command in the agent's pane: `portal.command`, else the agent's
/// CLI — `claude` with claudeCode, the chat backend's program (`claude`,
/// `codex`, `aider`) with chat — else a login shell.
pub fn agent_command(agent: &Agent) -> String {
    match &agent.portal.command {
        Some(c) => c.clone(),
        None if agent.claude_code.enable => "claude".to_string(),
        None if agent.chat.enable => match agent.chat.backend.kind.as_str() {
            "claude-code" => "claude".to_string(),
            "codex" => "codex".to_string(),
            "aider" => "aider".to_string(),
            _ => "exec bash -l".to_string(),
        },
        None => "exec bash -l".to_string(),
    }
}

/// The first line of every portal command apply writes: how it knows its own.
pub const COMMAND_MARK: &str = "# Written by nuketown apply: a portal";

/// The human's portal commands, by file name: `portal-<agent>` for each
/// agent of this host with `portal.enable`, and `portal` when there is one.
/// Each runs `nuketown portal --pick` (fzf over the project dirs when no
/// project is given) with the published town.
pub fn commands(town: &Town, nuketown: &Path, town_file: &Path) -> Vec<(String, String)> {
    let run = |what: &str, args: &str| {
        format!(
            "#!/bin/sh\n{COMMAND_MARK} ({what}).\nexec {} portal --town {} --pick {args}\"$@\"\n",
            sh_quote(&nuketown.display().to_string()),
            sh_quote(&town_file.display().to_string())
        )
    };
    let mut out: Vec<(String, String)> = town
        .host_agents()
        .filter(|(_, a)| a.portal.enable)
        .map(|(name, _)| {
            (
                format!("portal-{name}"),
                run(
                    &format!("{name} beside you in tmux; portal-{name} [PROJECT]"),
                    &format!("{} ", sh_quote(name)),
                ),
            )
        })
        .collect();
    if !out.is_empty() {
        out.push((
            "portal".to_string(),
            run(
                "pick an agent, then a project; portal [AGENT] [PROJECT]",
                "",
            ),
        ));
    }
    out
}

/// The portal commands an earlier apply wrote in `dir` (known by their mark).
pub fn installed_commands(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == "portal" || n.starts_with("portal-"))
        })
        .filter(|p| {
            p.symlink_metadata().is_ok_and(|m| m.is_file())
                && fs::read_to_string(p).is_ok_and(|t| {
                    t.lines()
                        .nth(1)
                        .is_some_and(|l| l.starts_with(COMMAND_MARK))
                })
        })
        .collect();
    found.sort();
    found
}

/// A portal to open: who, where, and the tmux argv that opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portal {
    /// The agent.
    pub agent: String,
    /// The agent pane's directory (its own clone, or its home).
    pub agent_dir: PathBuf,
    /// The human pane's directory.
    pub human_dir: PathBuf,
    /// tmux invocations, each an argv (after `tmux`).
    pub tmux: Vec<Vec<String>>,
}

/// The human side of a portal.
#[derive(Debug, Clone, Copy)]
pub struct Human<'a> {
    /// Their user name.
    pub user: &'a str,
    /// Their home.
    pub home: &'a Path,
    /// Whether the lower pane must switch to them (the portal runs as root).
    pub switch_user: bool,
}

/// Plan a portal for `agent_name` in `project` (a name under a project dir,
/// or none for the homes), reaching the agent by `reach`; outside tmux the
/// window goes to `session`.
pub fn portal(
    town: &Town,
    agent_name: &str,
    project: Option<&str>,
    human: Human<'_>,
    reach: Reach,
    session: Option<&str>,
) -> Result<Portal, String> {
    let agent = town.host_agent(agent_name)?;
    if !agent.portal.enable {
        return Err(format!(
            "agents.{agent_name}.portal.enable is false; enable it to open a portal"
        ));
    }
    if let Some(p) = project {
        if p.is_empty() || p.split('/').any(|c| c == ".." || c.is_empty()) || p.starts_with('/') {
            return Err(format!("project {p:?} must be a name under a project dir (e.g. \"nuketown\" or \"org/repo\")"));
        }
    }
    let agent_home = town.home_of(agent_name);
    let find = |home: &Path| -> Option<PathBuf> {
        let p = project?;
        town.project_dirs
            .iter()
            .map(|d| expand(d, home).join(p))
            .find(|d| d.is_dir())
    };
    // Where the agent's pane should open, best first: its clone under each
    // project dir, its first project dir, its home. The agent's home is
    // 0700, so only the agent can tell which exists: its own shell tries
    // them in order (the portal, run by the human, cannot look inside).
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = project {
        candidates.extend(
            town.project_dirs
                .iter()
                .map(|d| expand(d, &agent_home).join(p)),
        );
        candidates.extend(town.project_dirs.first().map(|d| expand(d, &agent_home)));
    }
    candidates.push(agent_home.clone());
    // Reported: the first that exists, when this caller can see (root);
    // else the first the agent's shell tries.
    let can_look = fs::read_dir(&agent_home).is_ok();
    let agent_dir = candidates
        .iter()
        .find(|d| can_look && d.is_dir())
        .unwrap_or(&candidates[0])
        .clone();
    let human_dir = find(human.home).unwrap_or_else(|| human.home.to_path_buf());

    let (agent_pct, _) = agent.portal.layout.split_once('/').unwrap_or(("75", "25"));
    let human_pct = 100 - agent_pct.parse::<u32>().unwrap_or(75);
    // No `$` in what nuketown writes: `sudo -i` hands the script to the
    // agent's login shell with `$` unescaped, which would expand it first.
    let tries: Vec<String> = candidates
        .iter()
        .map(|d| format!("cd -- {}", sh_quote(&d.display().to_string())))
        .collect();
    let script = format!(
        "{{ {}; }} 2>/dev/null; {}",
        tries.join(" || "),
        agent_command(agent)
    );
    let top = as_user_argv(reach, agent_name, &script);
    let bottom: Vec<String> = if human.switch_user {
        as_user_argv(
            Reach::Runuser,
            human.user,
            &format!(
                "cd -- {} && exec bash -l",
                sh_quote(&human_dir.display().to_string())
            ),
        )
    } else {
        Vec::new()
    };
    let s = |x: &str| x.to_string();
    let mut new_window = vec![
        s("new-window"),
        s("-P"),
        s("-F"),
        s("#{pane_id}"),
        s("-n"),
        s(agent_name),
    ];
    if let Some(sess) = session {
        new_window.extend([s("-t"), format!("{sess}:")]);
    }
    new_window.extend(top);
    let mut split = vec![
        s("split-window"),
        s("-v"),
        s("-l"),
        format!("{human_pct}%"),
        s("-c"),
        human_dir.display().to_string(),
        s("-t"),
        s("{pane}"),
    ];
    split.extend(bottom);
    Ok(Portal {
        agent: agent_name.to_string(),
        agent_dir,
        human_dir,
        tmux: vec![new_window, split],
    })
}
