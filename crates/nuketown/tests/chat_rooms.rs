//! Declared rooms against a real Synapse, with real users and real bridges:
//! `nuketown rooms` (the hall's account) creates the room and invites the
//! declared human and two agents; a third agent cannot join; the human's
//! message is answered by both agents, each told who wrote it; agents answer
//! each other only when addressed, and stop at the room's limit, saying so;
//! an agent taken out of the room is removed from it. And `apply` installs
//! the rooms keeper's unit only while rooms are declared.
//! Needs root (real users) and Synapse (scripts/deps.sh).

mod fixture;
mod synapse;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fixture::TestTown;
use nuketown_chat::matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use nuketown_chat::matrix_sdk::ruma::events::Mentions;
use nuketown_chat::matrix_sdk::ruma::{OwnedUserId, RoomAliasId, RoomOrAliasId, UserId};
use synapse::{Human, Seen, Synapse};

const HUMAN: &str = "nkrhh";
/// (agent, uid, the agent it names when asked to relay)
const AGENTS: [(&str, u32, &str); 3] = [
    ("nkrada", 1893, "nkrvox"),
    ("nkrvox", 1894, "nkrada"),
    ("nkrzed", 1895, "nkrada"),
];

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn id(agent: &str) -> String {
    format!("@{agent}:localhost")
}

/// The town: the room `team` holds josh, ada and vox (zed is not in it).
fn town_text(t: &TestTown, homeserver: &str, team_agents: &[&str]) -> String {
    let mut s = t.header(HUMAN);
    s.push_str(&format!(
        "[hall.matrix]\nhomeserver = \"{}\"\nuserId = \"@hall:localhost\"\npasswordFile = \"{}\"\n\
[rooms.team]\ntopic = \"the team\"\nhumans = [\"@josh:localhost\"]\nagents = [{}]\nagentsAnswerAgents = true\nagentTurns = 3\n",
        homeserver,
        t.path("hall.pw").display(),
        team_agents.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ")
    ));
    for (agent, uid, peer) in AGENTS {
        // The backend says who it was told wrote the message; asked to relay,
        // it names its peer (a mention), which keeps the agents talking.
        let script = format!(
            "body=$(cat); head=$(printf '%s' \\\"$body\\\" | head -n 1); case \\\"$body\\\" in *relay*) peer=' @{peer}:localhost relay';; *) peer='';; esac; echo \\\"{agent} kind=$NUKETOWN_SENDER_KIND name=$NUKETOWN_SENDER_NAME room=$NUKETOWN_ROOM_NAME head=$head$peer\\\""
        );
        s.push_str(&format!(
            "[agents.{agent}]\nuid = {uid}\n[agents.{agent}.chat]\nenable = true\nhomeserver = \"{}\"\nuserId = \"{}\"\npasswordFile = \"{}\"\n\
allowedHumans = [\"@josh:localhost\"]\nbackend = {{ type = \"command\", command = [\"/bin/sh\", \"-c\", \"{script}\"] }}\n",
            homeserver,
            id(agent),
            t.path(&format!("{agent}.pw")).display()
        ));
    }
    s
}

fn bridge(t: &TestTown, town: &str, agent: &str) -> Kill {
    let log = fs::File::create(t.path(&format!("bridge-{agent}.log"))).unwrap();
    Kill(
        t.cmd(&["chat", agent, "--town", town])
            .env("NUKETOWN_LOG", "nuketown_chat=debug,info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `nuketown rooms` as its unit runs it: the password handed over as a
/// credential (`--password-file`), not read from `hall.matrix.passwordFile`
/// (which the tests leave absent, so the flag must be what is read).
fn rooms(t: &TestTown, town: &str) -> String {
    t.ok(&[
        "rooms",
        "--town",
        town,
        "--store",
        t.path("rooms-store").to_str().unwrap(),
        "--password-file",
        t.path("credentials/hall-matrix").to_str().unwrap(),
    ])
}

/// Agent messages (not notices) in `log` after index `from`, in order.
fn agent_texts(log: &[Seen], from: usize) -> Vec<&Seen> {
    log[from..]
        .iter()
        .filter(|s| !s.notice && AGENTS.iter().any(|(a, _, _)| s.sender == id(a)))
        .collect()
}

/// `apply` installs and enables `nuketown-rooms.service` (`nuketown rooms
/// --watch`) while the town declares rooms, and stops, disables and removes
/// it when none is; `plan` shows both first. No homeserver is contacted.
#[test]
fn apply_installs_the_rooms_keeper_only_while_rooms_are_declared() {
    let users: Vec<&str> = std::iter::once(HUMAN)
        .chain(AGENTS.iter().map(|a| a.0))
        .collect();
    let t = TestTown::new(&users, &[]);
    let with = town_text(&t, "http://127.0.0.1:9", &["nkrada"]);
    // The same town without its rooms.
    let start = with.find("[rooms.team]").unwrap();
    let end = start + with[start..].find("[agents.").unwrap();
    let without = format!("{}{}", &with[..start], &with[end..]);
    let town = t.write("town.toml", &with);
    let town = town.to_str().unwrap();
    let unit = t.path("systemd/nuketown-rooms.service");
    let link = t.path("systemd/multi-user.target.wants/nuketown-rooms.service");

    let plan = t.ok(&["plan", town]);
    assert!(plan.contains(&unit.display().to_string()), "{plan}");
    t.ok(&["apply", town]);
    let text = fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains(&format!(
            "ExecStart={} rooms --watch --town /etc/nuketown/town.json --store /var/lib/nuketown-rooms --password-file %d/hall-matrix\n",
            t.path("bin/nuketown").display()
        )),
        "{text}"
    );
    // Not root: a user of its own, the password as a credential systemd
    // reads, nothing but its state directory writable.
    for line in [
        "DynamicUser=yes\n".to_string(),
        format!(
            "LoadCredential=hall-matrix:{}\n",
            t.path("hall.pw").display()
        ),
        "ProtectSystem=strict\n".to_string(),
        "CapabilityBoundingSet=\n".to_string(),
    ] {
        assert!(text.contains(&line), "{line}: {text}");
    }
    assert!(
        !text.lines().any(|l| l.starts_with("User=")),
        "no fixed user, root or other: {text}"
    );
    // systemd's own parser reads the unit as written (offline: no systemd
    // runs here): no key it does not know, no value it refuses.
    let verify = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (apt systemd)");
    let said = String::from_utf8_lossy(&verify.stderr).to_string();
    assert!(
        verify.status.success()
            && !said.contains("Unknown")
            && !said.contains("Invalid")
            && !said.contains("Failed to parse"),
        "{said}"
    );
    assert_eq!(
        fs::read_link(&link).unwrap(),
        std::path::Path::new("../nuketown-rooms.service")
    );
    // The bridge alone is installed beside the binary the units run.
    assert!(t.path("bin/nuketown-chat").is_file());
    assert!(t.ok(&["plan", town]).contains("nothing to change"));

    // No room declared any more: plan says the unit goes, apply takes it away.
    fs::write(town, &without).unwrap();
    let plan = t.ok(&["plan", town]);
    assert!(
        plan.contains(&format!("- file {}", link.display())),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("- file {}", unit.display())),
        "{plan}"
    );
    t.ok(&["apply", town]);
    assert!(!unit.exists());
    assert!(
        link.symlink_metadata().is_err(),
        "the enabling link is gone too"
    );
    assert!(t.ok(&["plan", town]).contains("nothing to change"));
}

#[test]
fn a_declared_room_answers_its_human_and_bounds_agents_talking_to_agents() {
    let users: Vec<&str> = std::iter::once(HUMAN)
        .chain(AGENTS.iter().map(|a| a.0))
        .collect();
    let t = TestTown::new(&users, &[]);
    let server = Synapse::start(&t.path("synapse"));
    server.register("hall", "hall-pw");
    server.register("josh", "josh-pw");
    fs::create_dir_all(t.path("credentials")).unwrap();
    fs::write(t.path("credentials/hall-matrix"), "hall-pw\n").unwrap();
    for (agent, _, _) in AGENTS {
        server.register(agent, &format!("{agent}-pw"));
    }
    let town = t.write(
        "town.toml",
        &town_text(&t, &server.url(), &["nkrada", "nkrvox"]),
    );
    let town = town.to_str().unwrap().to_string();
    t.ok(&["apply", &town]);
    for (agent, uid, _) in AGENTS {
        let pw = t.path(&format!("{agent}.pw"));
        fs::write(&pw, format!("{agent}-pw\n")).unwrap();
        Command::new("chown")
            .arg(format!("{uid}:{uid}"))
            .arg(&pw)
            .status()
            .unwrap();
        fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
    }

    // The hall's account creates the room and invites its members.
    let out = rooms(&t, &town);
    assert!(out.contains("rooms.team: created #team:localhost"), "{out}");
    for who in ["@josh:localhost", "@nkrada:localhost", "@nkrvox:localhost"] {
        assert!(out.contains(&format!("rooms.team: invited {who}")), "{out}");
    }
    assert!(!out.contains("nkrzed"), "{out}");
    assert!(
        rooms(&t, &town).contains("rooms.team: as declared"),
        "a second run changes nothing"
    );

    let _bridges: Vec<Kill> = AGENTS
        .iter()
        .map(|(a, _, _)| bridge(&t, &town, a))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let alias = RoomAliasId::parse("#team:localhost").unwrap();
        let mut josh = Human::login(&server, "josh", "josh-pw", &t.path("josh-store")).await;
        let team = josh.client.resolve_room_alias(&alias).await.unwrap().room_id;
        josh.sync_until("the invite", |h| h.client.get_room(&team).is_some()).await;
        josh.client.join_room_by_id(&team).await.unwrap();
        josh.sync_until("both agents to join", |h| {
            h.has_joined(&team, "@nkrada:localhost") && h.has_joined(&team, "@nkrvox:localhost")
        })
        .await;

        // An agent not declared in the room cannot join it (it is invite-only).
        let zed_client = Human::login(&server, "nkrzed", "nkrzed-pw", &t.path("zed-store")).await;
        let joined = zed_client
            .client
            .join_room_by_id_or_alias(<&RoomOrAliasId>::from(&*alias), &[])
            .await;
        assert!(joined.is_err(), "a non-member agent joined the declared room");

        // The human's message, addressed to nobody: both agents answer, told it is their human.
        let mut log: Vec<Seen> = Vec::new();
        let room = josh.room(&team);
        let hello = room
            .send(RoomMessageEventContent::text_plain("hello team"))
            .await
            .unwrap()
            .response
            .event_id;
        for agent in ["nkrada", "nkrvox"] {
            let r = josh.reply_to(&id(agent), hello.as_str(), &mut log).await;
            assert!(
                r.body.contains(&format!(
                    "{agent} kind=human name=@josh:localhost room=team head=[chat: from @josh:localhost, your human in room #team:localhost]"
                )),
                "{}",
                r.body
            );
        }

        // Addressed to ada only, asking to relay: ada answers naming vox; vox
        // (addressed) answers ada; ada (a reply to hers) answers; the third
        // agent message reaches the limit (agentTurns = 3): vox says so and stops.
        let start = log.len();
        let mut content = RoomMessageEventContent::text_plain("@nkrada:localhost relay this, please");
        content.mentions = Some(Mentions::with_user_ids([OwnedUserId::try_from("@nkrada:localhost").unwrap()]));
        let relay = room.send(content).await.unwrap().response.event_id;
        josh.wait_seen(&mut log, start, "the limit note", Duration::from_secs(90), |s| {
            s.notice && s.body.contains("is not answering")
        })
        .await;
        let texts = agent_texts(&log, start);
        let who: Vec<&str> = texts.iter().map(|s| s.sender.as_str()).collect();
        assert_eq!(
            who,
            ["@nkrada:localhost", "@nkrvox:localhost", "@nkrada:localhost"],
            "{log:#?}"
        );
        assert_eq!(texts[0].reply_to.as_deref(), Some(relay.as_str()));
        assert!(texts[0].body.contains("kind=human"), "{}", texts[0].body);
        // vox was told a colleague wrote, not its human.
        assert!(
            texts[1].body.contains("nkrvox kind=agent name=nkrada room=team head=[chat: from agent nkrada (@nkrada:localhost) in room #team:localhost — a colleague, not your human"),
            "{}",
            texts[1].body
        );
        assert!(texts[2].body.contains("nkrada kind=agent name=nkrvox"), "{}", texts[2].body);
        let notes: Vec<&Seen> = log[start..].iter().filter(|s| s.notice).collect();
        assert_eq!(notes.len(), 1, "one note: {notes:#?}");
        assert_eq!(notes[0].sender, "@nkrvox:localhost");
        assert!(notes[0].body.contains("3 agent messages in row") || notes[0].body.contains("3 agent messages in a row"), "{}", notes[0].body);

        // A human's message lets them talk again — and nothing came in between.
        let before = log.len();
        let mut content = RoomMessageEventContent::text_plain("@nkrvox:localhost one more");
        content.mentions = Some(Mentions::with_user_ids([OwnedUserId::try_from("@nkrvox:localhost").unwrap()]));
        let more = room.send(content).await.unwrap().response.event_id;
        let r = josh.reply_to("@nkrvox:localhost", more.as_str(), &mut log).await;
        assert!(r.body.contains("kind=human"), "{}", r.body);
        assert!(
            agent_texts(&log, before).iter().all(|s| s.reply_to.as_deref() == Some(more.as_str())),
            "no agent spoke after the limit until the human did: {log:#?}"
        );
        assert_eq!(
            agent_texts(&log, start).len(),
            4,
            "ada did not answer the message addressed to vox: {log:#?}"
        );

        // vox leaves the declaration: the hall removes it from the room.
        fs::write(&town, town_text(&t, &server.url(), &["nkrada"])).unwrap();
        t.ok(&["apply", &town]);
        let out = rooms(&t, &town);
        assert!(out.contains("rooms.team: removed @nkrvox:localhost (not declared)"), "{out}");
        josh.sync_until("vox to be removed", |h| {
            h.membership_seen(&team, "@nkrvox:localhost", "leave")
        })
        .await;
        let members: BTreeSet<String> = josh
            .room(&team)
            .members(nuketown_chat::matrix_sdk::RoomMemberships::JOIN)
            .await
            .unwrap()
            .iter()
            .map(|m| m.user_id().to_string())
            .collect();
        assert_eq!(
            members,
            ["@hall:localhost", "@josh:localhost", "@nkrada:localhost"]
                .into_iter()
                .map(String::from)
                .collect(),
        );
        let _ = UserId::parse("@nkrzed:localhost").unwrap();
    });
}
