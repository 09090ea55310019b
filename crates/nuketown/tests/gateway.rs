//! The town's credential gateway end to end: the real town hall runs the
//! real gateway (`nuketown gateway`, as a system user of its own) with ada's
//! credentials sealed in the town's key store; the real claude-code (npm)
//! runs as ada against a scripted model over HTTPS that answers 401 to any
//! request without the town's key; git over HTTPS and an API call reach a
//! GitHub-like forge (the real `git http-backend` behind HTTPS, refusing
//! any request without the town's token) through the gateway's proxy.
//! Nothing ada can read holds the key or the token; vox and the human
//! cannot use them; a limit is a clear error in the CLI and a human's yes
//! (`nuketown ask credential`) raises it; `nuketown keys pause` stops it at
//! once; every call is in the audit chain.
//!
//! The stand-ins are the upstreams: a scripted model (tests/scripted_model)
//! and a scripted forge (tests/forge) — hence `scripted` in the names.
//! Needs root, claude-code (scripts/deps.sh), git, curl and openssl.

mod hall_fixture;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hall_fixture::{next_request, stderr, stdout, Options, TestTown, ADA, HUMAN, VOX};
use serde_json::Value;

/// The gateway's user in these tests (made and removed here).
const GW_USER: &str = "nktgateway";

/// The key and the token the town holds; the agent's tools never see them.
const KEY: &str = "sk-ant-town-7f3c9d2e1b4a-never-in-the-home";
const TOKEN: &str = "ghs_town_5e8d1c2b9a7f3e6d4c1b";

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct GatewayUser;
impl GatewayUser {
    fn make() -> GatewayUser {
        GatewayUser::remove();
        let o = Command::new("useradd")
            .args([
                "--system",
                "-M",
                "-d",
                "/nonexistent",
                "-s",
                "/usr/sbin/nologin",
                GW_USER,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        GatewayUser
    }
    fn remove() {
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", GW_USER])
            .output();
        let _ = Command::new("userdel").arg(GW_USER).output();
        let _ = Command::new("groupdel").arg(GW_USER).output();
    }
}
impl Drop for GatewayUser {
    fn drop(&mut self) {
        GatewayUser::remove();
    }
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {}{}", stdout(&o), stderr(&o));
    stdout(&o)
}

/// A test CA and one server certificate (forge.test and 127.0.0.1) it signed.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn certs(dir: &Path) -> Certs {
    fs::create_dir_all(dir).unwrap();
    let p = |n: &str| dir.join(n);
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=nuketown test upstreams CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
        ])
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.pem")));
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=forge.test",
            "-keyout",
        ])
        .arg(p("leaf.key"))
        .arg("-out")
        .arg(p("leaf.csr")));
    fs::write(
        p("ext.cnf"),
        "subjectAltName=DNS:forge.test,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
        .arg(p("leaf.csr"))
        .arg("-CA")
        .arg(p("ca.pem"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-extfile")
        .arg(p("ext.cnf"))
        .arg("-out")
        .arg(p("leaf.pem")));
    for f in ["ca.pem", "leaf.pem", "leaf.key"] {
        fs::set_permissions(p(f), fs::Permissions::from_mode(0o644)).unwrap();
    }
    Certs {
        ca: p("ca.pem"),
        cert: p("leaf.pem"),
        key: p("leaf.key"),
    }
}

fn wait_for_file(p: &Path, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = fs::read_to_string(p) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The scripted model over HTTPS, refusing any request without [`KEY`].
fn model(dir: &Path, certs: &Certs, script: &Value) -> (Kill, u16, PathBuf) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("script.json"), script.to_string()).unwrap();
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripted_model/server.py");
    let log = dir.join("requests.jsonl");
    let child = Command::new("python3")
        .arg(server)
        .arg(dir.join("script.json"))
        .arg(dir.join("port"))
        .arg(&log)
        .env("SCRIPTED_TLS_CERT", &certs.cert)
        .env("SCRIPTED_TLS_KEY", &certs.key)
        .env("SCRIPTED_REQUIRE_KEY", KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let child = Kill(child);
    let port = wait_for_file(&dir.join("port"), "the scripted model")
        .trim()
        .parse()
        .unwrap();
    (child, port, log)
}

/// The scripted forge over HTTPS with one bare repository, `town.git`.
fn forge(dir: &Path, certs: &Certs) -> (Kill, u16, PathBuf) {
    let repos = dir.join("repos");
    fs::create_dir_all(&repos).unwrap();
    run(Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(repos.join("town.git")));
    run(Command::new("git")
        .arg("-C")
        .arg(repos.join("town.git"))
        .args(["config", "http.receivepack", "true"]));
    let seed = dir.join("seed");
    run(Command::new("git")
        .args(["init", "-q", "-b", "main"])
        .arg(&seed));
    fs::write(seed.join("README"), "the town's repository\n").unwrap();
    run(Command::new("git")
        .arg("-C")
        .arg(&seed)
        .args(["add", "README"]));
    run(Command::new("git").arg("-C").arg(&seed).args([
        "-c",
        "user.name=seed",
        "-c",
        "user.email=seed@test",
        "commit",
        "-qm",
        "seed",
    ]));
    run(Command::new("git")
        .arg("-C")
        .arg(&seed)
        .arg("push")
        .arg("-q")
        .arg(repos.join("town.git"))
        .arg("main"));
    let log = dir.join("forge.jsonl");
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/forge/server.py");
    let child = Command::new("python3")
        .arg(server)
        .arg(&repos)
        .arg(&certs.cert)
        .arg(&certs.key)
        .arg(TOKEN)
        .arg(dir.join("port"))
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("forge.log")).unwrap())
        .spawn()
        .unwrap();
    let child = Kill(child);
    let port = wait_for_file(&dir.join("port"), "the scripted forge")
        .trim()
        .parse()
        .unwrap();
    (child, port, log)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn lines(p: &Path) -> Vec<Value> {
    fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Where scripts/deps.sh puts the npm CLIs.
fn claude() -> PathBuf {
    std::env::var_os("NUKETOWN_CLIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/nuketown-clis"))
        .join("node_modules/.bin/claude")
}

/// Fields drop in order: the gateway's user goes while the town's test
/// lock is still held (tests that make it run one at a time).
struct Scene {
    _gw_user: GatewayUser,
    t: TestTown,
    _model: Kill,
    _forge: Kill,
    model_log: PathBuf,
    forge_log: PathBuf,
    gw_port: u16,
    run_dir: PathBuf,
    /// The agent's shell start-up lines, as the town writes them into
    /// `~/.profile` and `~/.bashrc` (`render::gateway_exports`).
    exports: String,
    _base: tempfile::TempDir,
}

impl Scene {
    fn new(script: Value) -> Scene {
        Scene::with_limits(script, "")
    }

    /// With `limits` (TOML, e.g. `limits = { tokensPerHour = 1 }, `) on
    /// the anthropic credential.
    fn with_limits(script: Value, limits: &str) -> Scene {
        let tmp = tempfile::Builder::new()
            .prefix("nuketown-gw-")
            .tempdir()
            .unwrap();
        let base = tmp.path().to_path_buf();
        // Passable (the gateway's run dir is in it), not listable; the
        // upstreams' own files (their logs hold what they were sent) are
        // root's alone, as a remote server's would be out of reach.
        fs::set_permissions(&base, fs::Permissions::from_mode(0o711)).unwrap();
        for d in ["certs", "model", "forge"] {
            fs::create_dir_all(base.join(d)).unwrap();
            fs::set_permissions(base.join(d), fs::Permissions::from_mode(0o700)).unwrap();
        }
        let c = certs(&base.join("certs"));
        let (model, mp, model_log) = model(&base.join("model"), &c, &script);
        let (forge, fp, forge_log) = forge(&base.join("forge"), &c);
        let gw_port = free_port();
        let secret = |n: &str, v: &str| {
            let p = base.join(n);
            fs::write(&p, format!("{v}\n")).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
            p.display().to_string()
        };
        let (kf, tf) = (secret("anthropic.key", KEY), secret("forge.token", TOKEN));
        let run_dir = base.join("gateway");
        let ca = c.ca.display().to_string();
        let opts = Options {
            ada_timeout: 30,
            town_extra: format!(
                "hall.gateway = {{ port = {gw_port}, user = \"{GW_USER}\", runDir = \"{}\" }}",
                run_dir.display()
            ),
            ada_extra: format!(
                "credentials.anthropic = {{ api = \"anthropic\", source = \"{kf}\", {limits}upstream = \"https://127.0.0.1:{mp}\", upstreamCa = \"{ca}\" }}\n\
                 credentials.oai = {{ api = \"openai\", source = \"{kf}\", upstream = \"https://127.0.0.1:{mp}\", upstreamCa = \"{ca}\", limits = {{ requestsPerHour = 2 }}, onLimit = \"ask\" }}\n\
                 credentials.forge = {{ api = \"github\", source = \"{tf}\", hosts = [\"forge.test\"], upstream = \"https://127.0.0.1:{fp}\", upstreamCa = \"{ca}\" }}\n"
            ),
            ..Options::default()
        };
        let t = TestTown::new(opts);
        // Under the town's test lock, which TestTown holds.
        let gw_user = GatewayUser::make();
        let town = nuketown_town::load(&t.town).unwrap();
        let exports = nuketown_host::render::gateway_exports(&town.gateway_env(ADA));
        Scene {
            t,
            _base: tmp,
            _gw_user: gw_user,
            _model: model,
            _forge: forge,
            model_log,
            forge_log,
            gw_port,
            run_dir,
            exports,
        }
    }

    /// Start the hall; return once the gateway answers.
    fn start(&mut self) {
        self.t.start_hall();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.gw_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the gateway never listened:\n{}",
                self.t.hall_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A shell script run as `user` with the town's start-up lines for
    /// ada's gateway (as `~/.profile` has them) and the CLIs on PATH.
    fn as_user(&self, user: &str, script: &str) -> std::process::Output {
        self.t.agent(
            user,
            &format!(
                "{}export PATH=$PATH:{}:/usr/local/bin; export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1 HOME=$HOME; {script}",
                self.exports,
                claude().parent().unwrap().display()
            ),
        )
    }

    fn gateway_pid(&self) -> u32 {
        let o = Command::new("pgrep")
            .args(["-u", GW_USER, "-f", "nuketown gateway"])
            .output()
            .unwrap();
        stdout(&o)
            .lines()
            .next()
            .expect("the gateway runs")
            .trim()
            .parse()
            .unwrap()
    }
}

#[test]
fn scripted_model_claude_code_talks_through_the_gateway_and_nothing_ada_reads_holds_the_key() {
    if !claude().exists() {
        panic!(
            "claude-code is not installed at {} (scripts/deps.sh installs it)",
            claude().display()
        );
    }
    let mut s =
        Scene::new(serde_json::json!({"steps": [{"text": "answered through the town's gateway"}]}));
    // apply's plan seals what is declared: both credentials named.
    let plan = s.t.root_nuketown(&["plan"]);
    let plan_text = stdout(&plan);
    for c in ["anthropic", "forge", "oai"] {
        assert!(
            plan_text.contains(&format!(
                "+ credential {c} of {ADA} sealed in the town's key store"
            )),
            "{plan_text}{}",
            stderr(&plan)
        );
    }
    // …as apply's change does (the hall-test town is not applied).
    let store = s.t.key_store();
    store
        .put_credential(ADA, "anthropic", format!("{KEY}\n").as_bytes())
        .unwrap();
    store.put_credential(ADA, "oai", KEY.as_bytes()).unwrap();
    store
        .put_credential(ADA, "forge", TOKEN.as_bytes())
        .unwrap();
    let plan = stdout(&s.t.root_nuketown(&["plan"]));
    assert!(!plan.contains("+ credential"), "sealed already: {plan}");
    s.start();

    // The real claude-code, as ada, through the gateway.
    let o = s.as_user(
        ADA,
        &format!(
            "timeout 120 {} -p 'hello, town' --output-format text",
            claude().display()
        ),
    );
    assert!(
        stdout(&o).contains("answered through the town's gateway"),
        "{}{}\n{}",
        stdout(&o),
        stderr(&o),
        s.t.hall_log()
    );
    let seen = lines(&s.model_log);
    assert!(!seen.is_empty());
    for r in &seen {
        assert_eq!(
            r["headers"]["x-api-key"], KEY,
            "the model saw the town's key: {r}"
        );
        assert!(
            !r.to_string().contains("nuketown-gateway-anthropic"),
            "no placeholder upstream: {r}"
        );
    }
    // Every call is in the audit chain, by the kernel's uid.
    let calls: Vec<_> =
        s.t.audit()
            .into_iter()
            .filter(|r| r.event == "credential" && r.decision == "forwarded")
            .collect();
    assert!(calls.len() >= seen.len().min(1), "{calls:?}");
    let c = calls
        .iter()
        .find(|r| {
            r.credential
                .as_ref()
                .is_some_and(|c| c.path.ends_with("/v1/messages"))
        })
        .expect("a messages call audited");
    assert_eq!(c.agent, ADA);
    let call = c.credential.as_ref().unwrap();
    assert_eq!(call.credential.as_deref(), Some("anthropic"));
    assert!(
        call.tokens_in.is_some() && call.tokens_out.is_some(),
        "{call:?}"
    );

    // Nothing ada can read holds the key. ada lists what she can read —
    // her environment as the town sets it, her home, persist dir, /tmp, the
    // gateway's published files, her processes' /proc — and root searches
    // those (the key never appears in what ada runs, so the search cannot
    // find itself). The gateway's process and the key store are closed to her.
    let o = s.as_user(
        ADA,
        &format!(
            "env > \"$HOME/.env-now\"; find \"$HOME\" {persist} /tmp /var/tmp {run} -readable -type f 2>/dev/null; \
             for p in $(pgrep -u {ADA}); do for f in environ cmdline; do [ -r /proc/$p/$f ] && echo /proc/$p/$f; done; done; \
             cat /proc/{gw}/environ /proc/{gw}/mem /proc/{gw}/fd/0 >/dev/null 2>&1 && echo READ-THE-GATEWAY; \
             ls {store} >/dev/null 2>&1 && echo READ-THE-STORE; true",
            persist = s.t.path("persist").display(),
            run = s.run_dir.display(),
            gw = s.gateway_pid(),
            store = s.t.path("persist/agents/.nuketown-keys").display(),
        ),
    );
    let readable = stdout(&o);
    assert!(!readable.contains("READ-THE-"), "{readable}");
    assert!(readable.contains(".env-now"), "{readable}");
    let mut searched = 0;
    for f in readable.lines() {
        if let Ok(bytes) = fs::read(f) {
            searched += 1;
            assert!(
                !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
                "ada can read the key in {f}"
            );
        }
    }
    assert!(searched > 3, "{readable}");

    // vox and the human cannot use ada's credential: the gateway knows
    // them by their sockets' owner, whatever they send.
    let url = format!("http://127.0.0.1:{}/anthropic/v1/messages", s.gw_port);
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let curl = |user: &str| {
        s.as_user(user, &format!("curl -s -w '\\n%{{http_code}}' -H 'content-type: application/json' -H 'x-api-key: {KEY}' -d '{body}' {url}"))
    };
    let before = lines(&s.model_log).len();
    for who in [VOX, HUMAN] {
        let o = curl(who);
        let out = stdout(&o);
        assert!(out.ends_with("\n403"), "{who}: {out}");
        assert!(out.contains("nuketown gateway"), "{out}");
    }
    assert_eq!(
        lines(&s.model_log).len(),
        before,
        "nothing reached the model for them"
    );
    let denied: Vec<_> =
        s.t.audit()
            .into_iter()
            .filter(|r| r.event == "credential" && r.decision == "denied")
            .collect();
    assert!(denied.iter().any(|r| r.agent == VOX), "{denied:?}");

    // Paused: refused at once; resumed: works.
    let o = s.t.root_nuketown(&["keys", "pause", ADA]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&curl(ADA));
    assert!(out.ends_with("\n403") && out.contains("paused"), "{out}");
    let o = s.t.root_nuketown(&["keys", "resume", ADA]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&curl(ADA));
    assert!(out.ends_with("\n200"), "{out}");
}

#[test]
fn scripted_forge_git_over_https_and_its_api_get_the_token_ada_never_holds() {
    let mut s = Scene::new(serde_json::json!({"steps": [{"text": "ok"}]}));
    let store = s.t.key_store();
    store
        .put_credential(ADA, "forge", TOKEN.as_bytes())
        .unwrap();
    store
        .put_credential(ADA, "anthropic", KEY.as_bytes())
        .unwrap();
    store.put_credential(ADA, "oai", KEY.as_bytes()).unwrap();
    s.start();
    let o = s.as_user(
        ADA,
        "set -e; git clone -q https://forge.test/town.git work && cd work && \
         git -c user.name=ada -c user.email=ada@town commit -q --allow-empty -m 'through the gateway' && \
         git push -q origin HEAD:refs/heads/ada/gateway && git ls-remote origin && \
         curl -sf https://forge.test/api/user",
    );
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "{out}{}\n{}",
        stderr(&o),
        s.t.hall_log()
    );
    assert!(out.contains("refs/heads/ada/gateway"), "{out}");
    assert!(out.contains("\"token_seen\": true"), "{out}");
    let seen = lines(&s.forge_log);
    assert!(seen.len() >= 4, "{seen:?}");
    assert!(
        seen.iter().all(|r| r["token"] == true),
        "every request carried the town's token: {seen:?}"
    );
    assert!(seen.iter().any(
        |r| r["method"] == "POST" && r["path"].as_str().unwrap().ends_with("git-receive-pack")
    ));
    // The token is nowhere ada reads (listed by ada, searched by root).
    let o = s.as_user(
        ADA,
        &format!(
            "env > \"$HOME/.env-now\"; find \"$HOME\" /tmp {} -readable -type f 2>/dev/null",
            s.run_dir.display()
        ),
    );
    for f in stdout(&o).lines() {
        if let Ok(bytes) = fs::read(f) {
            assert!(
                !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
                "ada can read the token in {f}"
            );
        }
    }
    // Audited: the forge's host and paths, by ada.
    let audit = s.t.audit();
    assert!(audit.iter().any(|r| r.event == "credential"
        && r.credential
            .as_ref()
            .is_some_and(|c| c.host.starts_with("forge.test")
                && c.path.ends_with("git-receive-pack")
                && c.decision == "forwarded")));
}

#[test]
fn scripted_model_a_limit_is_a_clear_error_a_human_may_raise_and_the_audit_verifies() {
    let mut s = Scene::with_limits(
        serde_json::json!({"steps": [{"text": "ok"}]}),
        "limits = { tokensPerHour = 20 }, ",
    );
    let store = s.t.key_store();
    for c in ["anthropic", "oai", "forge"] {
        store.put_credential(ADA, c, KEY.as_bytes()).unwrap();
    }
    s.start();
    let chat = |n: usize| {
        s.as_user(
            ADA,
            &format!(
                "for i in $(seq {n}); do curl -s -w '\\n%{{http_code}}\\n' -H 'content-type: application/json' -H \"authorization: Bearer $OPENAI_API_KEY\" -d '{{\"model\":\"gpt-4o\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}' \"$OPENAI_BASE_URL/chat/completions\"; done"
            ),
        )
    };
    // Two requests an hour: the third is refused, in OpenAI's own shape.
    let out = stdout(&chat(3));
    let codes: Vec<&str> = out.lines().filter(|l| l.len() == 3).collect();
    assert_eq!(codes, ["200", "200", "429"], "{out}");
    assert!(
        out.contains("reached its limit of 2 requests per hour"),
        "{out}"
    );
    assert!(out.contains("nuketown gateway"), "{out}");
    let audit = s.t.audit();
    assert!(
        audit
            .iter()
            .any(|r| r.event == "credential" && r.decision == "limit" && r.target == "oai"),
        "{audit:?}"
    );
    // ada asks for more; a human approves; it works again.
    let mut watch = s.t.watch();
    let ask = s.t.spawn_agent(
        ADA,
        &format!(
            "NUKETOWN_ASK_SOCKET={} {} ask credential oai --reason 'two more answers'",
            s.t.ask_socket().display(),
            s.t.nuketown.display()
        ),
    );
    let req = next_request(&mut watch);
    let more = req.more.as_ref().expect("a request for more");
    assert_eq!(more.credential, "oai");
    assert_eq!(more.requests, 2);
    hall_fixture::decider(&s.t)
        .decide(&req, true, None, "terminal")
        .unwrap();
    let o = hall_fixture::finish(ask);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&chat(1));
    assert!(out.trim_end().ends_with("200"), "{out}");
    // claude-code at its limit: 15 tokens spent by one call, then the
    // next is refused, and the CLI shows the gateway's words at once (it
    // does not retry the town's verdict).
    let o = s.as_user(ADA, &format!("curl -s -o /dev/null -H 'content-type: application/json' -H 'x-api-key: x' -d '{{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":10,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}' $ANTHROPIC_BASE_URL/v1/messages; curl -s -o /dev/null -H 'content-type: application/json' -d '{{}}' $ANTHROPIC_BASE_URL/v1/messages; timeout 120 {} -p 'hello' --output-format text", claude().display()));
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!o.status.success(), "{said}");
    assert!(
        said.contains("reached its limit of 20 tokens per hour"),
        "{said}"
    );
    // Denied without a human: a credential whose limits are final.
    let o = s.as_user(
        ADA,
        &format!(
            "NUKETOWN_ASK_SOCKET={} {} ask credential forge",
            s.t.ask_socket().display(),
            s.t.nuketown.display()
        ),
    );
    assert!(!o.status.success());
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        said.contains("no limit to raise") || said.contains("onLimit"),
        "{said}"
    );

    // A day's worth of calls (here: 10,000 refused ones, each audited)
    // keeps the chain whole.
    let o = s.as_user(
        VOX,
        &format!("seq 10000 | sed 's|.*|url = \"http://127.0.0.1:{}/anthropic/v1/models\"|' > /tmp/nkt-gw-urls && curl -s -o /dev/null -K /tmp/nkt-gw-urls; rm -f /tmp/nkt-gw-urls", s.gw_port),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n =
            s.t.audit()
                .iter()
                .filter(|r| r.agent == VOX && r.event == "credential")
                .count();
        if n >= 10_000 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} of 10,000 calls audited");
        std::thread::sleep(Duration::from_millis(500));
    }
    let o = s.t.root_nuketown(&[
        "audit",
        "--verify",
        "--log",
        &s.t.audit_log().display().to_string(),
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}
