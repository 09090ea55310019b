//! The Town declaration: the one schema every Nuketown binary reads.
//!
//! A town is produced either by the NixOS module (`/etc/nuketown/town.json`)
//! or written by hand as `town.toml`; both have the same shape, whose keys are
//! the NixOS option names. [`load`] reads either, fills defaults and
//! validates; [`Town::identity`] is the one function every per-agent file
//! (identity.toml, prompts, git config) is projected from.

pub mod chat;
pub mod credentials;
pub mod display;
mod identity;
pub mod network;
mod parse;
mod schema;
mod shorthand;
pub mod tiers;
mod validate;

pub use chat::{BridgeRoom, BridgeTown};
pub use identity::{default_agent_name, projections, Identity, Projection, Signing};
pub use network::{Egress, EgressRule, Network};
pub use parse::{default_town_path, hostname, load, parse, Format, TownError};
pub use schema::*;
pub use shorthand::command_line;
pub use validate::{
    is_dns_label, is_dns_subdomain, is_sops_name, is_unix_name, is_uuid, validate, Problem,
    MAX_UID, MIN_UID,
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

    /// The enabled agents that are users of this host (not declared for
    /// the cloud only), by name: what every host projection makes.
    pub fn host_agents(&self) -> impl Iterator<Item = (&String, &Agent)> {
        self.agents.iter().filter(|(_, a)| a.on_host())
    }

    /// Agent `name` as a user of this host, or why it is not one: unknown,
    /// disabled, or declared for the cloud only (naming the key to change).
    pub fn host_agent(&self, name: &str) -> Result<&Agent, String> {
        match self.agents.get(name) {
            Some(a) if a.on_host() => Ok(a),
            Some(a) if a.cloud_only() => Err(format!(
                "{name} is declared for the cloud only (agents.{name}.host.enable = false, the default with cloud.enable): it has no user on this host; set agents.{name}.host.enable = true and apply to run it here too"
            )),
            _ => {
                let known: Vec<&str> = self.host_agents().map(|(n, _)| n.as_str()).collect();
                Err(format!(
                    "{name} is not an enabled agent of this town (agents on this host: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            }
        }
    }

    /// The home directory of agent `name`.
    pub fn home_of(&self, name: &str) -> PathBuf {
        self.agents_dir.join(name)
    }

    /// The persist root of agent `name`: `<persistDir>/agents/<name>`.
    pub fn persist_of(&self, name: &str) -> PathBuf {
        self.persist_dir.join("agents").join(name)
    }

    /// Where shared directory `name` lives.
    pub fn shared_path(&self, name: &str) -> PathBuf {
        match self.shared_dirs.get(name).and_then(|d| d.path.clone()) {
            Some(p) => p,
            None => self.persist_dir.join("shared").join(name),
        }
    }

    /// The group of shared directory `name`.
    pub fn shared_group(name: &str) -> String {
        format!("shared-{name}")
    }

    /// The humans of the town: `humanUser` and the approvers.
    pub fn humans(&self) -> Vec<String> {
        let mut h: Vec<String> = self.human_user.iter().cloned().collect();
        for a in self.approvers() {
            if !h.contains(&a) {
                h.push(a);
            }
        }
        h
    }

    /// The alias of declared room `name`: `rooms.<name>.alias`, else
    /// `#<name>:<server of hall.matrix.userId>` (None without either).
    pub fn room_alias(&self, name: &str) -> Option<String> {
        let room = self.rooms.get(name)?;
        if let Some(alias) = &room.alias {
            return Some(alias.clone());
        }
        let server = self.hall.matrix.user_id.as_deref()?.split_once(':')?.1;
        Some(format!("#{name}:{server}"))
    }

    /// The Matrix id of every enabled agent with chat, and the agent's name.
    pub fn agent_matrix_ids(&self) -> impl Iterator<Item = (&str, &String)> {
        self.enabled_agents()
            .filter(|(_, a)| a.chat.enable)
            .filter_map(|(n, a)| Some((a.chat.user_id.as_deref()?, n)))
    }

    /// The Matrix id of every agent that declares one (enabled or not, chat
    /// on or off), lowercased: none of them may ever approve.
    pub fn all_agent_matrix_ids(&self) -> Vec<(String, &String)> {
        self.agents
            .iter()
            .filter_map(|(n, a)| Some((a.chat.user_id.as_deref()?.to_lowercase(), n)))
            .collect()
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
        // A bare UUID is the module guide's btrfs set-up: its subvolumes
        // `@agents` and `@agents-blank`.
        if let Some(dev) = self.btrfs_device.clone() {
            if validate::is_uuid(&dev) {
                self.btrfs_device = Some(format!("/dev/disk/by-uuid/{dev}"));
                self.btrfs_subvolume
                    .get_or_insert_with(|| "@agents".to_string());
            }
            self.btrfs_subvolume
                .get_or_insert_with(|| "agents".to_string());
        }
        // The NixOS module's default for settings is `{ }`: one normal form for both producers.
        let sops = self.sops_file.is_some();
        for (name, agent) in self.agents.iter_mut() {
            // With a sops file, an extra secret without a source is the sops
            // secret `<agent>/<name>`, as the NixOS module reads it.
            for (sname, secret) in agent.secrets.extra_secrets.iter_mut() {
                if sops && secret.source.is_none() {
                    secret.source = Some(PathBuf::from(format!("{name}/{sname}")));
                }
            }
            // The module writes `host.enable` with its default filled in.
            if agent.host.enable.is_none() {
                agent.host.enable = Some(!agent.cloud.enable);
            }
            if agent.claude_code.settings.is_null() {
                agent.claude_code.settings = serde_json::json!({});
            }
        }
    }
}
