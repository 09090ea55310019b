//! The gateway itself: the loopback listener, who is calling, and the two
//! ways in — the reverse proxy for model APIs (`/<credential>/<path>`) and
//! the HTTPS proxy (`CONNECT`) that intercepts declared hosts and tunnels
//! the rest.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::header::{HeaderValue, HOST};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::ca::LeafMinter;
use crate::config::{AgentSpec, Api, Config, Credential, OnLimit};
use crate::error::GatewayError;
use crate::event::{CallRecord, Event};
use crate::limits::{UsageSummary, Windows};
use crate::meter::{Counted, Metered, OnDone, Scanner};
use crate::policy;
use crate::respond::{self, ResBody, Shape};
use crate::upstream::{self, Clients, Target, Upward};

/// The largest request body the reverse proxy buffers to read its model.
const BODY_LIMIT: usize = 8 << 20;

/// A running gateway; dropping it without `shutdown` leaves it serving.
pub struct Gateway {
    shared: Arc<Shared>,
    local: SocketAddr,
    stop: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

struct State {
    config: Config,
    minter: Option<Arc<LeafMinter>>,
    ca_problem: Option<String>,
}

struct Shared {
    state: RwLock<Arc<State>>,
    windows: Mutex<Windows>,
    events: mpsc::UnboundedSender<Event>,
    clients: Clients,
}

impl Gateway {
    /// Binds `config.listen` and starts serving; events arrive on the receiver.
    pub async fn start(
        config: Config,
    ) -> Result<(Gateway, mpsc::UnboundedReceiver<Event>), GatewayError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| GatewayError::io(format!("cannot listen on {}", config.listen), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| GatewayError::io("cannot read the listening address", e))?;
        let (events, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: RwLock::new(Arc::new(State {
                config: Config {
                    listen: local,
                    agents: Default::default(),
                    ca: None,
                    pause_dir: None,
                },
                minter: None,
                ca_problem: None,
            })),
            windows: Mutex::new(Windows::default()),
            events,
            clients: Clients::default(),
        });
        if let Some(ca) = &config.ca {
            LeafMinter::new(ca)?;
        }
        shared.install(config);
        let (stop, stopped) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(shared.clone(), listener, stopped));
        Ok((
            Gateway {
                shared,
                local,
                stop,
                accept,
            },
            receiver,
        ))
    }

    /// The address the gateway listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Takes new agents, credentials and limits; the listen address stays.
    pub fn update(&self, config: Config) {
        self.shared.install(config);
    }

    /// Raises one credential's limits by this much until the day window passes.
    pub fn grant_more(&self, agent: &str, credential: &str, requests: u64, tokens: u64) {
        self.shared.windows.lock().expect("windows").grant(
            agent,
            credential,
            requests,
            tokens,
            now(),
        );
    }

    /// Requests and tokens per agent and credential in the last hour and day.
    pub fn usage(&self) -> Vec<UsageSummary> {
        self.shared.windows.lock().expect("windows").summary(now())
    }

    /// Stops accepting connections; calls in flight finish on their own.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.accept.await;
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    tokio::spawn(serve_connection(shared.clone(), tcp, peer));
                }
                Err(e) => {
                    // Out of descriptors or similar: back off rather than spin.
                    tracing::warn!("gateway accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn serve_connection(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let Ok(local) = tcp.local_addr() else { return };
    let _ = tcp.set_nodelay(true);
    let uid = tokio::task::spawn_blocking(move || crate::peer::peer_uid(local, peer))
        .await
        .ok()
        .flatten();
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(shared.handle(uid, req).await) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!("connection from {peer} ended: {e}");
    }
}

/// What is known about a request so far, for its CallRecord.
#[derive(Clone)]
struct CallCtx {
    agent: String,
    uid: u32,
    credential: Option<String>,
    method: String,
    host: String,
    path: String,
    model: Option<String>,
    started: Instant,
}

impl CallCtx {
    fn new(uid: Option<u32>, method: &Method, host: &str, path: &str) -> CallCtx {
        CallCtx {
            agent: uid.map_or_else(|| "uid ?".to_owned(), |u| format!("uid {u}")),
            uid: uid.unwrap_or(u32::MAX),
            credential: None,
            method: method.to_string(),
            host: host.to_owned(),
            path: path.to_owned(),
            model: None,
            started: Instant::now(),
        }
    }

    fn record(&self, status: StatusCode, decision: String) -> CallRecord {
        CallRecord {
            agent: self.agent.clone(),
            uid: self.uid,
            credential: self.credential.clone(),
            method: self.method.clone(),
            host: self.host.clone(),
            path: self.path.clone(),
            model: self.model.clone(),
            status: status.as_u16(),
            decision,
            tokens_in: None,
            tokens_out: None,
            bytes_up: 0,
            bytes_down: 0,
            ms: self.started.elapsed().as_secs_f64() * 1000.0,
        }
    }
}

/// Emits the Call event and counts tokens once a forwarded response ends.
struct CallDone {
    shared: Arc<Shared>,
    ctx: CallCtx,
    status: StatusCode,
    bytes_up: Arc<AtomicU64>,
}

impl OnDone for CallDone {
    fn done(self: Box<Self>, scanner: Scanner, bytes: u64) {
        let mut record = self.ctx.record(self.status, "forwarded".to_owned());
        record.tokens_in = scanner.tokens_in;
        record.tokens_out = scanner.tokens_out;
        record.model = record.model.or(scanner.model);
        record.bytes_up = self.bytes_up.load(Ordering::Relaxed);
        record.bytes_down = bytes;
        let tokens = scanner.tokens_in.unwrap_or(0) + scanner.tokens_out.unwrap_or(0);
        if let Some(credential) = &self.ctx.credential {
            self.shared.windows.lock().expect("windows").add_tokens(
                &self.ctx.agent,
                credential,
                tokens,
                now(),
            );
        }
        let _ = self.shared.events.send(Event::Call(record));
    }
}

fn default_upstream(api: Api) -> Option<&'static str> {
    match api {
        Api::Anthropic => Some("https://api.anthropic.com"),
        Api::Openai => Some("https://api.openai.com"),
        Api::Github => Some("https://api.github.com"),
        Api::Http => None,
    }
}

fn shape_of(api: Api) -> Shape {
    match api {
        Api::Anthropic => Shape::Anthropic,
        Api::Openai => Shape::Openai,
        Api::Github | Api::Http => Shape::Plain,
    }
}

impl Shared {
    fn state(&self) -> Arc<State> {
        self.state.read().expect("state").clone()
    }

    /// Makes `config` the one in force, keeping the listen address, the
    /// leaf cache when the CA is unchanged, and the windows already counted.
    fn install(&self, mut config: Config) {
        let old = self.state();
        config.listen = old.config.listen;
        let same_ca = match (&old.config.ca, &config.ca) {
            (Some(a), Some(b)) => a.cert_pem == b.cert_pem && a.key_pem == b.key_pem,
            _ => false,
        };
        let (minter, ca_problem) = if same_ca {
            (old.minter.clone(), old.ca_problem.clone())
        } else {
            match config.ca.as_ref().map(LeafMinter::new) {
                None => (None, None),
                Some(Ok(minter)) => (Some(Arc::new(minter)), None),
                Some(Err(e)) => (None, Some(e.to_string())),
            }
        };
        {
            let mut windows = self.windows.lock().expect("windows");
            for agent in config.agents.values() {
                for (name, cred) in &agent.credentials {
                    windows.ensure(&agent.name, name, cred);
                }
            }
        }
        *self.state.write().expect("state") = Arc::new(State {
            config,
            minter,
            ca_problem,
        });
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Records a refusal and answers it.
    fn deny(
        &self,
        ctx: &CallCtx,
        shape: Shape,
        status: StatusCode,
        why: &str,
    ) -> Response<ResBody> {
        self.emit(Event::Call(ctx.record(status, format!("denied: {why}"))));
        respond::error(shape, status, why)
    }

    /// Records a failure to reach the upstream and answers 502.
    fn failed(&self, ctx: &CallCtx, shape: Shape, why: &str) -> Response<ResBody> {
        self.emit(Event::Call(
            ctx.record(StatusCode::BAD_GATEWAY, format!("error: {why}")),
        ));
        respond::error(shape, StatusCode::BAD_GATEWAY, why)
    }

    /// The calling agent, or the refusal for a uid that is not one.
    fn caller<'s>(
        &self,
        state: &'s State,
        uid: Option<u32>,
        ctx: &mut CallCtx,
        shape: Shape,
    ) -> Result<&'s AgentSpec, Box<Response<ResBody>>> {
        match uid.and_then(|u| state.config.agents.get(&u)) {
            Some(agent) => {
                ctx.agent = agent.name.clone();
                Ok(agent)
            }
            None => {
                let why = match uid {
                    Some(uid) => format!(
                        "uid {uid} is not an agent of this town; the gateway serves only agents"
                    ),
                    None => "the gateway could not tell which user is calling".to_owned(),
                };
                Err(Box::new(self.deny(ctx, shape, StatusCode::FORBIDDEN, &why)))
            }
        }
    }

    /// The checks every credentialed request passes: pause, path, limits.
    fn admit(
        &self,
        state: &State,
        agent: &AgentSpec,
        name: &str,
        cred: &Credential,
        ctx: &CallCtx,
        model: Option<&str>,
    ) -> Result<(), Box<Response<ResBody>>> {
        let shape = shape_of(cred.api);
        let who = &agent.name;
        if let Some(dir) = &state.config.pause_dir {
            if dir.join(who).exists() {
                let why = format!("{who}'s credentials are paused (nuketown keys resume {who})");
                return Err(Box::new(self.deny(ctx, shape, StatusCode::FORBIDDEN, &why)));
            }
        }
        if let Err(why) = policy::check_path(&ctx.path, &cred.paths) {
            let why = format!("{who}'s credential '{name}' refuses this request: {why}");
            return Err(Box::new(self.deny(ctx, shape, StatusCode::FORBIDDEN, &why)));
        }
        if let Some(model) = model {
            if !policy::model_allowed(model, &cred.models) {
                let why = format!(
                    "{who}'s credential '{name}' does not allow the model '{model}' (allowed: {}); pick one of those",
                    cred.models.join(", ")
                );
                return Err(Box::new(self.deny(ctx, shape, StatusCode::FORBIDDEN, &why)));
            }
        }
        let admitted = self
            .windows
            .lock()
            .expect("windows")
            .admit(who, name, &cred.limits, now());
        if let Err(hit) = admitted {
            if hit.first {
                self.emit(Event::LimitReached {
                    agent: who.clone(),
                    credential: name.to_owned(),
                    limit: hit.limit.clone(),
                    on_limit: cred.on_limit,
                });
            }
            let next = match cred.on_limit {
                OnLimit::Deny => "the limit is final (onLimit = \"deny\")".to_string(),
                OnLimit::Ask => {
                    format!("ask a human for more: nuketown ask credential {name} --reason \"why\"")
                }
            };
            let why = format!(
                "{who}'s credential '{name}' reached its limit of {} (used {}); it frees up as calls age out of the {}; {next}",
                hit.limit, hit.used, hit.window
            );
            return Err(Box::new(self.deny(
                ctx,
                shape,
                StatusCode::TOO_MANY_REQUESTS,
                &why,
            )));
        }
        Ok(())
    }

    async fn handle(
        self: Arc<Self>,
        uid: Option<u32>,
        req: Request<Incoming>,
    ) -> Response<ResBody> {
        if req.method() == Method::CONNECT {
            return self.connect(uid, req).await;
        }
        if req.uri().scheme().is_some() {
            let mut ctx = CallCtx::new(
                uid,
                req.method(),
                req.uri().host().unwrap_or(""),
                req.uri().path(),
            );
            let state = self.state();
            if let Ok(agent) = self.caller(&state, uid, &mut ctx, Shape::Plain) {
                ctx.agent = agent.name.clone();
            }
            return self.deny(
                &ctx,
                Shape::Plain,
                StatusCode::METHOD_NOT_ALLOWED,
                "plain http:// proxying is not offered; use HTTPS (the proxy answers CONNECT)",
            );
        }
        self.reverse(uid, req).await
    }

    /// `/<credential>/<rest>` → the credential's upstream `/<rest>`.
    async fn reverse(
        self: Arc<Self>,
        uid: Option<u32>,
        req: Request<Incoming>,
    ) -> Response<ResBody> {
        let path = req.uri().path().to_owned();
        let (name, rest) = match path.trim_start_matches('/').split_once('/') {
            Some((name, rest)) => (name.to_owned(), format!("/{rest}")),
            None => (path.trim_start_matches('/').to_owned(), "/".to_owned()),
        };
        let guessed = if req.headers().contains_key("anthropic-version")
            || req.headers().contains_key("x-api-key")
        {
            Shape::Anthropic
        } else {
            Shape::Openai
        };
        let mut ctx = CallCtx::new(uid, req.method(), "", &rest);
        ctx.credential = (!name.is_empty()).then(|| name.clone());
        let state = self.state();
        let agent = match self.caller(&state, uid, &mut ctx, guessed) {
            Ok(agent) => agent,
            Err(denied) => return *denied,
        };
        let Some(cred) = agent.credentials.get(&name) else {
            let why = format!("{} has no credential '{name}' at the gateway", agent.name);
            return self.deny(&ctx, guessed, StatusCode::FORBIDDEN, &why);
        };
        let shape = shape_of(cred.api);
        let Some(url) = cred.upstream.as_deref().or(default_upstream(cred.api)) else {
            let why = format!(
                "{}'s credential '{name}' has no upstream URL; the town config must give one",
                agent.name
            );
            return self.failed(&ctx, shape, &why);
        };
        let target = match Target::parse(url) {
            Ok(target) => target,
            Err(why) => return self.failed(&ctx, shape, &why),
        };
        ctx.host = target.authority();

        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, BODY_LIMIT).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                let why = format!("the request body is over {} MiB", BODY_LIMIT >> 20);
                return self.deny(&ctx, shape, StatusCode::PAYLOAD_TOO_LARGE, &why);
            }
            Err(e) => {
                return self.deny(
                    &ctx,
                    shape,
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read the request body: {e}"),
                )
            }
        };
        ctx.model = model_of(&body);
        if let Err(denied) = self.admit(&state, agent, &name, cred, &ctx, ctx.model.as_deref()) {
            return *denied;
        }

        let query = parts.uri.query().map_or(String::new(), |q| format!("?{q}"));
        let uri = format!(
            "{}://{}{}{}{query}",
            target.scheme,
            target.authority(),
            target.base_path,
            rest
        );
        let Ok(uri) = uri.parse::<Uri>() else {
            return self.deny(
                &ctx,
                shape,
                StatusCode::BAD_REQUEST,
                "the request path is not a valid URL path",
            );
        };
        let mut headers = parts.headers;
        policy::strip_request_headers(&mut headers);
        headers.remove(http::header::CONTENT_LENGTH);
        headers.insert(
            http::header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        match HeaderValue::from_str(&target.authority()) {
            Ok(host) => headers.insert(HOST, host),
            Err(_) => {
                return self.failed(
                    &ctx,
                    shape,
                    "the upstream's host is not a valid Host header",
                )
            }
        };
        match policy::credential_header(cred) {
            Ok((header, value)) => headers.insert(header, value),
            Err(why) => return self.failed(&ctx, shape, &why),
        };
        let bytes_up = Arc::new(AtomicU64::new(body.len() as u64));
        let mut upward = Request::new(Full::new(body));
        *upward.method_mut() = parts.method;
        *upward.uri_mut() = uri;
        *upward.version_mut() = Version::HTTP_11;
        *upward.headers_mut() = headers;
        let client = match self.clients.get(cred.upstream_ca.as_deref()) {
            Ok(client) => client,
            Err(why) => return self.failed(&ctx, shape, &why),
        };
        match client.request(upward).await {
            Ok(response) => self.pass_back(ctx, response, bytes_up),
            Err(e) => {
                let why = format!("cannot reach {}: {}", target.authority(), error_chain(&e));
                self.failed(&ctx, shape, &why)
            }
        }
    }

    /// Streams an upstream response back while metering it.
    fn pass_back(
        self: Arc<Self>,
        ctx: CallCtx,
        response: Response<Incoming>,
        bytes_up: Arc<AtomicU64>,
    ) -> Response<ResBody> {
        let (mut parts, body) = response.into_parts();
        policy::strip_hop_by_hop(&mut parts.headers);
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let done = CallDone {
            shared: self,
            ctx,
            status: parts.status,
            bytes_up,
        };
        let body = Metered::new(body, Scanner::new(&content_type), Box::new(done))
            .map_err(|e| Box::new(e) as respond::BoxError)
            .boxed_unsync();
        Response::from_parts(parts, body)
    }

    /// `CONNECT host:port`: intercept declared hosts, tunnel or refuse the rest.
    async fn connect(
        self: Arc<Self>,
        uid: Option<u32>,
        mut req: Request<Incoming>,
    ) -> Response<ResBody> {
        let authority = req.uri().authority().cloned();
        let mut ctx = CallCtx::new(uid, req.method(), &req.uri().to_string(), "");
        let state = self.state();
        let agent = match self.caller(&state, uid, &mut ctx, Shape::Plain) {
            Ok(agent) => agent,
            Err(denied) => return *denied,
        };
        let Some(authority) = authority else {
            return self.deny(
                &ctx,
                Shape::Plain,
                StatusCode::BAD_REQUEST,
                "CONNECT needs host:port",
            );
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(443);
        let who = agent.name.clone();
        if let Some(dir) = &state.config.pause_dir {
            if dir.join(&who).exists() {
                let why = format!("{who}'s credentials are paused (nuketown keys resume {who})");
                return self.deny(&ctx, Shape::Plain, StatusCode::FORBIDDEN, &why);
            }
        }
        let declared = agent
            .credentials
            .iter()
            .find(|(_, c)| !c.api.is_model_api() && policy::host_declared(&host, port, &c.hosts));
        if let Some((name, _)) = declared {
            ctx.credential = Some(name.clone());
            let Some(minter) = &state.minter else {
                let why = format!(
                    "{host} is a declared host of {who}'s credential '{name}', but the gateway has no town CA to intercept it with{}; the town hall must give the gateway its CA",
                    state.ca_problem.as_deref().map(|p| format!(" ({p})")).unwrap_or_default()
                );
                return self.failed(&ctx, Shape::Plain, &why);
            };
            let tls = match minter.server_config(&host) {
                Ok(tls) => tls,
                Err(why) => return self.failed(&ctx, Shape::Plain, &why),
            };
            let upgrade = hyper::upgrade::on(&mut req);
            let intercept = Intercept {
                shared: self.clone(),
                uid: uid.unwrap_or(u32::MAX),
                credential: name.clone(),
                host,
                port,
                upstream: Arc::new(tokio::sync::Mutex::new(None)),
            };
            tokio::spawn(async move {
                match upgrade.await {
                    Ok(upgraded) => intercept.serve(upgraded, tls).await,
                    Err(e) => tracing::debug!("CONNECT upgrade failed: {e}"),
                }
            });
            return respond::connected();
        }
        if agent.egress_restricted {
            let why = format!(
                "{host}:{port} is not a declared host of {who}'s credentials and {who}'s egress is restricted"
            );
            return self.deny(&ctx, Shape::Plain, StatusCode::FORBIDDEN, &why);
        }
        let remote = match TcpStream::connect((host.as_str(), port)).await {
            Ok(remote) => remote,
            Err(e) => {
                return self.failed(
                    &ctx,
                    Shape::Plain,
                    &format!("cannot connect to {host}:{port}: {e}"),
                )
            }
        };
        let upgrade = hyper::upgrade::on(&mut req);
        let shared = self.clone();
        tokio::spawn(async move {
            let (up, down) = match upgrade.await {
                Ok(upgraded) => {
                    let (client_read, client_write) = tokio::io::split(TokioIo::new(upgraded));
                    let (remote_read, remote_write) = remote.into_split();
                    tokio::join!(
                        pump(client_read, remote_write),
                        pump(remote_read, client_write)
                    )
                }
                Err(_) => (0, 0),
            };
            let mut record = ctx.record(StatusCode::OK, "forwarded".to_owned());
            record.bytes_up = up;
            record.bytes_down = down;
            shared.emit(Event::Call(record));
        });
        respond::connected()
    }
}

/// One intercepted CONNECT: TLS in the host's name toward the agent, and one
/// upstream connection reused for the requests on it.
#[derive(Clone)]
struct Intercept {
    shared: Arc<Shared>,
    uid: u32,
    credential: String,
    host: String,
    port: u16,
    upstream: Arc<tokio::sync::Mutex<Option<SendRequest<Upward>>>>,
}

impl Intercept {
    async fn serve(self, upgraded: hyper::upgrade::Upgraded, tls: Arc<rustls::ServerConfig>) {
        let stream = match tokio_rustls::TlsAcceptor::from(tls)
            .accept(TokioIo::new(upgraded))
            .await
        {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!("TLS from the agent for {} failed: {e}", self.host);
                return;
            }
        };
        let service = service_fn(move |req| {
            let this = self.clone();
            async move { Ok::<_, Infallible>(this.request(req).await) }
        });
        let _ = http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(stream), service)
            .await;
    }

    fn authority(&self) -> String {
        if self.port == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    async fn request(&self, req: Request<Incoming>) -> Response<ResBody> {
        let shared = &self.shared;
        let mut ctx = CallCtx::new(
            Some(self.uid),
            req.method(),
            &self.authority(),
            req.uri().path(),
        );
        ctx.credential = Some(self.credential.clone());
        let state = shared.state();
        let agent = match shared.caller(&state, Some(self.uid), &mut ctx, Shape::Plain) {
            Ok(agent) => agent,
            Err(denied) => return *denied,
        };
        // The config may have changed since the CONNECT.
        let cred = match agent.credentials.get(&self.credential) {
            Some(cred) if policy::host_declared(&self.host, self.port, &cred.hosts) => cred,
            _ => {
                let why = format!(
                    "{} no longer has a credential '{}' for {}",
                    agent.name,
                    self.credential,
                    self.authority()
                );
                return shared.deny(&ctx, Shape::Plain, StatusCode::FORBIDDEN, &why);
            }
        };
        if let Err(denied) = shared.admit(&state, agent, &self.credential, cred, &ctx, None) {
            return *denied;
        }
        let target = match cred.upstream.as_deref().map(Target::parse) {
            Some(Ok(target)) => target,
            Some(Err(why)) => return shared.failed(&ctx, Shape::Plain, &why),
            None => Target {
                scheme: "https".to_owned(),
                host: self.host.clone(),
                port: self.port,
                base_path: String::new(),
            },
        };
        let (mut parts, body) = req.into_parts();
        policy::strip_request_headers(&mut parts.headers);
        if let Ok(host) = HeaderValue::from_str(&self.authority()) {
            parts.headers.insert(HOST, host);
        }
        match policy::credential_header(cred) {
            Ok((header, value)) => parts.headers.insert(header, value),
            Err(why) => return shared.failed(&ctx, Shape::Plain, &why),
        };
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        parts.uri = match path.parse() {
            Ok(uri) => uri,
            Err(_) => {
                return shared.deny(
                    &ctx,
                    Shape::Plain,
                    StatusCode::BAD_REQUEST,
                    "bad request path",
                )
            }
        };
        parts.version = Version::HTTP_11;
        let bytes_up = Arc::new(AtomicU64::new(0));
        let upward = Request::from_parts(parts, Counted::new(body, bytes_up.clone()));

        let mut slot = self.upstream.lock().await;
        let reusable = match slot.as_mut() {
            Some(send) if !send.is_closed() => send.ready().await.is_ok(),
            _ => false,
        };
        if !reusable {
            match upstream::connect(&target, &self.host, cred.upstream_ca.as_deref()).await {
                Ok(send) => *slot = Some(send),
                Err(why) => return shared.failed(&ctx, Shape::Plain, &why),
            }
        }
        let Some(send) = slot.as_mut() else {
            return shared.failed(&ctx, Shape::Plain, "no upstream connection");
        };
        let sent = send.send_request(upward);
        drop(slot);
        match sent.await {
            Ok(response) => shared.clone().pass_back(ctx, response, bytes_up),
            Err(e) => {
                let why = format!(
                    "the upstream for {} failed: {}",
                    self.authority(),
                    error_chain(&e)
                );
                shared.failed(&ctx, Shape::Plain, &why)
            }
        }
    }
}

/// Copies one direction of a tunnel until either side ends; returns the
/// bytes copied (kept even when the copy ends in an error, unlike
/// `copy_bidirectional`).
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        total += n as u64;
    }
    let _ = to.shutdown().await;
    total
}

/// The model a JSON request body names, if any.
fn model_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Model {
        model: Option<serde_json::Value>,
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    let model = serde_json::from_slice::<Model>(body).ok()?.model?;
    Some(match model {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
