//! What the town looks like on this host right now.
//!
//! Status reads inside the agents' trees (the public key, the chat bridge's
//! status file) the way apply does — beneath root's directories, no links,
//! regular files the agent owns, bounded — and everything read there, being
//! the agent's text, is escaped for the terminal before it is kept (both the
//! text and `--json` show it escaped).

use std::fmt;
use std::path::Path;

use serde::Serialize;

use nuketown_town::display::clean;
use nuketown_town::Town;

use crate::change::{public_key, Origin};
use crate::plan::{generated_key, persist_agents, secret_origin};
use crate::safe::Tree;
use crate::system;

/// What status reads of a chat status file at most.
const MAX_STATUS: u64 = 64 << 10;

/// Every string in a JSON value (keys too) escaped for the terminal.
fn clean_json(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(clean(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(clean_json).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (clean(&k), clean_json(v)))
                .collect(),
        ),
        other => other,
    }
}

/// The agent's public key as installed in its home, else from where apply takes it.
fn ssh_public_key(town: &Town, name: &str, uid: u32) -> Option<String> {
    let installed = Tree::open(&town.agents_dir).and_then(|t| {
        t.read(
            &Path::new(name).join(".ssh/id_ed25519.pub"),
            Some(uid),
            64 << 10,
        )
    });
    let bytes = match installed {
        Ok(b) => b,
        Err(_) => {
            let key = match &town.agents[name].secrets.ssh_key {
                Some(k) => secret_origin(town, k).ok()?,
                None => Origin::Beneath {
                    at: generated_key(town, name),
                    owner: 0,
                },
            };
            public_key(&key).ok()?
        }
    };
    Some(clean(String::from_utf8_lossy(&bytes).trim()))
}

/// One credential of an agent and its use.
#[derive(Debug, Clone, Serialize)]
pub struct CredentialStatus {
    /// Its name.
    pub name: String,
    /// Its API.
    pub api: String,
    /// Requests and tokens in the last hour and day (zeros when unused).
    pub requests_hour: u64,
    pub tokens_hour: u64,
    pub requests_day: u64,
    pub tokens_day: u64,
}

/// The agent's credentials and their use (the hall's `usage/<agent>.json`).
fn credentials_status(town: &Town, name: &str) -> Vec<CredentialStatus> {
    let usage: serde_json::Value = std::fs::read(
        town.hall
            .gateway
            .run_dir
            .join(nuketown_town::credentials::USAGE)
            .join(format!("{name}.json")),
    )
    .ok()
    .and_then(|b| serde_json::from_slice(&b).ok())
    .unwrap_or_default();
    town.credentials_of(name)
        .into_iter()
        .map(|(cname, c)| {
            let u = &usage["credentials"][&cname];
            let n = |k: &str| u[k].as_u64().unwrap_or(0);
            CredentialStatus {
                api: clean(&c.api),
                requests_hour: n("requestsHour"),
                tokens_hour: n("tokensHour"),
                requests_day: n("requestsDay"),
                tokens_day: n("tokensDay"),
                name: clean(&cname),
            }
        })
        .collect()
}

/// The chat bridge's status file (written by the bridge, as the agent).
fn chat_status(town: &Town, name: &str, uid: u32) -> Option<serde_json::Value> {
    let tree = Tree::open(&persist_agents(town)).ok()?;
    let bytes = tree
        .read(
            &Path::new(name).join(".nuketown/matrix/status.json"),
            Some(uid),
            MAX_STATUS,
        )
        .ok()?;
    let mut status: serde_json::Value = serde_json::from_slice(&bytes).ok().map(clean_json)?;
    // Alive is what the process says by holding its lock, not what its file
    // last said: a killed bridge leaves `connected: true` behind.
    let running = tree
        .locked(
            &Path::new(name).join(".nuketown/matrix/bridge.lock"),
            Some(uid),
        )
        .unwrap_or(false);
    if let Some(o) = status.as_object_mut() {
        o.insert("running".into(), running.into());
        if !running {
            o.insert("connected".into(), false.into());
            o.insert("error".into(), "the bridge is not running".into());
        }
    }
    Some(status)
}

/// The town as found on the host.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The town's domain.
    pub domain: String,
    /// The humans.
    pub humans: Vec<HumanStatus>,
    /// The agents.
    pub agents: Vec<AgentStatus>,
    /// The shared directories.
    pub shared: Vec<SharedStatus>,
}

/// A shared directory as found on the host.
#[derive(Debug, Clone, Serialize)]
pub struct SharedStatus {
    /// `sharedDirs.<name>`.
    pub name: String,
    /// Where it is.
    pub path: String,
    /// Its group.
    pub group: String,
    /// Declared members and their access (`rw`/`ro`).
    pub members: Vec<(String, String)>,
    /// `as declared`, `missing`, or what differs (apply fixes it).
    pub state: String,
}

/// A human as found on the host.
#[derive(Debug, Clone, Serialize)]
pub struct HumanStatus {
    /// User name.
    pub user: String,
    /// Full name.
    pub name: Option<String>,
    /// uid, if the account exists.
    pub uid: Option<u32>,
    /// Whether they may approve escalations.
    pub approver: bool,
}

/// An agent as found on the host.
#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    /// User name.
    pub name: String,
    /// Declared uid.
    pub uid: u32,
    /// Role.
    pub role: String,
    /// Whether the agent is enabled in the town.
    pub enabled: bool,
    /// Whether it is a user of this host (`host.enable`); false for an
    /// agent declared for the cloud only.
    pub host: bool,
    /// The namespace it runs in on the cluster (`cloud.enable`), if any.
    pub cloud: Option<String>,
    /// Whether the Unix user exists with the declared uid.
    pub present: bool,
    /// Home directory.
    pub home: String,
    /// Home mode, e.g. "0700".
    pub home_mode: Option<String>,
    /// Persisted paths and whether each is bind-mounted now.
    pub persist: Vec<PersistStatus>,
    /// The SSH public key (escaped: its comment is the agent's text).
    pub ssh_public_key: Option<String>,
    /// Whether sudo goes through the hall.
    pub sudo: bool,
    /// Declared devices.
    pub devices: Vec<String>,
    /// Supplementary groups.
    pub groups: Vec<String>,
    /// The chat bridge's last status (connected, rooms, last message), if it
    /// runs; every string escaped.
    /// The agent's credentials (used through the gateway, never held) and
    /// their use in the last hour and day, as the hall publishes it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<CredentialStatus>,
    pub chat: Option<serde_json::Value>,
}

/// One persisted path.
#[derive(Debug, Clone, Serialize)]
pub struct PersistStatus {
    /// Path relative to the home.
    pub path: String,
    /// Where it is kept.
    pub source: String,
    /// Whether it is mounted into the home now.
    pub mounted: bool,
}

/// Read the town's state off the host.
pub fn status(town: &Town) -> Status {
    let approvers = town.approvers();
    let mut humans = Vec::new();
    if let Some(u) = &town.human_user {
        humans.push(HumanStatus {
            user: u.clone(),
            name: town.human_name.clone(),
            uid: system::user(u).map(|a| a.uid),
            approver: approvers.contains(u),
        });
    }
    for a in &approvers {
        if Some(a) != town.human_user.as_ref() {
            humans.push(HumanStatus {
                user: a.clone(),
                name: None,
                uid: system::user(a).map(|x| x.uid),
                approver: true,
            });
        }
    }
    let mounts = system::mount_points();
    let agents = town
        .agents
        .iter()
        .map(|(name, agent)| {
            let home = town.home_of(name);
            let persist_root = town.persist_of(name);
            let ssh_public_key = ssh_public_key(town, name, agent.uid);
            AgentStatus {
                name: name.clone(),
                uid: agent.uid,
                role: agent.role.clone(),
                enabled: agent.enable,
                host: agent.on_host(),
                cloud: agent.cloud.enable.then(|| agent.cloud.namespace.clone()),
                present: system::user(name).is_some_and(|a| a.uid == agent.uid),
                home: home.display().to_string(),
                home_mode: system::owner_mode(&home).map(|(m, _, _)| format!("{m:04o}")),
                persist: agent
                    .persist
                    .directories
                    .iter()
                    .chain(&agent.persist.files)
                    .map(|p| PersistStatus {
                        path: p.clone(),
                        source: persist_root.join(p).display().to_string(),
                        mounted: mounts.contains(&home.join(p)),
                    })
                    .collect(),
                ssh_public_key,
                sudo: agent.sudo.enable,
                devices: agent
                    .devices
                    .iter()
                    .map(|d| {
                        let attrs: Vec<String> =
                            d.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        format!("{} {} ({})", d.subsystem, attrs.join(" "), d.permission)
                    })
                    .collect(),
                groups: system::groups_of(name),
                chat: chat_status(town, name, agent.uid),
                credentials: credentials_status(town, name),
            }
        })
        .collect();
    let shared = town
        .shared_dirs
        .keys()
        .map(|name| {
            let group = Town::shared_group(name);
            let members = crate::shared::members(town, name);
            let path = town.shared_path(name);
            let state = match crate::shared::member_uids(name, &members) {
                Err(_) => "a member has no account: not applied".to_string(),
                Ok(uids) => {
                    match crate::shared::inspect(&crate::change::At::system(&path), &group, &uids) {
                        crate::shared::Found::AsDeclared => "as declared".into(),
                        crate::shared::Found::Missing => "missing: not applied".into(),
                        crate::shared::Found::Differs(why) => {
                            format!("differs ({}): apply fixes it", clean(&why))
                        }
                    }
                }
            };
            SharedStatus {
                name: name.clone(),
                path: path.display().to_string(),
                group,
                members: members
                    .iter()
                    .map(|(w, a)| (w.clone(), a.as_str().to_string()))
                    .collect(),
                state,
            }
        })
        .collect();
    Status {
        domain: town.domain().to_string(),
        humans,
        agents,
        shared,
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "town {}", self.domain)?;
        for h in &self.humans {
            let uid = h
                .uid
                .map_or("no account".to_string(), |u| format!("uid {u}"));
            let name = h
                .name
                .as_deref()
                .map(|n| format!(" — {n}"))
                .unwrap_or_default();
            writeln!(
                f,
                "human {} ({uid}){name}{}",
                h.user,
                if h.approver { ", approver" } else { "" }
            )?;
        }
        for a in &self.agents {
            let cloud = a
                .cloud
                .as_deref()
                .map(|ns| format!(", also in the cluster (namespace {ns})"))
                .unwrap_or_default();
            let state = match (a.enabled, a.host, a.present) {
                (false, _, _) => "disabled".to_string(),
                (true, false, false) => format!(
                    "cloud only (namespace {}): no user on this host",
                    a.cloud.as_deref().unwrap_or("?")
                ),
                (true, false, true) => format!(
                    "cloud only (namespace {}): its user is still here; `nuketown apply --prune` removes it",
                    a.cloud.as_deref().unwrap_or("?")
                ),
                (true, true, true) => format!("present{cloud}"),
                (true, true, false) => format!("not applied{cloud}"),
            };
            writeln!(
                f,
                "\nagent {} (uid {}, {}) — {state}",
                a.name, a.uid, a.role
            )?;
            if a.enabled && !a.host {
                continue;
            }
            writeln!(
                f,
                "  home     {} {}",
                a.home,
                a.home_mode.as_deref().unwrap_or("(missing)")
            )?;
            for p in &a.persist {
                writeln!(
                    f,
                    "  persist  ~/{} <- {} {}",
                    p.path,
                    p.source,
                    if p.mounted {
                        "(mounted)"
                    } else {
                        "(not mounted)"
                    }
                )?;
            }
            writeln!(
                f,
                "  ssh      {}",
                a.ssh_public_key.as_deref().unwrap_or("(no key yet)")
            )?;
            writeln!(
                f,
                "  sudo     {}",
                if a.sudo {
                    "through the town hall"
                } else {
                    "none"
                }
            )?;
            for d in &a.devices {
                writeln!(f, "  device   {d}")?;
            }
            if let Some(chat) = &a.chat {
                let rooms = chat["rooms"].as_array().map_or(0, |r| r.len());
                let state = if chat["connected"] == true {
                    "connected"
                } else if chat["running"] == true {
                    "disconnected (the bridge runs, the homeserver does not answer)"
                } else {
                    "disconnected (the bridge is not running)"
                };
                writeln!(
                    f,
                    "  chat     {state}, {rooms} room{}",
                    if rooms == 1 { "" } else { "s" }
                )?;
            }
            if !a.groups.is_empty() {
                writeln!(f, "  groups   {}", a.groups.join(", "))?;
            }
            for c in &a.credentials {
                writeln!(
                    f,
                    "  credential {} ({}, through the gateway): {} requests / {} tokens in the last hour, {} / {} in the last day",
                    c.name, c.api, c.requests_hour, c.tokens_hour, c.requests_day, c.tokens_day
                )?;
            }
        }
        for s in &self.shared {
            writeln!(
                f,
                "\nshared {} {} (group {}) {}",
                s.name, s.path, s.group, s.state
            )?;
            let who: Vec<String> = s.members.iter().map(|(w, a)| format!("{w} {a}")).collect();
            writeln!(f, "  members  {}", who.join(", "))?;
        }
        Ok(())
    }
}
