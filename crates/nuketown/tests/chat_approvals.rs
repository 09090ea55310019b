//! Approvals in chat, end to end: an agent's real `sudo` waits in the real
//! town hall; the Matrix approver posts it to the approval room of a real
//! Synapse; a stranger's reply and ✅ decide nothing; the human's ✅ approves
//! and the command runs; the human's `deny ID` denies. An answer sent within
//! the settle time (the default, 1 s) of the request's message decides
//! nothing and the bot says so: the human answers again. Needs root and Synapse.

mod approval_room;
mod hall_fixture;
mod synapse;

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use approval_room::{announcement, approval_room, react, start_approver, verdict, Kill};
use hall_fixture::{finish, stdout, Options, TestTown, ADA, HUMAN};
use matrix_sdk::ruma::events::reaction::ReactionEventContent;
use matrix_sdk::ruma::events::relation::Annotation;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::UserId;
use nuketown_chat::matrix_sdk;
use synapse::{Human, Seen, Synapse};

#[test]
fn the_humans_reaction_approves_a_strangers_does_not() {
    let mut t = TestTown::new(Options::default());
    let server = Synapse::start(&t.path("synapse"));
    for (u, p) in [("josh", "josh-pw"), ("mallory", "mallory-pw")] {
        server.register(u, p);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut josh = Human::login(&server, "josh", "josh-pw", &t.path("josh-store")).await;
        let mut mallory = Human::login(&server, "mallory", "mallory-pw", &t.path("mallory-store")).await;
        let room_id = approval_room(&t, &server, &mut josh, "@josh:localhost").await;
        let room = josh.client.get_room(&room_id).unwrap();
        room.invite_user_by_id(&UserId::parse("@mallory:localhost").unwrap()).await.unwrap();
        mallory.sync_until("the invite", |h| h.client.get_room(&room_id).is_some()).await;
        mallory.client.join_room_by_id(&room_id).await.unwrap();
        t.start_hall();
        let _approver = start_approver(&t, &mut josh, &room_id).await;

        let mut log = Vec::new();
        let agent = t.spawn_agent(ADA, "cd / && sudo whoami");
        let (ev, id, posted) = announcement(&mut josh, &mut log, 0).await;
        assert!(posted.contains(&format!("🔐 request {id}: nktada (uid 1950) asks to run as \"root\":\nrun: \"/usr/bin/whoami\"\n")), "{posted}");
        assert!(posted.contains("program: \"/usr/bin/whoami\" (proven root's: nktada cannot change it or what it reads)"), "{posted}");
        assert!(posted.contains("answers sent within 1 s of this message do not count"), "{posted}");

        // A stranger: a reply and a reaction, both ignored.
        let mroom = mallory.client.get_room(&room_id).unwrap();
        mroom.send(RoomMessageEventContent::text_plain(format!("approve {id}"))).await.unwrap();
        mroom.send(ReactionEventContent::new(Annotation::new(ev.clone(), "✅".into()))).await.unwrap();
        // The human: a ✅ on the request — again, when the bot says it came too soon.
        let said = react(&mut josh, &mut log, &room_id, &ev, &id, "✅").await;
        assert!(said.contains("was approved by"), "{said}");
        let jroom = josh.client.get_room(&room_id).unwrap();
        let o = finish(agent);
        assert_eq!(stdout(&o), "root\n", "{}", String::from_utf8_lossy(&o.stderr));
        let rec = t.audit().into_iter().find(|r| r.event == "decision" && r.argv == ["/usr/bin/whoami"]).unwrap();
        let by = rec.decided_by.unwrap();
        assert_eq!(by.channel, "matrix:@josh:localhost", "decided by the human, not the stranger");
        assert_eq!(rec.exit_status, Some(0));

        // A reply from the human denies the next one.
        let after = log.len();
        let agent = t.spawn_agent(ADA, "sudo id -u");
        let (_, id2, _) = announcement(&mut josh, &mut log, after).await;
        let mut seen = log.len();
        loop {
            jroom.send(RoomMessageEventContent::text_plain(format!("deny {id2}"))).await.unwrap();
            let (next, said) = verdict(&mut josh, &mut log, seen, &id2).await;
            seen = next;
            if !said.contains("too soon") {
                break;
            }
        }
        let o = finish(agent);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("via matrix:@josh:localhost"), "{}", String::from_utf8_lossy(&o.stderr));
        let _ = Stdio::null();
    });
}

/// An escalation started from chat is shown in the room it came from: the
/// agent's backend runs a real `sudo id -u` through the real hall, its
/// stderr thrown away (as claude-code's tools do); the room still gets the
/// request id while it waits (and `!escalations` lists it), then the
/// decision, then the answer — from the hall, which the bridge follows.
#[test]
fn an_escalation_from_chat_shows_its_request_and_decision_in_the_room() {
    let mut t = TestTown::new(Options::default());
    let server = Synapse::start(&t.path("synapse"));
    server.register(ADA, "ada-pw");
    server.register("josh", "josh-pw");
    // The bridge's store (persisted) and password: the agent's own.
    let store = t.path(&format!("persist/agents/{ADA}"));
    fs::create_dir_all(&store).unwrap();
    let pw = t.path("ada.pw");
    fs::write(&pw, "ada-pw\n").unwrap();
    for p in [&store, &pw] {
        std::process::Command::new("chown")
            .arg(format!("{ADA}:{ADA}"))
            .arg(p)
            .status()
            .unwrap();
    }
    let mut town = fs::read_to_string(&t.town).unwrap();
    town.push_str(&format!(
        "\n[agents.{ADA}.chat]\nenable = true\nhomeserver = \"{}\"\nuserId = \"@{ADA}:localhost\"\npasswordFile = \"{}\"\n\
allowedHumans = [\"@josh:localhost\"]\nbackend = {{ type = \"command\", command = [\"/bin/sh\", \"-c\", \"PATH={}:$PATH; cat >/dev/null; sudo id -u 2>/dev/null\"] }}\n",
        server.url(),
        pw.display(),
        t.shim_dir.display()
    ));
    fs::write(&t.town, town).unwrap();
    t.start_hall();
    let log_file = fs::File::create(t.path("bridge.log")).unwrap();
    let _bridge = Kill(
        std::process::Command::new(&t.nuketown)
            .args(["chat", ADA, "--town"])
            .arg(&t.town)
            .env("NUKETOWN_ASK_SOCKET", t.ask_socket())
            .env("NUKETOWN_LOG", "nuketown_chat=debug,info")
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let agent_id = UserId::parse(format!("@{ADA}:localhost")).unwrap();
        let mut josh = Human::login(&server, "josh", "josh-pw", &t.path("josh-store")).await;
        let dm = josh.client.create_dm(&agent_id).await.unwrap();
        let dm_id = dm.room_id().to_owned();
        josh.sync_until("the agent to join", |h| {
            h.has_joined(&dm_id, agent_id.as_str())
        })
        .await;
        let mut log: Vec<Seen> = Vec::new();
        let ask = dm
            .send(RoomMessageEventContent::text_plain(
                "what is your uid as root?",
            ))
            .await
            .unwrap()
            .response
            .event_id;
        // The request, with its id, in the room while it waits.
        let asked = josh
            .wait_seen(
                &mut log,
                0,
                "the escalation shown",
                Duration::from_secs(60),
                |s| s.notice && s.body.starts_with("🔐 "),
            )
            .await;
        assert_eq!(asked.reply_to.as_deref(), Some(ask.as_str()), "{asked:?}");
        assert!(
            asked.body.contains(&format!(
                "{ADA} asked to run \"/usr/bin/id\" \"-u\" as root — request "
            )),
            "{}",
            asked.body
        );
        let id: String = asked
            .body
            .split("request ")
            .nth(1)
            .unwrap()
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .collect();
        assert_eq!(id.len(), 8, "{}", asked.body);
        let e = dm
            .send(RoomMessageEventContent::text_plain("!escalations"))
            .await
            .unwrap()
            .response
            .event_id;
        let r = josh.reply_to(agent_id.as_str(), e.as_str(), &mut log).await;
        assert!(
            r.body
                .contains(&format!("request {id} — \"/usr/bin/id\" \"-u\" as root")),
            "{}",
            r.body
        );

        // The human decides at the terminal; the room hears it.
        let o = t.human(HUMAN, &format!("approvals approve {id}"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let decided = format!("🔐 request {id}: approved by {HUMAN} via terminal");
        josh.wait_seen(
            &mut log,
            0,
            "the decision shown",
            Duration::from_secs(60),
            |s| s.body == decided,
        )
        .await;
        // The backend's own answer (not a notice): the command ran as root.
        let answer = josh
            .wait_seen(
                &mut log,
                0,
                "the backend's answer",
                Duration::from_secs(60),
                |s| !s.notice && s.reply_to.as_deref() == Some(ask.as_str()),
            )
            .await;
        assert_eq!(answer.body, "0", "the command ran as root: {log:?}");
        let e = dm
            .send(RoomMessageEventContent::text_plain("!escalations"))
            .await
            .unwrap()
            .response
            .event_id;
        let r = josh.reply_to(agent_id.as_str(), e.as_str(), &mut log).await;
        assert!(r.body.contains("no escalation"), "{}", r.body);
    });
}
