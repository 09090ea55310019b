//! The gateway over real sockets: an HTTPS upstream with its own CA, the
//! gateway in front, and clients that are this process (uid 0, "ada") or
//! curl run as `nobody`.

mod common;

use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use nuketown_gateway::{generate_ca, Event, Gateway, OnLimit, Usage};

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_sees_only_the_towns_key() {
    let up = upstream().await;
    let (gw, mut events) = Gateway::start(config(&up, None)).await.unwrap();
    let c = client();
    let base = format!("http://{}", gw.local_addr());

    let (status, body) = send(
        &c,
        "POST",
        format!("{base}/anthropic/v1/messages?beta=true"),
        &[
            JSON,
            ("x-api-key", "placeholder"),
            ("authorization", "Bearer placeholder"),
            ("cookie", "a=b"),
            ("anthropic-version", "2023-06-01"),
        ],
        r#"{"model":"claude-test","max_tokens":5}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen = up.next_seen().await;
    assert_eq!(seen.uri, "/v1/messages?beta=true");
    assert_eq!(
        seen.headers.get_all("x-api-key").iter().collect::<Vec<_>>(),
        ["sk-town-anthropic"]
    );
    assert!(seen.headers.get("authorization").is_none());
    assert!(seen.headers.get("cookie").is_none());
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert_eq!(
        seen.headers["host"],
        format!("127.0.0.1:{}", up.addr.port())
    );
    let call = next_call(&mut events).await;
    assert_eq!(
        (call.agent.as_str(), call.uid, call.credential.as_deref()),
        ("ada", 0, Some("anthropic"))
    );
    assert_eq!(
        (call.status, call.decision.as_str(), call.path.as_str()),
        (200, "forwarded", "/v1/messages")
    );
    assert_eq!(
        (call.model.as_deref(), call.tokens_in, call.tokens_out),
        (Some("claude-test"), Some(10), Some(5))
    );
    assert!(call.bytes_up > 0 && call.bytes_down > 0);

    let (status, _) = send(
        &c,
        "POST",
        format!("{base}/openai/v1/chat/completions"),
        &[
            JSON,
            ("authorization", "Bearer placeholder"),
            ("api-key", "x"),
        ],
        r#"{"model":"gpt-test"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let seen = up.next_seen().await;
    assert_eq!(
        seen.headers
            .get_all("authorization")
            .iter()
            .collect::<Vec<_>>(),
        ["Bearer sk-town-openai"]
    );
    assert!(seen.headers.get("api-key").is_none());
    let call = next_call(&mut events).await;
    assert_eq!((call.tokens_in, call.tokens_out), (Some(7), Some(3)));

    // A credential ada does not have, in the API's error shape.
    let (status, body) = send(
        &c,
        "POST",
        format!("{base}/vox-key/v1/messages"),
        &[("anthropic-version", "1")],
        "{}",
    )
    .await;
    assert_eq!(status, 403);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(
        v["error"]["message"],
        "nuketown gateway: ada has no credential 'vox-key' at the gateway"
    );
    let call = next_call(&mut events).await;
    assert!(
        call.decision.starts_with("denied: ada has no credential"),
        "{}",
        call.decision
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_event_by_event_and_counts_tokens() {
    let up = upstream().await;
    let (gw, mut events) = Gateway::start(config(&up, None)).await.unwrap();
    let c = client();
    let req = http::Request::post(format!("http://{}/anthropic/v1/sse-gated", gw.local_addr()))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"{\"model\":\"claude-test\",\"stream\":true}",
        )))
        .unwrap();
    let response = c.request(req).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut got = String::new();
    // The upstream holds event 2 until we say we have event 1: buffering would hang here.
    while !got.contains("message_start") {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("event 1 was buffered")
            .unwrap()
            .unwrap();
        got.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap()));
    }
    assert!(!got.contains("message_delta"));
    up.release.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    got.push_str(&String::from_utf8_lossy(&rest));
    assert!(got.contains("message_stop"));
    let call = next_call(&mut events).await;
    assert_eq!(
        (call.tokens_in, call.tokens_out, call.model.as_deref()),
        (Some(25), Some(40), Some("claude-test"))
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_and_paths_are_allow_listed() {
    let up = upstream().await;
    let mut cfg = config(&up, None);
    let cred = cfg
        .agents
        .get_mut(&0)
        .unwrap()
        .credentials
        .get_mut("anthropic")
        .unwrap();
    cred.models = vec!["claude-t*".into()];
    cred.paths = vec!["/v1/messages".into()];
    let (gw, mut events) = Gateway::start(cfg).await.unwrap();
    let c = client();
    let base = format!("http://{}/anthropic", gw.local_addr());

    let (status, _) = send(
        &c,
        "POST",
        format!("{base}/v1/messages"),
        &[JSON],
        r#"{"model":"claude-test"}"#,
    )
    .await;
    assert_eq!(status, 200);
    next_call(&mut events).await;
    let (status, body) = send(
        &c,
        "POST",
        format!("{base}/v1/messages"),
        &[JSON],
        r#"{"model":"claude-opus"}"#,
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        body.contains("does not allow the model 'claude-opus'"),
        "{body}"
    );
    assert!(body.contains("permission_error"));
    let call = next_call(&mut events).await;
    assert_eq!(
        (call.model.as_deref(), call.status),
        (Some("claude-opus"), 403)
    );

    for path in [
        "/v1/models",
        "/v1/messages/../models",
        "/v1/messages/%2e%2e/models",
        "/v1/messages%2f..%2fmodels",
        "/v1/messages/%2E%2E/models",
    ] {
        let (status, body) = send(&c, "GET", format!("{base}{path}"), &[], "").await;
        assert_eq!(status, 403, "{path}: {body}");
        let call = next_call(&mut events).await;
        assert!(call.decision.starts_with("denied:"), "{path}");
    }
    // Nothing denied reached the upstream.
    assert_eq!(up.next_seen().await.uri, "/v1/messages");
    assert!(up.seen.lock().await.try_recv().is_err());

    let (status, _) = send(
        &c,
        "POST",
        format!("{base}/v1/messages"),
        &[JSON],
        &format!("{{\"model\":\"{}\"}}", "x".repeat(9 << 20)),
    )
    .await;
    assert_eq!(status, 413);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_in_the_apis_shape_until_granted() {
    let up = upstream().await;
    let mut cfg = config(&up, None);
    let creds = &mut cfg.agents.get_mut(&0).unwrap().credentials;
    creds.get_mut("anthropic").unwrap().limits.tokens_per_hour = Some(20);
    let openai = creds.get_mut("openai").unwrap();
    openai.limits.requests_per_day = Some(3);
    openai.on_limit = OnLimit::Ask;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    openai.used = vec![
        Usage {
            at: now - 7200,
            tokens: 0,
        },
        Usage {
            at: now - 60,
            tokens: 0,
        },
    ];
    let (gw, mut events) = Gateway::start(cfg).await.unwrap();
    let c = client();
    let base = format!("http://{}", gw.local_addr());
    let msg = |c| {
        send(
            c,
            "POST",
            format!("{base}/anthropic/v1/messages"),
            &[JSON],
            r#"{"model":"claude-test"}"#,
        )
    };

    // 15 tokens each: the first two pass (0, 15 < 20), the third is refused.
    assert_eq!(msg(&c).await.0, 200);
    next_call(&mut events).await;
    assert_eq!(msg(&c).await.0, 200);
    next_call(&mut events).await;
    let (status, body) = msg(&c).await;
    assert_eq!(status, 429);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(
        v["error"]["message"],
        "nuketown gateway: ada's credential 'anthropic' reached its limit of 20 tokens per hour (used 30); it frees up as calls age out of the hour; the limit is final (onLimit = \"deny\")"
    );
    assert_eq!(msg(&c).await.0, 429);
    let seen = drain(&mut events).await;
    let reached: Vec<_> = seen
        .iter()
        .filter(|e| matches!(e, Event::LimitReached { .. }))
        .collect();
    assert_eq!(reached.len(), 1, "reported once per crossing: {seen:?}");
    assert!(
        matches!(reached[0], Event::LimitReached { limit, on_limit: OnLimit::Deny, .. } if limit == "20 tokens per hour")
    );
    let denied = seen.iter().filter(|e| matches!(e, Event::Call(c) if c.decision.starts_with("denied: limit") || c.decision.contains("reached its limit"))).count();
    assert_eq!(denied, 2);

    gw.grant_more("ada", "anthropic", 0, 100);
    assert_eq!(msg(&c).await.0, 200);

    // openai: 2 seeded calls in the day, one more allowed.
    let chat = |c| {
        send(
            c,
            "POST",
            format!("{base}/openai/v1/chat/completions"),
            &[JSON],
            r#"{"model":"gpt-test"}"#,
        )
    };
    assert_eq!(chat(&c).await.0, 200);
    let (status, body) = chat(&c).await;
    assert_eq!(status, 429);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(body.contains("3 requests per day (used 3)"), "{body}");
    assert!(body.contains("nuketown ask credential"), "{body}");
    let usage = gw.usage();
    let openai = usage.iter().find(|u| u.credential == "openai").unwrap();
    assert_eq!((openai.requests_hour, openai.requests_day), (2, 3));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_marker_stops_every_request_at_once() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&up, None);
    cfg.pause_dir = Some(dir.path().to_owned());
    let (gw, mut events) = Gateway::start(cfg).await.unwrap();
    let c = client();
    let url = format!("http://{}/anthropic/v1/messages", gw.local_addr());
    assert_eq!(send(&c, "POST", url.clone(), &[JSON], "{}").await.0, 200);
    next_call(&mut events).await;
    std::fs::write(dir.path().join("ada"), "").unwrap();
    let (status, body) = send(&c, "POST", url.clone(), &[JSON], "{}").await;
    assert_eq!(status, 403);
    assert!(
        body.contains("ada's credentials are paused (nuketown keys resume ada)"),
        "{body}"
    );
    let call = next_call(&mut events).await;
    assert!(call
        .decision
        .starts_with("denied: ada's credentials are paused"));
    std::fs::remove_file(dir.path().join("ada")).unwrap();
    assert_eq!(send(&c, "POST", url, &[JSON], "{}").await.0, 200);
    gw.shutdown().await;
}

async fn curl(args: &[&str], uid: Option<u32>) -> (String, String, i32) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "20"]).args(args);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().await.expect("curl runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_intercepts_declared_hosts_and_tunnels_the_rest() {
    let up = upstream().await;
    let ca = generate_ca("nuketown test town").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let town_ca = dir.path().join("town.pem");
    std::fs::write(&town_ca, &ca.cert_pem).unwrap();
    let test_ca = dir.path().join("test.pem");
    std::fs::write(&test_ca, &up.ca_pem).unwrap();
    let (gw, mut events) = Gateway::start(config(&up, Some(ca.clone()))).await.unwrap();
    let proxy = format!("http://{}", gw.local_addr());
    let town = town_ca.to_str().unwrap();

    // Declared: two requests on one intercepted connection, the token added.
    let (out, err, code) = curl(
        &[
            "--proxy",
            &proxy,
            "--cacert",
            town,
            "-H",
            "Authorization: Bearer placeholder",
            "https://github.test/org/repo.git/info/refs?service=git-upload-pack",
            "https://github.test/second",
        ],
        None,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello from upstreamhello from upstream");
    let seen = up.next_seen().await;
    assert_eq!(seen.uri, "/org/repo.git/info/refs?service=git-upload-pack");
    assert_eq!(
        seen.headers
            .get_all("authorization")
            .iter()
            .collect::<Vec<_>>(),
        ["Basic eC1hY2Nlc3MtdG9rZW46Z2hzLXRvd24="]
    );
    assert_eq!(seen.headers["host"], "github.test");
    assert_eq!(up.next_seen().await.uri, "/second");
    let call = next_call(&mut events).await;
    assert_eq!(
        (
            call.host.as_str(),
            call.credential.as_deref(),
            call.path.as_str()
        ),
        ("github.test", Some("github"), "/org/repo.git/info/refs")
    );

    // Declared with a port, Bearer scheme.
    let (_, err, code) = curl(
        &[
            "--proxy",
            &proxy,
            "--cacert",
            town,
            "https://api.tokens.test:8443/x",
        ],
        None,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let seen = up.next_seen().await;
    assert_eq!(seen.headers["authorization"], "Bearer tok-town");
    assert_eq!(seen.headers["host"], "api.tokens.test:8443");
    drain(&mut events).await;

    // Not declared, egress open: a plain tunnel; curl talks TLS with the upstream itself.
    let direct = format!("https://localhost:{}/tunneled", up.addr.port());
    let (out, err, code) = curl(
        &[
            "--proxy",
            &proxy,
            "--cacert",
            test_ca.to_str().unwrap(),
            "-H",
            "Authorization: Bearer mine",
            &direct,
        ],
        None,
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "hello from upstream"), "{err}");
    assert_eq!(up.next_seen().await.headers["authorization"], "Bearer mine");
    let call = next_call(&mut events).await;
    assert_eq!(
        (call.method.as_str(), call.decision.as_str()),
        ("CONNECT", "forwarded")
    );
    assert!(call.bytes_up > 0 && call.bytes_down > 0);

    // Not declared, egress restricted: refused.
    let mut cfg = config(&up, Some(ca));
    cfg.agents.get_mut(&0).unwrap().egress_restricted = true;
    gw.update(cfg);
    let (out, _, code) = curl(
        &[
            "--proxy",
            &proxy,
            "--cacert",
            test_ca.to_str().unwrap(),
            "-o",
            "/dev/null",
            "-w",
            "%{http_connect}",
            &direct,
        ],
        None,
    )
    .await;
    assert_ne!(code, 0);
    assert_eq!(out, "403");
    let call = next_call(&mut events).await;
    assert!(
        call.decision
            .contains("is not a declared host of ada's credentials and ada's egress is restricted"),
        "{}",
        call.decision
    );

    // Plain http:// through the proxy is refused.
    let (out, _, _) = curl(
        &[
            "--proxy",
            &proxy,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://github.test/",
        ],
        None,
    )
    .await;
    assert_eq!(out, "405");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_host_without_a_ca_is_a_clear_502() {
    let up = upstream().await;
    let (gw, mut events) = Gateway::start(config(&up, None)).await.unwrap();
    let proxy = format!("http://{}", gw.local_addr());
    let (out, _, _) = curl(
        &[
            "--proxy",
            &proxy,
            "-o",
            "/dev/null",
            "-w",
            "%{http_connect}",
            "https://github.test/",
        ],
        None,
    )
    .await;
    assert_eq!(out, "502");
    let call = next_call(&mut events).await;
    assert!(call.decision.contains("no town CA"), "{}", call.decision);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_uid_is_refused() {
    let up = upstream().await;
    let (gw, mut events) = Gateway::start(config(&up, None)).await.unwrap();
    let url = format!("http://{}/anthropic/v1/messages", gw.local_addr());
    let (out, err, code) = curl(
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "x-api-key: stolen",
            &url,
        ],
        Some(65534),
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "403"), "{err}");
    let call = next_call(&mut events).await;
    assert_eq!(
        (call.agent.as_str(), call.uid, call.status),
        ("uid 65534", 65534, 403)
    );
    assert!(up.seen.lock().await.try_recv().is_err());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_changes_credentials_live() {
    let up = upstream().await;
    let (gw, _events) = Gateway::start(config(&up, None)).await.unwrap();
    let c = client();
    let url = format!("http://{}/anthropic/v1/messages", gw.local_addr());
    assert_eq!(send(&c, "POST", url.clone(), &[JSON], "{}").await.0, 200);
    let mut cfg = config(&up, None);
    cfg.agents
        .get_mut(&0)
        .unwrap()
        .credentials
        .remove("anthropic");
    gw.update(cfg);
    assert_eq!(send(&c, "POST", url, &[JSON], "{}").await.0, 403);
    gw.shutdown().await;
}
