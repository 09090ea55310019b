//! Red team: an approver's answer must land on the request it was meant for.
//!
//! Each test plays a hostile agent against a real approver — `nuketown
//! approvals watch` on a pipe and on a real pseudo-terminal, `nuketown
//! approvals desktop` with real zenity dialogs under Xvfb, `nuketown
//! approvals matrix` in a room of a real Synapse — with the real hall, real
//! sudo and real users. The agent's move is always the same: get request A on
//! the human's screen, withdraw it (its sudo is killed, the hall marks it
//! cancelled) and at once ask B, so the keystroke, click or reaction the human
//! meant for A arrives while B is shown. B must not be decided by it, A must
//! not run; and beside each attack, the legitimate use: a human who reads B
//! and answers after the settle time decides exactly B.
//!
//! Needs root; the desktop test needs Xvfb, zenity and xdotool, the Matrix
//! test Synapse (scripts/deps.sh installs them; they skip with a message).

mod hall_fixture;
mod synapse;
mod xvfb;

use std::fs;
use std::io::Write;
use std::process::{Child, ChildStdin, Stdio};
use std::time::{Duration, Instant};

use hall_fixture::*;
use nuketown_hall::protocol::RequestView;

/// The agent's script: ask for `a` in the background, and when the test
/// writes a line to the FIFO `go`, withdraw it — kill its sudo — and at once
/// ask for `b`. `setsid` gives sudo a process group of its own, so it passes
/// the agent's SIGTERM on to the waiting entry point (sudo does not relay a
/// signal from its own process group), which then goes away.
fn withdraw_and_replace(a: &str, b: &str) -> String {
    format!("rm -f go && mkfifo go && {{ setsid sudo {a} & p=$!; read x < go; kill $p; wait $p; sudo {b}; }}")
}

/// Tell the agent to withdraw its first request and ask the second.
fn go(t: &TestTown) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(t.home(ADA).join("go"))
        .unwrap();
    f.write_all(b"\n").unwrap();
}

fn short(r: &RequestView) -> &str {
    &r.id[..8]
}

/// What the hall says is pending now, as the human lists it.
fn pending(t: &TestTown) -> String {
    let o = t.human(HUMAN, "approvals list --json");
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

/// `nuketown approvals ARGS watch` as the human, its keyboard a pipe.
fn watch_on_a_pipe(t: &TestTown, args: &str) -> (Child, Stream, ChildStdin) {
    let mut watch = t
        .nuketown_as(HUMAN, &format!("approvals {args} watch"))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = Stream::new(watch.stdout.take().unwrap());
    let keys = watch.stdin.take().unwrap();
    out.until("(Ctrl-C to stop)\n");
    (watch, out, keys)
}

fn decision(t: &TestTown, id: &str) -> (String, String) {
    let r = t.audit_of(id);
    (
        r.decision,
        r.decided_by.map(|b| b.channel).unwrap_or_default(),
    )
}

/// The terminal, with the default settle time: the human's `y` for A lands
/// just after the agent swapped in B. It is thrown away; B is asked only
/// after the settle time, names itself, and a `y` typed then approves B alone.
#[test]
fn a_keystroke_meant_for_a_withdrawn_request_never_approves_its_replacement() {
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    let (watch, mut out, mut keys) = watch_on_a_pipe(&t, "");
    let mut w = t.watch();
    let (ran_a, ran_b) = (t.path("ran-a"), t.path("ran-b"));
    let agent = t.spawn_agent(
        ADA,
        &withdraw_and_replace(
            &format!("touch {}", ran_a.display()),
            &format!("touch {}", ran_b.display()),
        ),
    );
    let a = next_request(&mut w);
    out.until(&format!("request {} — approve? ", short(&a)));

    // The human is about to press y for A; the agent swaps A for B.
    go(&t);
    let b = next_request(&mut w);
    assert_ne!(a.id, b.id);
    let closed = out.until("this question is closed");
    assert!(
        closed.contains(&format!("request {} was cancelled", short(&a))),
        "{closed}"
    );
    out.until(&format!("request {} from \"{ADA}\"", short(&b)));
    type_line(&mut keys, "y"); // meant for A, lands while B is on screen
    let asked = out.until(&format!("request {} — approve? ", short(&b)));
    assert!(
        asked.contains("(ignored what was typed before this question"),
        "the early y was thrown away, visibly:\n{asked}"
    );
    assert!(pending(&t).contains(&b.id), "B is still pending");
    assert!(!ran_a.exists() && !ran_b.exists());

    // The human read B and answers it: exactly B is approved.
    type_line(&mut keys, "y");
    out.until(&format!("approved {}", short(&b)));
    let o = finish(agent);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(ran_b.exists(), "B ran");
    assert!(!ran_a.exists(), "A never ran");
    assert_eq!(decision(&t, &a.id).0, "cancelled");
    assert_eq!(decision(&t, &b.id), ("approved".into(), "terminal".into()));
    drop(keys);
    assert!(finish(watch).status.success());
}

/// Type-ahead: what was typed before a request was shown never decides it —
/// neither keys typed while nothing was pending, nor a second `y` typed with
/// the first, which would otherwise answer the next request in the queue.
#[test]
fn type_ahead_never_decides_a_request() {
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    let (watch, mut out, mut keys) = watch_on_a_pipe(&t, "--settle-ms 1500");
    let mut w = t.watch();
    type_line(&mut keys, "y");
    type_line(&mut keys, "10m");
    let (ran_a, ran_b) = (t.path("ran-a"), t.path("ran-b"));
    let ada = t.spawn_agent(ADA, &format!("sudo touch {}", ran_a.display()));
    let a = next_request(&mut w);
    let asked = out.until(&format!("request {} — approve? ", short(&a)));
    assert!(
        asked.contains("(ignored what was typed before this question"),
        "{asked}"
    );
    assert!(pending(&t).contains(&a.id));
    assert!(!ran_a.exists());

    // vox asks too; the human answers A with a double y.
    let vox = t.spawn_agent(VOX, &format!("sudo touch {}", ran_b.display()));
    let b = next_request(&mut w);
    keys.write_all(b"y\ny\n").unwrap();
    keys.flush().unwrap();
    out.until(&format!("approved {}", short(&a)));
    assert!(finish(ada).status.success());
    assert!(ran_a.exists());
    let asked = out.until(&format!("request {} — approve? ", short(&b)));
    assert!(
        asked.contains(&format!("request {} from \"{VOX}\"", short(&b))),
        "{asked}"
    );
    assert!(
        asked.contains("(ignored what was typed before this question"),
        "{asked}"
    );
    assert!(
        pending(&t).contains(&b.id),
        "the second y did not approve B"
    );
    type_line(&mut keys, "n");
    out.until(&format!("denied {}", short(&b)));
    assert_eq!(finish(vox).status.code(), Some(1));
    assert!(!ran_b.exists());
    assert_eq!(decision(&t, &b.id), ("denied".into(), "terminal".into()));
    drop(keys);
    assert!(finish(watch).status.success());
}

/// On a real terminal, half a line typed before the question (`y` without
/// Enter) sits in the terminal's own input buffer, where no read sees it:
/// the question flushes it (tcflush), so the Enter typed afterwards is an
/// empty answer, not a yes.
#[test]
fn a_terminal_flushes_what_was_typed_before_the_question() {
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = fs::File::from(pty.slave);
    let watch = t
        .nuketown_as(HUMAN, "approvals --settle-ms 2000 watch")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave))
        .spawn()
        .unwrap();
    let master = fs::File::from(pty.master);
    let mut out = Stream::new(master.try_clone().unwrap());
    let mut keys = master;
    out.until("(Ctrl-C to stop)");
    let mut w = t.watch();
    let ran = t.path("ran-a");
    let agent = t.spawn_agent(ADA, &format!("cd / && sudo touch {}", ran.display()));
    let a = next_request(&mut w);
    out.until(&format!("request {} from", short(&a)));
    keys.write_all(b"y").unwrap(); // no Enter yet: the terminal holds it
    out.until(&format!("request {} — approve? ", short(&a)));
    keys.write_all(b"\n").unwrap();
    out.until(&format!("request {} — answer y, n", short(&a)));
    assert!(pending(&t).contains(&a.id), "Enter alone decided nothing");
    assert!(!ran.exists());
    keys.write_all(b"y\n").unwrap();
    out.until(&format!("approved {}", short(&a)));
    assert!(finish(agent).status.success());
    assert!(ran.exists());
    keys.write_all(b"\x04").unwrap(); // ^D: the human's input ends, so does watch
    assert!(finish(watch).status.success());
}

/// The desktop: a click that lands on B's dialog within the settle time of
/// its appearing (the click meant for A's dialog, which the agent withdrew)
/// decides nothing, and B's dialog comes back; A's dialog closed when A was
/// withdrawn. Once B's answers count, Alt+A approves B alone.
#[test]
fn a_click_meant_for_a_withdrawn_dialog_never_approves_its_replacement() {
    use xvfb::*;
    if !tools_present() {
        return;
    }
    let Some(x) = Xvfb::start() else { return };
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    let mut desktop = t
        .nuketown_as(HUMAN, "approvals --settle-ms 2000 desktop")
        .env("DISPLAY", &x.display)
        .spawn()
        .unwrap();
    let mut log = Stream::new(desktop.stdout.take().unwrap());
    log.until("watching for requests as the desktop approver");
    let mut w = t.watch();
    let (ran_a, ran_b) = (t.path("ran-a"), t.path("ran-b"));
    let agent = t.spawn_agent(
        ADA,
        &withdraw_and_replace(
            &format!("touch {}", ran_a.display()),
            &format!("touch {}", ran_b.display()),
        ),
    );
    let a = next_request(&mut w);
    log.until(&format!("request {}: answers count from now", short(&a)));
    x.window(&format!("request {}", short(&a)));

    go(&t);
    let b = next_request(&mut w);
    let closed = log.until("its dialog is closed");
    assert!(
        closed.contains(&format!("request {} was cancelled", short(&a))),
        "{closed}"
    );
    let deadline = Instant::now() + DEADLINE;
    while x
        .try_xdotool(&["search", "--name", &format!("request {}", short(&a))])
        .0
    {
        assert!(Instant::now() < deadline, "A's dialog never closed");
    }
    log.until(&format!("request {}: dialog started", short(&b)));
    let started = Instant::now();
    log.until(&format!("request {}: dialog shown", short(&b)));
    let appeared = started.elapsed();
    let win = x.window(&format!("request {}", short(&b)));
    x.keys(&win, &["alt+a"]); // the click meant for A
    let clicked = started.elapsed() - appeared;
    eprintln!("zenity took {appeared:?} to appear; the key landed {clicked:?} after that");
    let said = log.until("showing it again");
    assert!(
        said.contains(&format!("request {}: answered", short(&b))) && said.contains("too soon"),
        "{said}"
    );
    assert!(pending(&t).contains(&b.id), "B is still pending");
    assert!(!ran_a.exists() && !ran_b.exists());

    // B's dialog is back; once its answers count, Alt+A approves B.
    log.until(&format!("request {}: dialog shown", short(&b)));
    log.until(&format!("request {}: answers count from now", short(&b)));
    x.answer(&format!("request {}", short(&b)), &["alt+a"]);
    let o = finish(agent);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(ran_b.exists() && !ran_a.exists());
    assert_eq!(decision(&t, &a.id).0, "cancelled");
    assert_eq!(decision(&t, &b.id), ("approved".into(), "desktop".into()));
    stop_approver(desktop);
}

mod matrix {
    use super::*;
    use matrix_sdk::ruma::api::client::room::create_room::v3::Request as CreateRoom;
    use matrix_sdk::ruma::events::reaction::ReactionEventContent;
    use matrix_sdk::ruma::events::relation::Annotation;
    use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
    use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId};
    use matrix_sdk::Room;
    use nuketown_chat::matrix_sdk;
    use synapse::{Human, Seen, Synapse};

    pub const HALL_BOT: &str = "@hall:localhost";

    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A room with the human (josh) and the town's Matrix approver in it.
    pub struct MatrixRoom {
        _server: Synapse,
        pub josh: Human,
        pub room: Room,
        pub log: Vec<Seen>,
        _approver: Kill,
    }

    impl MatrixRoom {
        pub async fn new(t: &mut TestTown) -> MatrixRoom {
            let server = Synapse::start(&t.path("synapse"));
            for (u, p) in [("hall", "hall-pw"), ("josh", "josh-pw")] {
                server.register(u, p);
            }
            fs::write(t.path("hall.pw"), "hall-pw\n").unwrap();
            let mut josh = Human::login(&server, "josh", "josh-pw", &t.path("josh-store")).await;
            let room = josh.client.create_room(CreateRoom::new()).await.unwrap();
            let room_id: OwnedRoomId = room.room_id().to_owned();
            room.invite_user_by_id(&matrix_sdk::ruma::UserId::parse(HALL_BOT).unwrap())
                .await
                .unwrap();
            let mut town = fs::read_to_string(&t.town).unwrap();
            town.push_str(&format!(
                "\n[hall.matrix]\nenable = true\nhomeserver = \"{}\"\nuserId = \"{HALL_BOT}\"\npasswordFile = \"{}\"\nroom = \"{room_id}\"\napprovers = [\"@josh:localhost\"]\n",
                server.url(),
                t.path("hall.pw").display()
            ));
            fs::write(&t.town, town).unwrap();
            t.start_hall();
            let log_file = fs::File::create(t.path("matrix-approver.log")).unwrap();
            // The default settle time.
            let approver = Kill(
                std::process::Command::new(&t.nuketown)
                    .args(["approvals", "matrix", "--store"])
                    .arg(t.path("matrix-store"))
                    .arg("--town")
                    .arg(&t.town)
                    .env("NUKETOWN_APPROVER_SOCKET", t.approver_socket())
                    .env_remove("NUKETOWN_APPROVER_SETTLE_MS")
                    .env("NUKETOWN_LOG", "info")
                    .stdout(log_file.try_clone().unwrap())
                    .stderr(log_file)
                    .spawn()
                    .unwrap(),
            );
            josh.sync_until("the hall to join", |h| h.has_joined(&room_id, HALL_BOT))
                .await;
            MatrixRoom {
                _server: server,
                josh,
                room,
                log: Vec::new(),
                _approver: approver,
            }
        }

        /// The hall bot's next message (after the last one returned) that satisfies `what`.
        pub async fn bot_says(&mut self, what: impl Fn(&str) -> bool, hint: &str) -> Seen {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                while let Ok(s) = self.josh.seen.try_recv() {
                    self.log.push(s);
                }
                if let Some(i) = self
                    .log
                    .iter()
                    .position(|s| s.sender == HALL_BOT && what(&s.body))
                {
                    return self.log.remove(i);
                }
                assert!(
                    Instant::now() < deadline,
                    "the hall bot never said {hint}: {:?}",
                    self.log.iter().map(|s| &s.body).collect::<Vec<_>>()
                );
                self.josh.sync().await;
            }
        }

        /// The announcement of request `r`.
        pub async fn announcement(&mut self, r: &RequestView) -> (OwnedEventId, String) {
            let head = format!("🔐 request {}:", short(r));
            let s = self.bot_says(|b| b.starts_with(&head), &head).await;
            (OwnedEventId::try_from(s.event_id.as_str()).unwrap(), s.body)
        }

        pub async fn react(&self, ev: &OwnedEventId, key: &str) -> OwnedEventId {
            self.room
                .send(ReactionEventContent::new(Annotation::new(
                    ev.clone(),
                    key.into(),
                )))
                .await
                .unwrap()
                .response
                .event_id
        }

        pub async fn say(&self, text: &str) {
            self.room
                .send(RoomMessageEventContent::text_plain(text))
                .await
                .unwrap();
        }

        /// Reply `verb ID` until the bot stops saying it came too soon; what it said last.
        pub async fn answer_when_read(&mut self, r: &RequestView, verb: &str) -> String {
            let id = short(r).to_string();
            loop {
                self.say(&format!("{verb} {id}")).await;
                let said = self
                    .bot_says(
                        |b| {
                            b.contains(&format!("request {id}"))
                                && (b.contains("too soon")
                                    || b.contains(" was ")
                                    || b.contains("could not"))
                        },
                        "an answer",
                    )
                    .await;
                if !said.body.contains("too soon") {
                    return said.body;
                }
            }
        }
    }
}

/// Matrix: a ✅ on A's message (or `approve A`) after the agent swapped A for
/// B decides nothing; a ✅ on B's message sent within the settle time of it
/// being posted decides nothing; every warning the hall attached is in the
/// message, escaped; a reply after the settle time decides exactly B.
#[test]
fn matrix_answers_bind_to_the_request_their_message_announced() {
    if !synapse::venv().join("bin/python").exists() {
        eprintln!("SKIPPING: Synapse is not installed (scripts/deps.sh installs it)");
        return;
    }
    let mut t = TestTown::new(Options::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut m = matrix::MatrixRoom::new(&mut t).await;
        let mut w = t.watch();
        let (ran_a, ran_b) = (t.path("ran-a"), t.path("ran-b"));
        let agent = t.spawn_agent(
            ADA,
            &withdraw_and_replace(
                &format!("touch {}", ran_a.display()),
                &format!("touch {}", ran_b.display()),
            ),
        );
        let a = next_request(&mut w);
        let (ev_a, _) = m.announcement(&a).await;
        go(&t);
        let b = next_request(&mut w);
        m.bot_says(
            |s| s.contains(&format!("request {} was cancelled", short(&a))),
            "A was cancelled",
        )
        .await;
        let (ev_b, _) = m.announcement(&b).await;
        // At once: a ✅ on B's message, then on A's, then `approve A`.
        m.react(&ev_b, "✅").await;
        let said = m
            .bot_says(
                |s| s.contains(&format!("request {}", short(&b))) && s.contains("too soon"),
                "B's reaction came too soon",
            )
            .await;
        assert!(said.body.contains("nothing was decided"), "{}", said.body);
        m.react(&ev_a, "✅").await;
        m.bot_says(
            |s| {
                s.contains(&format!("request {} is no longer pending", short(&a)))
                    && s.contains("cancelled")
            },
            "A is no longer pending",
        )
        .await;
        m.say(&format!("approve {}", short(&a))).await;
        m.bot_says(
            |s| s.contains(&format!("request {} is no longer pending", short(&a))),
            "A is still not pending",
        )
        .await;
        assert!(pending(&t).contains(&b.id), "B is still pending");
        assert!(!ran_a.exists() && !ran_b.exists());

        // The human read B: a reply after the settle time approves B alone.
        let said = m.answer_when_read(&b, "approve").await;
        assert!(said.contains("was approved"), "{said}");
        let o = finish(agent);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(ran_b.exists() && !ran_a.exists());
        assert_eq!(decision(&t, &a.id).0, "cancelled");
        assert_eq!(
            decision(&t, &b.id),
            ("approved".into(), "matrix:@josh:localhost".into())
        );

        // Warnings: the agent's own program, an argument with a terminal escape.
        let agent = t.spawn_agent(
            ADA,
            "cp /bin/true ./true && sudo ./true \"$(printf 'x\\033[2Jy')\" ./true",
        );
        let r = next_request(&mut w);
        assert!(!r.warnings.is_empty() && r.agent_can_write && !r.grantable);
        let (_, body) = m.announcement(&r).await;
        for warning in &r.warnings {
            let shown = nuketown_town::display::clean(warning);
            assert!(body.contains(&shown), "missing {shown:?} in\n{body}");
        }
        assert!(
            body.contains(&nuketown_town::display::show_argv(&r.argv)),
            "{body}"
        );
        assert!(body.contains(r#""x\u{1b}[2Jy""#), "{body}");
        assert!(body.contains("only a human may decide"), "{body}");
        assert!(
            !body.contains('\x1b'),
            "no raw escape reaches the room: {body:?}"
        );
        let said = m.answer_when_read(&r, "deny").await;
        assert!(said.contains("was denied"), "{said}");
        assert_eq!(finish(agent).status.code(), Some(1));
        drop(m);
    });
}

/// `nuketown audit` and `approvals list` print agent text escaped, and the
/// list shows every warning and fact the hall sent.
#[test]
fn agent_text_reaches_the_terminal_escaped() {
    let mut t = TestTown::new(Options::default());
    t.start_hall();
    let mut w = t.watch();
    let agent = t.spawn_agent(
        ADA,
        "mkdir -p \"$(printf 'd\\033]0;x\\007')\" && cd d* && cp /bin/true ./true && sudo ./true \"$(printf '\\302\\233 31m')\"",
    );
    let r = next_request(&mut w);
    let listed = stdout(&t.human(HUMAN, "approvals list"));
    let json = stdout(&t.human(HUMAN, "approvals list --json"));
    assert!(t
        .human(HUMAN, &format!("approvals deny {}", r.id))
        .status
        .success());
    assert_eq!(finish(agent).status.code(), Some(1));
    let audit = stdout(&t.human(HUMAN, "audit"));
    let audit_json = stdout(&t.human(HUMAN, "audit --json"));
    for (what, text) in [
        ("list", &listed),
        ("list --json", &json),
        ("audit", &audit),
        ("audit --json", &audit_json),
    ] {
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && nuketown_town::display::is_unsafe_char(c)),
            "{what} printed a raw control character: {text:?}"
        );
    }
    for warning in &r.warnings {
        let shown = nuketown_town::display::clean(warning);
        assert!(listed.contains(&format!("WARNING  {shown}")), "{listed}");
        assert!(audit.contains(&format!("WARNING  {shown}")), "{audit}");
    }
    assert!(listed.contains(r#"\u{1b}]0;x\u{7}"#), "{listed}");
    assert!(audit.contains(r#"in       ""#), "{audit}");
    let v: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(v["id"], r.id.as_str());
    assert_eq!(
        v["argv"][1], "\u{9b} 31m",
        "the JSON still reads back exactly"
    );
}
