//! The real agent CLIs at work in the town, end to end: claude-code and
//! codex (npm), aider (PyPI), installed by scripts/deps.sh, each run by the
//! real bridge as the agent in its clone for a human's Matrix message
//! (real Synapse): it edits a file, commits signed through the agent's key
//! socket, pushes a branch over SSH (real sshd on 127.0.0.1) and answers in
//! the room. claude-code's own permission prompts and its `sudo` reach the
//! real town hall and are decided by the human in the Matrix approval room.
//!
//! The one stand-in is the model: a scripted model server on 127.0.0.1
//! (tests/scripted_model/server.py) that speaks the providers' HTTP APIs and
//! follows a script — hence `scripted_model` in every test's name. Needs root,
//! Synapse, sshd and the CLIs (scripts/deps.sh installs them).

mod approval_room;
mod hall_fixture;
mod sshd;
mod synapse;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use approval_room::{announcement, approval_room, react, start_approver, Kill};
use hall_fixture::{stderr, stdout, Options, TestTown, ADA};
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, UserId};
use nuketown_chat::matrix_sdk;
use serde_json::{json, Value};
use sshd::Sshd;
use synapse::{Human, Seen, Synapse};

/// Where scripts/deps.sh puts the npm CLIs (`node_modules/.bin`).
fn npm_bin() -> PathBuf {
    std::env::var_os("NUKETOWN_CLIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/nuketown-clis"))
        .join("node_modules/.bin")
}

/// Where scripts/deps.sh puts aider's venv.
fn aider_bin() -> PathBuf {
    std::env::var_os("NUKETOWN_AIDER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/nuketown-aider"))
        .join("bin")
}

/// The PATH the bridge runs with: the CLIs, then the system's.
fn cli_path() -> String {
    for (cli, dir) in [
        ("claude", npm_bin()),
        ("codex", npm_bin()),
        ("aider", aider_bin()),
    ] {
        assert!(
            dir.join(cli).exists(),
            "{cli} is not installed in {} (scripts/deps.sh installs it)",
            dir.display()
        );
    }
    format!(
        "{}:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        npm_bin().display(),
        aider_bin().display()
    )
}

/// The scripted model server.
struct Model {
    _child: Kill,
    port: u16,
    log: PathBuf,
}

impl Model {
    fn start(dir: &Path, script: &Value) -> Model {
        fs::create_dir_all(dir).unwrap();
        let script_file = dir.join("script.json");
        fs::write(&script_file, script.to_string()).unwrap();
        let port_file = dir.join("port");
        let log = dir.join("requests.jsonl");
        let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripted_model/server.py");
        let child = Command::new("python3")
            .arg(server)
            .arg(&script_file)
            .arg(&port_file)
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("server.log")).unwrap())
            .spawn()
            .unwrap();
        let child = Kill(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Ok(p) = fs::read_to_string(&port_file) {
                break p.trim().parse().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "the scripted model never said its port"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Model {
            _child: child,
            port,
            log,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request the model received.
    fn requests(&self) -> Vec<Value> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// How each CLI finds the model, the way it documents: environment
    /// variables for claude-code and aider (codex reads its config file,
    /// written by [`Scene::clone_for_ada`]).
    fn env(&self) -> Vec<(String, String)> {
        let u = self.url();
        [
            ("ANTHROPIC_BASE_URL", u.clone()),
            ("ANTHROPIC_API_KEY", "sk-ant-scripted".into()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
            ("DISABLE_AUTOUPDATER", "1".into()),
            ("SCRIPTED_API_KEY", "sk-scripted".into()),
            ("OPENAI_API_KEY", "sk-scripted".into()),
            ("OPENAI_API_BASE", format!("{u}/v1")),
            ("AIDER_MODEL", "gpt-4o".into()),
            ("LITELLM_LOCAL_MODEL_COST_MAP", "True".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// Everything a test needs: the town with its hall (not started), Synapse
/// with ada and josh, sshd letting ada in with her town key, the model.
struct Scene {
    t: TestTown,
    server: Synapse,
    sshd: Sshd,
    model: Model,
    public: String,
}

/// The branch each backend pushes.
fn branch(kind: &str) -> String {
    format!("{kind}/notes")
}

/// A shell step that edits, commits (signed), pushes and prints the
/// commit's signature status and subject.
fn work_step(kind: &str) -> Value {
    json!({ "shell": format!(
        "printf 'a line from {kind}\\n' >> notes.txt && git add notes.txt && git commit -q -m 'notes: one more line' && \
         git push -q origin HEAD:refs/heads/{} && git log -1 --format='%G? %s'",
        branch(kind)
    )})
}

impl Scene {
    fn new(opts: Options, backend: &str, script: Value) -> Scene {
        let t = TestTown::new(opts);
        let public = t
            .key_store()
            .generate(ADA, "nktada@town")
            .unwrap()
            .to_openssh()
            .unwrap();
        // sshd refuses accounts whose password is locked ('!'); '*' is no password at all.
        let o = Command::new("usermod")
            .args(["-p", "*", ADA])
            .output()
            .unwrap();
        assert!(o.status.success());
        let sshd = Sshd::start(&t.path("sshd"), ADA, &public);
        let server = Synapse::start(&t.path("synapse"));
        server.register(ADA, "ada-pw");
        server.register("josh", "josh-pw");
        let store = t.path(&format!("persist/agents/{ADA}"));
        fs::create_dir_all(&store).unwrap();
        let pw = t.path("ada.pw");
        fs::write(&pw, "ada-pw\n").unwrap();
        for p in [&store, &pw] {
            Command::new("chown")
                .arg(format!("{ADA}:{ADA}"))
                .arg(p)
                .status()
                .unwrap();
        }
        let town = fs::read_to_string(&t.town).unwrap();
        let mut town = town.replace(
            &format!("[agents.{ADA}.keys]\n"),
            &format!(
                "[agents.{ADA}.keys]\nhosts.local.hostKey = \"{}\"\n",
                sshd.host_key
            ),
        );
        town.push_str(&format!(
            "\n[agents.{ADA}.chat]\nenable = true\nhomeserver = \"{}\"\nuserId = \"@{ADA}:localhost\"\npasswordFile = \"{}\"\n\
             allowedHumans = [\"@josh:localhost\"]\nbackend = {backend}\n",
            server.url(),
            pw.display(),
        ));
        fs::write(&t.town, town).unwrap();
        let model = Model::start(&t.path("model"), &script);
        Scene {
            t,
            server,
            sshd,
            model,
            public,
        }
    }

    /// ada's clone `~/dev` of her bare remote `~/remote.git` (over SSH),
    /// her git identity signing with the town's key, and codex's model
    /// provider. Run once the hall serves her key socket.
    fn clone_for_ada(&self) {
        let home = self.t.home(ADA);
        let script = format!(
            "export SSH_AUTH_SOCK={sock} && cd && mkdir -p .ssh .codex && \
             echo '{public}' > .ssh/id_ed25519.pub && echo 'nktada@town {public}' > .ssh/allowed_signers && \
             echo '[127.0.0.1]:{port} {hk}' > .ssh/known_hosts && \
             git config --global user.name ada && git config --global user.email nktada@town && \
             git config --global gpg.format ssh && git config --global user.signingKey ~/.ssh/id_ed25519.pub && \
             git config --global commit.gpgSign true && git config --global gpg.ssh.allowedSignersFile ~/.ssh/allowed_signers && \
             git config --global init.defaultBranch main && \
             git config --global core.sshCommand 'ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=~/.ssh/known_hosts' && \
             git init -q --bare remote.git && git init -q dev && cd dev && echo '# app' > README.md && git add README.md && \
             git commit -q -m first && git remote add origin ssh://{ADA}@127.0.0.1:{port}{home}/remote.git && \
             git push -q origin HEAD:refs/heads/main && \
             printf '%s\\n' 'model = \"gpt-5-codex\"' 'model_provider = \"scripted\"' '[model_providers.scripted]' \
               'name = \"scripted model\"' 'base_url = \"{url}/v1\"' 'env_key = \"SCRIPTED_API_KEY\"' 'wire_api = \"responses\"' > ~/.codex/config.toml",
            sock = self.t.key_socket(ADA).display(),
            public = self.public,
            port = self.sshd.port,
            hk = self.sshd.host_key,
            home = home.display(),
            url = self.model.url(),
        );
        let o = self.t.agent(ADA, &script);
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    }

    /// Start ada's bridge (`nuketown chat`, as root: it becomes ada).
    fn bridge(&self) -> Kill {
        self.bridge_with(&[])
    }

    /// The bridge with `extra` in its environment.
    fn bridge_with(&self, extra: &[(&str, &str)]) -> Kill {
        let log = fs::File::create(self.t.path("bridge.log")).unwrap();
        let mut c = Command::new(&self.t.nuketown);
        c.args(["chat", ADA, "--town"])
            .arg(&self.t.town)
            .env("NUKETOWN_ASK_SOCKET", self.t.ask_socket())
            .env("NUKETOWN_SSH_AGENT_DIR", self.t.path("ssh"))
            .env("NUKETOWN_LOG", "nuketown_chat=debug,info")
            .env("PATH", cli_path())
            .envs(self.model.env())
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        Kill(c.spawn().unwrap())
    }

    /// `nuketown run ADA TASK` as root (it becomes ada), as the bridge runs.
    fn run(&self, task: &str) -> std::process::Output {
        Command::new(&self.t.nuketown)
            .arg("--town")
            .arg(&self.t.town)
            .args(["run", ADA, task])
            .env("NUKETOWN_ASK_SOCKET", self.t.ask_socket())
            .env("NUKETOWN_SSH_AGENT_DIR", self.t.path("ssh"))
            .env("PATH", cli_path())
            .envs(self.model.env())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn bridge_log(&self) -> String {
        fs::read_to_string(self.t.path("bridge.log")).unwrap_or_default()
    }

    /// The subjects on `branch` of ada's remote, each with git's signature
    /// check against her allowed signers (`G` is good).
    fn pushed(&self, branch: &str) -> Vec<String> {
        let home = self.t.home(ADA);
        let o = Command::new("git")
            .arg("--git-dir")
            .arg(home.join("remote.git"))
            .arg("-c")
            .arg(format!(
                "gpg.ssh.allowedSignersFile={}",
                home.join(".ssh/allowed_signers").display()
            ))
            .args(["log", "--format=%G? %s", branch])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).lines().map(str::to_string).collect()
    }
}

/// Josh's DM with ada, once her bridge has joined it.
async fn dm_with_ada(josh: &mut Human) -> OwnedRoomId {
    let agent_id = UserId::parse(format!("@{ADA}:localhost")).unwrap();
    let dm = josh.client.create_dm(&agent_id).await.unwrap();
    let dm_id = dm.room_id().to_owned();
    josh.sync_until("the agent to join the DM", |h| {
        h.has_joined(&dm_id, agent_id.as_str())
    })
    .await;
    dm_id
}

async fn say(josh: &Human, room: &OwnedRoomId, text: &str) -> OwnedEventId {
    josh.room(room)
        .send(RoomMessageEventContent::text_plain(text))
        .await
        .unwrap()
        .response
        .event_id
}

/// The agent's answer (not a notice) to `event`.
async fn answer(s: &Scene, josh: &mut Human, log: &mut Vec<Seen>, event: &OwnedEventId) -> String {
    let ada = format!("@{ADA}:localhost");
    let seen = josh
        .wait_seen(
            log,
            0,
            "the agent's answer",
            Duration::from_secs(240),
            |m| m.sender == ada && !m.notice && m.reply_to.as_deref() == Some(event.as_str()),
        )
        .await;
    assert!(
        !seen.body.starts_with("⚠"),
        "the backend failed: {}\nbridge log:\n{}",
        seen.body,
        s.bridge_log()
    );
    seen.body
}

/// The work a backend is asked for, through the bridge: edit, commit
/// signed, push a branch, answer; a second message resumes the session.
fn works_through_the_bridge(kind: &str, script: Value, resumes: Option<&str>) -> (Scene, String) {
    let mut s = Scene::new(
        Options::default(),
        &format!("{{ type = \"{kind}\" }}"),
        script,
    );
    s.t.start_hall();
    s.clone_for_ada();
    let _bridge = s.bridge();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let first = rt.block_on(async {
        let mut josh = Human::login(&s.server, "josh", "josh-pw", &s.t.path("josh-store")).await;
        let dm = dm_with_ada(&mut josh).await;
        let mut log = Vec::new();
        let ask = say(&josh, &dm, "add a line to the notes and push it").await;
        let first = answer(&s, &mut josh, &mut log, &ask).await;
        if let Some(expected) = resumes {
            let again = say(&josh, &dm, "and now?").await;
            let second = answer(&s, &mut josh, &mut log, &again).await;
            assert!(
                second.contains(expected),
                "the second message resumes the session: {second}\n{}",
                s.bridge_log()
            );
        }
        first
    });
    (s, first)
}

#[test]
fn claude_code_with_a_scripted_model_edits_commits_signed_pushes_and_answers_and_run_says_the_same()
{
    let script = json!({ "steps": [
        work_step("claude"),
        { "text": "pushed: {output}" },
        { "text": "resumed, nothing more to do" },
    ]});
    let (s, first) =
        works_through_the_bridge("claude-code", script, Some("resumed, nothing more to do"));
    assert_eq!(
        first,
        "pushed: G notes: one more line",
        "{}",
        s.bridge_log()
    );
    assert_eq!(
        s.pushed(&branch("claude")),
        ["G notes: one more line", "G first"],
        "one signed commit on the branch"
    );
    // What reached the model: the agent's clone, the message, no tool prompt dead end.
    let reqs = s.model.requests();
    let msgs: Vec<&Value> = reqs
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.contains("/v1/messages"))
        })
        .collect();
    assert!(
        msgs.iter().any(|r| r["body"]
            .to_string()
            .contains("add a line to the notes and push it")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .all(|r| r["headers"]["x-api-key"] == "sk-ant-scripted"
                || r["headers"]["X-Api-Key"] == "sk-ant-scripted"),
        "the model was called with the configured key: {:?}",
        msgs.iter().map(|r| &r["headers"]).collect::<Vec<_>>()
    );

    // `nuketown run`: the same invocation, the same reply.
    let o = s.run("add a line to the notes and push it");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{first}\n"));
    assert_eq!(
        s.pushed(&branch("claude")).len(),
        3,
        "run did the work too: {:?}",
        s.pushed(&branch("claude"))
    );
}

#[test]
fn codex_with_a_scripted_model_edits_commits_signed_pushes_and_answers() {
    let script = json!({ "steps": [
        work_step("codex"),
        { "text": "pushed: {output}" },
        { "text": "resumed, nothing more to do" },
    ]});
    let (s, first) = works_through_the_bridge("codex", script, Some("resumed, nothing more to do"));
    assert!(first.starts_with("pushed: "), "{first}");
    assert!(first.contains("G notes: one more line"), "{first}");
    assert_eq!(
        s.pushed(&branch("codex")),
        ["G notes: one more line", "G first"]
    );
}

#[test]
fn aider_with_a_scripted_model_edits_commits_signed_pushes_and_answers() {
    // aider edits with SEARCH/REPLACE blocks in the model's text, commits
    // them itself (the message from the model), then runs the shell block.
    let text = format!(
        "I will add the line.\n\nnotes.txt\n```\n<<<<<<< SEARCH\n=======\na line from aider\n>>>>>>> REPLACE\n```\n\n\
         Then push it:\n\n```bash\ngit push -q origin HEAD:refs/heads/{}\n```\n",
        branch("aider")
    );
    let script = json!({ "steps": [{ "text": text }], "commit_message": "notes: one more line" });
    let (s, first) = works_through_the_bridge("aider", script, None);
    assert!(first.contains("notes.txt"), "{first}");
    let pushed = s.pushed(&branch("aider"));
    assert_eq!(pushed.len(), 2, "{pushed:?}\n{first}");
    assert!(
        pushed[0].starts_with("G ") && pushed[0].contains("notes: one more line"),
        "{pushed:?}"
    );
    let notes = fs::read_to_string(s.t.home(ADA).join("dev/notes.txt")).unwrap();
    assert_eq!(notes, "a line from aider\n");
}

/// With `permissions = "ask"`, every tool claude-code would use is a hall
/// request: shown in the Matrix approval room with the tool and its input;
/// ✅ runs it, ❌ is reported by the CLI, no answer is denied at the
/// timeout; each decision audited, the chain intact.
#[test]
fn claude_codes_permission_prompts_with_a_scripted_model_are_decided_in_the_approval_room() {
    let script = json!({ "steps": [
        { "shell": "touch approved.txt && echo made approved.txt" },
        { "text": "first: {output}" },
        { "shell": "touch denied.txt" },
        { "text": "second: {output}" },
        { "shell": "touch late.txt" },
        { "text": "third: {output}" },
    ]});
    let opts = Options {
        ada_timeout: 20,
        ..Options::default()
    };
    let mut s = Scene::new(
        opts,
        "{ type = \"claude-code\", permissions = \"ask\" }",
        script,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut josh = Human::login(&s.server, "josh", "josh-pw", &s.t.path("josh-store")).await;
        let room = approval_room(&s.t, &s.server, &mut josh, "@josh:localhost").await;
        s.t.start_hall();
        let _approver = start_approver(&s.t, &mut josh, &room).await;
        s.clone_for_ada();
        let _bridge = s.bridge_with(&[("NUKETOWN_STILL_WORKING_SECS", "5")]);
        let dm = dm_with_ada(&mut josh).await;
        let mut log = Vec::new();
        let dev = s.t.home(ADA).join("dev");

        // ✅: the tool runs, once, as ada.
        let ask = say(&josh, &dm, "make approved.txt").await;
        let (ev, id, posted) = announcement(&mut josh, &mut log, 0).await;
        assert!(
            posted.contains("nktada (uid 1950) asks, for its CLI (claude-code), to use a tool"),
            "{posted}"
        );
        assert!(posted.contains("tool: \"Bash\""), "{posted}");
        assert!(
            posted.contains("touch approved.txt && echo made approved.txt"),
            "{posted}"
        );
        assert!(
            !dev.join("approved.txt").exists(),
            "nothing ran before the decision"
        );
        // The agent's room shows the prompt too, with the request's id.
        let shown = josh
            .wait_seen(
                &mut log,
                0,
                "the prompt in the DM",
                Duration::from_secs(60),
                |m| {
                    m.notice
                        && m.body.starts_with("🔐 ")
                        && m.reply_to.as_deref() == Some(ask.as_str())
                },
            )
            .await;
        assert!(
            shown.body.contains(&format!(
                "{ADA} asked to use a tool of its CLI: claude-code \"Bash\" "
            )) && shown.body.contains(&format!("— request {id}")),
            "{}",
            shown.body
        );
        let said = react(&mut josh, &mut log, &room, &ev, &id, "✅").await;
        assert!(said.contains("was approved by"), "{said}");
        let a = answer(&s, &mut josh, &mut log, &ask).await;
        assert!(
            a.starts_with("first: ") && a.contains("made approved.txt"),
            "{a}"
        );
        let owner =
            fs::metadata(dev.join("approved.txt")).map(|m| std::os::unix::fs::MetadataExt::uid(&m));
        assert_eq!(owner.unwrap(), hall_fixture::ADA_UID, "it ran as ada");

        // ❌: the CLI is told, nothing runs.
        let after = log.len();
        let ask = say(&josh, &dm, "make denied.txt").await;
        let (ev, id2, _) = announcement(&mut josh, &mut log, after).await;
        let said = react(&mut josh, &mut log, &room, &ev, &id2, "❌").await;
        assert!(said.contains("was denied by"), "{said}");
        let a = answer(&s, &mut josh, &mut log, &ask).await;
        assert!(a.starts_with("second: ") && a.contains("denied"), "{a}");
        assert!(!dev.join("denied.txt").exists());

        // No answer: denied when ada's timeout ends. Meanwhile the room sees
        // ada typing, and (after 5 s here) that she is still working.
        let after = log.len();
        let ask = say(&josh, &dm, "make late.txt").await;
        let (_, id3, _) = announcement(&mut josh, &mut log, after).await;
        let still = josh
            .wait_seen(
                &mut log,
                after,
                "the still-working notice",
                Duration::from_secs(60),
                |m| {
                    m.notice
                        && m.reply_to.as_deref() == Some(ask.as_str())
                        && m.body.starts_with("⏳")
                },
            )
            .await;
        assert!(
            still.body.starts_with("⏳ still working on this (")
                && still.body.contains("`!stop` ends it"),
            "{}",
            still.body
        );
        let a = answer(&s, &mut josh, &mut log, &ask).await;
        assert!(a.starts_with("third: ") && a.contains("denied"), "{a}");
        assert!(!dev.join("late.txt").exists());
        let ada = format!("@{ADA}:localhost");
        assert!(
            josh.typing
                .lock()
                .unwrap()
                .iter()
                .any(|(room, who, _)| room == dm.as_str() && who.contains(&ada)),
            "ada was seen typing while her CLI worked"
        );

        let tools: Vec<_> =
            s.t.audit()
                .into_iter()
                .filter(|r| r.event == "tool")
                .collect();
        let decision = |id: &str| {
            tools
                .iter()
                .find(|r| r.id.starts_with(id))
                .unwrap_or_else(|| panic!("no audit record for {id}: {tools:#?}"))
        };
        let r = decision(&id);
        assert_eq!(r.decision, "approved");
        assert_eq!(
            r.decided_by.as_ref().unwrap().channel,
            "matrix:@josh:localhost"
        );
        let t = r.tool.as_ref().unwrap();
        assert_eq!((t.cli.as_str(), t.tool.as_str()), ("claude-code", "Bash"));
        assert!(t.input.contains("touch approved.txt"), "{t:?}");
        assert_eq!(decision(&id2).decision, "denied");
        let late = decision(&id3);
        assert_eq!(late.decision, "denied");
        assert!(
            late.reason.contains("timed out") || late.reason.contains("timeout"),
            "{late:?}"
        );
    });
    let o = s.t.root_nuketown(&["audit", "--verify"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

/// claude-code's Bash runs `sudo id -u`: the request reaches the hall (the
/// shim is first on the CLI's PATH), is shown in the agent's room with the
/// exact command, and the human's ✅ in the approval room runs it once; the
/// CLI sees root's answer. The same command again asks again.
#[test]
fn claude_codes_sudo_with_a_scripted_model_asks_the_hall_each_time() {
    let script = json!({ "steps": [
        { "shell": "sudo id -u" },
        { "text": "root says: {output}" },
        { "shell": "sudo id -u" },
        { "text": "again: {output}" },
    ]});
    let mut s = Scene::new(Options::default(), "{ type = \"claude-code\" }", script);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut josh = Human::login(&s.server, "josh", "josh-pw", &s.t.path("josh-store")).await;
        let room = approval_room(&s.t, &s.server, &mut josh, "@josh:localhost").await;
        s.t.start_hall();
        let _approver = start_approver(&s.t, &mut josh, &room).await;
        s.clone_for_ada();
        let _bridge = s.bridge();
        let dm = dm_with_ada(&mut josh).await;
        let mut log = Vec::new();

        let ask = say(&josh, &dm, "what is your uid as root?").await;
        let (ev, id, posted) = announcement(&mut josh, &mut log, 0).await;
        assert!(posted.contains("run: \"/usr/bin/id\" \"-u\""), "{posted}");
        // The agent's room shows the exact command while it waits.
        let shown = josh
            .wait_seen(
                &mut log,
                0,
                "the escalation in the DM",
                Duration::from_secs(60),
                |m| {
                    m.notice
                        && m.body.starts_with("🔐 ")
                        && m.reply_to.as_deref() == Some(ask.as_str())
                },
            )
            .await;
        assert!(
            shown.body.contains(&format!(
                "{ADA} asked to run \"/usr/bin/id\" \"-u\" as root — request {}",
                &id[..8.min(id.len())]
            )),
            "{}",
            shown.body
        );
        let said = react(&mut josh, &mut log, &room, &ev, &id, "✅").await;
        assert!(said.contains("was approved by"), "{said}");
        let a = answer(&s, &mut josh, &mut log, &ask).await;
        assert!(
            a.starts_with("root says: ")
                && a.lines().any(|l| l.trim() == "0" || l.ends_with(": 0")),
            "{a}"
        );

        // The same command again: a new request, which the human denies.
        let after = log.len();
        let again = say(&josh, &dm, "once more?").await;
        let (ev2, id2, _) = announcement(&mut josh, &mut log, after).await;
        assert_ne!(id2, id, "a new request");
        let said = react(&mut josh, &mut log, &room, &ev2, &id2, "❌").await;
        assert!(said.contains("was denied by"), "{said}");
        let a = answer(&s, &mut josh, &mut log, &again).await;
        assert!(a.starts_with("again: ") && a.contains("denied"), "{a}");

        let runs: Vec<_> =
            s.t.audit()
                .into_iter()
                .filter(|r| r.event == "decision" && r.argv == ["/usr/bin/id", "-u"])
                .collect();
        assert_eq!(runs.len(), 2, "{runs:#?}");
        assert_eq!(runs[0].decision, "approved");
        assert_eq!(runs[0].exit_status, Some(0), "ran once");
        assert_eq!(runs[1].decision, "denied");
        assert_eq!(runs[1].exit_status, None, "never ran");
    });
}

/// Benchmark, not a test (run by bench/agent_clis.sh): per backend, 10
/// messages in one room to a CLI whose scripted model answers at once —
/// message → the agent typing (the first sign in the room) and message →
/// its reply, so the numbers are the town's and the CLI's, not a model's.
#[test]
#[ignore]
fn bench_agent_clis_with_a_scripted_model_message_to_typing_and_reply() {
    let kinds =
        std::env::var("NUKETOWN_BENCH_CLIS").unwrap_or_else(|_| "claude-code codex aider".into());
    for kind in kinds.split_whitespace() {
        let script = json!({ "steps": [{ "text": "ok" }] });
        let mut s = Scene::new(
            Options::default(),
            &format!("{{ type = \"{kind}\" }}"),
            script,
        );
        s.t.start_hall();
        s.clone_for_ada();
        let _bridge = s.bridge();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (mut typing, mut reply) = rt.block_on(async {
            let mut josh =
                Human::login(&s.server, "josh", "josh-pw", &s.t.path("josh-store")).await;
            let dm = dm_with_ada(&mut josh).await;
            let ada = format!("@{ADA}:localhost");
            let mut log = Vec::new();
            let (mut typing, mut reply) = (Vec::new(), Vec::new());
            for i in 0..10 {
                let before = Instant::now();
                let ev = say(&josh, &dm, &format!("message {i}")).await;
                answer(&s, &mut josh, &mut log, &ev).await;
                let replied = Instant::now();
                // Typing is a state, not a log: a client that syncs after it
                // ended never sees it. Such a message has no typing sample.
                let seen = josh.typing.lock().unwrap().clone();
                if let Some((_, _, at)) = seen.iter().find(|(room, who, at)| {
                    room == dm.as_str() && who.contains(&ada) && *at >= before
                }) {
                    typing.push(at.duration_since(before).as_secs_f64() * 1e3);
                }
                reply.push(replied.duration_since(before).as_secs_f64() * 1e3);
            }
            (typing, reply)
        });
        for (what, v) in [
            ("message->typing", &mut typing),
            ("message->reply", &mut reply),
        ] {
            assert!(!v.is_empty(), "no {what} sample");
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
            println!(
                "BENCH {kind} {what} over {} of 10 messages: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
                v.len(),
                pct(0.5),
                pct(0.95),
                v[v.len() - 1]
            );
        }
    }
}
