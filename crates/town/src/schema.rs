//! The Town types. Field names are the NixOS option names (camelCase), so a
//! `town.toml` reads as the Nix options written in TOML and the module's
//! `town.json` has exactly this shape. Unknown keys are rejected everywhere.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

fn yes() -> bool {
    true
}

/// A whole town: the humans, the agents, and where their homes live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Town {
    /// Whether the town is applied at all.
    #[serde(default = "yes")]
    pub enable: bool,
    /// Mail and identity domain; defaults to `<hostname>.local` when loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Where agent homes live.
    #[serde(default = "default_agents_dir")]
    pub agents_dir: PathBuf,
    /// Where persisted paths live (`<persistDir>/agents/<name>/…`).
    #[serde(default = "default_persist_dir")]
    pub persist_dir: PathBuf,
    /// Block device holding `agentsDir` as btrfs (NixOS boot rollback): a
    /// `/dev/…` path, or a bare filesystem UUID (read as
    /// `/dev/disk/by-uuid/<UUID>` when loaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub btrfs_device: Option<String>,
    /// The subvolume mounted at `agentsDir` (NixOS boot rollback); when
    /// loaded, `@agents` for a bare-UUID `btrfsDevice` (the module guide's
    /// layout, restored from `@agents-blank` when that exists), else `agents`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub btrfs_subvolume: Option<String>,
    /// sops file with agent secrets (NixOS, sops-nix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sops_file: Option<PathBuf>,
    /// Packages every agent gets (NixOS / home-manager; plan notes them elsewhere).
    #[serde(default = "default_base_packages")]
    pub base_packages: Vec<String>,
    /// Where projects are looked for, `~` being the user's home.
    #[serde(default = "default_project_dirs")]
    pub project_dirs: Vec<String>,
    /// The human's Unix user: the approver and portal owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human_user: Option<String>,
    /// The human's full name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human_name: Option<String>,
    /// The human's e-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human_email: Option<String>,
    /// Let `humanUser` run commands as the agents (never as root) without a
    /// password: `sudo -u ada -i`, and the portal's agent pane.
    #[serde(default = "yes")]
    pub human_as_agents: bool,
    /// Town hall settings (approvals).
    #[serde(default)]
    pub hall: Hall,
    /// Rebuild coordinator settings.
    #[serde(default)]
    pub rebuild: Rebuild,
    /// Matrix rooms the hall's account keeps: members, topic, whether agents answer agents.
    #[serde(default)]
    pub rooms: BTreeMap<String, ChatRoom>,
    /// The agents, by Unix user name.
    #[serde(default)]
    pub agents: BTreeMap<String, Agent>,
    /// Directories shared by some agents and humans, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shared_dirs: BTreeMap<String, SharedDir>,
    /// Cluster defaults for every agent (`cloud.enable = true` sends them
    /// all): each key is the default of the same key in `agents.<name>.cloud`.
    #[serde(default, skip_serializing_if = "TownCloud::is_unset")]
    pub cloud: TownCloud,
}

/// The town-wide `cloud` table: defaults of every agent's `cloud` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TownCloud {
    /// Default of `agents.<name>.cloud.enable`.
    #[serde(default)]
    pub enable: bool,
    /// Default of `agents.<name>.cloud.resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<String>,
    /// Default of `agents.<name>.cloud.namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Defaults of `agents.<name>.cloud.scaling`.
    #[serde(default, skip_serializing_if = "Scaling::is_unset")]
    pub scaling: Scaling,
}

impl TownCloud {
    /// Whether nothing is declared (the table is left out of town.json).
    pub fn is_unset(&self) -> bool {
        *self == TownCloud::default()
    }
}

/// A directory shared by declared members: a group of its own, setgid, and
/// ACLs naming each member, so `getfacl` tells who can read and write there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharedDir {
    /// Where it lives; defaults to `<persistDir>/shared/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Who may use it (agents and humans of the town), and how.
    #[serde(default)]
    pub members: BTreeMap<String, SharedAccess>,
    /// The gid of its group `shared-<name>`; unset, the host picks one.
    /// Fix it where gids must not change across reinstalls (NixOS with
    /// impermanence): files inside record the gid, not the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// What a member may do in a shared directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SharedAccess {
    /// Read and write: create, change and remove files.
    #[serde(rename = "rw")]
    ReadWrite,
    /// Read only.
    #[serde(rename = "ro")]
    ReadOnly,
}

impl SharedAccess {
    /// `rw` or `ro`.
    pub fn as_str(self) -> &'static str {
        match self {
            SharedAccess::ReadWrite => "rw",
            SharedAccess::ReadOnly => "ro",
        }
    }
}

fn default_agents_dir() -> PathBuf {
    PathBuf::from("/agents")
}
fn default_persist_dir() -> PathBuf {
    PathBuf::from("/persist")
}
/// The module guide's tools for every agent.
fn default_base_packages() -> Vec<String> {
    ["git", "ripgrep", "fd", "jq", "curl", "tree"]
        .map(String::from)
        .to_vec()
}
fn default_project_dirs() -> Vec<String> {
    vec!["~/dev".to_string()]
}

/// Town hall (approval broker) settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hall {
    /// Unix users allowed to approve, added to group `nuketown-approvers`.
    /// Empty means just `humanUser`.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Where the entry point lives on this host (sudoers names it).
    #[serde(default = "default_elevate_path")]
    pub elevate_path: PathBuf,
    /// Approvals in a Matrix room (`nuketown approvals matrix`).
    #[serde(default)]
    pub matrix: HallMatrix,
    /// The credential gateway the hall runs when an agent has credentials.
    #[serde(default)]
    pub gateway: HallGateway,
}

/// Where the credential gateway listens and as whom it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HallGateway {
    /// Its port on 127.0.0.1 (model APIs at `/<credential>`, and the HTTPS proxy).
    #[serde(default = "default_gateway_port")]
    pub port: u16,
    /// The system user it runs as (never root, never an agent).
    #[serde(default = "default_gateway_user")]
    pub user: String,
    /// Where the hall publishes what the agents' tools read: the town's CA
    /// (`ca.pem`, `ca-bundle.pem`), pause markers and usage.
    #[serde(default = "default_gateway_run_dir")]
    pub run_dir: PathBuf,
}

fn default_gateway_run_dir() -> PathBuf {
    PathBuf::from("/run/nuketown/gateway")
}

fn default_gateway_port() -> u16 {
    8399
}

fn default_gateway_user() -> String {
    "nuketown-gateway".to_string()
}

impl Default for HallGateway {
    fn default() -> Self {
        HallGateway {
            port: default_gateway_port(),
            user: default_gateway_user(),
            run_dir: default_gateway_run_dir(),
        }
    }
}

/// The Matrix approver: requests are posted to a room, decided there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HallMatrix {
    /// Run the Matrix approver.
    #[serde(default)]
    pub enable: bool,
    /// Homeserver URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homeserver: Option<String>,
    /// The hall's own Matrix account, e.g. `@hall:example.org`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// File holding that account's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The approval room (id or alias).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Matrix ids whose `approve`/`deny` replies and ✅/❌ reactions decide.
    #[serde(default)]
    pub approvers: Vec<String>,
}

fn default_elevate_path() -> PathBuf {
    PathBuf::from("/usr/local/libexec/nuketown/nuketown-elevate")
}

impl Hall {
    /// The `sudo` shim's directory: `bin/` beside the entry point. First on
    /// an agent's PATH, it turns `sudo CMD` into a request to the town hall.
    pub fn shim_dir(&self) -> PathBuf {
        self.elevate_path
            .parent()
            .unwrap_or(std::path::Path::new("/"))
            .join("bin")
    }
}

impl Default for Hall {
    fn default() -> Self {
        Hall {
            approvers: Vec::new(),
            elevate_path: default_elevate_path(),
            matrix: HallMatrix::default(),
            gateway: HallGateway::default(),
        }
    }
}

/// Rebuild coordinator settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rebuild {
    /// The rebuild program and its leading arguments; the action
    /// (`build`, `switch`, …) is appended.
    #[serde(default = "default_rebuild_command")]
    pub command: Vec<String>,
    /// The configuration repository whose history is summarised before a build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_repo: Option<PathBuf>,
}

fn default_rebuild_command() -> Vec<String> {
    vec!["nixos-rebuild".to_string()]
}

impl Default for Rebuild {
    fn default() -> Self {
        Rebuild {
            command: default_rebuild_command(),
            config_repo: None,
        }
    }
}

/// One agent: a Unix user with its own home, keys, tools and devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Agent {
    /// Whether this agent exists on the host.
    #[serde(default = "yes")]
    pub enable: bool,
    /// The agent's uid (and gid of its private group); 1100 and up.
    pub uid: u32,
    /// What the agent does: `software`, `research`, …
    #[serde(default = "default_role")]
    pub role: String,
    /// A sentence about the agent, shown in prompts and status.
    #[serde(default)]
    pub description: String,
    /// Git identity.
    #[serde(default)]
    pub git: Git,
    /// Packages for this agent (NixOS / home-manager).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Extra home-manager configuration (NixOS only; other hosts ignore it).
    #[serde(default, skip_serializing_if = "is_null")]
    pub extra_home_config: serde_json::Value,
    /// Paths under the home that survive rounds.
    #[serde(default)]
    pub persist: Persist,
    /// Keys and other secrets.
    #[serde(default)]
    pub secrets: Secrets,
    /// Credentials the agent uses through the town's gateway and never
    /// holds (model API keys, tokens), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub credentials: BTreeMap<String, Credential>,
    /// Devices the agent may use (udev ACLs).
    #[serde(default)]
    pub devices: Vec<Device>,
    /// Privilege escalation through the town hall.
    #[serde(default)]
    pub sudo: Sudo,
    /// How the town's hall lets the agent use its keys (the agent never holds them).
    #[serde(default)]
    pub keys: Keys,
    /// Use of the town hall's rebuild coordinator.
    #[serde(default)]
    pub rebuild: AgentRebuild,
    /// The tmux portal.
    #[serde(default)]
    pub portal: Portal,
    /// Claude Code integration.
    #[serde(default)]
    pub claude_code: ClaudeCode,
    /// Matrix chat bridge.
    #[serde(default)]
    pub chat: Chat,
    /// What the agent may reach over the network (hosts and the cloud).
    #[serde(default)]
    pub network: crate::network::Network,
    /// Whether the agent runs on this host (a Unix user) as well as, or
    /// instead of, in the cluster.
    #[serde(default)]
    pub host: AgentHost,
    /// Kubernetes deployment.
    #[serde(default)]
    pub cloud: Cloud,
}

impl Agent {
    /// Whether the agent is a Unix user of this host: enabled, and
    /// `host.enable` (which defaults to `!cloud.enable`).
    pub fn on_host(&self) -> bool {
        self.enable && self.host.enable.unwrap_or(!self.cloud.enable)
    }

    /// Whether the agent is enabled but declared for the cluster only.
    pub fn cloud_only(&self) -> bool {
        self.enable && !self.on_host()
    }
}

/// Where an agent runs besides the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentHost {
    /// Make the agent a user of this host (its home, keys, sudo, units);
    /// unset means `true` unless `cloud.enable`: a cloud agent runs on the
    /// host too only when this says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable: Option<bool>,
}

fn is_null(v: &serde_json::Value) -> bool {
    v.is_null()
}

fn default_role() -> String {
    "software".to_string()
}

/// Git identity of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Git {
    /// Author name; defaults to the agent's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Author e-mail; defaults to `<name>@<domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Sign commits (GPG when a gpgKey is given, SSH otherwise).
    #[serde(default = "yes")]
    pub signing: bool,
}

impl Default for Git {
    fn default() -> Self {
        Git {
            name: None,
            email: None,
            signing: true,
        }
    }
}

/// Paths (relative to the home) kept under `persistDir/agents/<name>/`.
/// A bare list (`persist = ["dev"]`, the module guide's form) is its `directories`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Persist {
    /// Directories bind-mounted into the home.
    #[serde(default)]
    pub directories: Vec<String>,
    /// Single files bind-mounted into the home.
    #[serde(default)]
    pub files: Vec<String>,
}

/// Secrets of an agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secrets {
    /// The private SSH key: the absolute path of its file, or the name of
    /// a sops secret in `sopsFile` (`ada/ssh-key`); imported into the town's
    /// key store, never placed in the home. Generated when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<PathBuf>,
    /// The armored private GPG key that signs commits: the absolute path of
    /// its file, or the name of a sops secret in `sopsFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpg_key: Option<PathBuf>,
    /// Further secrets, by name; a bare string is the name of a sops secret
    /// (`gh = "ada/gh-token"`, the module guide's form).
    #[serde(default)]
    pub extra_secrets: BTreeMap<String, ExtraSecret>,
}

/// One further secret of an agent, readable by the agent alone.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtraSecret {
    /// Where it comes from: the absolute path of a file, or the name of a
    /// sops secret in `sopsFile`, which `apply` installs where sops-nix
    /// would (`/run/secrets/<name>`). On NixOS, unset means the sops secret
    /// `<agent>/<name>` and the module writes its path here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    /// Where a copy (NixOS: a link) goes, relative to the home; unset, the
    /// secret stays at its source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Octal file mode (`"0400"` unless written).
    pub mode: String,
    /// Hand it to the town's gateway instead (`anthropic`, `openai`,
    /// `github`, `http`): a credential of that API named as this entry,
    /// never placed in the home. The one key that moves a secret out of
    /// the agent's reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// A credential the agent uses but never holds: the town keeps it sealed,
/// and its gateway adds it to the agent's requests to the declared upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credential {
    /// Where the secret comes from: the name of a sops secret in `sopsFile`
    /// (`"ada/anthropic-key"`) or the absolute path of a file root reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    /// Or a systemd credential handed to the town hall (`LoadCredential=`,
    /// `LoadCredentialEncrypted=`), by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_credential: Option<String>,
    /// What it is for: `anthropic`, `openai` (model APIs, reached at the
    /// gateway's `/<name>`), `github` (git over HTTPS and the API, through
    /// the gateway's HTTPS proxy) or `http` (any HTTPS API, `header`).
    pub api: String,
    /// A model API's base URL (default: the provider's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// For `github` and `http`: the hosts whose requests get the
    /// credential (`github`: github.com and api.github.com unless written).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// The request paths it may be used for, as prefixes (`/v1/messages`,
    /// `/repos/forge/`); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// For model APIs: the models it may be used with (`claude-sonnet-*`);
    /// empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// For `http`: the header that carries it (`Authorization`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The word before it in the header: `Bearer` unless written for
    /// `http`; `""`: the secret alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// How much it may be used.
    #[serde(default, skip_serializing_if = "CredentialLimits::is_empty")]
    pub limits: CredentialLimits,
    /// At a limit: `deny` (the CLI shows the gateway's error) or `ask`
    /// (denied now, and a human is asked for one more window's worth).
    #[serde(default = "default_on_limit")]
    pub on_limit: String,
    /// A CA (PEM file) trusted for this upstream besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ca: Option<PathBuf>,
}

fn default_on_limit() -> String {
    "deny".to_string()
}

/// Rate and budget limits of a credential; none set: no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialLimits {
    /// Requests in any hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_hour: Option<u64>,
    /// Requests in any day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_day: Option<u64>,
    /// Tokens (in and out, as the API reports them) in any hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_hour: Option<u64>,
    /// Tokens in any day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
}

impl CredentialLimits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == CredentialLimits::default()
    }
}

/// A device the agent may open, matched by udev.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Device {
    /// udev subsystem: `tty`, `usb`, `hidraw`, …
    pub subsystem: String,
    /// Attributes to match, e.g. `idVendor = "0483"`.
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
    /// udev ACTION match.
    #[serde(default = "default_action")]
    pub action: String,
    /// ACL permission: any of `r`, `w`, `x`.
    #[serde(default = "default_permission")]
    pub permission: String,
    /// Group the agent joins for the device.
    #[serde(default = "default_group")]
    pub group: String,
}

fn default_action() -> String {
    "add|bind".to_string()
}
fn default_permission() -> String {
    "rw".to_string()
}
fn default_group() -> String {
    "plugdev".to_string()
}

/// A rule matching a command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandRule {
    /// The argv to match, program first.
    pub argv: Vec<String>,
    /// Match `argv` as a prefix: in `deny`, whatever follows; in
    /// `autoApprove`, only with [`CommandRule::extra`] saying what may follow.
    #[serde(default)]
    pub prefix: bool,
    /// What may follow `argv` (a prefix rule that names its arguments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Extra>,
}

/// The arguments a prefix rule lets follow its `argv`: each one of `words`
/// or a whole match of `pattern`, at most `max` of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Extra {
    /// Arguments allowed word for word.
    #[serde(default)]
    pub words: Vec<String>,
    /// A regular expression an argument must match whole (`^…$` implied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Most arguments after `argv`.
    #[serde(default = "default_extra_max")]
    pub max: usize,
}

fn default_extra_max() -> usize {
    1
}

impl Extra {
    /// The pattern compiled to match whole arguments.
    pub fn regex(&self) -> Option<Result<regex::Regex, regex::Error>> {
        self.pattern
            .as_ref()
            .map(|p| regex::Regex::new(&format!("^(?:{p})$")))
    }

    /// Whether `args` (what follows the rule's argv) is allowed.
    pub fn allows(&self, args: &[String]) -> bool {
        if args.len() > self.max {
            return false;
        }
        let re = match self.regex() {
            Some(Ok(re)) => Some(re),
            Some(Err(_)) => return false,
            None => None,
        };
        args.iter()
            .all(|a| self.words.contains(a) || re.as_ref().is_some_and(|re| re.is_match(a)))
    }
}

impl CommandRule {
    /// Whether `argv` matches this rule: exactly; or, with `extra`, the
    /// rule's argv followed by what `extra` allows; or, for a bare prefix
    /// (`prefix` without `extra`, a deny rule), anything after it.
    pub fn matches(&self, argv: &[String]) -> bool {
        let head = argv.len() >= self.argv.len() && argv[..self.argv.len()] == self.argv[..];
        match (&self.extra, self.prefix) {
            (Some(extra), _) => head && extra.allows(&argv[self.argv.len()..]),
            (None, true) => head,
            (None, false) => argv == &self.argv[..],
        }
    }
}

/// Privilege escalation policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sudo {
    /// Let the agent ask for root through the town hall.
    #[serde(default)]
    pub enable: bool,
    /// Commands approved without asking.
    #[serde(default)]
    pub auto_approve: Vec<CommandRule>,
    /// Commands denied without asking (deny wins over autoApprove).
    #[serde(default)]
    pub deny: Vec<CommandRule>,
    /// Seconds to wait for a human before denying.
    #[serde(default = "default_sudo_timeout")]
    pub timeout: u64,
    /// Most requests this agent may have waiting for a human at once; more are denied.
    #[serde(default = "default_max_pending")]
    pub max_pending: u32,
    /// The commands the agent may ask for at all; anything else is refused
    /// without bothering a human. Empty: any command may be asked for. A
    /// string is a command line as sudoers writes it (`"systemctl"`: any
    /// arguments; `"systemctl restart nginx"`: exactly these).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::shorthand::command_rules"
    )]
    pub commands: Vec<CommandRule>,
}

fn default_sudo_timeout() -> u64 {
    120
}

fn default_max_pending() -> u32 {
    8
}

impl Default for Sudo {
    fn default() -> Self {
        Sudo {
            enable: false,
            auto_approve: Vec::new(),
            deny: Vec::new(),
            timeout: default_sudo_timeout(),
            max_pending: default_max_pending(),
            commands: Vec::new(),
        }
    }
}

/// What the town does with one kind of key use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyPolicy {
    /// Sign at once (audited).
    Allow,
    /// Ask the approvers; sign only on a yes, deny on timeout.
    Ask,
    /// Refuse (audited).
    Deny,
}

impl KeyPolicy {
    /// `allow`, `ask`, `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPolicy::Allow => "allow",
            KeyPolicy::Ask => "ask",
            KeyPolicy::Deny => "deny",
        }
    }
}

/// A host the agent may authenticate to, known by its host key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyHost {
    /// The server's public host key, as in `known_hosts` without the name
    /// (`ssh-ed25519 AAAA…`): the town recognises the host by it.
    pub host_key: String,
    /// The policy for authenticating to this host; `keys.authenticate` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticate: Option<KeyPolicy>,
}

/// Per-operation policy for an agent's keys, which the town holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Keys {
    /// SSH signatures in namespace `git`: commits and tags.
    #[serde(default = "key_allow")]
    pub sign: KeyPolicy,
    /// SSH signatures in any other namespace (`ssh-keygen -Y sign -n file`, …).
    #[serde(default = "key_deny")]
    pub sign_other: KeyPolicy,
    /// SSH authentication to a host declared in `hosts`.
    #[serde(default = "key_allow")]
    pub authenticate: KeyPolicy,
    /// SSH authentication to any other host, or one the town cannot identify.
    #[serde(default = "key_ask")]
    pub authenticate_other: KeyPolicy,
    /// Declared hosts, by name: their host keys (and a policy of their own).
    #[serde(default)]
    pub hosts: BTreeMap<String, KeyHost>,
    /// Seconds to wait for a human before denying.
    #[serde(default = "default_sudo_timeout")]
    pub timeout: u64,
    /// The agent's public SSH key, when you hold it (the public half of
    /// `secrets.sshKey`, `ssh-ed25519 AAAA…`): `apply` refuses a key store
    /// whose key differs, and the NixOS module offers it to the rest of the
    /// configuration (`config.nuketown.authorizedKeys.<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

fn key_allow() -> KeyPolicy {
    KeyPolicy::Allow
}

fn key_ask() -> KeyPolicy {
    KeyPolicy::Ask
}

fn key_deny() -> KeyPolicy {
    KeyPolicy::Deny
}

impl Default for Keys {
    fn default() -> Self {
        Keys {
            sign: KeyPolicy::Allow,
            sign_other: KeyPolicy::Deny,
            authenticate: KeyPolicy::Allow,
            authenticate_other: KeyPolicy::Ask,
            hosts: BTreeMap::new(),
            timeout: default_sudo_timeout(),
            public_key: None,
        }
    }
}

/// An agent's use of the rebuild coordinator (`nuketown rebuild`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentRebuild {
    /// Let the agent queue rebuilds: `build`/`dry-build` run as the agent,
    /// `test`/`switch`/`boot` as root after a human's approval.
    #[serde(default)]
    pub enable: bool,
}

/// The tmux portal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Portal {
    /// Whether the agent shows up in `nuketown portal`.
    #[serde(default = "yes")]
    pub enable: bool,
    /// What runs in the agent pane; defaults to `claude` with claudeCode, else a login shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Agent pane / human pane height split, in percent: `"75/25"`.
    #[serde(default = "default_layout")]
    pub layout: String,
}

fn default_layout() -> String {
    "75/25".to_string()
}

impl Default for Portal {
    fn default() -> Self {
        Portal {
            enable: true,
            command: None,
            layout: default_layout(),
        }
    }
}

/// Claude Code integration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaudeCode {
    /// Lay down Claude Code's settings, agent file and CLAUDE.md.
    #[serde(default)]
    pub enable: bool,
    /// `~/.claude/settings.json` contents.
    #[serde(default, skip_serializing_if = "is_null")]
    pub settings: serde_json::Value,
    /// Name of the agent file under `~/.claude/agents/`; defaults to `<name>-<role>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    /// Text appended to the generated prompt.
    #[serde(default)]
    pub extra_prompt: String,
    /// Further agent files: name → markdown.
    #[serde(default)]
    pub extra_agents: BTreeMap<String, String>,
}

/// Matrix chat bridge for one agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Chat {
    /// Run the bridge.
    #[serde(default)]
    pub enable: bool,
    /// Homeserver URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homeserver: Option<String>,
    /// The agent's Matrix user id, `@ada:example.org`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// File holding the account password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// File holding an access token (instead of a password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_file: Option<PathBuf>,
    /// Matrix ids allowed to command this agent.
    #[serde(default)]
    pub allowed_humans: Vec<String>,
    /// Rooms to join.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// What answers messages.
    #[serde(default)]
    pub backend: ChatBackend,
}

/// A Matrix room the town declares. The hall's Matrix account creates it
/// (invite-only) or adopts it, invites its members and removes anyone else;
/// agents join only the declared rooms they are members of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChatRoom {
    /// The room's alias; defaults to `#<name>:<the hall account's server>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The room's topic.
    #[serde(default)]
    pub topic: String,
    /// Matrix ids of the humans in the room; agents in the room answer them.
    #[serde(default)]
    pub humans: Vec<String>,
    /// Agents (town names, each with `chat.enable`) in the room.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Whether an agent answers another agent that addresses it (a mention or
    /// a reply to its own message).
    #[serde(default)]
    pub agents_answer_agents: bool,
    /// Most agent messages in a row, without a human's message in between,
    /// that agents still answer; then they stop and say so.
    #[serde(default = "default_agent_turns")]
    pub agent_turns: u32,
    /// Create the room end-to-end encrypted.
    #[serde(default = "yes")]
    pub encrypted: bool,
}

fn default_agent_turns() -> u32 {
    4
}

/// The program behind an agent's chat account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChatBackend {
    /// `claude-code`, `codex`, `aider` or `command`.
    #[serde(default = "default_backend_type", rename = "type")]
    pub kind: String,
    /// For `command`: the program and its arguments (message on stdin, reply on stdout).
    #[serde(default)]
    pub command: Vec<String>,
    /// What the CLI may do without asking: `own-tree` (the default: its
    /// shell, reads and edits, all as the agent's own user, which is what
    /// confines it; whatever else it would ask goes to the town hall) or
    /// `ask` (every permission prompt goes to the town hall). Its `sudo`
    /// asks the hall either way.
    #[serde(default = "default_permissions")]
    pub permissions: String,
}

fn default_permissions() -> String {
    "own-tree".to_string()
}

fn default_backend_type() -> String {
    "claude-code".to_string()
}

impl Default for ChatBackend {
    fn default() -> Self {
        ChatBackend {
            kind: default_backend_type(),
            command: Vec::new(),
            permissions: default_permissions(),
        }
    }
}

/// Kubernetes deployment of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cloud {
    /// Render this agent to Kubernetes.
    #[serde(default)]
    pub enable: bool,
    /// Resource tier: `small`, `standard`, `large` or `gpu`.
    #[serde(default = "default_tier")]
    pub resources: String,
    /// Namespace; defaults to `nuketown`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Container image: a nix-snapshotter reference built by the flake, or any image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// What the pod runs, program first; empty means the image's entrypoint.
    #[serde(default)]
    pub command: Vec<String>,
    /// Volume sizes.
    #[serde(default)]
    pub persist: CloudPersist,
    /// Workload identity.
    #[serde(default)]
    pub identity: CloudIdentity,
    /// How the pod gets the agent's keys and secrets: `"secret"` (a
    /// Kubernetes Secret named after the agent, made by you) or
    /// `"sops-kms"` (the sops file decrypted in the pod by the cloud KMS,
    /// through the pod's workload identity).
    #[serde(default = "default_cloud_secrets")]
    pub secrets: String,
    /// The sops file a `"sops-kms"` pod decrypts; defaults to the town's `sopsFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sops_file: Option<PathBuf>,
    /// GPU settings for the `gpu` tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
    /// Namespace limits.
    #[serde(default)]
    pub scaling: Scaling,
}

fn default_cloud_secrets() -> String {
    "secret".to_string()
}
fn default_tier() -> String {
    "standard".to_string()
}
fn default_namespace() -> String {
    "nuketown".to_string()
}

impl Default for Cloud {
    fn default() -> Self {
        Cloud {
            enable: false,
            resources: default_tier(),
            namespace: default_namespace(),
            image: None,
            command: Vec::new(),
            persist: CloudPersist::default(),
            identity: CloudIdentity::default(),
            secrets: default_cloud_secrets(),
            sops_file: None,
            gpu: None,
            scaling: Scaling::default(),
        }
    }
}

/// Persistent volume sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloudPersist {
    /// Size of each persisted directory's volume.
    #[serde(default = "default_size")]
    pub size: String,
    /// Per-path overrides: persisted path → size.
    #[serde(default)]
    pub sizes: BTreeMap<String, String>,
    /// StorageClass of the volumes; unset means the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

fn default_size() -> String {
    "10Gi".to_string()
}

impl Default for CloudPersist {
    fn default() -> Self {
        CloudPersist {
            size: default_size(),
            sizes: BTreeMap::new(),
            storage_class: None,
        }
    }
}

/// Cloud workload identity bindings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloudIdentity {
    /// GKE: Google service account e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp_service_account: Option<String>,
    /// EKS: IAM role ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_role_arn: Option<String>,
    /// AKS: managed identity client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_client_id: Option<String>,
}

/// GPU scheduling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gpu {
    /// Number of GPUs.
    #[serde(default = "one")]
    pub count: u32,
    /// Extended resource name.
    #[serde(default = "default_gpu_resource")]
    pub resource: String,
    /// Node selector labels.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerated taint keys.
    #[serde(default)]
    pub tolerations: Vec<String>,
}

fn one() -> u32 {
    1
}
fn default_gpu_resource() -> String {
    "nvidia.com/gpu".to_string()
}

/// Scaling as a conversation: how far an agent may be moved when it asks,
/// when it goes back, and the namespace's quota.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scaling {
    /// The largest tier the agent may be moved to when it asks
    /// (`nuketown ask resources TIER`), e.g. `"large"`; unset: none above `resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resources: Option<String>,
    /// Tiers a request is granted for without a human (at most `maxResources`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auto_approve: Vec<String>,
    /// Namespace quota, e.g. `{ cpu = "8", memory = "16Gi" }`; empty: what the agents need.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub quota: BTreeMap<String, String>,
    /// After this long idle, back to the declared tier (no approval), e.g.
    /// `"30m"`; an integer is seconds (`3600` is read as `"3600s"`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::shorthand::duration"
    )]
    pub idle_timeout: Option<String>,
}

impl Scaling {
    /// Whether nothing is declared.
    pub fn is_unset(&self) -> bool {
        *self == Scaling::default()
    }
}
