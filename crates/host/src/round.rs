//! Rounds: levelling an agent's home and laying it down again from the
//! declaration. On btrfs each home is its own subvolume, so a new round is a
//! subvolume delete + create; elsewhere the directory is rebuilt (see
//! [`crate::home`]); the lay-down is [`crate::plan::plan_agent`]'s changes.
//!
//! The order makes an interrupted reset safe at every step: processes are
//! stopped first, persisted binds are unmounted before anything is deleted
//! (so deletion can never reach persisted data), and a new home is made under
//! a temporary name with its final owner and mode 0700 before it is renamed
//! into place. Whatever step a reset dies in, the next reset or apply repairs it.

use std::path::Path;

use nuketown_town::Town;

use crate::change::{At, Change};
use crate::plan::{home_manager_manages, plan_agent};
use crate::safe::Tree;
use crate::state::HostLock;
use crate::system::{self, run};
use crate::{HostError, HostPaths};

pub use crate::home::{is_subvolume, on_btrfs, trash_dir};

/// The agent's system units that a round stops and restarts.
pub fn agent_units(name: &str, uid: u32) -> Vec<String> {
    vec![
        format!("nuketown-chat@{name}.service"),
        format!("nuketown-chat-{name}.service"),
        format!("user@{uid}.service"),
    ]
}

/// A step of a reset, reported as it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Services and processes stopped.
    Stopped,
    /// Binds unmounted.
    Unmounted,
    /// Home deleted.
    Levelled,
    /// Fresh home made, identity laid down, persist re-bound.
    LaidDown,
    /// Services restarted.
    Restarted,
}

impl Step {
    /// The step's name (as `NUKETOWN_TEST_STOP_AFTER` takes it).
    pub fn name(self) -> &'static str {
        match self {
            Step::Stopped => "stopped",
            Step::Unmounted => "unmounted",
            Step::Levelled => "levelled",
            Step::LaidDown => "laid-down",
            Step::Restarted => "restarted",
        }
    }
}

/// For crash tests: stop this process (SIGSTOP) right after the named step,
/// so a test can SIGKILL it there deterministically. Only pauses; changes nothing.
fn test_pause(step: Step) {
    if std::env::var("NUKETOWN_TEST_STOP_AFTER").is_ok_and(|s| s == step.name()) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
    }
}

/// A new round for agent `name`: stop, unmount, level, lay down, re-bind, restart.
pub fn reset(
    town: &Town,
    name: &str,
    paths: &HostPaths,
    mut report: impl FnMut(&str),
) -> Result<(), HostError> {
    if !system::is_root() {
        return Err(HostError::NeedsRoot("nuketown reset"));
    }
    let agent = town.host_agent(name).map_err(HostError::Conflict)?;
    let _lock = HostLock::take(&paths.lock)?;
    round(town, name, agent.uid, paths, &mut report).map_err(|e| match e {
        HostError::Refused { .. } => HostError::Conflict(format!("{e}\n{}", crate::REFUSAL_HINT)),
        e => e,
    })
}

fn round(
    town: &Town,
    name: &str,
    uid: u32,
    paths: &HostPaths,
    report: &mut impl FnMut(&str),
) -> Result<(), HostError> {
    let home = At::new(&town.agents_dir, name);

    let mut restart = Vec::new();
    if paths.systemd_running() {
        for unit in agent_units(name, uid) {
            if run("systemctl", ["--quiet", "is-active", unit.as_str()]).is_ok() {
                run("systemctl", ["stop", unit.as_str()])?;
                restart.push(unit);
            }
        }
    }
    system::stop_processes(uid)?;
    report(&format!("{name}: stopped every process of uid {uid}"));
    test_pause(Step::Stopped);

    // Everything of the agent's is stopped, and each mount point is opened
    // beneath agentsDir without links before it is unmounted.
    if Path::new(&town.agents_dir).is_dir() {
        Tree::open(&town.agents_dir)?.unmount_all(&home.rel)?;
    }
    report(&format!("{name}: unmounted persisted paths"));
    test_pause(Step::Unmounted);

    let was_subvolume = is_subvolume(&home.path());
    crate::home::level(&home)?;
    report(&format!(
        "{name}: levelled {home}{}",
        if was_subvolume {
            " (btrfs subvolume)"
        } else {
            ""
        }
    ));
    test_pause(Step::Levelled);

    let plan = plan_agent(town, name, paths)?;
    let made = crate::make_all(&plan.changes, |_| {});
    let binds = plan
        .changes
        .iter()
        .filter(|c| matches!(c, Change::Bind { .. }))
        .count();
    if let Err(e) = made {
        report(&format!("{name}: laid down a new home, but not all of it"));
        return Err(e);
    }
    report(&format!(
        "{name}: laid down a new home ({} changes, {binds} persisted paths re-bound)",
        plan.changes.len()
    ));
    test_pause(Step::LaidDown);

    // NixOS: home-manager's activation (run as the agent) lays the dotfiles
    // into the new home before anything of the agent's starts again.
    if paths.systemd_running() && home_manager_manages(paths, name) {
        let unit = home_manager_unit(name);
        run("systemctl", ["restart", unit.as_str()])?;
        report(&format!(
            "{name}: home-manager laid its files down ({unit})"
        ));
    }
    for unit in &restart {
        run("systemctl", ["start", unit.as_str()])?;
    }
    if !restart.is_empty() {
        report(&format!("{name}: restarted {}", restart.join(", ")));
    }
    test_pause(Step::Restarted);
    Ok(())
}

/// A new round for every enabled agent (what the boot-time unit runs). An
/// agent whose reset fails does not keep the others from theirs: each is
/// tried, and the failures are the error at the end.
pub fn reset_all(
    town: &Town,
    paths: &HostPaths,
    mut report: impl FnMut(&str),
) -> Result<(), HostError> {
    let mut failed = Vec::new();
    for (name, _) in town.host_agents() {
        if let Err(e) = reset(town, name, paths, &mut report) {
            report(&format!("{name}: NOT reset: {e}"));
            failed.push(name.clone());
        }
    }
    // The humans verify the agents as they are now (keys are made or
    // imported by the rounds above).
    if let Err(e) = publish_trust(town, paths) {
        report(&format!(
            "the humans' allowed signers and keyrings NOT updated: {e}"
        ));
        failed.push("the humans' trust".to_string());
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(HostError::Conflict(format!(
            "the reset failed for {} (see above); the other agents have their new round",
            failed.join(", ")
        )))
    }
}

/// Bring the humans' side of the trust graph up to date
/// ([`crate::trust`]); returns what changed, as plan lines.
pub fn publish_trust(town: &Town, paths: &HostPaths) -> Result<Vec<String>, HostError> {
    let plan = crate::plan::plan_trust(town, paths)?;
    let mut done = Vec::new();
    crate::make_all(&plan.changes, |c| done.push(c.to_string()))?;
    Ok(done)
}

/// The home-manager unit of agent `name` (NixOS with home-manager): the
/// user name escaped as systemd escapes unit names (`ci-bot` →
/// `home-manager-ci\x2dbot.service`).
pub fn home_manager_unit(name: &str) -> String {
    let mut escaped = String::new();
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b':' || (b == b'.' && i > 0) {
            escaped.push(b as char);
        } else {
            escaped.push_str(&format!("\\x{b:02x}"));
        }
    }
    format!("home-manager-{escaped}.service")
}

#[cfg(test)]
mod unit_names {
    #[test]
    fn home_manager_units_are_named_as_systemd_escapes_them() {
        assert_eq!(super::home_manager_unit("ada"), "home-manager-ada.service");
        assert_eq!(
            super::home_manager_unit("ci-bot"),
            "home-manager-ci\\x2dbot.service"
        );
        assert_eq!(super::home_manager_unit("a_b"), "home-manager-a_b.service");
    }
}
