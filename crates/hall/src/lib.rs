//! The town hall: a human approves every privilege escalation.
//!
//! An agent's `sudo` reaches root only through the entry point
//! (`nuketown-elevate`), which sends the exact argv to the hall over a
//! root-only socket and runs it only on an approval. The hall applies the
//! agent's policy (deny, auto-approve, time-boxed grants, mock mode), asks the
//! approvers otherwise, denies on every failure, and writes an audit log.

pub mod audit;
pub mod client;
pub mod daemon;
pub mod policy;
pub mod protocol;
pub mod render;
pub mod time;

/// The requester socket (root only).
pub const REQUESTER_SOCKET: &str = "/run/nuketown/hall.sock";
/// The approver socket (group [`APPROVERS_GROUP`]).
pub const APPROVER_SOCKET: &str = "/run/nuketown/approvers.sock";
/// The mock mode file.
pub const MODE_FILE: &str = "/run/nuketown/mode";
/// The audit log.
pub const AUDIT_LOG: &str = "/var/lib/nuketown/audit.jsonl";
/// The group whose members may connect to the approver socket.
pub const APPROVERS_GROUP: &str = "nuketown-approvers";

/// The PATH the entry point looks commands up in, and runs them with.
pub const SAFE_PATH: &str = "/run/wrappers/bin:/run/current-system/sw/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The executable `program` names: itself when it holds a `/` (relative to
/// `cwd`), else the first executable file of that name in [`SAFE_PATH`].
pub fn resolve_program(program: &str, cwd: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        let p = cwd.join(program);
        return p.is_file().then_some(p);
    }
    SAFE_PATH
        .split(':')
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}
