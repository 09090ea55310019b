//! The town hall: a human approves every privilege escalation.
//!
//! An agent's `sudo` reaches root only through the entry point
//! (`nuketown-elevate`), which sends the exact argv to the hall over a
//! root-only socket and runs it only on an approval. The hall applies the
//! agent's policy (deny, auto-approve, time-boxed grants, mock mode), asks the
//! approvers otherwise, denies on every failure, and writes an audit log.
//!
//! Layout, like a small tokio daemon: [`protocol`] turns lines into messages,
//! [`state`] holds pending requests and grants, [`daemon`] owns the sockets
//! and connections, [`policy`] decides what needs no human, [`audit`] records.
//! [`sudoers`], [`shim`] and [`units`] render the files `nuketown apply`
//! installs.

pub mod ask;
pub mod audit;
pub mod changeable;
pub mod client;
pub mod daemon;
pub mod entry;
pub mod files;
pub mod follow;
pub mod keyuse;
pub mod policy;
pub mod protocol;
pub mod resources;
pub mod shim;
pub mod show;
pub mod state;
pub mod sudoers;
pub mod time;
pub mod units;

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
/// The group whose members may connect to the approver socket.
pub const APPROVERS_GROUP: &str = "nuketown-approvers";
