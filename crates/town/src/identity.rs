//! One agent identity, projected into every file that tells the agent (and
//! its tools) who it is: identity.toml, the prompt files, git config.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::{Agent, Town};

/// Who an agent is: everything its projections are rendered from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identity {
    /// Unix user name.
    pub name: String,
    /// What the agent does.
    pub role: String,
    /// Git / mail address.
    pub email: String,
    /// The town's domain.
    pub domain: String,
    /// Home directory.
    pub home: PathBuf,
    /// Unix uid.
    pub uid: u32,
    /// A sentence about the agent.
    pub description: String,
    /// Git author name.
    #[serde(skip)]
    pub git_name: String,
    /// Whether commits are signed.
    #[serde(skip)]
    pub signing: bool,
    /// The human, as "Name (user)".
    #[serde(skip)]
    pub human: Option<String>,
    /// Persisted paths, relative to the home.
    #[serde(skip)]
    pub persist: Vec<String>,
    /// Whether the agent may ask for root.
    #[serde(skip)]
    pub sudo: bool,
    /// Text appended to the prompt.
    #[serde(skip)]
    pub extra_prompt: String,
    /// Name of the Claude Code agent file.
    #[serde(skip)]
    pub claude_agent_name: String,
    /// The devices the agent may open.
    #[serde(skip)]
    pub devices: Vec<crate::Device>,
    /// Whether its egress is restricted (then it asks for more network).
    #[serde(skip)]
    pub network_restricted: bool,
    /// Whether it may ask for a bigger tier in the cluster.
    #[serde(skip)]
    pub resources: bool,
}

/// A file in the agent's home, rendered from the identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// Path relative to the home.
    pub path: String,
    /// File contents.
    pub contents: String,
    /// File mode.
    pub mode: u32,
}

/// How commits are signed, as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signing {
    /// SSH signing with the public key at this home-relative path.
    Ssh(String),
    /// GPG signing with this key id / fingerprint.
    Gpg(String),
}

impl Town {
    /// The identity of agent `name`. Panics if the agent is not declared.
    pub fn identity(&self, name: &str) -> Identity {
        let agent: &Agent = &self.agents[name];
        let domain = self.domain().to_string();
        let human = self.human_user.as_ref().map(|u| match &self.human_name {
            Some(n) => format!("{n} ({u})"),
            None => u.clone(),
        });
        let mut persist: Vec<String> = agent
            .persist
            .directories
            .iter()
            .chain(&agent.persist.files)
            .cloned()
            .collect();
        persist.sort();
        Identity {
            name: name.to_string(),
            role: agent.role.clone(),
            email: agent
                .git
                .email
                .clone()
                .unwrap_or_else(|| format!("{name}@{domain}")),
            domain,
            home: self.home_of(name),
            uid: agent.uid,
            description: agent.description.clone(),
            git_name: agent.git.name.clone().unwrap_or_else(|| name.to_string()),
            signing: agent.git.signing,
            human,
            persist,
            sudo: agent.sudo.enable,
            extra_prompt: agent.claude_code.extra_prompt.clone(),
            claude_agent_name: agent
                .claude_code
                .agent_name
                .clone()
                .unwrap_or_else(|| default_agent_name(name, &agent.role)),
            devices: agent.devices.clone(),
            network_restricted: agent.network.egress.restricted(),
            resources: agent.cloud.enable && agent.cloud.scaling.max_resources.is_some(),
        }
    }
}

impl Identity {
    /// `~/.config/nuketown/identity.toml`: runtime-agnostic, machine-readable.
    pub fn identity_toml(&self) -> String {
        let mut s = String::from(
            "# Written by nuketown from the town declaration; rewritten every round.\n",
        );
        s.push_str(&toml::to_string(self).expect("identity serialises"));
        s
    }

    /// The instructions every agent CLI gets (CLAUDE.md, AGENTS.md).
    pub fn prompt(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# You are {}\n", self.name);
        let _ = write!(
            s,
            "You are **{}**, a {} agent in the Nuketown at {}.",
            self.name, self.role, self.domain
        );
        if !self.description.is_empty() {
            let _ = write!(s, " {}", self.description.trim());
        }
        s.push_str("\n\n");
        let _ = writeln!(
            s,
            "You are the Unix user `{}` (uid {}), home `{}`. Your commits are authored as {} <{}>{}.",
            self.name,
            self.uid,
            self.home.display(),
            self.git_name,
            self.email,
            if self.signing { " and signed" } else { "" }
        );
        if let Some(h) = &self.human {
            let _ = writeln!(s, "The human in charge of this town is {h}.");
        }
        s.push_str("\n## Rounds\n\n");
        s.push_str("Your home is levelled at the start of every round: whatever you leave in it is gone.\n");
        if self.persist.is_empty() {
            s.push_str("Nothing in your home is persisted.\n");
        } else {
            s.push_str("Only these paths survive a round:\n\n");
            for p in &self.persist {
                let _ = writeln!(s, "- `~/{p}`");
            }
        }
        let _ = writeln!(
            s,
            "\nWork that matters lives in git: clone the repository into your home, commit on a branch named `{}/<topic>`, and push it for review. Never work in another user's checkout.",
            self.name
        );
        s.push_str("\n## Privileges\n\n");
        if self.sudo {
            s.push_str(
                "- **Root**: `sudo COMMAND…` asks a human to approve that one exact command; it runs as root only after a yes. \
Ask for the smallest command that does the job, and wait for the answer. \
Commands your policy approves without a human are approved only when run from a directory root owns and naming only root's files (`cd / && sudo systemctl status nginx`); \
from your own directories, or naming your files, they go to a human.\n",
            );
        } else {
            s.push_str("- **Root**: you have none. If something needs root, ask the human.\n");
        }
        if self.network_restricted {
            s.push_str(
                "- **Network**: you reach only what the town declares for you. For more, ask: \
`nuketown ask network HOST[:PORT] --for 1h --reason \"why\"`; a human decides, and the access ends by itself when the time is up.\n",
            );
        }
        if self.resources {
            s.push_str(
                "- **Resources**: in the cluster, ask for a bigger tier with `nuketown ask resources TIER --reason \"why\"`; a human decides, and you return to your tier when idle.\n",
            );
        }
        s.push_str(
            "- **A denial** is a human's (or the town's policy's) answer to that exact request: final. \
Say what you needed and why, then carry on without it; do not retry it in a loop or look for another way around. \
Your CLI's own permission prompts go to the same humans; a denied tool is a denied request.\n",
        );
        if !self.devices.is_empty() {
            s.push_str("\n## Hardware Access\n\nYou may open these devices while they are plugged in (udev gives you an ACL on the device node):\n\n");
            for d in &self.devices {
                let attrs: Vec<String> = d.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = writeln!(
                    s,
                    "- **{}**: {} ({})",
                    d.subsystem,
                    attrs.join(", "),
                    d.permission
                );
            }
        }
        s.push_str("\n## Identity\n\nA machine-readable copy of this is in `~/.config/nuketown/identity.toml`.\n");
        if !self.extra_prompt.trim().is_empty() {
            let _ = write!(s, "\n{}\n", self.extra_prompt.trim());
        }
        s
    }

    /// The Claude Code agent file (`~/.claude/agents/<name>.md`).
    pub fn claude_agent_file(&self) -> String {
        let desc = if self.description.is_empty() {
            format!("{}, the {} agent", self.name, self.role)
        } else {
            self.description.trim().replace('\n', " ")
        };
        format!(
            "---\nname: {}\ndescription: {}\n---\n\n{}",
            self.claude_agent_name,
            serde_json::to_string(&desc).expect("string serialises"),
            self.prompt()
        )
    }

    /// `~/.gitconfig` for this identity, given how the host set up signing.
    pub fn gitconfig(&self, signing: Option<&Signing>) -> String {
        let mut s = String::from(
            "# Written by nuketown from the town declaration; rewritten every round.\n",
        );
        let _ = writeln!(
            s,
            "[user]\n\tname = {}\n\temail = {}",
            quote_git(&self.git_name),
            quote_git(&self.email)
        );
        match (self.signing, signing) {
            (true, Some(Signing::Ssh(pubkey))) => {
                let _ = writeln!(s, "\tsigningkey = {}/{pubkey}", self.home.display());
                s.push_str("[gpg]\n\tformat = ssh\n");
                let _ = writeln!(
                    s,
                    "[gpg \"ssh\"]\n\tallowedSignersFile = {}/.config/git/allowed_signers",
                    self.home.display()
                );
                s.push_str("[commit]\n\tgpgsign = true\n[tag]\n\tgpgsign = true\n");
            }
            (true, Some(Signing::Gpg(id))) => {
                let _ = writeln!(s, "\tsigningkey = {id}");
                s.push_str("[gpg]\n\tformat = openpgp\n[commit]\n\tgpgsign = true\n[tag]\n\tgpgsign = true\n");
            }
            _ => {}
        }
        s.push_str("[init]\n\tdefaultBranch = main\n");
        s
    }
}

/// `<name>-<role>`, with spaces and slashes of the role as `-`: the
/// Claude Code agent file's name unless `claudeCode.agentName` says otherwise.
pub fn default_agent_name(name: &str, role: &str) -> String {
    format!("{name}-{}", role.replace([' ', '/'], "-"))
}

fn quote_git(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Every identity file of `name` in `town`, as laid into its home each round
/// (git config is separate: it depends on the keys found on the host).
pub fn projections(town: &Town, name: &str) -> Vec<Projection> {
    let id = town.identity(name);
    let agent = &town.agents[name];
    let prompt = id.prompt();
    let mut files = vec![
        Projection {
            path: ".config/nuketown/identity.toml".into(),
            contents: id.identity_toml(),
            mode: 0o644,
        },
        Projection {
            path: ".claude/CLAUDE.md".into(),
            contents: prompt.clone(),
            mode: 0o644,
        },
        Projection {
            path: format!(".claude/agents/{}.md", id.claude_agent_name),
            contents: id.claude_agent_file(),
            mode: 0o644,
        },
        Projection {
            path: "AGENTS.md".into(),
            contents: prompt.clone(),
            mode: 0o644,
        },
        Projection {
            path: ".codex/AGENTS.md".into(),
            contents: prompt,
            mode: 0o644,
        },
    ];
    if agent.claude_code.enable {
        let settings = if agent.claude_code.settings.is_null() {
            serde_json::json!({})
        } else {
            agent.claude_code.settings.clone()
        };
        files.push(Projection {
            path: ".claude/settings.json".into(),
            contents: serde_json::to_string_pretty(&settings).expect("json serialises") + "\n",
            mode: 0o644,
        });
        for (extra, text) in &agent.claude_code.extra_agents {
            files.push(Projection {
                path: format!(".claude/agents/{extra}.md"),
                contents: text.clone(),
                mode: 0o644,
            });
        }
    }
    files
}

impl Town {
    /// Every identity file of agent `name` (see [`projections`]).
    pub fn projections(&self, name: &str) -> Vec<Projection> {
        projections(self, name)
    }
}
