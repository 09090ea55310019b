//! Approvals in chat: the town hall's requests posted to a Matrix room and
//! decided there — by a reply `approve <id>` / `deny <id>` or a ✅ / ❌
//! reaction on the request's message — from the declared Matrix approvers
//! only. Everything from anyone else is ignored and logged. The process is an
//! approver of the hall (it runs as the human or root); each decision names
//! the Matrix id that made it (`matrix:@josh:example.org`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::event_handler::Ctx;
use matrix_sdk::ruma::events::reaction::OriginalSyncReactionEvent;
use matrix_sdk::ruma::events::room::member::{MembershipState, StrippedRoomMemberEvent};
use matrix_sdk::ruma::events::room::message::{
    MessageType, OriginalSyncRoomMessageEvent, RoomMessageEventContent,
};
use matrix_sdk::ruma::{OwnedRoomId, RoomOrAliasId};
use matrix_sdk::{Client, Room};
use tokio::sync::{mpsc, Mutex};

use nuketown_hall::client::Approver;
use nuketown_hall::protocol::{show_argv, show_str, RequestView, ToApprover};
use nuketown_town::Town;

/// Everything the Matrix approver needs.
#[derive(Debug, Clone)]
pub struct ApproverConfig {
    /// Homeserver URL.
    pub homeserver: String,
    /// The hall's Matrix id.
    pub user_id: String,
    /// Its password file.
    pub password_file: PathBuf,
    /// The approval room.
    pub room: String,
    /// Matrix ids who may decide.
    pub approvers: Vec<String>,
    /// Where the Matrix store lives.
    pub store: PathBuf,
    /// The hall's approver socket.
    pub approver_socket: PathBuf,
}

impl ApproverConfig {
    /// From the town's `hall.matrix`.
    pub fn from_town(
        town: &Town,
        store: PathBuf,
        approver_socket: PathBuf,
    ) -> Result<ApproverConfig> {
        let m = &town.hall.matrix;
        if !m.enable {
            bail!("hall.matrix.enable is false; enable it (homeserver, userId, passwordFile, room, approvers) to approve in Matrix");
        }
        Ok(ApproverConfig {
            homeserver: m.homeserver.clone().unwrap_or_default(),
            user_id: m.user_id.clone().unwrap_or_default(),
            password_file: m.password_file.clone().unwrap_or_default(),
            room: m.room.clone().unwrap_or_default(),
            approvers: m.approvers.clone(),
            store,
            approver_socket,
        })
    }
}

/// The text posted for a request.
pub fn request_text(r: &RequestView) -> String {
    let id = &r.id[..8];
    let mut s = format!(
        "🔐 {} (uid {}) asks to run as {}:\n{}\nin {}\n",
        r.agent,
        r.uid,
        r.user,
        show_argv(&r.argv),
        show_str(&r.cwd)
    );
    if r.agent_can_write {
        s.push_str(&format!(
            "⚠ {} can write {} or its directory: what runs may not be what you think\n",
            r.agent,
            show_str(&r.argv[0])
        ));
    }
    s.push_str(&format!(
        "Reply \"approve {id}\" or \"deny {id}\", or react ✅ / ❌ to this message."
    ));
    s
}

/// A reply's meaning: (approve?, id prefix).
pub fn parse_reply(body: &str) -> Option<(bool, String)> {
    let mut words = body.split_whitespace();
    let verb = words.next()?.to_lowercase();
    let id = words.next()?.to_lowercase();
    if words.next().is_some() || id.len() < 6 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    match verb.as_str() {
        "approve" => Some((true, id)),
        "deny" => Some((false, id)),
        _ => None,
    }
}

/// A reaction's meaning.
pub fn parse_reaction(key: &str) -> Option<bool> {
    match key.trim_end_matches('\u{fe0f}') {
        "✅" | "✔" | "👍" => Some(true),
        "❌" | "✖" | "👎" => Some(false),
        _ => None,
    }
}

struct Shared {
    cfg: ApproverConfig,
    room: Mutex<Option<OwnedRoomId>>,
    /// Pending requests by id, and the event that announced each.
    pending: Mutex<HashMap<String, RequestView>>,
    announced: Mutex<HashMap<String, String>>,
    decide: Mutex<nuketown_hall::client::ApproverSender>,
}

impl Shared {
    fn allowed(&self, who: &str) -> bool {
        self.cfg.approvers.iter().any(|a| a == who)
    }

    async fn decide(&self, room: &Room, prefix: &str, approve: bool, who: &str) {
        let found: Vec<RequestView> = self
            .pending
            .lock()
            .await
            .values()
            .filter(|r| r.id.starts_with(prefix))
            .cloned()
            .collect();
        let text = match found.as_slice() {
            [r] => {
                let res = self.decide.lock().await.send_decision(
                    r,
                    approve,
                    None,
                    &format!("matrix:{who}"),
                );
                match res {
                    Ok(()) => return, // the hall's `resolved` event is posted
                    Err(e) => format!("could not decide {prefix}: {e}"),
                }
            }
            [] => format!("no pending request {prefix}"),
            _ => format!("{prefix} matches several requests; give more of the id"),
        };
        let _ = room.send(RoomMessageEventContent::text_plain(text)).await;
    }
}

async fn on_invite(
    ev: StrippedRoomMemberEvent,
    room: Room,
    client: Client,
    Ctx(shared): Ctx<Arc<Shared>>,
) {
    if ev.content.membership == MembershipState::Invite
        && Some(ev.state_key.as_ref()) == client.user_id()
    {
        if shared.allowed(ev.sender.as_str()) {
            let _ = room.join().await;
        } else {
            tracing::warn!(sender = %ev.sender, "ignored an invite from someone who is not a Matrix approver");
            let _ = room.leave().await;
        }
    }
}

async fn on_message(
    ev: OriginalSyncRoomMessageEvent,
    room: Room,
    client: Client,
    Ctx(shared): Ctx<Arc<Shared>>,
) {
    if Some(ev.sender.as_ref()) == client.user_id()
        || Some(room.room_id().to_owned()) != *shared.room.lock().await
    {
        return;
    }
    let MessageType::Text(t) = &ev.content.msgtype else {
        return;
    };
    let Some((approve, prefix)) = parse_reply(&t.body) else {
        return;
    };
    if !shared.allowed(ev.sender.as_str()) {
        tracing::warn!(sender = %ev.sender, body = %t.body, "ignored a decision from someone who is not a Matrix approver");
        return;
    }
    shared
        .decide(&room, &prefix, approve, ev.sender.as_str())
        .await;
}

async fn on_reaction(ev: OriginalSyncReactionEvent, room: Room, Ctx(shared): Ctx<Arc<Shared>>) {
    let Some(approve) = parse_reaction(&ev.content.relates_to.key) else {
        return;
    };
    let target = ev.content.relates_to.event_id.to_string();
    let id = shared
        .announced
        .lock()
        .await
        .iter()
        .find(|(_, e)| **e == target)
        .map(|(id, _)| id.clone());
    let Some(id) = id else { return };
    if !shared.allowed(ev.sender.as_str()) {
        tracing::warn!(sender = %ev.sender, "ignored a reaction from someone who is not a Matrix approver");
        return;
    }
    shared.decide(&room, &id, approve, ev.sender.as_str()).await;
}

/// Run the Matrix approver until stopped.
pub async fn run(cfg: ApproverConfig) -> Result<()> {
    std::fs::create_dir_all(&cfg.store)?;
    let client = Client::builder()
        .homeserver_url(&cfg.homeserver)
        .sqlite_store(cfg.store.join("store"), None)
        .build()
        .await?;
    let session_file = cfg.store.join("session.json");
    if let Ok(text) = std::fs::read_to_string(&session_file) {
        client
            .restore_session(serde_json::from_str::<
                matrix_sdk::authentication::matrix::MatrixSession,
            >(&text)?)
            .await?;
    } else {
        let pw = std::fs::read_to_string(&cfg.password_file).with_context(|| {
            format!(
                "reading hall.matrix.passwordFile {}",
                cfg.password_file.display()
            )
        })?;
        client
            .matrix_auth()
            .login_username(&cfg.user_id, pw.trim_end())
            .initial_device_display_name("nuketown hall")
            .send()
            .await?;
        if let Some(s) = client.matrix_auth().session() {
            std::fs::write(&session_file, serde_json::to_vec(&s)?)?;
        }
    }

    // The hall: one connection streams requests, its sending half decides.
    let mut hall = Approver::connect(&cfg.approver_socket)?;
    let sender = hall.sender()?;
    let initial = hall.watch(&format!("matrix:{}", cfg.user_id))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<ToApprover>();
    for r in initial {
        let _ = tx.send(ToApprover::Request { request: r });
    }
    std::thread::spawn(move || {
        while let Ok(m) = hall.recv() {
            if tx.send(m).is_err() {
                return;
            }
        }
    });

    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        room: Mutex::new(None),
        pending: Mutex::new(HashMap::new()),
        announced: Mutex::new(HashMap::new()),
        decide: Mutex::new(sender),
    });
    client.add_event_handler_context(shared.clone());
    client.add_event_handler(on_invite);
    client.add_event_handler(on_message);
    client.add_event_handler(on_reaction);

    let mut settings = SyncSettings::default().timeout(Duration::from_secs(10));
    let first = client.sync_once(settings.clone()).await?;
    settings = settings.token(first.next_batch);
    let target = <&RoomOrAliasId>::try_from(cfg.room.as_str())
        .with_context(|| format!("hall.matrix.room {} is not a room id or alias", cfg.room))?;
    let room = client
        .join_room_by_id_or_alias(target, &[])
        .await
        .with_context(|| format!("joining {}", cfg.room))?;
    *shared.room.lock().await = Some(room.room_id().to_owned());

    let sync_client = client.clone();
    tokio::spawn(async move {
        loop {
            match sync_client.sync_once(settings.clone()).await {
                Ok(r) => settings = settings.token(r.next_batch),
                Err(e) => {
                    tracing::warn!("sync failed: {e}");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    });

    while let Some(m) = rx.recv().await {
        match m {
            ToApprover::Request { request } => {
                let sent = room
                    .send(RoomMessageEventContent::text_plain(request_text(&request)))
                    .await;
                match sent {
                    Ok(r) => {
                        shared
                            .announced
                            .lock()
                            .await
                            .insert(request.id.clone(), r.response.event_id.to_string());
                    }
                    Err(e) => tracing::error!("cannot post request {}: {e}", request.id),
                }
                shared
                    .pending
                    .lock()
                    .await
                    .insert(request.id.clone(), request);
            }
            ToApprover::Resolved { id, outcome, by } => {
                // Only requests this room was shown.
                let shown = shared.pending.lock().await.remove(&id).is_some();
                if shown {
                    let text = format!(
                        "request {} was {outcome} by {} via {}",
                        &id[..8.min(id.len())],
                        by.who,
                        by.channel
                    );
                    let _ = room.send(RoomMessageEventContent::text_plain(text)).await;
                }
            }
            ToApprover::Error { message, .. } => {
                let _ = room
                    .send(RoomMessageEventContent::text_plain(format!(
                        "the town hall refused: {message}"
                    )))
                    .await;
            }
            _ => {}
        }
    }
    bail!("the town hall went away")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_and_reactions() {
        assert_eq!(
            parse_reply("approve 3f2a1b9c"),
            Some((true, "3f2a1b9c".into()))
        );
        assert_eq!(
            parse_reply("Deny 3F2A1B9C"),
            Some((false, "3f2a1b9c".into()))
        );
        assert_eq!(parse_reply("approve 3f2"), None, "too short to bind");
        assert_eq!(parse_reply("approve 3f2a1b9c and more"), None);
        assert_eq!(parse_reply("approve everything"), None);
        assert_eq!(parse_reaction("✅"), Some(true));
        assert_eq!(parse_reaction("❌"), Some(false));
        assert_eq!(parse_reaction("🎉"), None);
    }
}
