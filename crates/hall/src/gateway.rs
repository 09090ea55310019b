//! The credential gateway, run by the hall. The hall (root) holds the
//! town's sealing key, so it opens the agents' sealed credentials; the
//! gateway, which faces the agents' connections, runs as a system user of
//! its own (`hall.gateway.user`, never root, never an agent) as the hall's
//! child: `nuketown gateway`, given its configuration — credentials
//! included — as one line on its stdin, never in a file or its
//! environment. It answers with one JSON line per call on its stdout,
//! which the hall writes into the audit chain (event `credential`), counts
//! (usage, read back into the windows when the gateway starts again) and
//! publishes in `hall.gateway.runDir/usage/<agent>.json` for the agent's
//! bridge and `nuketown status`.
//!
//! Why a child and not a thread of the hall: a parser of agents' HTTP and
//! TLS is the largest attack surface the town has, and it should not run as
//! root. Why not a unit of its own: it would need the sealing key (root's)
//! or a copy of the secrets at rest.
//!
//! Kept in step every tick of the hall ([`sync`]): started when an agent
//! has credentials, given the new configuration when the town, a sealed
//! credential or the CA changes (`update`), started again if it died; pause
//! markers (`runDir/paused/<agent>`) follow the key store's.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use nuketown_town::credentials::{
    default_upstream, is_model_api, CA_BUNDLE, CA_CERT, GITHUB_HOSTS, PAUSED, USAGE,
};
use nuketown_town::Town;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};

use crate::audit::Record;
use crate::hall::Hall;
use crate::protocol::CallView;

/// The slot of the town's own secrets in the key store (no agent can be
/// named so: a Unix name starts with a letter).
const TOWN_SLOT: &str = "_town";
const CA_KEY: &str = "gateway-ca-key";
const CA_CERT_SEALED: &str = "gateway-ca-cert";
/// A day: the longest window a limit has.
const DAY_SECS: u64 = 24 * 3600;

/// What the gateway said about a call (its stdout, one JSON line each).
#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
enum Event {
    Call(CallView),
    #[serde(rename_all = "camelCase")]
    LimitReached {
        agent: String,
        credential: String,
        limit: String,
        #[serde(default)]
        on_limit: Value,
    },
}

/// (agent, credential) → (unix seconds, tokens) of each call in the last day.
type Usage = HashMap<(String, String), Vec<(u64, u64)>>;

/// The running gateway and what it was last told.
pub(crate) struct Running {
    child: Child,
    stdin: ChildStdin,
    /// SHA-256 of the configuration it was last given.
    digest: [u8; 32],
}

/// The hall's side of the gateway.
#[derive(Default)]
pub(crate) struct GatewayState {
    running: tokio::sync::Mutex<Option<Running>>,
    /// (agent, credential) → (unix seconds, tokens) of the last day's calls.
    usage: Mutex<Usage>,
    /// Whether the usage was read back from the audit log yet.
    seeded: Mutex<bool>,
    /// Whether the usage changed since it was last published.
    dirty: Mutex<bool>,
    /// The last error said (said once, not every tick).
    said: Mutex<String>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Requests and tokens of `calls` in the last `secs` before `now`.
fn window(calls: &[(u64, u64)], now: u64, secs: u64) -> (usize, u64) {
    calls
        .iter()
        .filter(|(at, _)| *at + secs > now)
        .fold((0, 0), |(n, t), (_, tokens)| (n + 1, t + tokens))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect()
}

/// A directory of root's with this mode (made if missing).
fn root_dir(dir: &Path, mode: u32) -> std::io::Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// Write a public file of root's by a fresh name and rename it in place.
fn publish(path: &Path, bytes: &[u8], mode: u32, gid: Option<u32>) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("new-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(bytes)?;
    if let Some(g) = gid {
        std::os::unix::fs::fchown(&f, Some(0), Some(g))?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

impl GatewayState {
    fn say(&self, what: String) {
        let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        if *said != what {
            tracing::error!("{what}");
            *said = what;
        }
    }
}

/// The town's CA for the gateway's HTTPS proxy: made once (`nuketown
/// gateway --make-ca` as the gateway would), sealed in the key store, its
/// certificate published in `runDir` (alone, and added to the system's
/// bundle) for the agents' tools.
fn town_ca(
    hall: &Hall,
    town: &Town,
    store: &nuketown_keys::Store,
) -> Result<(String, String), String> {
    let open = |name: &str| -> Result<Option<String>, String> {
        match store
            .credential(TOWN_SLOT, name)
            .map_err(|e| e.to_string())?
        {
            Some(v) => Ok(Some(
                String::from_utf8(unhex(&v).ok_or("the sealed CA is not hex")?)
                    .map_err(|e| e.to_string())?,
            )),
            None => Ok(None),
        }
    };
    let (cert, key) = match (open(CA_CERT_SEALED)?, open(CA_KEY)?) {
        (Some(c), Some(k)) => (c, k),
        _ => {
            let out = std::process::Command::new(&hall.cfg.nuketown)
                .args([
                    "gateway",
                    "--make-ca",
                    &format!("{} town CA", town.domain()),
                ])
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("{}: {e}", hall.cfg.nuketown.display()))?;
            let v: Value = serde_json::from_slice(&out.stdout)
                .map_err(|e| format!("the gateway made no CA: {e}"))?;
            let (Some(c), Some(k)) = (v["certPem"].as_str(), v["keyPem"].as_str()) else {
                return Err("the gateway made no CA".into());
            };
            store
                .put_credential(TOWN_SLOT, CA_KEY, hex(k.as_bytes()).as_bytes())
                .and_then(|_| {
                    store.put_credential(TOWN_SLOT, CA_CERT_SEALED, hex(c.as_bytes()).as_bytes())
                })
                .map_err(|e| e.to_string())?;
            tracing::info!("made the town's CA for the gateway's HTTPS proxy");
            (c.to_string(), k.to_string())
        }
    };
    let run = &town.hall.gateway.run_dir;
    root_dir(run, 0o755).map_err(|e| format!("{}: {e}", run.display()))?;
    let same_cert = std::fs::read(run.join(CA_CERT)).is_ok_and(|c| c == cert.as_bytes());
    publish(&run.join(CA_CERT), cert.as_bytes(), 0o644, None)
        .map_err(|e| format!("{}: {e}", run.join(CA_CERT).display()))?;
    let system = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ]
    .into_iter()
    .find(|p| Path::new(p).is_file());
    // Every tick asks: read the system's bundle again only when it, or the
    // town's CA, changed since the bundle was written.
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let written = modified(&run.join(CA_BUNDLE));
    if same_cert && written.is_some() && written >= system.and_then(|p| modified(Path::new(p))) {
        return Ok((cert, key));
    }
    let mut bundle = system
        .and_then(|p| std::fs::read(p).ok())
        .unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with(b"\n") {
        bundle.push(b'\n');
    }
    bundle.extend_from_slice(cert.as_bytes());
    publish(&run.join(CA_BUNDLE), &bundle, 0o644, None)
        .map_err(|e| format!("{}: {e}", run.join(CA_BUNDLE).display()))?;
    Ok((cert, key))
}

/// A systemd credential handed to the hall's unit, sealed into the store
/// (the next start finds it there even without the unit's credential).
fn systemd_credential(
    store: &nuketown_keys::Store,
    agent: &str,
    cname: &str,
    sd: &str,
) -> Result<(), String> {
    let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
        return Ok(());
    };
    let p = PathBuf::from(dir).join(sd);
    let Ok(secret) = std::fs::read(&p).map(zeroize::Zeroizing::new) else {
        return Ok(());
    };
    if !store.credential_is(agent, cname, &secret) {
        store
            .put_credential(agent, cname, &secret)
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

/// A credential whose source is a file (on NixOS, where sops-nix installs
/// it): sealed by the hall itself when it differs from the sealed copy, so
/// a switch that adds or changes one needs no round. Only a regular file of
/// root's, outside every agent's tree, is read (never through a link).
fn seal_file(
    store: &nuketown_keys::Store,
    town: &Town,
    agent: &str,
    cname: &str,
    src: &std::path::Path,
) -> Result<(), String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    if src.starts_with(&town.agents_dir) || src.starts_with(town.persist_dir.join("agents")) {
        return Err(format!(
            "{} lies in an agent's tree; refused",
            src.display()
        ));
    }
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(src)
    {
        Ok(f) => f,
        // Not there (yet): apply or sops-nix installs it; the store keeps what it had.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", src.display())),
    };
    let m = f.metadata().map_err(|e| e.to_string())?;
    if !m.is_file() || m.uid() != 0 || m.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is not a regular file only root writes; refused",
            src.display()
        ));
    }
    let mut secret = zeroize::Zeroizing::new(Vec::new());
    f.take(nuketown_keys::store::MAX_CREDENTIAL as u64 + 1024)
        .read_to_end(&mut secret)
        .map_err(|e| e.to_string())?;
    if !store.credential_is(agent, cname, &secret) {
        store
            .put_credential(agent, cname, &secret)
            .map_err(|e| e.to_string())?;
        tracing::info!("sealed {agent}'s credential {cname} from {}", src.display());
    }
    Ok(())
}

/// The gateway's whole configuration, secrets included (never logged).
fn config(hall: &Hall, town: &Town) -> Result<Value, String> {
    let store = hall.key_store(town)?;
    let (cert, key) = town_ca(hall, town, &store)?;
    let usage = hall
        .gateway
        .usage
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut agents = serde_json::Map::new();
    // Every agent, with credentials or not: the gateway names each caller
    // it refuses (an agent without this credential, not "uid N").
    for (name, agent) in town.host_agents() {
        let creds = town.credentials_of(name);
        let mut out = serde_json::Map::new();
        for (cname, c) in &creds {
            if let Some(sd) = &c.systemd_credential {
                if let Err(e) = systemd_credential(&store, name, cname, sd) {
                    hall.gateway
                        .say(format!("agents.{name}.credentials.{cname}: {e}"));
                }
            }
            if let Some(src) = c.source.as_deref().filter(|p| p.is_absolute()) {
                if let Err(e) = seal_file(&store, town, name, cname, src) {
                    hall.gateway
                        .say(format!("agents.{name}.credentials.{cname}.source: {e}"));
                }
            }
            let secret = match store.credential(name, cname) {
                Ok(Some(s)) => s,
                Ok(None) => {
                    hall.gateway.say(format!(
                        "agents.{name}.credentials.{cname} is not in the town's key store yet (`nuketown apply` seals it): the gateway refuses it"
                    ));
                    continue;
                }
                Err(e) => {
                    hall.gateway
                        .say(format!("agents.{name}.credentials.{cname}: {e}"));
                    continue;
                }
            };
            let secret = String::from_utf8_lossy(&secret).into_owned();
            let upstream_ca = match &c.upstream_ca {
                Some(p) => match std::fs::read_to_string(p) {
                    Ok(pem) => Some(pem),
                    Err(e) => {
                        hall.gateway.say(format!(
                            "agents.{name}.credentials.{cname}.upstreamCa {}: {e}",
                            p.display()
                        ));
                        continue;
                    }
                },
                None => None,
            };
            let hosts: Vec<String> = if c.api == "github" && c.hosts.is_empty() {
                GITHUB_HOSTS.iter().map(|h| h.to_string()).collect()
            } else {
                c.hosts.clone()
            };
            let upstream = c
                .upstream
                .clone()
                .or_else(|| default_upstream(&c.api).map(str::to_string));
            let used: Vec<Value> = usage
                .get(&(name.clone(), cname.clone()))
                .into_iter()
                .flatten()
                .map(|(at, tokens)| json!({"at": at, "tokens": tokens}))
                .collect();
            out.insert(
                cname.clone(),
                json!({
                    "api": c.api,
                    "secret": secret,
                    "upstream": upstream,
                    "hosts": hosts,
                    "paths": c.paths,
                    "models": if is_model_api(&c.api) { c.models.clone() } else { Vec::new() },
                    "header": c.header,
                    "scheme": c.scheme,
                    "limits": {
                        "requestsPerHour": c.limits.requests_per_hour,
                        "requestsPerDay": c.limits.requests_per_day,
                        "tokensPerHour": c.limits.tokens_per_hour,
                        "tokensPerDay": c.limits.tokens_per_day,
                    },
                    "onLimit": c.on_limit,
                    "upstreamCa": upstream_ca,
                    "used": used,
                }),
            );
        }
        agents.insert(
            agent.uid.to_string(),
            json!({
                "name": name,
                "egressRestricted": agent.network.egress.restricted(),
                "credentials": out,
            }),
        );
    }
    Ok(json!({
        "listen": format!("127.0.0.1:{}", town.hall.gateway.port),
        "agents": agents,
        "ca": {"certPem": cert, "keyPem": key},
        "pauseDir": town.hall.gateway.run_dir.join(PAUSED),
    }))
}

/// The pause markers the gateway reads: one per agent whose keys are
/// paused in the store (`nuketown keys pause` writes it at once; this puts
/// them back after a reboot and takes stale ones away).
fn sync_pauses(town: &Town, store: &nuketown_keys::Store) {
    let dir = town.hall.gateway.run_dir.join(PAUSED);
    if root_dir(&dir, 0o755).is_err() {
        return;
    }
    for (name, _) in town.host_agents() {
        let marker = dir.join(name);
        match (store.paused(name), marker.exists()) {
            (true, false) => {
                let _ = publish(&marker, b"paused\n", 0o644, None);
            }
            (false, true) => {
                let _ = std::fs::remove_file(&marker);
            }
            _ => {}
        }
    }
}

/// Read the last day's calls back from the audit log (once).
fn seed_usage(hall: &Hall) {
    let mut seeded = hall
        .gateway
        .seeded
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if *seeded {
        return;
    }
    *seeded = true;
    let Ok(records) = crate::audit::AuditLog::read(hall.audit_path()) else {
        return;
    };
    let since = now_secs().saturating_sub(DAY_SECS);
    let mut usage = hall.gateway.usage.lock().unwrap_or_else(|p| p.into_inner());
    for r in records {
        let Some(call) = r.credential else { continue };
        let Some(cred) = call.credential.clone() else {
            continue;
        };
        if !call.decision.starts_with("forwarded") {
            continue;
        }
        let at = crate::time::parse_rfc3339(&r.time).map_or(0, |ms| ms / 1000);
        if at >= since {
            usage.entry((call.agent.clone(), cred)).or_default().push((
                at,
                call.tokens_in.unwrap_or(0) + call.tokens_out.unwrap_or(0),
            ));
        }
    }
}

/// Publish each agent's usage (requests and tokens in the last hour and
/// day, per credential) in `runDir/usage/<agent>.json`, readable by the
/// agent's group (its bridge's `!resources`) and root (`nuketown status`).
fn publish_usage(hall: &Hall, town: &Town) {
    {
        let mut dirty = hall.gateway.dirty.lock().unwrap_or_else(|p| p.into_inner());
        if !*dirty {
            return;
        }
        *dirty = false;
    }
    let dir = town.hall.gateway.run_dir.join(USAGE);
    if root_dir(&dir, 0o755).is_err() {
        return;
    }
    let now = now_secs();
    let usage = hall
        .gateway
        .usage
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut per: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    for ((agent, cred), calls) in &usage {
        let ((rh, th), (rd, td)) = (window(calls, now, 3600), window(calls, now, DAY_SECS));
        per.entry(agent.clone()).or_default().insert(
            cred.clone(),
            json!({"requestsHour": rh, "tokensHour": th, "requestsDay": rd, "tokensDay": td}),
        );
    }
    for (name, agent) in town.host_agents() {
        let Some(creds) = per.remove(name) else {
            continue;
        };
        let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(agent.uid))
            .ok()
            .flatten()
            .map(|u| u.gid.as_raw());
        let text = serde_json::to_vec_pretty(&json!({"agent": name, "credentials": creds}))
            .unwrap_or_default();
        let _ = publish(&dir.join(format!("{name}.json")), &text, 0o640, gid);
    }
}

/// Keep the gateway in step with the town (called every tick).
pub(crate) async fn sync(hall: Arc<Hall>) {
    let hall = &hall;
    let Ok(loaded) = hall.loaded() else {
        return;
    };
    let town = &loaded.town;
    let mut running = hall.gateway.running.lock().await;
    if let Some(r) = running.as_mut() {
        if r.child.try_wait().ok().flatten().is_some() {
            hall.gateway
                .say("the credential gateway stopped; starting it again".into());
            *running = None;
        }
    }
    if !town.has_credentials() {
        if let Some(mut r) = running.take() {
            let _ = r.child.start_kill();
        }
        return;
    }
    if let Ok(store) = hall.key_store(town) {
        sync_pauses(town, &store);
    }
    seed_usage(hall);
    publish_usage(hall, town);
    let cfg = match config(hall, town) {
        Ok(c) => c,
        Err(e) => {
            hall.gateway
                .say(format!("the credential gateway is not running: {e}"));
            return;
        }
    };
    let line = zeroize::Zeroizing::new(cfg.to_string());
    let digest: [u8; 32] = Sha256::digest(line.as_bytes()).into();
    match running.as_mut() {
        Some(r) if r.digest == digest => {}
        Some(r) => {
            let msg = zeroize::Zeroizing::new(format!("{{\"update\":{}}}\n", line.as_str()));
            if r.stdin.write_all(msg.as_bytes()).await.is_ok() {
                r.digest = digest;
            } else {
                let _ = r.child.start_kill();
                *running = None;
            }
        }
        None => match spawn(hall, town, &line).await {
            Ok(mut r) => {
                r.digest = digest;
                *running = Some(r);
            }
            Err(e) => hall
                .gateway
                .say(format!("the credential gateway is not running: {e}")),
        },
    }
}

/// Start `nuketown gateway` as the gateway's user, give it its
/// configuration, and read what it says into the audit log.
async fn spawn(hall: &Arc<Hall>, town: &Town, line: &str) -> Result<Running, String> {
    let user = &town.hall.gateway.user;
    let Some(u) = nix::unistd::User::from_name(user).ok().flatten() else {
        return Err(format!(
            "its user {user} does not exist; `nuketown apply` makes it (hall.gateway.user)"
        ));
    };
    if u.uid.is_root() || town.agents.values().any(|a| a.uid == u.uid.as_raw()) {
        return Err(format!(
            "its user {user} is root or an agent; give it a user of its own"
        ));
    }
    let mut cmd = tokio::process::Command::new(&hall.cfg.nuketown);
    cmd.arg("gateway")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .uid(u.uid.as_raw())
        .gid(u.gid.as_raw())
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", hall.cfg.nuketown.display()))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let first = zeroize::Zeroizing::new(format!("{line}\n"));
    stdin
        .write_all(first.as_bytes())
        .await
        .map_err(|e| format!("writing its configuration: {e}"))?;
    let h = hall.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            heard(&h, &l);
        }
    });
    tracing::info!(
        "credential gateway started as {user} on 127.0.0.1:{}",
        town.hall.gateway.port
    );
    hall.gateway
        .said
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    Ok(Running {
        child,
        stdin,
        digest: [0; 32],
    })
}

/// One line from the gateway: a call into the audit chain and the usage.
fn heard(hall: &Hall, line: &str) {
    let event: Event = match serde_json::from_str(line) {
        Ok(e) => e,
        Err(_) => {
            // Its answers to `usage` and anything else: not audit records.
            tracing::debug!("gateway: {line}");
            return;
        }
    };
    let id = crate::protocol::new_id().unwrap_or_default();
    match event {
        Event::Call(call) => {
            let mut rec = Record::new(&id, "credential", &call.agent, call.uid);
            rec.target = call.credential.clone().unwrap_or_default();
            rec.argv = vec![call.method.clone(), format!("{}{}", call.host, call.path)];
            let forwarded = call.decision.starts_with("forwarded");
            let (decision, reason) = call
                .decision
                .split_once(": ")
                .unwrap_or((&call.decision, ""));
            rec.decision = match decision {
                "forwarded" | "error" => decision,
                _ => "denied",
            }
            .into();
            rec.reason = reason.to_string();
            rec.latency_ms = Some(call.ms as u64);
            if forwarded {
                if let Some(c) = &call.credential {
                    let tokens = call.tokens_in.unwrap_or(0) + call.tokens_out.unwrap_or(0);
                    let now = now_secs();
                    let mut usage = hall.gateway.usage.lock().unwrap_or_else(|p| p.into_inner());
                    let calls = usage.entry((call.agent.clone(), c.clone())).or_default();
                    calls.retain(|(at, _)| *at + DAY_SECS > now);
                    calls.push((now, tokens));
                    *hall.gateway.dirty.lock().unwrap_or_else(|p| p.into_inner()) = true;
                }
            }
            rec.credential = Some(call);
            hall.append(&rec);
        }
        Event::LimitReached {
            agent,
            credential,
            limit,
            on_limit,
        } => {
            let uid = hall
                .loaded()
                .ok()
                .and_then(|l| l.town.agents.get(&agent).map(|a| a.uid))
                .unwrap_or(0);
            let mut rec = Record::new(&id, "credential", &agent, uid);
            rec.target = credential.clone();
            rec.decision = "limit".into();
            rec.reason = format!(
                "{agent}'s credential {credential} reached its limit: {limit}{}",
                if on_limit.as_str() == Some("ask") {
                    format!(
                        " (it may ask a human for more: `nuketown ask credential {credential}`)"
                    )
                } else {
                    String::new()
                }
            );
            hall.append(&rec);
        }
    }
}

/// What `agent` used of `credential` in the last hour and day, in words.
pub(crate) fn used_text(hall: &Hall, agent: &str, credential: &str) -> String {
    let now = now_secs();
    let usage = hall.gateway.usage.lock().unwrap_or_else(|p| p.into_inner());
    let calls = usage
        .get(&(agent.to_string(), credential.to_string()))
        .cloned()
        .unwrap_or_default();
    let ((rh, th), (rd, td)) = (window(&calls, now, 3600), window(&calls, now, DAY_SECS));
    format!("{rh} requests and {th} tokens in the last hour; {rd} requests and {td} tokens in the last day")
}

/// Stop the gateway (the hall is stopping).
pub(crate) async fn stop(hall: &Hall) {
    if let Some(mut r) = hall.gateway.running.lock().await.take() {
        let _ = r.child.start_kill();
        let _ = r.child.wait().await;
    }
}

/// Give `agent`'s credential `credential` this much more until the day's
/// window passes (a human approved it). False when no gateway runs.
pub(crate) async fn grant_more(
    hall: &Hall,
    agent: &str,
    credential: &str,
    requests: u64,
    tokens: u64,
) -> bool {
    let mut running = hall.gateway.running.lock().await;
    let Some(r) = running.as_mut() else {
        return false;
    };
    let msg = json!({"grantMore": {"agent": agent, "credential": credential, "requests": requests, "tokens": tokens}});
    r.stdin
        .write_all(format!("{msg}\n").as_bytes())
        .await
        .is_ok()
}
