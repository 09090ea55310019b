//! The town hall: a human approves every privilege escalation.
//!
//! An agent's `sudo` reaches root only through the entry point
//! (`nuketown-elevate`), which sends the exact argv to the hall over a
//! root-only socket and runs it only on an approval. The hall applies the
//! agent's policy (deny rules; for what it proves root's, auto-approve
//! rules, time-boxed grants, mock mode), asks the approvers otherwise,
//! denies on every failure, and writes an audit log.
//!
//! Layout, like a small tokio daemon, with no import running back up:
//! leaves first — [`protocol`] turns lines into messages, [`connection`]
//! reads and writes them, [`state`] holds pending requests and grants,
//! [`trust`] and [`proof`] say what is root's beyond doubt, [`town`] is the
//! declaration as last read, [`policy`] decides what needs no human,
//! [`audit`] records; then [`hall`] (the shared
//! core), the request kinds in [`requests`] (one a file) and the approvers'
//! connections in [`approver`]; then [`server`], which owns the sockets.
//! [`sudoers`] and [`units`] render the files `nuketown apply` installs;
//! [`gateway`] runs the credential gateway as the hall's unprivileged child.

pub mod approver;
pub mod audit;
pub mod client;
pub mod connection;
pub mod entry;
pub mod files;
pub mod gateway;
pub mod hall;
pub mod policy;
pub mod proof;
pub mod protocol;
pub mod requests;
pub mod server;
pub mod show;
pub mod state;
pub mod sudoers;
pub mod time;
pub mod town;
pub mod trust;
pub mod units;

pub use requests::{follow, key_use, resources};

/// The requester socket (root only, 0600).
pub const REQUESTER_SOCKET: &str = "/run/nuketown/hall.sock";
/// The approver socket (group [`APPROVERS_GROUP`], 0660).
pub const APPROVER_SOCKET: &str = "/run/nuketown/approvers.sock";
/// The ask socket: agents ask for network access here (`nuketown ask`), and
/// follow their own requests (the chat bridge).
pub const ASK_SOCKET: &str = "/run/nuketown/ask.sock";
/// The agents' network rules as `apply` last rendered them (`nft -f`).
pub const NFTABLES_FILE: &str = "/etc/nuketown/nftables.nft";
/// The mock mode file.
pub const MODE_FILE: &str = "/run/nuketown/mode";
/// The audit log.
pub const AUDIT_LOG: &str = "/var/lib/nuketown/audit.jsonl";
/// `apply`'s record of the agents it made.
pub const HOST_STATE: &str = "/var/lib/nuketown/state.json";
/// The group whose members may connect to the approver socket.
pub const APPROVERS_GROUP: &str = "nuketown-approvers";
