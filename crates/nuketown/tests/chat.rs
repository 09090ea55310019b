//! The chat bridge against a real Synapse: an encrypted DM from the human
//! runs the agent's backend as the agent; strangers are ignored; a killed
//! bridge restarts without replaying; a homeserver outage is survived.
//! Needs root (real users) and Synapse (scripts/deps.sh).

mod fixture;
mod synapse;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fixture::TestTown;
use nuketown_chat::matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use nuketown_chat::matrix_sdk::ruma::UserId;
use synapse::{Human, Seen, Synapse};

const AGENT: &str = "nkcada";
const AGENT_UID: u32 = 1891;

fn bridge(t: &TestTown, town: &str) -> Child {
    bridge_logging(t, town, Some("nuketown_chat=debug,info"))
}

/// The bridge, logging with `filter` (None: its default) to bridge.log.
fn bridge_logging(t: &TestTown, town: &str, filter: Option<&str>) -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(t.path("bridge.log"))
        .unwrap();
    let mut cmd = t.cmd(&["chat", AGENT, "--town", town]);
    match filter {
        Some(f) => cmd.env("NUKETOWN_LOG", f),
        None => cmd.env_remove("NUKETOWN_LOG"),
    };
    cmd.stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn status(t: &TestTown) -> serde_json::Value {
    let p = t
        .persist_dir()
        .join(format!("agents/{AGENT}/.nuketown/matrix/status.json"));
    fs::read_to_string(p)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn wait_status(t: &TestTown, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !f(&status(t)) {
        assert!(
            Instant::now() < deadline,
            "bridge never {what}; status {}; log:\n{}",
            status(t),
            fs::read_to_string(t.path("bridge.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const ECHO: &str = "[\"/bin/sh\", \"-c\", \"echo \\\"whoami=$(whoami) pwd=$(pwd) room=$NUKETOWN_ROOM msg=$(cat)\\\"\"]";

fn setup(t: &TestTown, server: &Synapse) -> String {
    setup_with(t, server, ECHO)
}

/// Register the accounts, write and apply a town whose agent's backend is `backend` (a TOML list).
fn setup_with(t: &TestTown, server: &Synapse, backend: &str) -> String {
    server.register(AGENT, "agent-pw");
    server.register("josh", "josh-pw");
    server.register("mallory", "mallory-pw");
    let pw = t.path("agent.pw");
    fs::write(&pw, "agent-pw\n").unwrap();
    let town = t.write(
        "town.toml",
        &format!(
            "{}[agents.{AGENT}]\nuid = {AGENT_UID}\npersist.directories = [\"dev\"]\n\
[agents.{AGENT}.chat]\nenable = true\nhomeserver = \"{}\"\nuserId = \"@{AGENT}:localhost\"\npasswordFile = \"{}\"\n\
allowedHumans = [\"@josh:localhost\"]\nbackend = {{ type = \"command\", command = {backend} }}\n",
            t.header("nkchh"),
            server.url(),
            pw.display()
        ),
    );
    let town = town.to_str().unwrap().to_string();
    t.ok(&["apply", &town]);
    // apply enables the agent's bridge unit.
    let link = t.path(&format!(
        "systemd/multi-user.target.wants/nuketown-chat@{AGENT}.service"
    ));
    assert_eq!(
        fs::read_link(&link).unwrap(),
        Path::new("../nuketown-chat@.service")
    );
    // The password file is the agent's secret: readable by the agent only.
    Command::new("chown")
        .arg(format!("{AGENT_UID}:{AGENT_UID}"))
        .arg(&pw)
        .status()
        .unwrap();
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
    town
}

fn replies_to<'a>(log: &'a [Seen], event: &str) -> Vec<&'a Seen> {
    log.iter()
        .filter(|s| s.reply_to.as_deref() == Some(event))
        .collect()
}

#[test]
fn encrypted_dm_runs_the_backend_as_the_agent_and_survives_restarts_and_outages() {
    let t = TestTown::new(&["nkchh", AGENT], &[]);
    let mut server = Synapse::start(&t.path("synapse"));
    let town = setup(&t, &server);
    let mut bridge_proc = bridge(&t, &town);
    wait_status(&t, "connected", |s| s["connected"] == true);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let agent_id = UserId::parse(format!("@{AGENT}:localhost")).unwrap();
        let mut josh = Human::login(&server, "josh", "josh-pw", &t.path("josh-store")).await;
        let mut log: Vec<Seen> = Vec::new();

        // A stranger's invite is refused, not joined.
        let mut mallory =
            Human::login(&server, "mallory", "mallory-pw", &t.path("mallory-store")).await;
        let trap = mallory.client.create_dm(&agent_id).await.unwrap();

        // The human's encrypted DM.
        let dm = josh.client.create_dm(&agent_id).await.unwrap();
        assert!(
            dm.latest_encryption_state().await.unwrap().is_encrypted(),
            "the DM must be encrypted"
        );
        let dm_id = dm.room_id().to_owned();
        josh.sync_until("the agent to join the DM", |h| {
            h.has_joined(&dm_id, agent_id.as_str())
        })
        .await;

        let first = josh
            .room(&dm_id)
            .send(RoomMessageEventContent::text_plain("hello ada"))
            .await
            .unwrap()
            .response
            .event_id;
        let reply = josh
            .reply_to(agent_id.as_str(), first.as_str(), &mut log)
            .await;
        assert!(
            reply.body.contains(&format!("whoami={AGENT} ")),
            "the backend runs as the agent: {}",
            reply.body
        );
        assert!(
            reply
                .body
                .contains(&format!("pwd={}/{AGENT}/dev", t.agents_dir().display())),
            "in its project dir: {}",
            reply.body
        );
        // The backend is told who wrote the message: its human.
        assert!(
            reply
                .body
                .contains("msg=[chat: from @josh:localhost, your human]\nhello ada"),
            "{}",
            reply.body
        );
        assert!(
            reply.body.contains(&format!("room={dm_id}")),
            "{}",
            reply.body
        );

        // The stranger's room was never joined.
        mallory
            .sync_until("the agent to refuse the invite", |h| {
                h.membership_seen(trap.room_id(), agent_id.as_str(), "leave")
            })
            .await;
        assert!(
            !mallory.has_joined(trap.room_id(), agent_id.as_str()),
            "the agent must not join a stranger's room"
        );

        // A stranger in the human's room is ignored: invite mallory, let her speak, then the human.
        josh.room(&dm_id)
            .invite_user_by_id(&UserId::parse("@mallory:localhost").unwrap())
            .await
            .unwrap();
        mallory
            .sync_until("the invite", |h| h.client.get_room(&dm_id).is_some())
            .await;
        mallory.client.join_room_by_id(&dm_id).await.unwrap();
        josh.sync_until("mallory to join", |h| {
            h.has_joined(&dm_id, "@mallory:localhost")
        })
        .await;
        let from_mallory = mallory
            .room(&dm_id)
            .send(RoomMessageEventContent::text_plain("rm -rf ~"))
            .await
            .unwrap()
            .response
            .event_id;
        let second = josh
            .room(&dm_id)
            .send(RoomMessageEventContent::text_plain("second"))
            .await
            .unwrap()
            .response
            .event_id;
        josh.reply_to(agent_id.as_str(), second.as_str(), &mut log)
            .await;
        assert!(
            replies_to(&log, from_mallory.as_str()).is_empty(),
            "a stranger's message must get no answer: {log:?}"
        );

        // Kill the bridge; restarted, it answers only what is new.
        bridge_proc.kill().unwrap();
        bridge_proc.wait().unwrap();
        fs::remove_file(
            t.persist_dir()
                .join(format!("agents/{AGENT}/.nuketown/matrix/status.json")),
        )
        .unwrap();
        bridge_proc = bridge(&t, &town);
        wait_status(&t, "reconnected after a restart", |s| {
            s["connected"] == true
        });
        let third = josh
            .room(&dm_id)
            .send(RoomMessageEventContent::text_plain("third"))
            .await
            .unwrap()
            .response
            .event_id;
        josh.reply_to(agent_id.as_str(), third.as_str(), &mut log)
            .await;
        assert_eq!(
            replies_to(&log, first.as_str()).len(),
            1,
            "no replay after a restart: {log:?}"
        );
        assert_eq!(
            replies_to(&log, second.as_str()).len(),
            1,
            "no replay after a restart: {log:?}"
        );

        // The homeserver goes away and comes back.
        server.down();
        wait_status(&t, "noticed the outage", |s| s["connected"] == false);
        server.up();
        wait_status(&t, "reconnected after the outage", |s| {
            s["connected"] == true
        });
        josh.sync().await;
        let fourth = josh
            .room(&dm_id)
            .send(RoomMessageEventContent::text_plain("fourth"))
            .await
            .unwrap()
            .response
            .event_id;
        let r = josh
            .reply_to(agent_id.as_str(), fourth.as_str(), &mut log)
            .await;
        assert!(r.body.ends_with("\nfourth"), "{}", r.body);
        for e in [&first, &second, &third] {
            assert_eq!(
                replies_to(&log, e.as_str()).len(),
                1,
                "each message answered once: {log:?}"
            );
        }
    });

    // status shows the chat state.
    let st = t.ok(&["status", "--json", "--town", &town]);
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    let agent = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == AGENT)
        .unwrap()
        .clone();
    assert_eq!(agent["chat"]["connected"], true, "{agent}");
    assert!(
        agent["chat"]["last_message_ms"].as_u64().is_some(),
        "{agent}"
    );

    bridge_proc.kill().unwrap();
    bridge_proc.wait().unwrap();
}

/// Benchmark, not a test (run by bench/chat.sh): idle RSS of one bridge and
/// message -> backend-start latency over 30 messages.
#[test]
#[ignore]
fn chat_bridge_benchmark() {
    let t = TestTown::new(&["nkchh", AGENT], &[]);
    let server = Synapse::start(&t.path("synapse"));
    let town = setup(&t, &server);
    // The backend notes when it starts (ns since the epoch), then answers.
    let stamp = t.path("started");
    fs::write(&stamp, "").unwrap();
    Command::new("chown")
        .arg(format!("{AGENT_UID}:{AGENT_UID}"))
        .arg(&stamp)
        .status()
        .unwrap();
    let text = fs::read_to_string(&town).unwrap().replace(
        "command = [\"/bin/sh\", \"-c\", \"echo \\\"whoami=$(whoami) pwd=$(pwd) room=$NUKETOWN_ROOM msg=$(cat)\\\"\"]",
        &format!("command = [\"/bin/sh\", \"-c\", \"date +%s%N >> {}; cat\"]", stamp.display()),
    );
    fs::write(&town, text).unwrap();
    t.ok(&["apply", &town]);
    let mut bridge_proc = bridge(&t, &town);
    wait_status(&t, "connected", |s| s["connected"] == true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut latencies = rt.block_on(async {
        let agent_id = UserId::parse(format!("@{AGENT}:localhost")).unwrap();
        let mut josh = Human::login(&server, "josh", "josh-pw", &t.path("josh-store")).await;
        let dm = josh.client.create_dm(&agent_id).await.unwrap();
        let dm_id = dm.room_id().to_owned();
        josh.sync_until("the agent to join", |h| {
            h.has_joined(&dm_id, agent_id.as_str())
        })
        .await;
        let mut log = Vec::new();
        let mut lat = Vec::new();
        for i in 0..30 {
            let before = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let ev = josh
                .room(&dm_id)
                .send(RoomMessageEventContent::text_plain(format!("m{i}")))
                .await
                .unwrap()
                .response
                .event_id;
            josh.reply_to(agent_id.as_str(), ev.as_str(), &mut log)
                .await;
            let started: u128 = fs::read_to_string(&stamp)
                .unwrap()
                .lines()
                .last()
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            lat.push((started - before) as f64 / 1e6);
        }
        lat
    });
    // Idle: nothing to do for 10 s, then read the bridge's resident memory.
    std::thread::sleep(Duration::from_secs(10));
    let status = fs::read_to_string(format!("/proc/{}/status", bridge_proc.id())).unwrap();
    // Resident memory, and how much of it is the process's own (anonymous)
    // and how much mapped files (the binary's code pages, shared libraries).
    let rss = status
        .lines()
        .filter(|l| {
            ["VmRSS:", "RssAnon:", "RssFile:", "Threads:"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ");
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!("BENCH chat idle {rss}");
    println!(
        "BENCH chat message->backend start over {} messages: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        latencies.len(),
        pct(0.5),
        pct(0.95),
        latencies[latencies.len() - 1]
    );
    bridge_proc.kill().unwrap();
    bridge_proc.wait().unwrap();
}

/// The bridge answers `!` commands itself — while the backend is busy with a
/// long turn — `!stop` ends that turn (its whole process group), a stranger's
/// `!stop` is not a command, and `nuketown status` tells a killed bridge from a live one.
#[test]
fn commands_are_answered_by_the_bridge_stop_cancels_a_turn_and_status_tells_a_killed_bridge() {
    let t = TestTown::new(&["nkchh", AGENT], &[]);
    let server = Synapse::start(&t.path("synapse"));
    // A directory the agent may write: the slow backend leaves its pid there.
    let scratch = t.path("scratch");
    fs::create_dir(&scratch).unwrap();
    Command::new("chown")
        .arg(format!("{AGENT_UID}:{AGENT_UID}"))
        .arg(&scratch)
        .status()
        .unwrap();
    let marker = scratch.join("slow.pid");
    let backend = format!(
        "[\"/bin/sh\", \"-c\", \"body=$(cat); case \\\"$body\\\" in *slow*) echo $$ > {}; exec sleep 300;; esac; echo \\\"answer: $body\\\"\"]",
        marker.display()
    );
    let town = setup_with(&t, &server, &backend);
    let mut bridge_proc = bridge_logging(&t, &town, None);
    wait_status(&t, "connected", |s| s["connected"] == true);
    let status_text = || t.ok(&["status", "--town", &town]);
    assert!(
        status_text().contains("chat     connected, "),
        "{}",
        status_text()
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let agent_id = UserId::parse(format!("@{AGENT}:localhost")).unwrap();
        let mut josh = Human::login(&server, "josh", "josh-pw", &t.path("josh-store")).await;
        let mut log: Vec<Seen> = Vec::new();
        let dm = josh.client.create_dm(&agent_id).await.unwrap();
        let dm_id = dm.room_id().to_owned();
        josh.sync_until("the agent to join the DM", |h| {
            h.has_joined(&dm_id, agent_id.as_str())
        })
        .await;
        let dm_room = josh.room(&dm_id);
        let say = |text: &str| {
            let room = dm_room.clone();
            let text = text.to_string();
            async move {
                room.send(RoomMessageEventContent::text_plain(text))
                    .await
                    .unwrap()
                    .response
                    .event_id
            }
        };

        let e = say("!where").await;
        let r = josh.reply_to(agent_id.as_str(), e.as_str(), &mut log).await;
        assert!(r.notice, "the bridge's own answer is a notice: {r:?}");
        assert!(
            r.body.contains(&format!("{AGENT} runs on host ")),
            "{}",
            r.body
        );
        assert!(
            r.body.contains(&format!("as uid {AGENT_UID}")),
            "{}",
            r.body
        );
        assert!(
            r.body
                .contains(&format!("{}/{AGENT}/dev", t.agents_dir().display())),
            "{}",
            r.body
        );
        let e = say("!resources").await;
        let r = josh.reply_to(agent_id.as_str(), e.as_str(), &mut log).await;
        assert!(
            r.body.contains("no tier") && r.body.contains("resident"),
            "{}",
            r.body
        );
        let e = say("!work").await;
        let r = josh.reply_to(agent_id.as_str(), e.as_str(), &mut log).await;
        assert!(r.body.contains("idle"), "{}", r.body);
        // An unknown command is text for the model.
        let e = say("!deploy now").await;
        let r = josh.reply_to(agent_id.as_str(), e.as_str(), &mut log).await;
        assert!(!r.notice && r.body.ends_with("\n!deploy now"), "{r:?}");

        // A long turn; commands are answered while it runs.
        let slow = say("a slow job").await;
        fixture::wait_for(&marker, 60);
        let pid: i32 = fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
        let e = say("!work").await;
        let r = josh.reply_to(agent_id.as_str(), e.as_str(), &mut log).await;
        assert!(
            r.body.contains("this room: backend running for")
                && r.body.contains("answering @josh:localhost"),
            "{}",
            r.body
        );
        let e = say("!escalations").await;
        let r = josh.reply_to(agent_id.as_str(), e.as_str(), &mut log).await;
        assert!(r.body.contains("no escalation"), "{}", r.body);
        let e = say("!stop").await;
        let r = josh.reply_to(agent_id.as_str(), e.as_str(), &mut log).await;
        assert!(r.body.contains("stopping 1 running turn"), "{}", r.body);
        let r = josh
            .reply_to(agent_id.as_str(), slow.as_str(), &mut log)
            .await;
        assert!(
            r.notice && r.body.starts_with("⏹ stopped by @josh:localhost"),
            "{r:?}"
        );
        // The backend's process is gone (the sleep it became).
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                Instant::now() < deadline,
                "the stopped backend {pid} still runs"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let e = say("after the stop").await;
        let r = josh.reply_to(agent_id.as_str(), e.as_str(), &mut log).await;
        assert!(r.body.ends_with("\nafter the stop"), "{}", r.body);
    });

    // Killed, the bridge is not connected, whatever its file last said.
    let before = status(&t);
    assert_eq!(before["connected"], true, "{before}");
    bridge_proc.kill().unwrap();
    bridge_proc.wait().unwrap();
    assert_eq!(
        status(&t)["connected"],
        true,
        "the file still says connected"
    );
    let text = status_text();
    assert!(
        text.contains("chat     disconnected (the bridge is not running)"),
        "{text}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&t.ok(&["status", "--json", "--town", &town])).unwrap();
    let agent = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == AGENT)
        .unwrap()
        .clone();
    assert_eq!(agent["chat"]["connected"], false, "{agent}");
    assert_eq!(agent["chat"]["running"], false, "{agent}");
    // A healthy start said so in one line, and no ERROR line.
    let log = fs::read_to_string(t.path("bridge.log")).unwrap();
    assert!(
        log.contains(&format!("logged in as @{AGENT}:localhost (device "))
            && log.contains("listening"),
        "{log}"
    );
    assert!(!log.contains("ERROR"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no colour codes in a log file: {log}"
    );
}
