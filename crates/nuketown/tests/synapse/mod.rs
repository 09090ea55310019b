//! A real Matrix homeserver (Synapse, sqlite, 127.0.0.1 only) for tests, and a
//! human's Matrix client. Synapse comes from `scripts/deps.sh` (a venv at
//! /opt/synapse-venv, or NUKETOWN_SYNAPSE_VENV).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::events::room::member::OriginalSyncRoomMemberEvent;
use matrix_sdk::ruma::events::room::message::{
    MessageType, OriginalSyncRoomMessageEvent, Relation,
};
use matrix_sdk::ruma::events::typing::SyncTypingEvent;
use matrix_sdk::{Client, Room};
use nuketown_chat::matrix_sdk;
use tokio::sync::mpsc;

pub const SECRET: &str = "nuketown-test-registration-secret";

pub fn venv() -> PathBuf {
    std::env::var_os("NUKETOWN_SYNAPSE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/synapse-venv"))
}

pub struct Synapse {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Synapse {
    /// Configure and start a homeserver in `dir`.
    pub fn start(dir: &Path) -> Synapse {
        let python = venv().join("bin/python");
        assert!(
            python.exists(),
            "Synapse is not installed at {} (scripts/deps.sh installs it)",
            venv().display()
        );
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let d = dir.display();
        let limit = "{per_second: 1000, burst_count: 1000}";
        let config = format!(
            "server_name: localhost\npid_file: {d}/homeserver.pid\n\
listeners:\n  - port: {port}\n    bind_addresses: ['127.0.0.1']\n    type: http\n    tls: false\n    x_forwarded: false\n    resources:\n      - names: [client]\n        compress: false\n\
database:\n  name: sqlite3\n  args:\n    database: {d}/homeserver.db\n\
media_store_path: {d}/media\nsigning_key_path: {d}/localhost.signing.key\n\
registration_shared_secret: {SECRET}\nmacaroon_secret_key: nuketown-test-macaroon\nform_secret: nuketown-test-form\n\
report_stats: false\ntrusted_key_servers: []\nsuppress_key_server_warning: true\nenable_metrics: false\n\
rc_message: {limit}\nrc_registration: {limit}\nrc_admin_redaction: {limit}\n\
rc_login:\n  address: {limit}\n  account: {limit}\n  failed_attempts: {limit}\n\
rc_joins:\n  local: {limit}\n  remote: {limit}\nrc_joins_per_room: {limit}\n\
rc_invites:\n  per_room: {limit}\n  per_user: {limit}\n  per_issuer: {limit}\n\
rc_key_requests: {limit}\nrc_3pid_validation: {limit}\n"
        );
        std::fs::write(dir.join("homeserver.yaml"), config).unwrap();
        let keys = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(dir.join("homeserver.yaml"))
            .arg("--generate-keys")
            .output()
            .unwrap();
        assert!(
            keys.status.success(),
            "synapse --generate-keys: {}",
            String::from_utf8_lossy(&keys.stderr)
        );
        let mut s = Synapse {
            dir: dir.to_path_buf(),
            port,
            child: None,
        };
        s.up();
        s
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Start the server process and wait (bounded) for /health.
    pub fn up(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("synapse.log"))
            .unwrap();
        let child = Command::new(venv().join("bin/python"))
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(self.dir.join("homeserver.yaml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.healthy() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "synapse exited with {status}; see {}/synapse.log",
                    self.dir.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "synapse did not become healthy; see {}/synapse.log",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop the server process (the data stays).
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200")
    }

    /// Register a Matrix user (not an admin).
    pub fn register(&self, user: &str, password: &str) {
        let o = Command::new(venv().join("bin/register_new_matrix_user"))
            .args([
                "-u",
                user,
                "-p",
                password,
                "--no-admin",
                "-k",
                SECRET,
                &self.url(),
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "register {user}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        self.down();
    }
}

/// A message seen by a test client: sender, body, and the event it replies to.
#[derive(Debug, Clone)]
pub struct Seen {
    pub event_id: String,
    pub sender: String,
    pub body: String,
    pub reply_to: Option<String>,
    /// Sent as `m.notice` (a bot's own words: a bridge's command answers and notes).
    pub notice: bool,
}

/// (room id, who is typing, when this client saw it).
pub type TypingLog = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<String>, Instant)>>>;

/// A human's Matrix client that records every text message it sees.
pub struct Human {
    pub client: Client,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    /// (room id, user id, membership) of every membership change this client has seen.
    pub joins: std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
    /// (room id, who is typing, when this client saw it) of every typing notice.
    pub typing: TypingLog,
    settings: SyncSettings,
}

impl Human {
    pub async fn login(server: &Synapse, user: &str, password: &str, store: &Path) -> Human {
        let client = Client::builder()
            .homeserver_url(server.url())
            .sqlite_store(store, None)
            .build()
            .await
            .unwrap();
        client
            .matrix_auth()
            .login_username(user, password)
            .send()
            .await
            .unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        client.add_event_handler(move |ev: OriginalSyncRoomMessageEvent| {
            let tx = tx.clone();
            async move {
                let (body, notice) = match &ev.content.msgtype {
                    MessageType::Text(t) => (Some(t.body.clone()), false),
                    MessageType::Notice(n) => (Some(n.body.clone()), true),
                    _ => (None, false),
                };
                if let Some(body) = body {
                    let reply_to = match &ev.content.relates_to {
                        Some(Relation::Reply(r)) => Some(r.in_reply_to.event_id.to_string()),
                        _ => None,
                    };
                    let _ = tx.send(Seen {
                        event_id: ev.event_id.to_string(),
                        sender: ev.sender.to_string(),
                        body,
                        reply_to,
                        notice,
                    });
                }
            }
        });
        let joins = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let j = joins.clone();
        client.add_event_handler(move |ev: OriginalSyncRoomMemberEvent, room: Room| {
            let j = j.clone();
            async move {
                j.lock().unwrap().push((
                    room.room_id().to_string(),
                    ev.state_key.to_string(),
                    ev.content.membership.to_string(),
                ));
            }
        });
        let typing = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let ty = typing.clone();
        client.add_event_handler(move |ev: SyncTypingEvent, room: Room| {
            let ty = ty.clone();
            async move {
                ty.lock().unwrap().push((
                    room.room_id().to_string(),
                    ev.content.user_ids.iter().map(|u| u.to_string()).collect(),
                    Instant::now(),
                ));
            }
        });
        let mut h = Human {
            client,
            seen: rx,
            joins,
            typing,
            settings: SyncSettings::default().timeout(Duration::from_millis(500)),
        };
        h.sync().await;
        h
    }

    pub async fn sync(&mut self) {
        let r = self.client.sync_once(self.settings.clone()).await.unwrap();
        self.settings = self.settings.clone().token(r.next_batch);
    }

    /// Sync until `done` holds (bounded).
    pub async fn sync_until(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if done(self) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.sync().await;
        }
    }

    /// Sync until a message from `sender` replying to `event` arrives; returns it.
    pub async fn reply_to(&mut self, sender: &str, event: &str, log: &mut Vec<Seen>) -> Seen {
        self.wait_seen(
            log,
            0,
            &format!("a reply from {sender} to {event}"),
            Duration::from_secs(90),
            |s| s.sender == sender && s.reply_to.as_deref() == Some(event),
        )
        .await
    }

    /// Sync, recording into `log`, until a message at index `after` or
    /// later is `wanted`, and return it; fail naming `what` after `within`.
    pub async fn wait_seen(
        &mut self,
        log: &mut Vec<Seen>,
        after: usize,
        what: &str,
        within: Duration,
        wanted: impl Fn(&Seen) -> bool,
    ) -> Seen {
        let deadline = Instant::now() + within;
        loop {
            while let Ok(s) = self.seen.try_recv() {
                log.push(s);
            }
            if let Some(s) = log.iter().skip(after).find(|s| wanted(s)) {
                return s.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; seen: {log:#?}"
            );
            self.sync().await;
        }
    }

    /// Whether `user` has joined room `room`, as far as this client has seen.
    pub fn has_joined(&self, room: &matrix_sdk::ruma::RoomId, user: &str) -> bool {
        self.membership_seen(room, user, "join")
    }

    /// Whether this client has seen `user`'s membership in `room` become `state`.
    pub fn membership_seen(
        &self,
        room: &matrix_sdk::ruma::RoomId,
        user: &str,
        state: &str,
    ) -> bool {
        self.joins
            .lock()
            .unwrap()
            .iter()
            .any(|(r, u, m)| r == room.as_str() && u == user && m == state)
    }

    pub fn room(&self, id: &matrix_sdk::ruma::RoomId) -> Room {
        self.client.get_room(id).unwrap()
    }
}
