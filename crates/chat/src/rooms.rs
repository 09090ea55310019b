//! The room keeper (`nuketown rooms`): the hall's Matrix account makes the
//! town's declared rooms (`rooms.<name>`) be as declared. A room that does
//! not exist is created invite-only, with the hall's account its only
//! administrator (only it invites, kicks or changes the room); a room that
//! exists under the alias is adopted (the hall's account must be able to
//! join it and hold the power to invite and kick there). Then every
//! declared member who is neither joined nor invited is invited, and
//! everyone else — an agent taken out of the room, a stranger — is removed.
//! With `--watch` it keeps doing so as members come and go.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::event_handler::Ctx;
use matrix_sdk::ruma::api::client::room::create_room::v3::{Request as CreateRoom, RoomPreset};
use matrix_sdk::ruma::api::client::room::create_room::RoomPowerLevelsContentOverride;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::member::{MembershipState, OriginalSyncRoomMemberEvent};
use matrix_sdk::ruma::events::InitialStateEvent;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{Int, OwnedRoomId, OwnedUserId, RoomAliasId};
use matrix_sdk::{Client, Room, RoomMemberships};

use nuketown_town::Town;

/// One declared room, resolved from the town.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPlan {
    /// `rooms.<name>`.
    pub name: String,
    /// Its alias.
    pub alias: String,
    /// Its topic.
    pub topic: String,
    /// Who belongs in it: the humans and the agents' Matrix accounts.
    pub members: BTreeSet<String>,
    /// Create it encrypted.
    pub encrypted: bool,
}

/// What the keeper needs from the town.
#[derive(Debug, Clone)]
pub struct KeeperConfig {
    /// Homeserver of the hall's account.
    pub homeserver: String,
    /// The hall's Matrix id.
    pub user_id: String,
    /// Its password file.
    pub password_file: PathBuf,
    /// Where its device and keys are kept.
    pub store: PathBuf,
    /// The rooms.
    pub rooms: Vec<RoomPlan>,
}

impl KeeperConfig {
    /// The keeper of `town`'s rooms, its device kept in `store`.
    pub fn from_town(town: &Town, store: PathBuf) -> Result<KeeperConfig> {
        let m = &town.hall.matrix;
        let (Some(homeserver), Some(user_id), Some(password_file)) =
            (&m.homeserver, &m.user_id, &m.password_file)
        else {
            bail!("the hall's Matrix account keeps the rooms: set hall.matrix.homeserver, hall.matrix.userId and hall.matrix.passwordFile");
        };
        let ids: BTreeMap<&String, &str> = town.agent_matrix_ids().map(|(id, n)| (n, id)).collect();
        let rooms = town
            .rooms
            .iter()
            .map(|(name, r)| RoomPlan {
                name: name.clone(),
                alias: town.room_alias(name).unwrap_or_default(),
                topic: r.topic.clone(),
                members: r
                    .humans
                    .iter()
                    .cloned()
                    .chain(
                        r.agents
                            .iter()
                            .filter_map(|a| ids.get(a).map(|s| s.to_string())),
                    )
                    .collect(),
                encrypted: r.encrypted,
            })
            .collect();
        Ok(KeeperConfig {
            homeserver: homeserver.clone(),
            user_id: user_id.clone(),
            password_file: password_file.clone(),
            store,
            rooms,
        })
    }
}

/// What the keeper did to one room, one line each (`created`, `invited`, `removed`, …).
pub type Changes = Vec<String>;

async fn login(cfg: &KeeperConfig) -> Result<Client> {
    let client = crate::matrix::client(&cfg.homeserver, &cfg.store).await?;
    crate::matrix::login(
        &client,
        &crate::matrix::Account {
            user_id: &cfg.user_id,
            secret: crate::matrix::Secret::Password(cfg.password_file.clone()),
            device_name: "nuketown rooms",
            key: "hall.matrix.passwordFile",
        },
        &cfg.store,
    )
    .await
    .context("the hall's Matrix account")?;
    Ok(client)
}

/// The room `plan` names, created if its alias is free, joined if the hall is not in it yet.
async fn find_or_create(
    client: &Client,
    me: &OwnedUserId,
    plan: &RoomPlan,
    changes: &mut Changes,
) -> Result<Room> {
    let alias = RoomAliasId::parse(&plan.alias)
        .with_context(|| format!("rooms.{}: {} is not a room alias", plan.name, plan.alias))?;
    match client.resolve_room_alias(&alias).await {
        Ok(r) => {
            if let Some(room) = client
                .get_room(&r.room_id)
                .filter(|r| r.state() == matrix_sdk::RoomState::Joined)
            {
                return Ok(room);
            }
            let room = client
                .join_room_by_id(&r.room_id)
                .await
                .with_context(|| format!("rooms.{}: {} exists ({}) but the hall's account {me} cannot join it; invite it there with power to invite and kick (100), or remove the alias", plan.name, plan.alias, r.room_id))?;
            changes.push(format!("adopted {} ({})", plan.alias, r.room_id));
            Ok(room)
        }
        Err(e)
            if e.client_api_error_kind()
                == Some(&matrix_sdk::ruma::api::error::ErrorKind::NotFound) =>
        {
            if alias.server_name() != me.server_name() {
                bail!("rooms.{}: {} does not exist, and the hall's account can only create aliases on {}; create the room there, or use an alias on {}", plan.name, plan.alias, me.server_name(), me.server_name());
            }
            let mut req = CreateRoom::new();
            req.room_alias_name = Some(alias.alias().to_string());
            req.name = Some(plan.name.clone());
            if !plan.topic.is_empty() {
                req.topic = Some(plan.topic.clone());
            }
            req.preset = Some(RoomPreset::PrivateChat);
            req.invite = plan
                .members
                .iter()
                .filter_map(|m| OwnedUserId::try_from(m.as_str()).ok())
                .collect();
            if plan.encrypted {
                req.initial_state = vec![InitialStateEvent::with_empty_state_key(
                    RoomEncryptionEventContent::with_recommended_defaults(),
                )
                .to_raw_any()];
            }
            // Only the hall's account (the creator: all power) invites, removes or changes the room.
            let mut power = RoomPowerLevelsContentOverride::new();
            for level in [
                &mut power.invite,
                &mut power.kick,
                &mut power.ban,
                &mut power.state_default,
            ] {
                *level = Some(Int::from(100));
            }
            power.users_default = Some(Int::from(0));
            power.events_default = Some(Int::from(0));
            req.power_level_content_override = Some(Raw::new(&power)?);
            let room = client
                .create_room(req)
                .await
                .with_context(|| format!("rooms.{}: creating {}", plan.name, plan.alias))?;
            changes.push(format!("created {} ({})", plan.alias, room.room_id()));
            for m in &plan.members {
                changes.push(format!("invited {m}"));
            }
            Ok(room)
        }
        Err(e) => Err(e).with_context(|| format!("rooms.{}: resolving {}", plan.name, plan.alias)),
    }
}

/// Make the members of `room` those of `plan`: invite who is missing, remove who is not declared.
async fn reconcile(
    room: &Room,
    me: &OwnedUserId,
    plan: &RoomPlan,
    changes: &mut Changes,
) -> Result<()> {
    room.sync_members()
        .await
        .with_context(|| format!("rooms.{}: reading the members", plan.name))?;
    let present: BTreeSet<String> = room
        .members(RoomMemberships::ACTIVE)
        .await?
        .iter()
        .map(|m| m.user_id().to_string())
        .collect();
    for who in present.difference(&plan.members) {
        if who == me.as_str() {
            continue;
        }
        let user = OwnedUserId::try_from(who.as_str())?;
        room.kick_user(
            &user,
            Some(&format!("not a member of rooms.{} in the town", plan.name)),
        )
        .await
        .with_context(|| format!("rooms.{}: removing {who}", plan.name))?;
        changes.push(format!("removed {who} (not declared)"));
    }
    for who in plan.members.difference(&present) {
        let user = OwnedUserId::try_from(who.as_str())
            .with_context(|| format!("rooms.{}: {who} is not a Matrix id", plan.name))?;
        room.invite_user_by_id(&user)
            .await
            .with_context(|| format!("rooms.{}: inviting {who}", plan.name))?;
        changes.push(format!("invited {who}"));
    }
    if !plan.topic.is_empty() && room.topic().as_deref() != Some(plan.topic.as_str()) {
        room.set_room_topic(&plan.topic)
            .await
            .with_context(|| format!("rooms.{}: setting the topic", plan.name))?;
        changes.push("set the topic".to_string());
    }
    Ok(())
}

/// Make every declared room as declared, once; what was done, room by room.
pub async fn keep_once(
    client: &Client,
    cfg: &KeeperConfig,
) -> Result<Vec<(String, Result<Changes>)>> {
    let me = client.user_id().context("not logged in")?.to_owned();
    let mut out = Vec::new();
    for plan in &cfg.rooms {
        let mut changes = Changes::new();
        let r = async {
            let room = find_or_create(client, &me, plan, &mut changes).await?;
            reconcile(&room, &me, plan, &mut changes).await
        }
        .await;
        out.push((plan.name.clone(), r.map(|()| changes)));
    }
    Ok(out)
}

struct Watch {
    cfg: KeeperConfig,
    me: OwnedUserId,
    rooms: std::sync::Mutex<BTreeMap<OwnedRoomId, usize>>,
}

async fn on_member(ev: OriginalSyncRoomMemberEvent, room: Room, Ctx(w): Ctx<Arc<Watch>>) {
    let Some(i) = w.rooms.lock().unwrap().get(room.room_id()).copied() else {
        return;
    };
    let plan = &w.cfg.rooms[i];
    let who = ev.state_key.to_string();
    let active = matches!(
        ev.content.membership,
        MembershipState::Join | MembershipState::Invite
    );
    if active && who != w.me.as_str() && !plan.members.contains(&who) {
        match room
            .kick_user(
                &ev.state_key,
                Some(&format!("not a member of rooms.{} in the town", plan.name)),
            )
            .await
        {
            Ok(()) => tracing::info!("rooms.{}: removed {who} (not declared)", plan.name),
            Err(e) => tracing::warn!("rooms.{}: cannot remove {who}: {e}", plan.name),
        }
    }
}

/// Log in as the hall's account and make the rooms as declared; with
/// `watch`, keep removing anyone who joins or is invited without being
/// declared, until stopped. Returns false if some room could not be kept.
pub async fn run(cfg: KeeperConfig, watch: bool, mut report: impl FnMut(&str)) -> Result<bool> {
    let client = login(&cfg).await?;
    let settings = SyncSettings::default().timeout(Duration::from_secs(0));
    let resp = client
        .sync_once(settings.clone())
        .await
        .context("the first sync")?;
    let mut ok = true;
    for (name, r) in keep_once(&client, &cfg).await? {
        match r {
            Ok(changes) if changes.is_empty() => report(&format!("rooms.{name}: as declared")),
            Ok(changes) => {
                for c in changes {
                    report(&format!("rooms.{name}: {c}"));
                }
            }
            Err(e) => {
                ok = false;
                // Every error already names its room.
                let _ = name;
                report(&format!("{e:#}"));
            }
        }
    }
    if !watch {
        return Ok(ok);
    }
    let me = client.user_id().context("not logged in")?.to_owned();
    let mut ids = BTreeMap::new();
    for (i, plan) in cfg.rooms.iter().enumerate() {
        if let Ok(alias) = RoomAliasId::parse(&plan.alias) {
            if let Ok(r) = client.resolve_room_alias(&alias).await {
                ids.insert(r.room_id, i);
            }
        }
    }
    let w = Arc::new(Watch {
        cfg,
        me,
        rooms: std::sync::Mutex::new(ids),
    });
    client.add_event_handler_context(w);
    client.add_event_handler(on_member);
    tracing::info!("keeping {} rooms, listening", w_len(&client));
    client
        .sync(SyncSettings::default().token(resp.next_batch))
        .await
        .context("syncing")?;
    Ok(ok)
}

fn w_len(client: &Client) -> usize {
    client.joined_rooms().len()
}
