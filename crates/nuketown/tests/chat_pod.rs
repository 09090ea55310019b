//! A cloud-only agent's chat bridge, as its pod runs it, against the real
//! Synapse. `nuketown cloud render` decides what the pod is made of: its
//! command, its environment, the bridge's declaration (`chat.json` in the
//! agent's ConfigMap), the Matrix password's key in its secrets, and the
//! volume its Matrix store lives on. This test takes exactly those from the
//! rendered manifests and runs them here, as the pod's `runAsUser`: a uid
//! with no account on this host, as in a container. There is no kubelet on
//! this machine, so the files are put where the rendered environment says
//! rather than mounted by one. Needs root (to become that uid) and Synapse
//! (scripts/deps.sh).

mod synapse;

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nuketown_chat::matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use nuketown_chat::matrix_sdk::ruma::UserId;
use nuketown_cloud::Manifest;
use synapse::{Human, Seen, Synapse};

const AGENT: &str = "nkpodvox";
/// The pod's user: no account on this host.
const UID: u32 = 1894;

/// The backend's answer to `event`: a reply that is not one of the
/// bridge's notices (an escalation asked in the turn is shown as a reply to
/// the same message, and may come first).
async fn answer(josh: &mut Human, log: &mut Vec<Seen>, event: &str) -> Seen {
    let me = format!("@{AGENT}:localhost");
    josh.wait_seen(
        log,
        0,
        &format!("the answer to {event}"),
        Duration::from_secs(90),
        |s| !s.notice && s.sender == me && s.reply_to.as_deref() == Some(event),
    )
    .await
}

/// The room's notice starting with `prefix`.
async fn notice(josh: &mut Human, log: &mut Vec<Seen>, prefix: String) -> Seen {
    josh.wait_seen(log, 0, &prefix, Duration::from_secs(60), |s| {
        s.notice && s.body.starts_with(&prefix)
    })
    .await
}

/// What `nuketown ask follow` prints while vox asks for "large" and the
/// relay approves: the events `requests::Follow` makes of the request
/// object, written to `dir` (the request's, the decision's) and where the
/// decision's go once it is made.
fn follow_events(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use nuketown_operator::requests::{Answer, Asked, Follow};
    let object = |data: serde_json::Value, decided_by: Option<&str>| {
        let mut cm = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": format!("{AGENT}-requests"), "namespace": "nuketown" },
            "data": data,
        });
        if let Some(manager) = decided_by {
            cm["metadata"]["managedFields"] = serde_json::json!([{
                "manager": manager, "operation": "Update", "apiVersion": "v1",
                "fieldsType": "FieldsV1", "fieldsV1": { "f:data": { "f:decision": {} } }
            }]);
        }
        serde_json::from_value(cm).unwrap()
    };
    let request = serde_json::to_string(&Asked {
        id: "r1a2b3c4d5".into(),
        tier: "large".into(),
        reason: "the tests need more memory".into(),
        at: 1,
    })
    .unwrap();
    let decision = serde_json::to_string(&Answer {
        id: "r1a2b3c4d5".into(),
        approved: true,
        by: "josh".into(),
        via: "matrix:@josh:localhost".into(),
        reason: "approved".into(),
        request: "9e8d7c6b".into(),
    })
    .unwrap();
    let mut follow = Follow::default();
    let mut lines = |cm| {
        let events = follow.events(&cm);
        assert_eq!(events.len(), 1, "{events:?}");
        format!("{}\n", serde_json::to_string(&events[0]).unwrap())
    };
    let asked = lines(object(serde_json::json!({ "request": request }), None));
    let decided = lines(object(
        serde_json::json!({ "request": request, "decision": decision }),
        Some("nuketown-hall"),
    ));
    let paths = (
        dir.join("asked.jsonl"),
        dir.join("decision.jsonl"),
        dir.join("decided.jsonl"),
    );
    fs::write(&paths.0, asked).unwrap();
    fs::write(&paths.1, decided).unwrap();
    paths
}

/// Removes a directory tree this test made outside its temporary directory.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn chat_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nuketown-chat")
}

#[test]
fn a_cloud_agents_bridge_runs_as_the_pod_says_and_answers_its_human() {
    assert!(
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(UID))
            .unwrap()
            .is_none(),
        "uid {UID} must have no account here: the pod's user has none"
    );
    let root = tempfile::tempdir().unwrap();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let server = Synapse::start(&root.path().join("synapse"));
    server.register(AGENT, "vox-pw");
    server.register("josh", "josh-pw");

    // The town: vox in the cluster only, with chat and a bigger tier to ask for.
    let backend =
        "[\"/bin/sh\", \"-c\", \"echo \\\"uid=$(id -u) home=$HOME pwd=$(pwd) msg=$(cat)\\\"\"]";
    let text = format!(
        "domain = \"example.org\"\n[agents.{AGENT}]\nuid = {UID}\npersist.directories = [\"dev\"]\n\
cloud = {{ enable = true, image = \"registry.example.org/vox:1\", scaling.maxResources = \"large\" }}\n\
[agents.{AGENT}.chat]\nenable = true\nhomeserver = \"{}\"\nuserId = \"@{AGENT}:localhost\"\n\
allowedHumans = [\"@josh:localhost\"]\nbackend = {{ type = \"command\", command = {backend} }}\n",
        server.url()
    );
    let town = nuketown_cloud::load(&text, nuketown_town::Format::Toml, "town.toml").unwrap();
    let manifests = nuketown_cloud::render(&town, None).unwrap();

    // What the render makes of it.
    let config = manifests
        .iter()
        .find_map(|m| match m {
            Manifest::ConfigMap(c) if c.metadata.name.as_deref() == Some(AGENT) => Some(c),
            _ => None,
        })
        .expect("the agent's ConfigMap");
    let chat_json = config.data.as_ref().unwrap()["chat.json"].clone();
    assert!(
        !chat_json.contains("vox-pw") && !chat_json.contains("password"),
        "no password travels in the ConfigMap: {chat_json}"
    );
    let deployment = manifests
        .iter()
        .find_map(|m| match m {
            Manifest::Deployment(d) => Some(d),
            _ => None,
        })
        .unwrap();
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_user,
        Some(i64::from(UID))
    );
    let agent = &pod.containers[0];
    let command = agent.command.clone().unwrap();
    assert_eq!(command, ["nuketown-chat", AGENT, "--pod"]);
    let pod_args: Vec<&str> = command[1..].iter().map(String::as_str).collect();
    assert_eq!(agent.tty, None, "a bridge's pod is no terminal");
    let env: Vec<(String, String)> = agent
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    let var = |name: &str| {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} is not in the pod's environment: {env:?}"))
    };
    let mounts = agent.volume_mounts.as_ref().unwrap();
    let mounted = |path: &str| mounts.iter().find(|m| m.mount_path == path);
    let home_in_pod = var("HOME");
    for dir in ["NUKETOWN_IDENTITY", "NUKETOWN_KEYS"] {
        let m = mounted(&var(dir)).unwrap_or_else(|| panic!("{dir} is not mounted"));
        assert_eq!(m.read_only, Some(true), "{dir} is read-only in the pod");
    }
    let store = mounted(&format!("{home_in_pod}/.nuketown/matrix"))
        .expect("the Matrix store is on a volume of its own");
    assert!(
        pod.volumes
            .iter()
            .flatten()
            .any(|v| v.name == store.name && v.persistent_volume_claim.is_some()),
        "the store's volume is a claim: the device survives rounds"
    );

    // The pod, here: its files where its environment says, as its user.
    let identity = root.path().join("identity");
    let keys = root.path().join("keys");
    let home = root.path().join("home");
    fs::create_dir(&identity).unwrap();
    fs::write(identity.join("chat.json"), &chat_json).unwrap();
    for d in [&keys, &home] {
        fs::create_dir(d).unwrap();
        chown(d, Some(UID), Some(UID)).unwrap();
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
    }
    let dev = home.join("dev");
    fs::create_dir(&dev).unwrap();
    chown(&dev, Some(UID), Some(UID)).unwrap();
    // `nuketown ask active` and `nuketown ask follow` talk to the cluster's
    // API server, which cannot run here: the `nuketown` on the pod's PATH is
    // a stand-in. For `active` it records the call; for `follow` it prints
    // what the real one prints — the events `requests::Follow` makes of the
    // agent's request object — first the request, once a turn has run, then
    // the relay's decision, once the test puts it in place; and it lives as
    // long as the bridge that started it.
    let bin = root.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let asked = home.join("asked");
    let (request_events, decision_events, decided) = follow_events(root.path());
    fs::write(
        bin.join("nuketown"),
        format!(
            "#!/bin/sh\ncase \"$2\" in\n\
             active) echo \"$NUKETOWN_AGENT $*\" >> {asked} ;;\n\
             follow) alive() {{ kill -0 $PPID 2>/dev/null; }}\n\
             \twhile [ ! -s {asked} ] && alive; do sleep 0.05; done; cat {request_events}\n\
             \twhile [ ! -e {decided} ] && alive; do sleep 0.05; done; cat {decided}\n\
             \twhile alive; do sleep 0.2; done ;;\n\
             esac\n",
            asked = asked.display(),
            request_events = request_events.display(),
            decided = decided.display(),
        ),
    )
    .unwrap();
    fs::set_permissions(bin.join("nuketown"), fs::Permissions::from_mode(0o755)).unwrap();
    let log_path = root.path().join("bridge.log");
    let run_bridge = |args: &[&str], as_pod: bool| {
        let log = fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(chat_bin());
        cmd.args(args)
            .env_clear()
            .env(
                "PATH",
                format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()),
            )
            .env("HOME", &home)
            .env("NUKETOWN_IDENTITY", &identity)
            .env("NUKETOWN_KEYS", &keys)
            .env("NUKETOWN_AGENT", var("NUKETOWN_AGENT"))
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if as_pod {
            // std drops root's supplementary groups with the uid.
            cmd.uid(UID).gid(UID);
        }
        cmd
    };

    // Without the password in its secrets, the bridge says which key is missing.
    let out = run_bridge(&pod_args, true).output().unwrap();
    assert!(!out.status.success());
    let said = fs::read_to_string(&log_path).unwrap();
    assert!(
        said.contains("has neither matrix-password nor matrix-access-token"),
        "{said}"
    );
    // As root it refuses: the backend would run as root.
    let out = run_bridge(&pod_args, false).output().unwrap();
    assert!(!out.status.success());
    let said = fs::read_to_string(&log_path).unwrap();
    assert!(said.contains("never as root"), "{said}");
    // Another agent's declaration is not its own.
    let out = run_bridge(&["nkpodada", "--pod"], true).output().unwrap();
    assert!(!out.status.success());
    let said = fs::read_to_string(&log_path).unwrap();
    assert!(
        said.contains(&format!("chat.json is {AGENT}'s, not nkpodada's")),
        "{said}"
    );

    // The pod's service-account token (scaling.maxResources gives it one):
    // where a pod has it, so the bridge reports activity. Put there only if
    // this host has no such directory, and taken away after.
    let sa = Path::new("/var/run/secrets/kubernetes.io");
    let token = if sa.exists() {
        eprintln!(
            "{} exists on this host: not checking the activity report",
            sa.display()
        );
        None
    } else {
        fs::create_dir_all(sa.join("serviceaccount")).unwrap();
        fs::write(sa.join("serviceaccount/token"), "not a token").unwrap();
        Some(RemoveOnDrop(sa.to_path_buf()))
    };
    let pw = keys.join("matrix-password");
    fs::write(&pw, "vox-pw\n").unwrap();
    chown(&pw, Some(UID), Some(UID)).unwrap();
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o400)).unwrap();
    let mut bridge = run_bridge(&pod_args, true).spawn().unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let status_file = home.join(".nuketown/matrix/status.json");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let connected = fs::read_to_string(&status_file)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .is_some_and(|s| s["connected"] == true);
        if connected {
            break;
        }
        if let Ok(Some(status)) = bridge.try_wait() {
            panic!(
                "the bridge exited ({status}):\n{}",
                fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the bridge never connected:\n{}",
            fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let bridge = Kill(bridge);
    // Its store is the pod's user's, under the home.
    assert_eq!(
        fs::metadata(home.join(".nuketown/matrix"))
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap(),
        UID
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let agent_id = UserId::parse(format!("@{AGENT}:localhost")).unwrap();
        let mut josh = Human::login(&server, "josh", "josh-pw", &root.path().join("josh")).await;
        let mut log: Vec<Seen> = Vec::new();
        let dm = josh.client.create_dm(&agent_id).await.unwrap();
        let dm_id = dm.room_id().to_owned();
        josh.sync_until("the agent to join the DM", |h| {
            h.has_joined(&dm_id, agent_id.as_str())
        })
        .await;
        let dm_room = josh.room(&dm_id);
        let say = |text: &'static str| {
            let room = dm_room.clone();
            async move {
                room.send(RoomMessageEventContent::text_plain(text))
                    .await
                    .unwrap()
                    .response
                    .event_id
            }
        };
        let e = say("hello vox").await;
        let r = answer(&mut josh, &mut log, e.as_str()).await;
        assert!(
            r.body.contains(&format!("uid={UID} ")),
            "the backend runs as the pod's user: {}",
            r.body
        );
        assert!(
            r.body.contains(&format!("pwd={}", dev.display())),
            "in its project dir: {}",
            r.body
        );
        assert!(
            r.body
                .contains("msg=[chat: from @josh:localhost, your human]\nhello vox"),
            "{}",
            r.body
        );
        // A second message within the minute: answered, and no second report.
        let e = say("again").await;
        let r = answer(&mut josh, &mut log, e.as_str()).await;
        assert!(
            r.body
                .contains("msg=[chat: from @josh:localhost, your human]\nagain"),
            "{}",
            r.body
        );
        if token.is_some() {
            let deadline = Instant::now() + Duration::from_secs(30);
            let reports = loop {
                let text = fs::read_to_string(&asked).unwrap_or_default();
                if !text.is_empty() || Instant::now() > deadline {
                    break text;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(
                reports,
                format!("{AGENT} ask active\n"),
                "a turn tells the cluster the agent is working, at most once a minute"
            );
        }
        // The agent asked for a bigger tier in that turn: the room hears the
        // request, with its id, from the request object (not from the
        // backend), then lists it, then hears the relay's decision.
        if token.is_some() {
            let shown = notice(
                &mut josh,
                &mut log,
                format!("🔐 {AGENT} asked to move to large ("),
            )
            .await;
            assert!(
                shown
                    .body
                    .contains("— request r1a2b3c4, waiting for a human's decision"),
                "{}",
                shown.body
            );
            let e = say("!escalations").await;
            let r = josh.reply_to(agent_id.as_str(), e.as_str(), &mut log).await;
            assert!(r.notice, "{r:?}");
            assert!(
                r.body.contains("request r1a2b3c4 — move to large ("),
                "{}",
                r.body
            );
            fs::rename(&decision_events, &decided).unwrap();
            let shown = notice(&mut josh, &mut log, "🔐 request r1a2b3c4: ".to_string()).await;
            assert!(
                shown.body.starts_with(
                    "🔐 request r1a2b3c4: approved by josh via matrix:@josh:localhost"
                ) && shown.body.contains("town hall request 9e8d7c6b"),
                "{}",
                shown.body
            );
        }
        let e = say("!resources").await;
        let r = josh.reply_to(agent_id.as_str(), e.as_str(), &mut log).await;
        assert!(r.body.contains("standard"), "its declared tier: {}", r.body);
    });
    drop(bridge);
    drop(token);
    assert!(Path::new(&status_file).exists());
}
