//! Approvals in chat: the town hall's requests posted to a Matrix room and
//! decided there — by a reply `approve <id>` / `deny <id>` or a ✅ / ❌
//! reaction on the request's message — from the declared Matrix approvers
//! only. Everything from anyone else is ignored and logged. The process is an
//! approver of the hall (it runs as the human or root); each decision names
//! the Matrix id that made it (`matrix:@josh:example.org`).
//!
//! An answer is bound to one request: a reaction decides only the request
//! its message announced; a reply names an id prefix that must match exactly
//! one request ever posted in the room (and, sent as a Matrix reply, answer
//! that request's message); and an answer sent (the homeserver's
//! `origin_server_ts`) less than the settle time after the announcement
//! decides nothing. A withdrawn request stays withdrawn: nothing said about
//! it can decide another.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::event_handler::Ctx;
use matrix_sdk::ruma::events::reaction::OriginalSyncReactionEvent;
use matrix_sdk::ruma::events::room::member::{MembershipState, StrippedRoomMemberEvent};
use matrix_sdk::ruma::events::room::message::{
    MessageType, OriginalSyncRoomMessageEvent, Relation, RoomMessageEventContent,
};
use matrix_sdk::ruma::{OwnedRoomId, RoomOrAliasId};
use matrix_sdk::{Client, Room};
use tokio::sync::{mpsc, Mutex};

use nuketown_hall::client::Approver;
use nuketown_hall::protocol::{RequestView, ToApprover};
use nuketown_hall::time::now_ms;
use nuketown_town::display::{clean, show_str};
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
    /// Every agent's Matrix id (lowercased): never heard as an approver,
    /// whatever the list says.
    pub agents: Vec<String>,
    /// Where the Matrix store lives.
    pub store: PathBuf,
    /// The hall's approver socket.
    pub approver_socket: PathBuf,
    /// Answers sent sooner than this after a request's message (ms) decide nothing.
    pub settle_ms: u64,
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
            agents: town
                .all_agent_matrix_ids()
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
            store,
            approver_socket,
            settle_ms: DEFAULT_SETTLE_MS,
        })
    }
}

pub use nuketown_hall::show::{device, facts, seconds, short_id, DEFAULT_SETTLE_MS, MIN_PREFIX};

/// The text posted for a request: every fact the terminal shows, every
/// warning, the id to answer with, and the settle time.
pub fn request_text(r: &RequestView, settle_ms: u64) -> String {
    let id = short_id(&r.id);
    let emoji = if r.resources.is_some() {
        "📈"
    } else if r.network.is_some() {
        "🌐"
    } else if r.key_use.is_some() {
        "🔑"
    } else if r.tool.is_some() {
        "🧰"
    } else {
        "🔐"
    };
    let asks = if r.resources.is_some()
        || r.network.is_some()
        || r.key_use.is_some()
        || r.tool.is_some()
    {
        nuketown_hall::show::asks(r)
    } else {
        format!("asks to run as {}", show_str(&r.user))
    };
    let mut s = format!(
        "{emoji} request {id}: {} (uid {}) {asks}:\n",
        clean(&r.agent),
        r.uid
    );
    for (label, text) in facts(r) {
        match label {
            // Matrix decisions never grant: each request is approved once.
            "grant" => {}
            "WARNING" => s.push_str(&format!("⚠ WARNING: {text}\n")),
            _ => s.push_str(&format!("{label}: {text}\n")),
        }
    }
    let left = r.deadline_ms.saturating_sub(now_ms()).div_ceil(1000);
    s.push_str(&format!(
        "expires in {left} s; approving approves it once\n"
    ));
    s.push_str(&format!(
        "Reply \"approve {id}\" or \"deny {id}\", or react ✅ / ❌ to this message; \
         answers sent within {} s of this message do not count.",
        seconds(settle_ms)
    ));
    s
}

/// A reply's meaning: (approve?, id prefix). Quoted lines (`> …`, a reply
/// fallback) are skipped; what is left must be exactly `approve ID` or
/// `deny ID`, with at least [`MIN_PREFIX`] hex digits of the id.
pub fn parse_reply(body: &str) -> Option<(bool, String)> {
    let text: Vec<&str> = body
        .lines()
        .filter(|l| !l.starts_with('>') && !l.trim().is_empty())
        .collect();
    let [line] = text.as_slice() else {
        return None;
    };
    let mut words = line.split_whitespace();
    let verb = words.next()?.to_lowercase();
    let id = words.next()?.to_lowercase();
    if words.next().is_some()
        || id.len() < MIN_PREFIX
        || id.len() > 32
        || !id.chars().all(|c| c.is_ascii_hexdigit())
    {
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

/// A request this room was shown.
#[derive(Debug, Clone)]
pub struct Announced {
    /// The request as the hall sent it.
    pub request: RequestView,
    /// The message that announced it.
    pub event: String,
    /// When the homeserver says that message was sent (ms); `None` until known.
    pub posted_ms: Option<u64>,
    /// `None` while pending; then how it ended (`approved`, `denied`, `cancelled`).
    pub outcome: Option<String>,
}

/// How many announced requests are remembered (pending ones always are).
const REMEMBERED: usize = 10_000;

/// What an answer in the room points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A reply naming an id prefix; `in_reply_to` when sent as a Matrix reply.
    Named {
        /// The id prefix typed.
        prefix: String,
        /// The message it replies to, if any.
        in_reply_to: Option<String>,
    },
    /// A reaction on this message.
    Reaction(String),
}

/// Every request announced in the room (pending and recently resolved), so
/// an answer is bound to exactly one of them: the one its message announced,
/// named unambiguously among all that were ever shown, and sent at least the
/// settle time after it was shown.
#[derive(Debug, Default)]
pub struct Book {
    entries: Vec<Announced>,
}

impl Book {
    /// Remember an announcement.
    pub fn announce(&mut self, request: RequestView, event: String) {
        self.entries.push(Announced {
            request,
            event,
            posted_ms: None,
            outcome: None,
        });
        while self.entries.len() > REMEMBERED {
            match self.entries.iter().position(|e| e.outcome.is_some()) {
                Some(i) => {
                    self.entries.remove(i);
                }
                None => break,
            }
        }
    }

    /// The homeserver's timestamp of the announcement of `id`.
    pub fn posted(&mut self, id: &str, ms: u64) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.request.id == id) {
            e.posted_ms = Some(ms);
        }
    }

    /// `id` ended; false when this room was never shown it.
    pub fn resolved(&mut self, id: &str, outcome: &str) -> bool {
        match self.entries.iter_mut().find(|e| e.request.id == id) {
            Some(e) => {
                e.outcome = Some(outcome.to_string());
                true
            }
            None => false,
        }
    }

    /// The pending request an answer sent at `sent_ms` decides, or why it
    /// decides nothing (`Err(None)`: not an answer to us at all, stay quiet).
    pub fn bind(
        &self,
        target: &Target,
        sent_ms: u64,
        settle_ms: u64,
    ) -> Result<RequestView, Option<String>> {
        let e = match target {
            Target::Reaction(event) => self
                .entries
                .iter()
                .find(|e| e.event == *event)
                .ok_or(None)?,
            Target::Named {
                prefix,
                in_reply_to,
            } => {
                let found: Vec<&Announced> = self
                    .entries
                    .iter()
                    .filter(|e| e.request.id.starts_with(prefix.as_str()))
                    .collect();
                let e = match found.as_slice() {
                    [e] => *e,
                    [] => return Err(Some(format!("no request {prefix} was posted here"))),
                    _ => {
                        return Err(Some(format!(
                            "{prefix} names more than one request posted here; nothing was decided: give more of the id"
                        )))
                    }
                };
                if let Some(reply) = in_reply_to {
                    if *reply != e.event {
                        return Err(Some(format!(
                            "that reply names request {} but answers another message; nothing was decided",
                            short_id(&e.request.id)
                        )));
                    }
                }
                e
            }
        };
        let id = short_id(&e.request.id);
        if let Some(outcome) = &e.outcome {
            return Err(Some(format!(
                "request {id} is no longer pending (it was {}); nothing was decided",
                clean(outcome)
            )));
        }
        let posted = e.posted_ms.unwrap_or(u64::MAX);
        if sent_ms < posted.saturating_add(settle_ms) {
            let after = if posted == u64::MAX {
                "before it was posted".to_string()
            } else {
                format!(
                    "{} s after it was posted",
                    seconds(sent_ms.saturating_sub(posted))
                )
            };
            return Err(Some(format!(
                "an answer to request {id} sent {after} came too soon to have been read (less than {} s): nothing was decided; read it and answer again",
                seconds(settle_ms)
            )));
        }
        Ok(e.request.clone())
    }
}

struct Shared {
    cfg: ApproverConfig,
    room: Mutex<Option<OwnedRoomId>>,
    book: Mutex<Book>,
    decide: Mutex<nuketown_hall::client::ApproverSender>,
}

impl Shared {
    fn allowed(&self, who: &str) -> bool {
        self.cfg.approvers.iter().any(|a| a == who)
            && !self.cfg.agents.contains(&who.to_lowercase())
            && !who.eq_ignore_ascii_case(&self.cfg.user_id)
    }

    async fn decide(&self, room: &Room, target: Target, sent_ms: u64, approve: bool, who: &str) {
        let bound = self
            .book
            .lock()
            .await
            .bind(&target, sent_ms, self.cfg.settle_ms);
        let text = match bound {
            Ok(r) => {
                let res = self.decide.lock().await.send_decision(
                    &r,
                    approve,
                    None,
                    &format!("matrix:{who}"),
                );
                match res {
                    Ok(()) => return, // the hall's `resolved` event is posted
                    Err(e) => format!(
                        "could not decide {}: {}",
                        short_id(&r.id),
                        clean(&e.to_string())
                    ),
                }
            }
            Err(None) => return,
            Err(Some(why)) => why,
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
            tracing::warn!(sender = ?ev.sender.as_str(), "ignored an invite from someone who is not a Matrix approver");
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
        tracing::warn!(sender = ?ev.sender.as_str(), body = ?t.body, "ignored a decision from someone who is not a Matrix approver");
        return;
    }
    let in_reply_to = match &ev.content.relates_to {
        Some(Relation::Reply(r)) => Some(r.in_reply_to.event_id.to_string()),
        _ => None,
    };
    let sent = u64::from(ev.origin_server_ts.0);
    shared
        .decide(
            &room,
            Target::Named {
                prefix,
                in_reply_to,
            },
            sent,
            approve,
            ev.sender.as_str(),
        )
        .await;
}

async fn on_reaction(ev: OriginalSyncReactionEvent, room: Room, Ctx(shared): Ctx<Arc<Shared>>) {
    if Some(room.room_id().to_owned()) != *shared.room.lock().await {
        return;
    }
    let Some(approve) = parse_reaction(&ev.content.relates_to.key) else {
        return;
    };
    if !shared.allowed(ev.sender.as_str()) {
        tracing::warn!(sender = ?ev.sender.as_str(), "ignored a reaction from someone who is not a Matrix approver");
        return;
    }
    let target = Target::Reaction(ev.content.relates_to.event_id.to_string());
    let sent = u64::from(ev.origin_server_ts.0);
    shared
        .decide(&room, target, sent, approve, ev.sender.as_str())
        .await;
}

/// When the homeserver says `event` was sent (ms since the epoch).
async fn server_time(room: &Room, event: &matrix_sdk::ruma::EventId) -> Option<u64> {
    let ev = room.event(event, None).await.ok()?;
    ev.raw()
        .get_field::<matrix_sdk::ruma::MilliSecondsSinceUnixEpoch>("origin_server_ts")
        .ok()
        .flatten()
        .map(|t| u64::from(t.0))
}

/// Run the Matrix approver until stopped.
pub async fn run(cfg: ApproverConfig) -> Result<()> {
    let client = crate::matrix::client(&cfg.homeserver, &cfg.store).await?;
    crate::matrix::login(
        &client,
        &crate::matrix::Account {
            user_id: &cfg.user_id,
            secret: crate::matrix::Secret::Password(cfg.password_file.clone()),
            device_name: "nuketown hall",
            key: "hall.matrix.passwordFile",
        },
        &cfg.store,
    )
    .await?;

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
        book: Mutex::new(Book::default()),
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
                let text = request_text(&request, cfg.settle_ms);
                let id = request.id.clone();
                match room.send(RoomMessageEventContent::text_plain(text)).await {
                    Ok(r) => {
                        let event = r.response.event_id;
                        shared
                            .book
                            .lock()
                            .await
                            .announce(request, event.to_string());
                        // Answers count from the homeserver's own time of the
                        // announcement (the answers' times are the homeserver's too);
                        // until it is known, every answer is too soon.
                        let posted = match server_time(&room, &event).await {
                            Some(t) => t,
                            None => {
                                tracing::warn!(
                                    "cannot read back request {id}'s announcement; counting from this host's clock"
                                );
                                now_ms()
                            }
                        };
                        shared.book.lock().await.posted(&id, posted);
                    }
                    Err(e) => tracing::error!("cannot post request {id}: {e}"),
                }
            }
            ToApprover::Resolved { id, outcome, by } => {
                // Only requests this room was shown.
                let shown = shared.book.lock().await.resolved(&id, &outcome);
                if shown {
                    let text = format!(
                        "request {} was {} by {} via {}",
                        short_id(&id),
                        clean(&outcome),
                        clean(&by.who),
                        clean(&by.channel)
                    );
                    let _ = room.send(RoomMessageEventContent::text_plain(text)).await;
                }
            }
            ToApprover::Error { message, .. } => {
                let _ = room
                    .send(RoomMessageEventContent::text_plain(format!(
                        "the town hall refused: {}",
                        clean(&message)
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
    use nuketown_hall::protocol::FileRef;

    fn request(id: &str) -> RequestView {
        RequestView {
            id: id.into(),
            agent: "ada".into(),
            uid: 1100,
            argv: vec!["/bin/echo".into(), "hi\u{1b}[2J".into()],
            program: FileRef {
                path: "/bin/echo".into(),
                dev: (8 << 8) | 1,
                ino: 42,
            },
            typed: Some("./echo\n".into()),
            cwd: "/agents/ada".into(),
            user: "root".into(),
            group: None,
            agent_can_write: true,
            agent_writable_args: vec!["./x\u{202e}".into()],
            warnings: vec![
                "the agent can change the program: \u{1b}[31mred".into(),
                "second warning".into(),
            ],
            notes: vec!["it runs in a working directory an agent can change".into()],
            grantable: false,
            asked_ms: now_ms(),
            deadline_ms: now_ms() + 60_000,
            key_use: None,
            tool: None,
            more: None,
            network: None,
            resources: None,
        }
    }

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
        assert_eq!(
            parse_reply("> <@hall:localhost> 🔐 request …\n\napprove 3f2a1b9c"),
            Some((true, "3f2a1b9c".into())),
            "a reply fallback is skipped"
        );
        assert_eq!(parse_reply("approve 3f2a1b"), None, "too short to bind");
        assert_eq!(parse_reply("approve 3f2a1b9c and more"), None);
        assert_eq!(parse_reply("approve 3f2a1b9c\napprove 00000000"), None);
        assert_eq!(parse_reply("approve everything"), None);
        assert_eq!(parse_reaction("✅"), Some(true));
        assert_eq!(parse_reaction("❌"), Some(false));
        assert_eq!(parse_reaction("🎉"), None);
    }

    #[test]
    fn the_message_carries_every_warning_escaped() {
        let r = request("0123456789abcdef0123456789abcdef");
        let text = request_text(&r, 1000);
        for w in &r.warnings {
            assert!(text.contains(&clean(w)), "{text}");
        }
        assert!(text.contains("\"./x\\u{202e}\""), "{text}");
        assert!(text.contains("typed: \"./echo\\n\""), "{text}");
        assert!(text.contains("device 8:1, inode 42"), "{text}");
        assert!(text.contains("only a human may decide"), "{text}");
        assert!(text.contains("\"approve 01234567\""), "{text}");
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && nuketown_town::display::is_unsafe_char(c)),
            "{text:?}"
        );
    }

    #[test]
    fn a_key_use_reads_as_what_is_signed_for_whom() {
        let mut r = request("0123456789abcdef0123456789abcdef");
        r.argv = vec!["ssh-keygen".into(), "-Y".into(), "\u{1b}[2Jsign".into()];
        r.warnings = Vec::new();
        r.notes = vec!["the command line is ada's own words".into()];
        r.grantable = false;
        r.key_use = Some(Box::new(nuketown_hall::protocol::KeyUseView {
            operation: "sign".into(),
            key: "SHA256:abc".into(),
            namespace: Some("file\u{202e}".into()),
            message_hash: Some("sha512:00ff".into()),
            data_sha256: "ab".repeat(32),
            caller_pid: 42,
            parent: vec!["git".into(), "commit".into()],
            rule: "keys.signOther = ask".into(),
            ..Default::default()
        }));
        let text = request_text(&r, 1000);
        assert!(text.contains("asks to use its key"), "{text}");
        assert!(text.contains("namespace \"file\\u{202e}\""), "{text}");
        assert!(text.contains("message: hash sha512:00ff"), "{text}");
        assert!(
            text.contains(&format!("bytes with sha256 {}", "ab".repeat(32))),
            "{text}"
        );
        assert!(text.contains("(pid 42)"), "{text}");
        assert!(text.contains("parent: \"git\" \"commit\""), "{text}");
        assert!(text.contains("rule: keys.signOther = ask"), "{text}");
        assert!(
            text.contains("note: the command line is ada's own words"),
            "{text}"
        );
        // Nothing about running a program as a user: nothing runs.
        assert!(
            !text.contains("as: ") && !text.contains("program: "),
            "{text}"
        );
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && nuketown_town::display::is_unsafe_char(c)),
            "{text:?}"
        );
    }

    #[test]
    fn an_answer_binds_to_one_request_shown_long_enough_ago() {
        let a = request("aaaaaaaa11111111111111111111111a");
        let b = request("aaaaaaaa22222222222222222222222b");
        let mut book = Book::default();
        book.announce(a.clone(), "$a".into());
        book.posted(&a.id, 10_000);
        // Too soon after the announcement; unknown time counts as too soon.
        let named = |p: &str, re: Option<&str>| Target::Named {
            prefix: p.into(),
            in_reply_to: re.map(Into::into),
        };
        assert!(book
            .bind(&Target::Reaction("$a".into()), 10_500, 1000)
            .is_err());
        assert_eq!(
            book.bind(&Target::Reaction("$a".into()), 11_000, 1000)
                .unwrap()
                .id,
            a.id
        );
        // A withdrawn request is not replaced by a newer one with the same prefix.
        book.resolved(&a.id, "cancelled");
        book.announce(b.clone(), "$b".into());
        book.posted(&b.id, 12_000);
        let e = book
            .bind(&Target::Reaction("$a".into()), 20_000, 1000)
            .unwrap_err();
        assert!(e.unwrap().contains("no longer pending"));
        let e = book
            .bind(&named("aaaaaaaa", None), 20_000, 1000)
            .unwrap_err();
        assert!(e.unwrap().contains("more than one request"));
        assert_eq!(
            book.bind(&named("aaaaaaaa2", None), 20_000, 1000)
                .unwrap()
                .id,
            b.id
        );
        // A reply to A's message cannot name B.
        let e = book
            .bind(&named("aaaaaaaa2", Some("$a")), 20_000, 1000)
            .unwrap_err();
        assert!(e.unwrap().contains("answers another message"));
        assert!(book.bind(&named("aaaaaaaa2", None), 12_999, 1000).is_err());
        // A reaction on a message that announced nothing is not an answer.
        assert_eq!(
            book.bind(&Target::Reaction("$other".into()), 20_000, 1000),
            Err(None)
        );
    }
}
