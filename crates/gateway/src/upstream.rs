//! Connections to the real services: a pooled HTTPS client per set of
//! trusted roots for the model APIs, and one connection per intercepted
//! client connection for the HTTPS proxy, where the TLS name is the host
//! the agent asked for even when the gateway connects somewhere else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;

/// The pooled client the reverse proxy forwards with.
pub(crate) type Pooled = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A TLS client configuration trusting the web's roots plus `extra` PEM roots.
pub(crate) fn tls_client_config(extra: Option<&str>) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("upstreamCa is not PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("upstreamCa is not a usable root: {e}"))?;
        }
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Pooled clients, one per distinct `upstreamCa`.
#[derive(Default)]
pub(crate) struct Clients {
    by_roots: Mutex<HashMap<Option<String>, Pooled>>,
}

impl Clients {
    /// The pooled client that trusts the web's roots plus `extra`.
    pub(crate) fn get(&self, extra: Option<&str>) -> Result<Pooled, String> {
        let key = extra.map(str::to_owned);
        if let Some(client) = self.by_roots.lock().expect("clients").get(&key) {
            return Ok(client.clone());
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let mut tls = tls_client_config(extra)?;
        // hyper-rustls sets ALPN itself and refuses a config that already has it.
        tls.alpn_protocols.clear();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build(https);
        self.by_roots
            .lock()
            .expect("clients")
            .insert(key, client.clone());
        Ok(client)
    }
}

/// Where and how to reach an upstream: parsed from a URL such as
/// `https://api.anthropic.com/base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// "https" or "http".
    pub scheme: String,
    /// Host name or IP (no brackets).
    pub host: String,
    /// Port, defaulted from the scheme.
    pub port: u16,
    /// Base path without a trailing slash ("" for none).
    pub base_path: String,
}

impl Target {
    /// Parses an upstream URL, allowing plain http only to loopback.
    pub(crate) fn parse(url: &str) -> Result<Target, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| format!("the upstream {url:?} is not a URL"))?;
        let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
        let authority = uri
            .authority()
            .ok_or_else(|| format!("the upstream {url:?} has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = match (authority.port_u16(), scheme.as_str()) {
            (Some(port), _) => port,
            (None, "https") => 443,
            (None, "http") => 80,
            _ => return Err(format!("the upstream {url:?} must be https://")),
        };
        if scheme == "http" && !is_loopback(&host) {
            return Err(format!(
                "the upstream {url:?} is plain http to a host that is not loopback; use https://"
            ));
        }
        Ok(Target {
            scheme,
            host,
            port,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// `host` or `host:port`, as the Host header says it.
    pub(crate) fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.scheme == "http" { 80 } else { 443 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Opens an HTTP/1.1 connection to `target`, speaking TLS in the name of
/// `tls_name` (the host the agent asked for).
pub(crate) async fn connect<B>(
    target: &Target,
    tls_name: &str,
    extra_roots: Option<&str>,
) -> Result<SendRequest<B>, String>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let addr = (target.host.as_str(), target.port);
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", target.host, target.port))?;
    let _ = tcp.set_nodelay(true);
    if target.scheme == "http" {
        return handshake(TokioIo::new(tcp)).await;
    }
    let config = Arc::new(tls_client_config(extra_roots)?);
    let name = ServerName::try_from(tls_name.to_owned())
        .map_err(|_| format!("{tls_name} is not a TLS server name"))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {tls_name} failed: {e}"))?;
    handshake(TokioIo::new(tls)).await
}

async fn handshake<I, B>(io: I) -> Result<SendRequest<B>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake upstream failed: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("upstream connection ended: {e}");
        }
    });
    Ok(send)
}

/// Keeps `Incoming` nameable for the intercepted requests' body type.
pub(crate) type Upward = crate::meter::Counted<Incoming>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("https://api.anthropic.com/base/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.base_path.as_str()),
            ("api.anthropic.com", 443, "/base")
        );
        assert_eq!(t.authority(), "api.anthropic.com");
        let t = Target::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!((t.port, t.authority().as_str()), (9000, "127.0.0.1:9000"));
        assert!(Target::parse("http://example.com").is_err());
        assert!(Target::parse("ftp://example.com").is_err());
        assert!(Target::parse("not a url").is_err());
    }
}
