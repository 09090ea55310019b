//! The bridge: one Matrix account per agent, run as the agent. Messages from
//! the agent's declared humans run its backend in its project directory; the
//! answer is posted back as a reply. Everything else is ignored and logged.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::event_handler::Ctx;
use matrix_sdk::ruma::api::client::filter::FilterDefinition;
use matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter;
use matrix_sdk::ruma::events::relation::{InReplyTo, Reply};
use matrix_sdk::ruma::events::room::member::{MembershipState, StrippedRoomMemberEvent};
use matrix_sdk::ruma::events::room::message::{
    MessageType, OriginalSyncRoomMessageEvent, Relation, RoomMessageEventContent,
};
use matrix_sdk::ruma::events::Mentions;
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomOrAliasId};
use matrix_sdk::{Client, Room, RoomState};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Notify};

use nuketown_town::{ChatBackend, Town};

use crate::backend;
use crate::commands;
use crate::converse::{self, Author, Command, Decision, RoomRules, Roster, Turns};
use crate::escalations::{self, Escalation};
use nuketown_hall::follow::{Followed, Follower};

/// At most this often the bridge runs its activity command.
const ACTIVITY_EVERY: Duration = Duration::from_secs(60);

/// Largest message the bridge posts; longer answers are split.
pub const MAX_MESSAGE: usize = 16_000;

/// Everything one bridge needs, resolved from the town.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The agent (Unix user).
    pub agent: String,
    /// Homeserver URL.
    pub homeserver: String,
    /// The agent's Matrix id.
    pub user_id: String,
    /// Password file.
    pub password_file: Option<PathBuf>,
    /// Access token file (first line the token, second the device id).
    pub access_token_file: Option<PathBuf>,
    /// Matrix ids allowed to command the agent.
    pub allowed: Vec<String>,
    /// Rooms to join at start.
    pub rooms: Vec<String>,
    /// The backend.
    pub backend: ChatBackend,
    /// Where the Matrix store, session and ledger live (persisted: the device survives rounds).
    pub store: PathBuf,
    /// Where the backend runs.
    pub workdir: PathBuf,
    /// Longest a backend may run for one message.
    pub timeout: Duration,
    /// The declared rooms this agent is a member of.
    pub declared: Vec<DeclaredRoom>,
    /// Matrix id → town name of every chat agent (this one included).
    pub agents: BTreeMap<String, String>,
    /// The resource tier (`cloud.resources`) when the agent is a cloud agent.
    pub tier: Option<String>,
    /// The town hall's ask socket, where the bridge follows the agent's own
    /// requests; none in a pod (the cluster has no hall beside the agent).
    pub ask_socket: Option<PathBuf>,
    /// Run (at most once a minute) when a message starts a turn: in a pod,
    /// `nuketown ask active`, so that the scaling operator counts a
    /// conversation as activity even while the backend waits on the network.
    pub activity: Option<Vec<String>>,
    /// Where there is no hall beside it (a pod): a command that prints the
    /// town hall's follow events, one JSON line each (`nuketown ask
    /// follow`, from the agent's request object), for its requests for a
    /// bigger tier.
    pub follow_command: Option<Vec<String>>,
    /// How the CLI's permission prompts reach the town hall (none in a pod).
    pub hall: Option<backend::HallLink>,
    /// After this long a turn says, once, that it is still working (60 s;
    /// `NUKETOWN_STILL_WORKING_SECS` in the bridge's environment says otherwise).
    pub still_working: Duration,
}

/// A declared room (`rooms.<name>`) as one of its agents sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredRoom {
    /// The room's name in the town.
    pub name: String,
    /// Its alias, resolved to the room at start and on invites.
    pub alias: String,
    /// The humans declared in it.
    pub humans: Vec<String>,
    /// Its rules for agents.
    pub rules: RoomRules,
}

/// The `nuketown` binary beside this one (the bridge may be `nuketown-chat`),
/// for the CLI's permission-prompt tool (`nuketown mcp`).
pub fn nuketown_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    if exe.file_name().is_some_and(|n| n == "nuketown") {
        return Some(exe);
    }
    Some(exe.parent()?.join("nuketown")).filter(|p| p.is_file())
}

/// The bridge's state directory for `agent`: under its persist root, so a new round keeps the device.
pub fn store_dir(town: &Town, agent: &str) -> PathBuf {
    town.persist_of(agent).join(".nuketown/matrix")
}

impl BridgeConfig {
    /// The bridge of agent `name` on this host, from the town.
    pub fn from_town(town: &Town, name: &str) -> Result<BridgeConfig> {
        let agent = town.host_agent(name).map_err(anyhow::Error::msg)?;
        let resolved = town.bridge_of(name).map_err(anyhow::Error::msg)?;
        let mut cfg = BridgeConfig::resolved(resolved, &town.home_of(name), store_dir(town, name));
        cfg.password_file = agent.chat.password_file.clone();
        cfg.access_token_file = agent.chat.access_token_file.clone();
        cfg.ask_socket = Some(nuketown_hall::ASK_SOCKET.into());
        cfg.hall = nuketown_binary().and_then(|n| backend::HallLink::for_agent(town, name, n));
        if let Some(secs) = std::env::var("NUKETOWN_STILL_WORKING_SECS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|s| *s > 0)
        {
            cfg.still_working = Duration::from_secs(secs);
        }
        Ok(cfg)
    }

    /// The bridge of a cloud agent in its pod: what the render resolved
    /// (`chat.json` in `identity`), its home, and the account's password (or
    /// access token) from the agent's secrets in `keys`. The Matrix store
    /// lives in the home's persisted `.nuketown/matrix`; there is no town
    /// hall to follow.
    pub fn in_pod(agent: &str, identity: &Path, keys: &Path, home: &Path) -> Result<BridgeConfig> {
        let file = identity.join(POD_CHAT);
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "reading {} (the render writes it for an agent with chat.enable and cloud.enable)",
                file.display()
            )
        })?;
        let resolved: nuketown_town::BridgeTown = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a bridge's declaration", file.display()))?;
        if resolved.agent != agent {
            bail!(
                "{} is {}'s, not {agent}'s: this is another agent's pod",
                file.display(),
                resolved.agent
            );
        }
        let mut cfg = BridgeConfig::resolved(resolved, home, home.join(POD_STORE));
        // Only an agent that may be moved to a bigger tier has an API token
        // (scaling.maxResources), and only its activity matters.
        if Path::new(POD_TOKEN_FILE).is_file() {
            cfg.activity = Some(["nuketown", "ask", "active"].map(String::from).to_vec());
            cfg.follow_command = Some(["nuketown", "ask", "follow"].map(String::from).to_vec());
        }
        let (password, token) = (keys.join(POD_PASSWORD), keys.join(POD_TOKEN));
        if password.is_file() {
            cfg.password_file = Some(password);
        } else if token.is_file() {
            cfg.access_token_file = Some(token);
        } else {
            bail!(
                "{} has neither {POD_PASSWORD} nor {POD_TOKEN}: put the agent's Matrix password under the key {POD_PASSWORD} in its Secret (or its sops file with secrets = \"sops-kms\"); docs/cloud.md",
                keys.display()
            );
        }
        Ok(cfg)
    }

    fn resolved(b: nuketown_town::BridgeTown, home: &Path, store: PathBuf) -> BridgeConfig {
        let workdir = b
            .project_dirs
            .iter()
            .map(|d| {
                if let Some(rest) = d.strip_prefix("~/") {
                    home.join(rest)
                } else if d == "~" {
                    home.to_path_buf()
                } else {
                    PathBuf::from(d)
                }
            })
            .find(|d| d.is_dir())
            .unwrap_or_else(|| home.to_path_buf());
        BridgeConfig {
            agent: b.agent,
            homeserver: b.homeserver,
            user_id: b.user_id,
            password_file: None,
            access_token_file: None,
            allowed: b.allowed_humans,
            rooms: b.rooms,
            backend: b.backend,
            store,
            workdir,
            timeout: Duration::from_secs(30 * 60),
            declared: b
                .declared
                .into_iter()
                .map(|r| DeclaredRoom {
                    name: r.name,
                    alias: r.alias,
                    humans: r.humans,
                    rules: RoomRules {
                        agents_answer_agents: r.agents_answer_agents,
                        agent_turns: r.agent_turns,
                    },
                })
                .collect(),
            agents: b.agents,
            tier: b.tier,
            ask_socket: None,
            activity: None,
            follow_command: None,
            hall: None,
            still_working: Duration::from_secs(60),
        }
    }
}

pub use nuketown_town::chat::{POD_CHAT, POD_PASSWORD, POD_STORE, POD_TOKEN};
/// In the pod: the service account token (present only with scaling.maxResources).
const POD_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// What the bridge remembers across restarts besides the Matrix store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ledger {
    /// Messages older than this (ms since the epoch) are history, never answered.
    pub since_ms: u64,
    /// The most recent handled event ids (bounded).
    pub handled: VecDeque<String>,
    /// Backend session per room.
    pub sessions: BTreeMap<String, String>,
}

/// What `nuketown status` shows of a bridge.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatStatus {
    /// Connected to the homeserver: the bridge process is alive (it holds its
    /// lock) and its last sync succeeded. A dead bridge is never connected.
    pub connected: bool,
    /// Whether the bridge process is running (read from its lock, never from the file).
    #[serde(default)]
    pub running: bool,
    /// The bridge's process id, as it wrote it.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Joined rooms.
    pub rooms: Vec<String>,
    /// When the last message was answered (ms since the epoch).
    pub last_message_ms: Option<u64>,
    /// The last error, if the last sync failed.
    pub error: Option<String>,
    /// When this status was written (ms since the epoch).
    pub updated_ms: u64,
}

impl ChatStatus {
    /// The status of the bridge whose store is `store`: what it last wrote,
    /// corrected by whether it is alive. The bridge holds an exclusive lock
    /// on `store/bridge.lock` for as long as it runs; the kernel drops it
    /// when the process dies, however it dies, so a killed bridge reads as
    /// not running and not connected. None when no bridge ever ran there.
    pub fn read(store: &Path) -> Option<ChatStatus> {
        let mut status: ChatStatus =
            serde_json::from_str(&std::fs::read_to_string(store.join("status.json")).ok()?).ok()?;
        status.running = bridge_running(store);
        if !status.running {
            status.connected = false;
            status
                .error
                .get_or_insert_with(|| "the bridge is not running".to_string());
        }
        Some(status)
    }
}

/// Whether a bridge holds the lock in `store` (a live process).
pub fn bridge_running(store: &Path) -> bool {
    let Ok(f) = std::fs::File::open(store.join("bridge.lock")) else {
        return false;
    };
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_shared) => false, // nobody holds it exclusively
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => true,
        Err(_) => false,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    crate::matrix::write_private(path, &serde_json::to_vec_pretty(value)?)
}

/// The backend turn running in a room.
struct Running {
    since_ms: u64,
    /// The message being answered.
    event: OwnedEventId,
    sender: String,
    cancel: Arc<Notify>,
    stopped_by: Option<String>,
}

/// What one room's conversation is doing.
#[derive(Default)]
struct RoomWork {
    running: Option<Running>,
    queued: usize,
}

struct Shared {
    cfg: BridgeConfig,
    me: OwnedUserId,
    roster: Roster,
    ledger: Mutex<Ledger>,
    status: Mutex<ChatStatus>,
    rooms: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Room id → index into `cfg.declared`, for the declared rooms resolved so far.
    declared: StdMutex<HashMap<OwnedRoomId, usize>>,
    turns: StdMutex<HashMap<OwnedRoomId, Turns>>,
    /// Events this bridge posted (bounded): a reply to one of them addresses this agent.
    mine: StdMutex<VecDeque<OwnedEventId>>,
    work: StdMutex<HashMap<String, RoomWork>>,
    /// The agent's requests waiting for a decision, as the hall told them.
    escalations: StdMutex<Vec<Escalation>>,
    /// Request ids already shown in a room.
    shown: StdMutex<escalations::Shown>,
    /// The room and message of the turn started last.
    last_turn: StdMutex<Option<(OwnedRoomId, OwnedEventId)>>,
    /// Request id → where its waiting was shown (its decision goes there too).
    asked_in: StdMutex<HashMap<String, (OwnedRoomId, OwnedEventId)>>,
    /// When the activity command last ran.
    reported: StdMutex<Option<std::time::Instant>>,
}

impl Shared {
    /// Tell the cluster this agent is working (see [`BridgeConfig::activity`]).
    fn report_activity(&self) {
        let Some(cmd) = &self.cfg.activity else {
            return;
        };
        {
            let mut last = self.reported.lock().unwrap();
            if last.is_some_and(|t| t.elapsed() < ACTIVITY_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        match tokio::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
        {
            Ok(mut child) => {
                let what = cmd.join(" ");
                tokio::spawn(async move {
                    match child.wait().await {
                        Ok(s) if s.success() => {}
                        Ok(s) => tracing::warn!("{what} failed ({s}): the scaling operator does not see this conversation"),
                        Err(e) => tracing::warn!("{what}: {e}"),
                    }
                });
            }
            Err(e) => tracing::warn!("cannot run {}: {e}", cmd[0]),
        }
    }

    async fn save_ledger(&self, ledger: &Ledger) {
        if let Err(e) = write_json(&self.cfg.store.join("ledger.json"), ledger) {
            tracing::error!("cannot save the ledger: {e:#}");
        }
    }

    async fn set_status(&self, f: impl FnOnce(&mut ChatStatus)) {
        let mut s = self.status.lock().await;
        f(&mut s);
        s.updated_ms = now_ms();
        s.running = true;
        s.pid = Some(std::process::id());
        if let Err(e) = write_json(&self.cfg.store.join("status.json"), &*s) {
            tracing::error!("cannot write status: {e:#}");
        }
    }

    fn declared_room(&self, room: &matrix_sdk::ruma::RoomId) -> Option<&DeclaredRoom> {
        let i = *self.declared.lock().unwrap().get(room)?;
        self.cfg.declared.get(i)
    }

    fn remember_mine(&self, id: OwnedEventId) {
        let mut mine = self.mine.lock().unwrap();
        mine.push_back(id);
        while mine.len() > 1000 {
            mine.pop_front();
        }
    }

    fn is_mine(&self, id: &matrix_sdk::ruma::EventId) -> bool {
        self.mine.lock().unwrap().iter().any(|m| m == id)
    }

    /// Resolve the declared rooms' aliases (those not resolved yet).
    async fn resolve_declared(&self, client: &Client) {
        for (i, d) in self.cfg.declared.iter().enumerate() {
            if self.declared.lock().unwrap().values().any(|&j| j == i) {
                continue;
            }
            let Ok(alias) = RoomAliasId::parse(&d.alias) else {
                tracing::warn!("rooms.{}: {} is not a room alias", d.name, d.alias);
                continue;
            };
            match client.resolve_room_alias(&alias).await {
                Ok(r) => {
                    self.declared.lock().unwrap().insert(r.room_id, i);
                }
                Err(e) => tracing::info!(
                    "rooms.{}: {} does not resolve yet ({e}); the hall's account creates it (nuketown rooms)",
                    d.name,
                    d.alias
                ),
            }
        }
    }

    /// Post `text` to `room` as a notice from the bridge itself (not the
    /// model), replying to `to` when given; other agents never answer notices.
    async fn notice(&self, room: &Room, to: Option<&OwnedEventId>, text: &str) {
        let mut content = RoomMessageEventContent::notice_plain(text);
        content.mentions = Some(Mentions::new());
        if let Some(to) = to {
            content.relates_to = Some(Relation::Reply(Reply::new(InReplyTo::new(to.clone()))));
        }
        match room.send(content).await {
            Ok(r) => self.remember_mine(r.response.event_id),
            Err(e) => tracing::warn!(room = %room.room_id(), "cannot post a notice: {e}"),
        }
    }
}

async fn login(cfg: &BridgeConfig, client: &Client) -> Result<()> {
    let secret = match (&cfg.password_file, &cfg.access_token_file) {
        (Some(p), _) => crate::matrix::Secret::Password(p.clone()),
        (None, Some(t)) => crate::matrix::Secret::AccessToken(t.clone()),
        (None, None) => bail!("chat needs passwordFile or accessTokenFile"),
    };
    let key = match secret {
        crate::matrix::Secret::Password(_) => "chat.passwordFile",
        crate::matrix::Secret::AccessToken(_) => "chat.accessTokenFile",
    };
    crate::matrix::login(
        client,
        &crate::matrix::Account {
            user_id: &cfg.user_id,
            secret,
            device_name: &format!("nuketown {}", cfg.agent),
            key,
        },
        &cfg.store,
    )
    .await
}

/// Join only declared rooms this agent is a member of, and its own humans' DMs.
async fn on_invite(
    ev: StrippedRoomMemberEvent,
    room: Room,
    client: Client,
    Ctx(shared): Ctx<Arc<Shared>>,
) {
    if ev.content.membership != MembershipState::Invite
        || Some(ev.state_key.as_ref()) != client.user_id()
    {
        return;
    }
    shared.resolve_declared(&client).await;
    let declared = shared.declared_room(room.room_id()).map(|d| d.name.clone());
    let dm_from_human = ev.content.is_direct == Some(true)
        && shared.roster.author(ev.sender.as_str(), &[]) == Author::OwnHuman(ev.sender.to_string());
    if declared.is_none() && !dm_from_human {
        tracing::warn!(sender = %ev.sender, room = %room.room_id(), "refused an invite: not a declared room of this agent (rooms.*.agents), nor a direct chat from one of chat.allowedHumans");
        let _ = room.leave().await;
        return;
    }
    tokio::spawn(async move {
        // The homeserver may not have the room ready the instant the invite arrives.
        let mut delay = Duration::from_millis(100);
        for _ in 0..10 {
            match room.join().await {
                Ok(()) => {
                    match &declared {
                        Some(name) => {
                            tracing::info!(room = %room.room_id(), "joined the declared room rooms.{name}")
                        }
                        None => {
                            tracing::info!(room = %room.room_id(), sender = %ev.sender, "joined a direct chat")
                        }
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!("joining {} failed, retrying: {e}", room.room_id());
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
}

/// The sender of the event `id` in `room` (this bridge's own events are known without asking).
async fn sender_of(shared: &Shared, room: &Room, id: &matrix_sdk::ruma::EventId) -> Option<String> {
    if shared.is_mine(id) {
        return Some(shared.me.to_string());
    }
    room.event(id, None)
        .await
        .ok()
        .and_then(|e| e.sender())
        .map(|s| s.to_string())
}

async fn on_message(ev: OriginalSyncRoomMessageEvent, room: Room, Ctx(shared): Ctx<Arc<Shared>>) {
    if room.state() != RoomState::Joined {
        return;
    }
    let room_id = room.room_id().to_owned();
    let declared = shared.declared_room(&room_id).cloned();
    let room_humans = declared
        .as_ref()
        .map(|d| d.humans.as_slice())
        .unwrap_or(&[]);
    let author = if ev.sender == shared.me {
        shared.remember_mine(ev.event_id.clone());
        Author::Agent {
            name: shared.cfg.agent.clone(),
            id: shared.me.to_string(),
        }
    } else {
        shared.roster.author(ev.sender.as_str(), room_humans)
    };
    let text = match &ev.content.msgtype {
        MessageType::Text(t) => t.body.clone(),
        MessageType::Notice(_) => {
            // A bridge's own notice (a limit note, a command's answer): never
            // answered, never counted; a limit note means this stop is told.
            if matches!(author, Author::Agent { .. }) {
                if let Some(t) = shared.turns.lock().unwrap().get_mut(&room_id) {
                    t.noted = true;
                }
            }
            return;
        }
        _ => return,
    };
    let turns = {
        let mut all = shared.turns.lock().unwrap();
        let t = all.entry(room_id.clone()).or_default();
        t.count(&author);
        t.clone()
    };
    if ev.sender == shared.me {
        return;
    }
    let ts: u64 = ev.origin_server_ts.0.into();
    {
        let ledger = shared.ledger.lock().await;
        if ts < ledger.since_ms || ledger.handled.iter().any(|h| h == ev.event_id.as_str()) {
            return; // history, or answered before a restart
        }
    }
    if let Author::OwnHuman(_) = &author {
        if let Some(cmd) = converse::command(&text, &shared.cfg.agent, shared.me.as_str()) {
            if mark_handled(&shared, &ev.event_id).await {
                tokio::spawn(run_command(
                    shared.clone(),
                    room,
                    ev.event_id.clone(),
                    author,
                    cmd,
                ));
            }
            return;
        }
    }
    // Addressed: a mention (m.mentions, or the id in the text), or a reply to one of ours.
    let mentioned: Vec<String> = ev
        .content
        .mentions
        .as_ref()
        .map(|m| m.user_ids.iter().map(|u| u.to_string()).collect())
        .unwrap_or_default();
    let reply_to = match &ev.content.relates_to {
        Some(Relation::Reply(r)) => Some(r.in_reply_to.event_id.clone()),
        _ => None,
    };
    let replied_sender = match &reply_to {
        Some(id) => sender_of(&shared, &room, id).await,
        None => None,
    };
    let is_addressed = |id: &str| {
        mentioned.iter().any(|m| m == id)
            || converse::names(&text, id)
            || replied_sender.as_deref() == Some(id)
    };
    let addressed = is_addressed(shared.me.as_str());
    let addresses_agents = shared.cfg.agents.keys().any(|a| is_addressed(a));
    let rules = declared.as_ref().map(|d| d.rules);
    match converse::decide(&author, addressed, addresses_agents, rules, &turns) {
        Decision::Answer => {
            shared.report_activity();
            tokio::spawn(answer(shared, room, ev.event_id.clone(), author, text));
        }
        Decision::Limit => {
            if let Some(t) = shared.turns.lock().unwrap().get_mut(&room_id) {
                t.noted = true;
            }
            if mark_handled(&shared, &ev.event_id).await {
                tracing::info!(room = %room_id, "agent-to-agent limit reached; said so");
                let rules = rules.expect("a limit needs a declared room");
                let note = converse::limit_note(&shared.cfg.agent, rules);
                shared.notice(&room, None, &note).await;
            }
        }
        Decision::Ignore(why) => {
            if matches!(author, Author::Stranger(_)) {
                tracing::warn!(sender = %ev.sender, room = %room_id, "ignored a message: {why}");
            } else {
                tracing::debug!(sender = %ev.sender, room = %room_id, "not answering: {why}");
            }
        }
    }
}

/// Record `event` as handled before acting on it (a crash never acts twice); false if it already was.
async fn mark_handled(shared: &Shared, event: &matrix_sdk::ruma::EventId) -> bool {
    let mut ledger = shared.ledger.lock().await;
    if ledger.handled.iter().any(|h| h == event.as_str()) {
        return false;
    }
    ledger.handled.push_back(event.to_string());
    while ledger.handled.len() > 1000 {
        ledger.handled.pop_front();
    }
    shared.save_ledger(&ledger).await;
    true
}

async fn answer(
    shared: Arc<Shared>,
    room: Room,
    event: OwnedEventId,
    author: Author,
    body: String,
) {
    let room_id = room.room_id().to_string();
    let lock = shared
        .rooms
        .lock()
        .await
        .entry(room_id.clone())
        .or_default()
        .clone();
    shared
        .work
        .lock()
        .unwrap()
        .entry(room_id.clone())
        .or_default()
        .queued += 1;
    let turn = lock.lock().await; // one conversation per room, in order
    shared
        .work
        .lock()
        .unwrap()
        .entry(room_id.clone())
        .or_default()
        .queued -= 1;
    if !mark_handled(&shared, &event).await {
        return;
    }
    let session = shared.ledger.lock().await.sessions.get(&room_id).cloned();
    *shared.last_turn.lock().unwrap() = Some((room.room_id().to_owned(), event.clone()));
    let cancel = Arc::new(Notify::new());
    shared
        .work
        .lock()
        .unwrap()
        .entry(room_id.clone())
        .or_default()
        .running = Some(Running {
        since_ms: now_ms(),
        event: event.clone(),
        sender: author.name().to_string(),
        cancel: cancel.clone(),
        stopped_by: None,
    });
    // Typing while the CLI works; once, after a while, a word that it still is.
    let typing = room.clone();
    let (still, still_after) = (shared.clone(), shared.cfg.still_working);
    let still_event = event.clone();
    let keep_typing = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut said = false;
        loop {
            let _ = typing.typing_notice(true).await;
            let left = still_after.saturating_sub(started.elapsed());
            if !said && left.is_zero() {
                said = true;
                still
                    .notice(
                        &typing,
                        Some(&still_event),
                        &format!(
                            "⏳ still working on this ({} s so far); `!stop` ends it",
                            started.elapsed().as_secs()
                        ),
                    )
                    .await;
            }
            let nap = if said {
                Duration::from_secs(20)
            } else {
                left.min(Duration::from_secs(20))
            };
            tokio::time::sleep(nap).await;
        }
    });
    let declared = shared.declared_room(room.room_id()).cloned();
    let room_name = declared.as_ref().map(|d| d.alias.clone());
    let message = format!("{}\n{body}", author.header(room_name.as_deref()));
    let cfg = &shared.cfg;
    let inv = backend::invocation(
        &cfg.backend,
        &message,
        session.as_deref(),
        &cfg.workdir,
        cfg.hall.as_ref(),
    );
    let result = backend::run(
        &cfg.backend,
        &inv,
        &[
            ("NUKETOWN_ROOM", &room_id),
            (
                "NUKETOWN_ROOM_NAME",
                declared.as_ref().map(|d| d.name.as_str()).unwrap_or(""),
            ),
            ("NUKETOWN_SENDER", &sender_id(&author)),
            ("NUKETOWN_SENDER_KIND", author.kind()),
            ("NUKETOWN_SENDER_NAME", author.name()),
        ],
        cfg.timeout,
        &cancel,
    )
    .await;
    keep_typing.abort();
    let _ = room.typing_notice(false).await;
    let stopped = shared
        .work
        .lock()
        .unwrap()
        .get_mut(&room_id)
        .and_then(|w| w.running.take())
        .and_then(|r| r.stopped_by.map(|by| (by, r.since_ms)));
    let text = match result {
        Ok(reply) => {
            if let Some(s) = reply.session {
                let mut ledger = shared.ledger.lock().await;
                ledger.sessions.insert(room_id.clone(), s);
                shared.save_ledger(&ledger).await;
            }
            if reply.text.trim().is_empty() {
                if matches!(author, Author::Agent { .. }) {
                    // An agent may end a conversation with a colleague by saying nothing.
                    drop(turn);
                    return;
                }
                "(no output)".to_string()
            } else {
                reply.text
            }
        }
        Err(backend::BackendError::Cancelled { .. }) => {
            let (by, since) = stopped.unwrap_or_default();
            let secs = now_ms().saturating_sub(since) / 1000;
            shared
                .notice(
                    &room,
                    Some(&event),
                    &format!(
                        "⏹ stopped by {by} after {secs} s; nothing more will come of this message"
                    ),
                )
                .await;
            drop(turn);
            return;
        }
        Err(e) => {
            tracing::error!(room = %room_id, "backend failed: {e}");
            format!("⚠ {e}")
        }
    };
    // Matrix ids of the town's agents and the room's humans written in the answer are mentions.
    let mut mentions = Mentions::new();
    for id in shared
        .cfg
        .agents
        .keys()
        .chain(declared.iter().flat_map(|d| d.humans.iter()))
        .chain(&shared.cfg.allowed)
    {
        if id != shared.me.as_str() && converse::names(&text, id) {
            if let Ok(u) = OwnedUserId::try_from(id.as_str()) {
                mentions.user_ids.insert(u);
            }
        }
    }
    for chunk in backend::chunks(&text, MAX_MESSAGE) {
        let mut content = RoomMessageEventContent::text_plain(chunk);
        content.relates_to = Some(Relation::Reply(Reply::new(InReplyTo::new(event.clone()))));
        content.mentions = Some(mentions.clone());
        match room.send(content).await {
            Ok(r) => shared.remember_mine(r.response.event_id),
            Err(e) => {
                tracing::error!(room = %room_id, "cannot post the answer: {e}");
                break;
            }
        }
    }
    drop(turn);
    shared
        .set_status(|s| s.last_message_ms = Some(now_ms()))
        .await;
}

fn sender_id(author: &Author) -> String {
    match author {
        Author::OwnHuman(id) | Author::RoomHuman(id) | Author::Stranger(id) => id.clone(),
        Author::Agent { id, .. } => id.clone(),
    }
}

/// Where an escalation is shown: the room of the turn started last among
/// those running, else of the turn started last; with the message answered.
fn escalation_place(shared: &Shared) -> Option<(OwnedRoomId, OwnedEventId)> {
    let running = shared
        .work
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(r, w)| {
            w.running
                .as_ref()
                .map(|x| (x.since_ms, r.clone(), x.event.clone()))
        })
        .max_by_key(|(since, _, _)| *since);
    if let Some((_, room, event)) = running {
        if let Ok(room) = OwnedRoomId::try_from(room) {
            return Some((room, event));
        }
    }
    shared.last_turn.lock().unwrap().clone()
}

/// Follow the agent's own requests through the town hall (the only source:
/// a backend's output is the agent's word) and show each, with its request
/// id and then its decision, in the room where a turn runs. Reconnects when
/// the hall restarts.
async fn follow_escalations(shared: Arc<Shared>, client: Client, socket: PathBuf) {
    let mut delay = Duration::from_millis(250);
    let mut warned = false;
    loop {
        let mut follower = match Follower::connect(&socket).await {
            Ok(f) => f,
            Err(e) => {
                if !warned {
                    tracing::warn!(
                        "escalations are not shown in chat until the town hall answers: {e}"
                    );
                    warned = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        // What is pending comes again first: the hall's word replaces ours.
        shared.escalations.lock().unwrap().clear();
        loop {
            let ev = match follower.next().await {
                Ok(ev) => ev,
                Err(e) => {
                    if matches!(e, nuketown_hall::follow::FollowError::Closed) && !warned {
                        tracing::warn!("the town hall closed the escalations stream; reconnecting");
                    } else if !warned {
                        tracing::warn!("escalations: {e}");
                    }
                    warned = true;
                    break;
                }
            };
            if warned {
                tracing::info!(
                    "following {}'s escalations through the town hall",
                    shared.cfg.agent
                );
                warned = false;
            }
            delay = Duration::from_millis(250);
            show_escalation(&shared, &client, ev).await;
        }
        shared.escalations.lock().unwrap().clear();
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Longest line the follow command may print.
const MAX_FOLLOW_LINE: u64 = 64 << 10;

/// In a pod: run the follow command and show each event it prints, as
/// [`follow_escalations`] does with the hall's; run it again when it ends.
async fn follow_command(shared: Arc<Shared>, client: Client, cmd: Vec<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut delay = Duration::from_secs(1);
    loop {
        let child = tokio::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        match child {
            Ok(mut child) => {
                let mut out = tokio::io::BufReader::new(child.stdout.take().expect("piped"));
                shared.escalations.lock().unwrap().clear();
                loop {
                    let mut line = Vec::new();
                    match (&mut out)
                        .take(MAX_FOLLOW_LINE)
                        .read_until(b'\n', &mut line)
                        .await
                    {
                        Ok(0) | Err(_) => break,
                        Ok(_) if !line.ends_with(b"\n") => {
                            tracing::warn!(
                                "{}: a line longer than {MAX_FOLLOW_LINE} bytes; starting it again",
                                cmd.join(" ")
                            );
                            break;
                        }
                        Ok(_) => {}
                    }
                    match serde_json::from_slice::<Followed>(&line) {
                        Ok(ev) => {
                            delay = Duration::from_secs(1);
                            show_escalation(&shared, &client, ev).await;
                        }
                        Err(e) => tracing::warn!("{}: not an escalation event: {e}", cmd.join(" ")),
                    }
                }
                let _ = child.kill().await;
                tracing::warn!("{} ended; again in {delay:?}", cmd.join(" "));
            }
            Err(e) => tracing::warn!("cannot run {}: {e}; again in {delay:?}", cmd[0]),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

/// One event of the hall's stream: remembered for `!escalations`, shown in a room.
async fn show_escalation(shared: &Shared, client: &Client, ev: Followed) {
    let agent = &shared.cfg.agent;
    let (text, place) = match &ev {
        Followed::Asked {
            id,
            kind,
            what,
            asked_ms,
            ..
        } => {
            let place = escalation_place(shared);
            shared.escalations.lock().unwrap().push(Escalation {
                id: escalations::short(id).to_string(),
                what: what.clone(),
                room: place
                    .as_ref()
                    .map(|(r, _)| r.to_string())
                    .unwrap_or_default(),
                since_ms: *asked_ms,
            });
            if shared.shown.lock().unwrap().contains(id) {
                return; // shown before the hall's stream was reconnected
            }
            (escalations::asked_text(agent, kind, id, what), place)
        }
        Followed::Decided { id, .. } => {
            let short = escalations::short(id);
            shared.escalations.lock().unwrap().retain(|e| e.id != short);
            let asked_in = shared.asked_in.lock().unwrap().remove(id);
            let shown = shared.shown.lock().unwrap().contains(id);
            if !shown && !escalations::worth_showing(&ev) {
                return;
            }
            let Some(text) = escalations::decided_text(agent, &ev, shown) else {
                return;
            };
            // The decision goes where its waiting was shown.
            (text, asked_in.or_else(|| escalation_place(shared)))
        }
        Followed::Missed { count } => {
            tracing::warn!("{count} escalation events were missed (the bridge read too slowly)");
            return;
        }
        Followed::Refused { .. } => return,
    };
    let Some((room_id, event)) = place else {
        tracing::info!("{text} (no room to show it in: no turn has run yet)");
        return;
    };
    let Some(room) = client.get_room(&room_id) else {
        tracing::warn!(room = %room_id, "{text} (not in that room anymore)");
        return;
    };
    if let Followed::Asked { id, .. } = &ev {
        shared.shown.lock().unwrap().first_time(id);
        let mut asked_in = shared.asked_in.lock().unwrap();
        if asked_in.len() > 1000 {
            asked_in.clear(); // requests whose decision never came (a hall that died)
        }
        asked_in.insert(id.clone(), (room_id.clone(), event.clone()));
    }
    shared.notice(&room, Some(&event), &text).await;
}

async fn run_command(
    shared: Arc<Shared>,
    room: Room,
    event: OwnedEventId,
    author: Author,
    cmd: Command,
) {
    let cfg = &shared.cfg;
    let text = match cmd {
        Command::Help => converse::help(&cfg.agent),
        Command::Where => commands::where_text(&cfg.agent, &cfg.workdir),
        Command::Resources => {
            let mut text = commands::resources_text(&cfg.agent, cfg.tier.as_deref());
            if let Some(usage) = cfg.hall.as_ref().and_then(|h| h.usage.as_deref()) {
                match commands::credentials_text(usage) {
                    Some(c) => text = format!("{text}\n{c}"),
                    None => text.push_str("\nno credential used through the town's gateway yet"),
                }
            }
            text
        }
        Command::Escalations if cfg.ask_socket.is_none() && cfg.follow_command.is_none() => format!(
            "{}: in the cluster, without a bigger tier to ask for (scaling.maxResources), I have nothing to escalate",
            cfg.agent
        ),
        Command::Escalations => {
            let list = shared.escalations.lock().unwrap().clone();
            commands::escalations_text(&cfg.agent, &list, now_ms())
        }
        Command::Work => {
            let here = room.room_id().to_string();
            let work = shared.work.lock().unwrap();
            let rooms: Vec<commands::WorkLine> = work
                .iter()
                .filter(|(_, w)| w.running.is_some() || w.queued > 0)
                .map(|(r, w)| commands::WorkLine {
                    here: *r == here,
                    room: r.clone(),
                    running: w.running.as_ref().map(|x| (x.since_ms, x.sender.clone())),
                    queued: w.queued,
                })
                .collect();
            commands::work_text(&cfg.agent, &rooms, now_ms())
        }
        Command::Stop { all } => {
            let here = room.room_id().to_string();
            let mut stopped = 0;
            for (r, w) in shared.work.lock().unwrap().iter_mut() {
                if !(all || *r == here) {
                    continue;
                }
                if let Some(run) = &mut w.running {
                    if run.stopped_by.is_none() {
                        run.stopped_by = Some(author.name().to_string());
                        run.cancel.notify_one();
                        stopped += 1;
                    }
                }
            }
            match (stopped, all) {
                (0, false) => format!("{}: nothing is running in this room", cfg.agent),
                (0, true) => format!("{}: nothing is running", cfg.agent),
                (n, _) => format!("{}: stopping {n} running turn(s)", cfg.agent),
            }
        }
    };
    shared.notice(&room, Some(&event), &text).await;
}

/// The log filter of a bridge when `NUKETOWN_LOG` says nothing: what it does
/// (info); matrix-sdk's complaints about normal conditions (no account data
/// yet, no key backup) are not errors of ours.
pub const DEFAULT_LOG: &str = "warn,nuketown=info,nuketown_chat=info,matrix_sdk=error,matrix_sdk::http_client=off,matrix_sdk_crypto=off,matrix_sdk_base=error";

/// Become the agent `name` (as root: its groups, gid and uid, and its
/// `HOME`), or check that we already are. Call before any thread starts.
pub fn become_agent(name: &str) -> Result<()> {
    let user = nix::unistd::User::from_name(name)?
        .with_context(|| format!("{name} has no account on this host; run nuketown apply"))?;
    let me = nix::unistd::geteuid();
    if me == user.uid {
        return Ok(());
    }
    if !me.is_root() {
        bail!("run the bridge as {name} (or as root, which switches to {name})");
    }
    let cname = std::ffi::CString::new(name)?;
    nix::unistd::initgroups(&cname, user.gid)?;
    nix::unistd::setgid(user.gid)?;
    nix::unistd::setuid(user.uid)?;
    // Safety: single-threaded here (before the runtime starts).
    unsafe {
        std::env::set_var("HOME", &user.dir);
        std::env::set_var("USER", name);
        std::env::set_var("LOGNAME", name);
    }
    Ok(())
}

/// The bridge's stores in `dir`: its state (the sync token, rooms) and its
/// encryption keys, in sqlite with small caches. The event cache and media
/// stores stay in memory: the bridge never uses them, and each sqlite store
/// is a database with its own connections and caches (benchmarks.md).
async fn open_stores(dir: &Path) -> Result<matrix_sdk::config::StoreConfig> {
    let config = matrix_sdk::SqliteStoreConfig::new(dir)
        .pool_max_size(2)
        .cache_size(256_000)
        .journal_size_limit(1_000_000);
    let opening = |what: &str| format!("opening the bridge's {what} store in {}", dir.display());
    let state = matrix_sdk::SqliteStateStore::open_with_config(&config)
        .await
        .with_context(|| opening("state"))?;
    let crypto = matrix_sdk::SqliteCryptoStore::open_with_config(&config)
        .await
        .with_context(|| opening("encryption"))?;
    Ok(matrix_sdk::config::StoreConfig::new(
        matrix_sdk::cross_process_lock::CrossProcessLockConfig::multi_process("main"),
    )
    .state_store(state)
    .crypto_store(crypto))
}

/// Run the bridge until the process is stopped: log in (or restore the saved
/// device), join declared rooms, answer allowed humans, and keep syncing
/// through homeserver outages.
pub async fn run(cfg: BridgeConfig) -> Result<()> {
    std::fs::create_dir_all(&cfg.store)
        .with_context(|| format!("creating the bridge store {}", cfg.store.display()))?;
    // Held for the life of the process: `nuketown status` reads liveness from it.
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(cfg.store.join("bridge.lock"))
        .with_context(|| format!("opening {}", cfg.store.join("bridge.lock").display()))?;
    let _alive = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| {
            anyhow::anyhow!(
                "another bridge of {} is running (it holds {}: {e}); stop it first",
                cfg.agent,
                cfg.store.join("bridge.lock").display()
            )
        })?;
    let client = Client::builder()
        .homeserver_url(&cfg.homeserver)
        .store_config(open_stores(&cfg.store.join("store")).await?)
        .build()
        .await
        .context("building the Matrix client")?;
    // The homeserver may be down at start: retry the login with backoff.
    let mut delay = Duration::from_millis(250);
    loop {
        match login(&cfg, &client).await {
            Ok(()) => break,
            Err(e)
                if format!("{e:#}").contains("reading") || format!("{e:#}").contains("needs") =>
            {
                return Err(e)
            }
            Err(e) => {
                tracing::warn!("login failed, retrying in {delay:?}: {e:#}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    let ledger_path = cfg.store.join("ledger.json");
    let mut ledger: Ledger = std::fs::read_to_string(&ledger_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    if ledger.since_ms == 0 {
        ledger.since_ms = now_ms(); // first start: what came before is history
        write_json(&ledger_path, &ledger)?;
    }
    let me = client
        .user_id()
        .context("logged in without a user id")?
        .to_owned();
    let device = client
        .device_id()
        .map(|d| d.to_string())
        .unwrap_or_default();
    let shared = Arc::new(Shared {
        roster: Roster {
            own_humans: cfg.allowed.clone(),
            agents: cfg.agents.clone(),
        },
        me,
        cfg: cfg.clone(),
        ledger: Mutex::new(ledger),
        status: Mutex::new(ChatStatus::default()),
        rooms: Mutex::new(HashMap::new()),
        declared: StdMutex::new(HashMap::new()),
        turns: StdMutex::new(HashMap::new()),
        mine: StdMutex::new(VecDeque::new()),
        work: StdMutex::new(HashMap::new()),
        escalations: StdMutex::new(Vec::new()),
        shown: StdMutex::new(escalations::Shown::default()),
        last_turn: StdMutex::new(None),
        asked_in: StdMutex::new(HashMap::new()),
        reported: StdMutex::new(None),
    });
    shared.resolve_declared(&client).await;
    client.add_event_handler_context(shared.clone());
    client.add_event_handler(on_invite);
    client.add_event_handler(on_message);
    if let Some(socket) = shared.cfg.ask_socket.clone() {
        tokio::spawn(follow_escalations(shared.clone(), client.clone(), socket));
    } else if let Some(cmd) = shared.cfg.follow_command.clone() {
        tokio::spawn(follow_command(shared.clone(), client.clone(), cmd));
    }

    let mut settings = SyncSettings::default().timeout(Duration::from_secs(30));
    // Members come with the messages that need them, not all at once.
    settings = settings.filter(Filter::FilterDefinition(
        FilterDefinition::with_lazy_loading(),
    ));
    let mut started = false;
    let mut delay = Duration::from_millis(250);
    loop {
        match client.sync_once(settings.clone()).await {
            Ok(resp) => {
                settings = settings.token(resp.next_batch);
                delay = Duration::from_millis(250);
                if !started {
                    for r in &cfg.rooms {
                        match <&RoomOrAliasId>::try_from(r.as_str()) {
                            Ok(id) => {
                                if let Err(e) = client.join_room_by_id_or_alias(id, &[]).await {
                                    tracing::warn!("cannot join {r}: {e}");
                                }
                            }
                            Err(e) => {
                                tracing::warn!("chat.rooms: {r} is not a room id or alias: {e}")
                            }
                        }
                    }
                }
                let rooms: Vec<String> = client
                    .joined_rooms()
                    .iter()
                    .map(|r| r.room_id().to_string())
                    .collect();
                if !started {
                    tracing::info!(
                        "logged in as {} (device {device}), {} rooms, listening",
                        shared.me,
                        rooms.len()
                    );
                    started = true;
                }
                shared
                    .set_status(|s| {
                        s.connected = true;
                        s.error = None;
                        s.rooms = rooms;
                    })
                    .await;
            }
            Err(e) => {
                tracing::warn!("sync failed, retrying in {delay:?}: {e}");
                let msg = e.to_string();
                shared
                    .set_status(|s| {
                        s.connected = false;
                        s.error = Some(msg);
                    })
                    .await;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}
