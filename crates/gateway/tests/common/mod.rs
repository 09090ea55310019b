//! Shared by the gateway's tests and benchmark: an HTTPS upstream with a
//! test CA, a config with ada (uid 0, the test's own uid), a plain HTTP
//! client, and event helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use nuketown_gateway::{
    AgentSpec, Api, CallRecord, Config, Credential, Event, Limits, OnLimit, Secret, TownCa,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::{mpsc, Mutex};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A test HTTPS server standing in for api.anthropic.com, github.com, etc.
pub struct Upstream {
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub seen: Mutex<mpsc::UnboundedReceiver<Seen>>,
    /// Lets `/sse-gated` send its second event.
    pub release: mpsc::UnboundedSender<()>,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub async fn next_seen(&self) -> Seen {
        tokio::time::timeout(Duration::from_secs(10), self.seen.lock().await.recv())
            .await
            .expect("upstream saw nothing")
            .expect("upstream gone")
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).boxed()
}

pub async fn upstream() -> Upstream {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "upstream test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let names = ["127.0.0.1", "localhost", "github.test", "api.tokens.test"];
    let mut leaf_params = CertificateParams::new(names.map(String::from).to_vec()).unwrap();
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "upstream");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
    .unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let (release, release_rx) = mpsc::unbounded_channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let seen_tx = seen_tx.clone();
            let release_rx = release_rx.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    service_fn(move |req| answer(req, seen_tx.clone(), release_rx.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        ca_pem: ca_cert.pem(),
        seen: Mutex::new(seen),
        release,
    }
}

const SSE_START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-test\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n";
const SSE_END: &str = "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":40}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

async fn answer(
    req: Request<Incoming>,
    seen: mpsc::UnboundedSender<Seen>,
    release: Arc<Mutex<mpsc::UnboundedReceiver<()>>>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let _ = seen.send(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
    });
    let sse = |body: Body| {
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(body)
            .unwrap()
    };
    let response = if path.ends_with("/sse-gated") {
        let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
        tokio::spawn(async move {
            let _ = tx.send_data(Bytes::from_static(SSE_START.as_bytes())).await;
            release.lock().await.recv().await;
            let _ = tx.send_data(Bytes::from_static(SSE_END.as_bytes())).await;
        });
        sse(rx.boxed())
    } else if path.ends_with("/sse") {
        sse(full(format!("{SSE_START}{SSE_END}")))
    } else if path.ends_with("/v1/messages") {
        Response::builder()
            .header("content-type", "application/json")
            .body(full(
                r#"{"model":"claude-test","usage":{"input_tokens":10,"output_tokens":5}}"#,
            ))
            .unwrap()
    } else if path.ends_with("/v1/chat/completions") {
        Response::builder()
            .header("content-type", "application/json")
            .body(full(
                r#"{"model":"gpt-test","usage":{"prompt_tokens":7,"completion_tokens":3}}"#,
            ))
            .unwrap()
    } else {
        Response::new(full("hello from upstream"))
    };
    Ok(response)
}

pub fn credential(api: Api, secret: &str) -> Credential {
    Credential {
        api,
        secret: Secret::new(secret),
        upstream: None,
        hosts: vec![],
        paths: vec![],
        models: vec![],
        header: None,
        scheme: None,
        limits: Limits::default(),
        on_limit: OnLimit::Deny,
        upstream_ca: None,
        used: vec![],
    }
}

/// ada is uid 0 (the tests run as root) with one credential of each kind,
/// all pointed at `up`.
pub fn config(up: &Upstream, ca: Option<TownCa>) -> Config {
    let mut credentials = BTreeMap::new();
    for (name, api, secret, hosts) in [
        ("anthropic", Api::Anthropic, "sk-town-anthropic", vec![]),
        ("openai", Api::Openai, "sk-town-openai", vec![]),
        (
            "github",
            Api::Github,
            "ghs-town",
            vec!["github.test".to_owned()],
        ),
        (
            "tokens",
            Api::Http,
            "tok-town",
            vec!["api.tokens.test:8443".to_owned()],
        ),
    ] {
        let mut c = credential(api, secret);
        c.upstream = Some(up.url());
        c.upstream_ca = Some(up.ca_pem.clone());
        c.hosts = hosts;
        credentials.insert(name.to_owned(), c);
    }
    let mut agents = BTreeMap::new();
    agents.insert(
        0,
        AgentSpec {
            name: "ada".to_owned(),
            egress_restricted: false,
            credentials,
        },
    );
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        agents,
        ca,
        pause_dir: None,
    }
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build_http()
}

/// Sends a request and returns status and body text.
pub async fn send(
    client: &TestClient,
    method: &str,
    url: String,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = client
        .request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The next Call event, skipping others.
pub async fn next_call(events: &mut mpsc::UnboundedReceiver<Event>) -> CallRecord {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(Event::Call(call))) => return call,
            Ok(Some(_)) => continue,
            _ => panic!("no Call event"),
        }
    }
}

/// All events already sent (waits briefly for stragglers).
pub async fn drain(events: &mut mpsc::UnboundedReceiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
        out.push(e);
    }
    out
}

pub fn certificate_der(pem: &str) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}
