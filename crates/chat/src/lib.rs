//! The chat face of an agent: a Matrix account per agent, backed by its agent
//! CLI (claude-code, codex, aider, or any command), run as the agent.
//!
//! [`bridge::run`] is the long-running bridge (`nuketown chat AGENT`);
//! [`backend`] builds and runs one backend turn and reads its answer.

pub mod approver;
pub mod backend;
pub mod bridge;
pub mod commands;
pub mod converse;
pub mod escalations;
pub mod matrix;
pub mod rooms;

pub use bridge::{store_dir, BridgeConfig, ChatStatus};
/// The Matrix client library, for tests and tools that speak to the bridge.
pub use matrix_sdk;
