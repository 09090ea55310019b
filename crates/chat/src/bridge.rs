//! The bridge: one Matrix account per agent, run as the agent. Messages from
//! the agent's declared humans run its backend in its project directory; the
//! answer is posted back as a reply. Everything else is ignored and logged.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::event_handler::Ctx;
use matrix_sdk::ruma::events::relation::{InReplyTo, Reply};
use matrix_sdk::ruma::events::room::member::{MembershipState, StrippedRoomMemberEvent};
use matrix_sdk::ruma::events::room::message::{
    MessageType, OriginalSyncRoomMessageEvent, Relation, RoomMessageEventContent,
};
use matrix_sdk::ruma::{OwnedEventId, OwnedUserId, RoomOrAliasId};
use matrix_sdk::{Client, Room, RoomState, SessionMeta, SessionTokens};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use nuketown_town::{ChatBackend, Town};

use crate::backend;

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
}

/// The bridge's state directory for `agent`: under its persist root, so a new round keeps the device.
pub fn store_dir(town: &Town, agent: &str) -> PathBuf {
    town.persist_of(agent).join(".nuketown/matrix")
}

impl BridgeConfig {
    /// The bridge of agent `name`, from the town.
    pub fn from_town(town: &Town, name: &str) -> Result<BridgeConfig> {
        let Some(agent) = town.agents.get(name).filter(|a| a.enable) else {
            bail!("{name} is not an enabled agent of this town");
        };
        let chat = &agent.chat;
        if !chat.enable {
            bail!("agents.{name}.chat.enable is false; enable it (with homeserver, userId and passwordFile) to run the bridge");
        }
        let home = town.home_of(name);
        let workdir = town
            .project_dirs
            .iter()
            .map(|d| {
                if let Some(rest) = d.strip_prefix("~/") {
                    home.join(rest)
                } else if d == "~" {
                    home.clone()
                } else {
                    PathBuf::from(d)
                }
            })
            .find(|d| d.is_dir())
            .unwrap_or(home);
        Ok(BridgeConfig {
            agent: name.to_string(),
            homeserver: chat.homeserver.clone().unwrap_or_default(),
            user_id: chat.user_id.clone().unwrap_or_default(),
            password_file: chat.password_file.clone(),
            access_token_file: chat.access_token_file.clone(),
            allowed: chat.allowed_humans.clone(),
            rooms: chat.rooms.clone(),
            backend: chat.backend.clone(),
            store: store_dir(town, name),
            workdir,
            timeout: Duration::from_secs(30 * 60),
        })
    }
}

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
    /// Connected to the homeserver at the last sync.
    pub connected: bool,
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
    /// Read the status a bridge left in `store`.
    pub fn read(store: &Path) -> Option<ChatStatus> {
        serde_json::from_str(&std::fs::read_to_string(store.join("status.json")).ok()?).ok()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    std::io::Write::write_all(&mut f, serde_json::to_string_pretty(value)?.as_bytes())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

struct Shared {
    cfg: BridgeConfig,
    allowed: Vec<OwnedUserId>,
    ledger: Mutex<Ledger>,
    status: Mutex<ChatStatus>,
    rooms: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl Shared {
    async fn save_ledger(&self, ledger: &Ledger) {
        if let Err(e) = write_json(&self.cfg.store.join("ledger.json"), ledger) {
            tracing::error!("cannot save the ledger: {e:#}");
        }
    }

    async fn set_status(&self, f: impl FnOnce(&mut ChatStatus)) {
        let mut s = self.status.lock().await;
        f(&mut s);
        s.updated_ms = now_ms();
        if let Err(e) = write_json(&self.cfg.store.join("status.json"), &*s) {
            tracing::error!("cannot write status: {e:#}");
        }
    }

    fn is_allowed(&self, who: &matrix_sdk::ruma::UserId) -> bool {
        self.allowed.iter().any(|a| a == who)
    }
}

async fn login(cfg: &BridgeConfig, client: &Client) -> Result<()> {
    let session_file = cfg.store.join("session.json");
    if let Ok(text) = std::fs::read_to_string(&session_file) {
        let session: MatrixSession =
            serde_json::from_str(&text).context("reading the saved Matrix session")?;
        client
            .restore_session(session)
            .await
            .context("restoring the saved Matrix session")?;
        return Ok(());
    }
    if let Some(pw_file) = &cfg.password_file {
        let password = std::fs::read_to_string(pw_file)
            .with_context(|| format!("reading chat.passwordFile {}", pw_file.display()))?;
        client
            .matrix_auth()
            .login_username(&cfg.user_id, password.trim_end_matches(['\n', '\r']))
            .initial_device_display_name(&format!("nuketown {}", cfg.agent))
            .send()
            .await
            .with_context(|| format!("logging in as {}", cfg.user_id))?;
    } else if let Some(tok_file) = &cfg.access_token_file {
        let text = std::fs::read_to_string(tok_file)
            .with_context(|| format!("reading chat.accessTokenFile {}", tok_file.display()))?;
        let mut lines = text.lines();
        let (Some(token), Some(device)) = (lines.next(), lines.next()) else {
            bail!("chat.accessTokenFile {}: write the access token on the first line and the device id on the second", tok_file.display());
        };
        let session = MatrixSession {
            meta: SessionMeta {
                user_id: cfg.user_id.as_str().try_into()?,
                device_id: device.trim().into(),
            },
            tokens: SessionTokens {
                access_token: token.trim().to_string(),
                refresh_token: None,
            },
        };
        client.restore_session(session).await?;
    } else {
        bail!("chat needs passwordFile or accessTokenFile");
    }
    if let Some(session) = client.matrix_auth().session() {
        write_json(&session_file, &session)?;
    }
    Ok(())
}

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
    if !shared.is_allowed(&ev.sender) {
        tracing::warn!(sender = %ev.sender, room = %room.room_id(), "ignored an invite from someone not in chat.allowedHumans");
        let _ = room.leave().await;
        return;
    }
    tokio::spawn(async move {
        // The homeserver may not have the room ready the instant the invite arrives.
        let mut delay = Duration::from_millis(100);
        for _ in 0..10 {
            match room.join().await {
                Ok(()) => {
                    tracing::info!(room = %room.room_id(), sender = %ev.sender, "joined");
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

async fn on_message(
    ev: OriginalSyncRoomMessageEvent,
    room: Room,
    client: Client,
    Ctx(shared): Ctx<Arc<Shared>>,
) {
    if room.state() != RoomState::Joined || Some(ev.sender.as_ref()) == client.user_id() {
        return;
    }
    let MessageType::Text(text) = &ev.content.msgtype else {
        return;
    };
    if !shared.is_allowed(&ev.sender) {
        tracing::warn!(sender = %ev.sender, room = %room.room_id(), "ignored a message from someone not in chat.allowedHumans");
        return;
    }
    let ts: u64 = ev.origin_server_ts.0.into();
    {
        let ledger = shared.ledger.lock().await;
        if ts < ledger.since_ms || ledger.handled.iter().any(|h| h == ev.event_id.as_str()) {
            return; // history, or answered before a restart
        }
    }
    let body = text.body.clone();
    tokio::spawn(answer(
        shared,
        room,
        ev.event_id.clone(),
        ev.sender.to_string(),
        body,
    ));
}

async fn answer(
    shared: Arc<Shared>,
    room: Room,
    event: OwnedEventId,
    sender: String,
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
    let _turn = lock.lock().await; // one conversation per room, in order
    let session = {
        let mut ledger = shared.ledger.lock().await;
        if ledger.handled.iter().any(|h| h == event.as_str()) {
            return;
        }
        // Recorded before running: a crash mid-answer never answers twice.
        ledger.handled.push_back(event.to_string());
        while ledger.handled.len() > 1000 {
            ledger.handled.pop_front();
        }
        shared.save_ledger(&ledger).await;
        ledger.sessions.get(&room_id).cloned()
    };
    let typing = room.clone();
    let keep_typing = tokio::spawn(async move {
        loop {
            let _ = typing.typing_notice(true).await;
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
    });
    let cfg = &shared.cfg;
    let inv = backend::invocation(&cfg.backend, &body, session.as_deref(), &cfg.workdir);
    let result = backend::run(
        &cfg.backend,
        &inv,
        &[("NUKETOWN_ROOM", &room_id), ("NUKETOWN_SENDER", &sender)],
        cfg.timeout,
    )
    .await;
    keep_typing.abort();
    let _ = room.typing_notice(false).await;
    let text = match result {
        Ok(reply) => {
            if let Some(s) = reply.session {
                let mut ledger = shared.ledger.lock().await;
                ledger.sessions.insert(room_id.clone(), s);
                shared.save_ledger(&ledger).await;
            }
            if reply.text.trim().is_empty() {
                "(no output)".to_string()
            } else {
                reply.text
            }
        }
        Err(e) => {
            tracing::error!(room = %room_id, "backend failed: {e}");
            format!("⚠ {e}")
        }
    };
    for chunk in backend::chunks(&text, MAX_MESSAGE) {
        let mut content = RoomMessageEventContent::text_plain(chunk);
        content.relates_to = Some(Relation::Reply(Reply::new(InReplyTo::new(event.clone()))));
        if let Err(e) = room.send(content).await {
            tracing::error!(room = %room_id, "cannot post the answer: {e}");
            break;
        }
    }
    shared
        .set_status(|s| s.last_message_ms = Some(now_ms()))
        .await;
}

/// Run the bridge until the process is stopped: log in (or restore the saved
/// device), join declared rooms, answer allowed humans, and keep syncing
/// through homeserver outages.
pub async fn run(cfg: BridgeConfig) -> Result<()> {
    std::fs::create_dir_all(&cfg.store)
        .with_context(|| format!("creating the bridge store {}", cfg.store.display()))?;
    let client = Client::builder()
        .homeserver_url(&cfg.homeserver)
        .sqlite_store(cfg.store.join("store"), None)
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
    let allowed = cfg
        .allowed
        .iter()
        .filter_map(|a| a.as_str().try_into().ok())
        .collect();
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        allowed,
        ledger: Mutex::new(ledger),
        status: Mutex::new(ChatStatus::default()),
        rooms: Mutex::new(HashMap::new()),
    });
    client.add_event_handler_context(shared.clone());
    client.add_event_handler(on_invite);
    client.add_event_handler(on_message);

    let mut settings = SyncSettings::default().timeout(Duration::from_secs(30));
    let mut joined_declared = false;
    let mut delay = Duration::from_millis(250);
    loop {
        match client.sync_once(settings.clone()).await {
            Ok(resp) => {
                settings = settings.token(resp.next_batch);
                delay = Duration::from_millis(250);
                if !joined_declared {
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
                    joined_declared = true;
                }
                let rooms: Vec<String> = client
                    .joined_rooms()
                    .iter()
                    .map(|r| r.room_id().to_string())
                    .collect();
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
