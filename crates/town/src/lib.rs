//! The Town declaration: the one schema every Nuketown binary reads.
//!
//! A town is produced either by the NixOS module (`/etc/nuketown/town.json`)
//! or written by hand as `town.toml`; both have the same shape, whose keys are
//! the NixOS option names. [`load`] reads either, fills defaults and
//! validates; [`Town::identity`] is the one function every per-agent file
//! (identity.toml, prompts, git config) is projected from.

pub mod display;
mod identity;
pub mod network;
mod parse;
mod schema;
mod validate;

pub use identity::{projections, Identity, Projection, Signing};
pub use network::{Egress, EgressRule, Network};
pub use parse::{default_town_path, hostname, load, parse, Format, TownError};
pub use schema::*;
pub use validate::{
    is_dns_label, is_dns_subdomain, is_unix_name, validate, Problem, MAX_UID, MIN_UID,
};

use std::path::PathBuf;

impl Town {
    /// The domain, filled in by [`load`]; `localhost.local` only for an unloaded town.
    pub fn domain(&self) -> &str {
        self.domain.as_deref().unwrap_or("localhost.local")
    }

    /// The enabled agents, by name.
    pub fn enabled_agents(&self) -> impl Iterator<Item = (&String, &Agent)> {
        self.agents.iter().filter(|(_, a)| a.enable)
    }

    /// The home directory of agent `name`.
    pub fn home_of(&self, name: &str) -> PathBuf {
        self.agents_dir.join(name)
    }

    /// The persist root of agent `name`: `<persistDir>/agents/<name>`.
    pub fn persist_of(&self, name: &str) -> PathBuf {
        self.persist_dir.join("agents").join(name)
    }

    /// The Unix users allowed to approve escalations.
    pub fn approvers(&self) -> Vec<String> {
        if self.hall.approvers.is_empty() {
            self.human_user.iter().cloned().collect()
        } else {
            self.hall.approvers.clone()
        }
    }

    /// Fill the defaults that depend on the host (the domain).
    pub fn resolve_defaults(&mut self, hostname: &str) {
        if self.domain.is_none() {
            self.domain = Some(format!("{hostname}.local"));
        }
        // The NixOS module's default for settings is `{ }`: one normal form for both producers.
        for agent in self.agents.values_mut() {
            if agent.claude_code.settings.is_null() {
                agent.claude_code.settings = serde_json::json!({});
            }
        }
    }
}
