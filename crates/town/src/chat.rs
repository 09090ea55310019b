//! What one agent's chat bridge needs from the town, resolved.
//!
//! On a host the bridge resolves it from the town file itself. In the
//! cluster there is no town file: `nuketown cloud render` resolves it from
//! the whole town and writes it into the agent's ConfigMap (`chat.json`), so
//! the pod learns its rooms, its humans and the other agents' Matrix ids
//! without carrying anyone else's declaration. One function, [`Town::bridge_of`],
//! makes both, so the bridge behaves the same wherever it runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ChatBackend, Town};

/// In a cloud agent's pod: its bridge's [`BridgeTown`], a key of its ConfigMap.
pub const POD_CHAT: &str = "chat.json";
/// In the pod: the key of the agent's Secret (or of its sops file, with
/// `cloud.secrets = "sops-kms"`) holding its Matrix password.
pub const POD_PASSWORD: &str = "matrix-password";
/// Instead: the key holding an access token (first line the token, second the device id).
pub const POD_TOKEN: &str = "matrix-access-token";
/// In the pod: the Matrix store (the device survives rounds), a persisted
/// path under the home.
pub const POD_STORE: &str = ".nuketown/matrix";

/// An agent's bridge, resolved from the town.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BridgeTown {
    /// The agent (its town name, and its Unix user on a host).
    pub agent: String,
    /// `chat.homeserver`.
    pub homeserver: String,
    /// `chat.userId`.
    pub user_id: String,
    /// `chat.allowedHumans`.
    #[serde(default)]
    pub allowed_humans: Vec<String>,
    /// `chat.rooms`.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// `chat.backend`.
    #[serde(default)]
    pub backend: ChatBackend,
    /// `projectDirs`: where the backend runs (the first that exists).
    #[serde(default)]
    pub project_dirs: Vec<String>,
    /// The declared rooms this agent is a member of.
    #[serde(default)]
    pub declared: Vec<BridgeRoom>,
    /// Matrix id → town name of every chat agent (this one included): how
    /// the bridge tells an agent's message from a human's.
    #[serde(default)]
    pub agents: BTreeMap<String, String>,
    /// The declared tier (`cloud.resources`) of a cloud agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

/// A declared room (`rooms.<name>`) as one of its agents sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BridgeRoom {
    /// The room's name in the town.
    pub name: String,
    /// Its alias (`rooms.<name>.alias`, or the default one).
    pub alias: String,
    /// The humans declared in it.
    #[serde(default)]
    pub humans: Vec<String>,
    /// `agentsAnswerAgents`.
    #[serde(default)]
    pub agents_answer_agents: bool,
    /// `agentTurns`.
    pub agent_turns: u32,
}

impl crate::Agent {
    /// Whether this agent's chat bridge runs in its pod (chat on a cloud-only agent).
    pub fn chats_in_pod(&self) -> bool {
        self.chat.enable && self.cloud_only()
    }
}

impl Town {
    /// The bridge of agent `name`, wherever it runs; an error names the key
    /// to set when the agent has no chat.
    pub fn bridge_of(&self, name: &str) -> Result<BridgeTown, String> {
        let agent = match self.agents.get(name) {
            Some(a) if a.enable => a,
            _ => return Err(format!("{name} is not an enabled agent of this town")),
        };
        let chat = &agent.chat;
        if !chat.enable {
            return Err(format!("agents.{name}.chat.enable is false; enable it (with homeserver, userId and the account's password) to run the bridge"));
        }
        Ok(BridgeTown {
            agent: name.to_string(),
            homeserver: chat.homeserver.clone().unwrap_or_default(),
            user_id: chat.user_id.clone().unwrap_or_default(),
            allowed_humans: chat.allowed_humans.clone(),
            rooms: chat.rooms.clone(),
            backend: chat.backend.clone(),
            project_dirs: self.project_dirs.clone(),
            declared: self
                .rooms
                .iter()
                .filter(|(_, r)| r.agents.iter().any(|a| a == name))
                .filter_map(|(n, r)| {
                    Some(BridgeRoom {
                        name: n.clone(),
                        alias: self.room_alias(n)?,
                        humans: r.humans.clone(),
                        agents_answer_agents: r.agents_answer_agents,
                        agent_turns: r.agent_turns,
                    })
                })
                .collect(),
            agents: self
                .agent_matrix_ids()
                .map(|(id, n)| (id.to_string(), n.clone()))
                .collect(),
            tier: agent.cloud.enable.then(|| agent.cloud.resources.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::parse::{parse, Format};

    #[test]
    fn a_bridge_sees_its_rooms_and_every_chat_agent_but_no_other_declaration() {
        let town = parse(
            r#"
domain = "example.org"
hall.matrix = { homeserver = "https://m.example.org", userId = "@hall:example.org", passwordFile = "/run/hall-pw" }
[agents.ada]
uid = 1001
chat = { enable = true, homeserver = "https://m.example.org", userId = "@ada:example.org", passwordFile = "/run/ada-pw", allowedHumans = ["@josh:example.org"] }
[agents.vox]
uid = 1002
chat = { enable = true, homeserver = "https://m.example.org", userId = "@vox:example.org", passwordFile = "/run/vox-pw" }
[agents.bob]
uid = 1003
[rooms.lab]
humans = ["@josh:example.org"]
agents = ["ada", "vox"]
agentsAnswerAgents = true
[rooms.ops]
agents = ["vox"]
"#,
            Format::Toml,
            "town.toml",
            "host",
        )
        .unwrap();
        let b = town.bridge_of("ada").unwrap();
        assert_eq!(b.user_id, "@ada:example.org");
        assert_eq!(b.declared.len(), 1, "ada is in lab only");
        assert_eq!(b.declared[0].alias, "#lab:example.org");
        assert!(b.declared[0].agents_answer_agents);
        assert_eq!(
            b.agents.keys().collect::<Vec<_>>(),
            ["@ada:example.org", "@vox:example.org"]
        );
        let text = serde_json::to_string(&b).unwrap();
        assert!(!text.contains("pw"), "no password file travels: {text}");
        assert_eq!(serde_json::from_str::<super::BridgeTown>(&text).unwrap(), b);
        let e = town.bridge_of("bob").unwrap_err();
        assert!(e.contains("agents.bob.chat.enable"), "{e}");
        assert!(town.bridge_of("eve").is_err());
    }
}
