//! Applying a town to a Linux host.
//!
//! [`plan`] compares the town with the host and lists every [`Change`] that
//! [`apply`] would make, without touching anything; [`apply`] makes them, in
//! order, and a second run finds nothing to do. Users and groups come from the
//! host's own tools (useradd, usermod, …); files are written atomically.
//! Inside agents' homes and persist dirs, which the agents control, root
//! works only through [`safe`]: by descriptor, beneath a directory it owns,
//! never following a link.

pub mod acl;
pub mod change;
pub mod devices;
pub mod home;
pub mod plan;
pub mod portal;
pub mod render;
pub mod round;
pub mod safe;
pub mod shared;
pub mod state;
pub mod status;
pub mod sudoers;
pub mod system;
pub mod trust;

use std::path::PathBuf;

pub use change::{At, Change, Origin, Source};
pub use plan::{plan, Options, Plan, Privileged, Unit};
pub use state::State;
pub use status::{status, Status};

/// Where apply writes outside the town's own directories. Each path can be
/// overridden by an environment variable (for tests and unusual hosts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// udev rules file (`NUKETOWN_UDEV_RULES`).
    pub udev_rules: PathBuf,
    /// sudoers drop-in (`NUKETOWN_SUDOERS`).
    pub sudoers: PathBuf,
    /// State directory: what apply manages (`NUKETOWN_STATE_DIR`).
    pub state_dir: PathBuf,
    /// Where the applied town is published as `town.json` (`NUKETOWN_ETC_DIR`).
    pub etc_dir: PathBuf,
    /// Where system units go (`NUKETOWN_SYSTEMD_DIR`).
    pub systemd_dir: PathBuf,
    /// Where the `nuketown` binary is installed for the units (`NUKETOWN_BIN_DIR`).
    pub bin_dir: PathBuf,
    /// Lock serialising user and group changes on this host (`NUKETOWN_LOCK`).
    pub lock: PathBuf,
    /// Present when systemd runs this host (`NUKETOWN_SYSTEMD_RUNTIME_DIR`):
    /// only then are units stopped, started and reloaded.
    pub systemd_runtime: PathBuf,
    /// The host's resolver configuration (`NUKETOWN_RESOLV_CONF`): its
    /// `nameserver`s are the only DNS servers a restricted agent may ask.
    pub resolv_conf: PathBuf,
    /// Where sops secrets without a place in the home are installed, as
    /// sops-nix installs them (`NUKETOWN_SECRETS_DIR`).
    pub secrets_dir: PathBuf,
    /// The system git configuration, which apply points at the town's
    /// allowed signers (`NUKETOWN_GITCONFIG`; git's own `GIT_CONFIG_SYSTEM`).
    pub gitconfig: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            udev_rules: "/etc/udev/rules.d/70-nuketown.rules".into(),
            sudoers: "/etc/sudoers.d/nuketown".into(),
            state_dir: "/var/lib/nuketown".into(),
            etc_dir: "/etc/nuketown".into(),
            systemd_dir: "/etc/systemd/system".into(),
            bin_dir: "/usr/local/bin".into(),
            lock: "/run/lock/nuketown-users.lock".into(),
            systemd_runtime: "/run/systemd/system".into(),
            resolv_conf: "/etc/resolv.conf".into(),
            secrets_dir: "/run/secrets".into(),
            gitconfig: "/etc/gitconfig".into(),
        }
    }
}

impl HostPaths {
    /// The defaults, with any `NUKETOWN_*` overrides from the environment.
    pub fn from_env() -> Self {
        let mut p = HostPaths::default();
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(v) = var("NUKETOWN_UDEV_RULES") {
            p.udev_rules = v;
        }
        if let Some(v) = var("NUKETOWN_SUDOERS") {
            p.sudoers = v;
        }
        if let Some(v) = var("NUKETOWN_STATE_DIR") {
            p.state_dir = v;
        }
        if let Some(v) = var("NUKETOWN_ETC_DIR") {
            p.etc_dir = v;
        }
        if let Some(v) = var("NUKETOWN_SYSTEMD_DIR") {
            p.systemd_dir = v;
        }
        if let Some(v) = var("NUKETOWN_BIN_DIR") {
            p.bin_dir = v;
        }
        if let Some(v) = var("NUKETOWN_SYSTEMD_RUNTIME_DIR") {
            p.systemd_runtime = v;
        }
        if let Some(v) = var("NUKETOWN_RESOLV_CONF") {
            p.resolv_conf = v;
        }
        if let Some(v) = var("NUKETOWN_LOCK") {
            p.lock = v;
        }
        if let Some(v) = var("NUKETOWN_SECRETS_DIR") {
            p.secrets_dir = v;
        }
        if let Some(v) = var("NUKETOWN_GITCONFIG") {
            p.gitconfig = v;
        }
        p
    }

    /// Whether systemd runs this host.
    pub fn systemd_running(&self) -> bool {
        self.systemd_runtime.is_dir()
    }
}

/// Why applying failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A host tool failed. Shown escaped: tools run as an agent (gpg) print
    /// what the agent's own configuration makes them print.
    #[error("`{}` failed: {}", clean(.command), clean(.message))]
    Tool {
        /// The command line.
        command: String,
        /// Exit status and stderr.
        message: String,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The host disagrees with the town in a way apply must not paper over.
    #[error("{0}")]
    Conflict(String),
    /// Not root.
    #[error("{0} needs root; run it as root (e.g. with sudo)")]
    NeedsRoot(&'static str),
    /// Root would have followed a link, opened a special file or trusted a
    /// file of another owner where an agent can write: refused.
    #[error("refusing {}: {why}", .path.display())]
    Refused {
        /// The path.
        path: PathBuf,
        /// What was found there.
        why: String,
    },
}

use nuketown_town::display::clean;

impl HostError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HostError {
        let path = path.into();
        move |source| HostError::Io { path, source }
    }
}

/// Plan and apply `town` under the host lock (so concurrent applies never
/// race on users and groups). Returns the plan that was carried out.
pub fn apply_town(
    town: &nuketown_town::Town,
    paths: &HostPaths,
    opts: &Options,
    report: impl FnMut(&Change),
) -> Result<plan::Plan, HostError> {
    if !system::is_root() {
        return Err(HostError::NeedsRoot("nuketown apply"));
    }
    let _lock = state::HostLock::take(&paths.lock)?;
    let plan = plan::plan(town, paths, opts)?;
    make_all(&plan.changes, report)?;
    Ok(plan)
}

/// Make every change in order. A change refused because of what an agent
/// put in its own tree is skipped and the rest are made — one agent's links
/// must not keep the others' changes (or a boot-time reset) from the host —
/// and the refusals are the error at the end; any other failure stops at
/// once (shown after the refusals before it, which may have caused it).
pub(crate) fn make_all(
    changes: &[Change],
    mut report: impl FnMut(&Change),
) -> Result<(), HostError> {
    let mut refused = Vec::new();
    let mut stopped = None;
    for c in changes {
        report(c);
        match c.make() {
            Ok(()) => {}
            Err(e @ HostError::Refused { .. }) => refused.push(e.to_string()),
            Err(e) if refused.is_empty() => return Err(e),
            Err(e) => {
                stopped = Some(e);
                break;
            }
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    let n = refused.len();
    // One link usually stops several changes below it: name each path once.
    let mut lines: Vec<String> = Vec::new();
    for r in refused {
        if !lines.contains(&r) {
            lines.push(r);
        }
    }
    let mut msg = format!(
        "{n} change{} refused:\n{}\n{REFUSAL_HINT}",
        if n == 1 { " was" } else { "s were" },
        lines.join("\n")
    );
    match stopped {
        Some(e) => msg.push_str(&format!("\nand then: {e}")),
        None => msg.push_str("\nevery other change was made"),
    }
    Err(HostError::Conflict(msg))
}

/// What a refusal means and what to do, said once under the refused paths.
pub const REFUSAL_HINT: &str = "(as root, nuketown never follows a symbolic link, opens a FIFO or device, or trusts another owner's file where an agent can write: remove what is named there; a home is laid down afresh by `nuketown reset AGENT`, a persist dir is kept)";

impl HostPaths {
    /// Where the running `nuketown` binary is (or will be) installed for units:
    /// itself when it already lives in the Nix store or `bin_dir`, else `bin_dir/nuketown`.
    pub fn installed_binary(&self, running: &std::path::Path) -> PathBuf {
        if running.starts_with("/nix/store") || running.parent() == Some(self.bin_dir.as_path()) {
            running.to_path_buf()
        } else {
            self.bin_dir.join("nuketown")
        }
    }
}
