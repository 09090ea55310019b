//! The town's Matrix approver in tests: `nuketown approvals matrix` (the
//! real program) posting the hall's requests to an approval room of a real
//! Synapse, and a human deciding there. Answers within the settle time of a
//! request's message decide nothing (the bot says "too soon"): the helpers
//! answer again until the decision is taken.
#![allow(dead_code)]

use std::fs;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use matrix_sdk::ruma::api::client::room::create_room::v3::Request as CreateRoom;
use matrix_sdk::ruma::events::reaction::ReactionEventContent;
use matrix_sdk::ruma::events::relation::Annotation;
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, UserId};
use nuketown_chat::matrix_sdk;

use crate::hall_fixture::TestTown;
use crate::synapse::{Human, Seen, Synapse};

/// A child process killed (and reaped) on drop.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The hall's Matrix id in these tests.
pub const HALL_ID: &str = "@hall:localhost";

/// Register the hall's account, make `human`'s approval room with the hall
/// in it, declare it in the town (`hall.matrix`, `human` the one approver),
/// and return the room. Call before the hall starts.
pub async fn approval_room(
    t: &TestTown,
    server: &Synapse,
    human: &mut Human,
    human_id: &str,
) -> OwnedRoomId {
    server.register("hall", "hall-pw");
    fs::write(t.path("hall.pw"), "hall-pw\n").unwrap();
    let room = human.client.create_room(CreateRoom::new()).await.unwrap();
    let room_id = room.room_id().to_owned();
    room.invite_user_by_id(&UserId::parse(HALL_ID).unwrap())
        .await
        .unwrap();
    let mut town = fs::read_to_string(&t.town).unwrap();
    town.push_str(&format!(
        "\n[hall.matrix]\nenable = true\nhomeserver = \"{}\"\nuserId = \"{HALL_ID}\"\npasswordFile = \"{}\"\nroom = \"{room_id}\"\napprovers = [\"{human_id}\"]\n",
        server.url(),
        t.path("hall.pw").display()
    ));
    fs::write(&t.town, town).unwrap();
    room_id
}

/// Start `nuketown approvals matrix` on the town's running hall; returns
/// once the hall's account has joined `room`.
pub async fn start_approver(t: &TestTown, human: &mut Human, room: &OwnedRoomId) -> Kill {
    let log_file = fs::File::create(t.path("matrix-approver.log")).unwrap();
    let approver = Kill(
        Command::new(&t.nuketown)
            .args(["approvals", "matrix", "--store"])
            .arg(t.path("matrix-store"))
            .arg("--town")
            .arg(&t.town)
            .env("NUKETOWN_APPROVER_SOCKET", t.approver_socket())
            .env("NUKETOWN_LOG", "info")
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap(),
    );
    human
        .sync_until("the hall to join", |h| h.has_joined(room, HALL_ID))
        .await;
    approver
}

/// Wait for the hall bot's announcement of a request (at `after` or later
/// in `log`); returns its event id, the id prefix to answer with, and its text.
pub async fn announcement(
    h: &mut Human,
    log: &mut Vec<Seen>,
    after: usize,
) -> (OwnedEventId, String, String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        while let Ok(s) = h.seen.try_recv() {
            log.push(s);
        }
        if let Some(s) = log.iter().skip(after).find(|s| {
            s.sender == HALL_ID
                && s.body.contains(" request ")
                && s.body.contains("Reply \"approve ")
        }) {
            let prefix = s
                .body
                .split("\"approve ")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_string();
            return (
                OwnedEventId::try_from(s.event_id.as_str()).unwrap(),
                prefix,
                s.body.clone(),
            );
        }
        assert!(
            Instant::now() < deadline,
            "no request was posted: {:?}",
            log.iter().map(|s| &s.body).collect::<Vec<_>>()
        );
        h.sync().await;
    }
}

/// The hall bot's next answer about request `id` (after `after`): too soon,
/// or its outcome; returns where to look next and the text.
pub async fn verdict(
    h: &mut Human,
    log: &mut Vec<Seen>,
    after: usize,
    id: &str,
) -> (usize, String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        while let Ok(s) = h.seen.try_recv() {
            log.push(s);
        }
        if let Some((i, s)) = log.iter().enumerate().skip(after).find(|(_, s)| {
            s.sender == HALL_ID
                && s.body.contains(&format!("request {id}"))
                && (s.body.contains("too soon") || s.body.contains(" was "))
        }) {
            return (i + 1, s.body.clone());
        }
        assert!(Instant::now() < deadline, "no verdict on {id}: {log:?}");
        h.sync().await;
    }
}

/// React to the announcement `ev` of request `id` with `emoji` (✅ or ❌)
/// in `room` until the hall takes it; returns the hall's verdict.
pub async fn react(
    h: &mut Human,
    log: &mut Vec<Seen>,
    room: &OwnedRoomId,
    ev: &OwnedEventId,
    id: &str,
    emoji: &str,
) -> String {
    let r = h.client.get_room(room).unwrap();
    let mut seen = log.len();
    loop {
        let sent = r
            .send(ReactionEventContent::new(Annotation::new(
                ev.clone(),
                emoji.into(),
            )))
            .await
            .unwrap();
        let (next, said) = verdict(h, log, seen, id).await;
        seen = next;
        if !said.contains("too soon") {
            return said;
        }
        r.redact(&sent.response.event_id, None, None).await.unwrap();
    }
}
