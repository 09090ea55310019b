//! The checks and rewrites applied to each request, as pure functions:
//! which paths and models are allowed, which headers never leave, and the
//! header that carries the credential.

use base64::Engine;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{Api, Credential};

/// Headers that carry a caller's own credentials; never forwarded.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
];

/// Hop-by-hop headers, meaningful only on one connection.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes the caller's credentials, hop-by-hop headers and Host.
pub(crate) fn strip_request_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    for name in CREDENTIAL_HEADERS {
        headers.remove(*name);
    }
    headers.remove(http::header::HOST);
}

/// Removes hop-by-hop headers, including any the Connection header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// The header and value that present `cred` upstream.
pub(crate) fn credential_header(cred: &Credential) -> Result<(HeaderName, HeaderValue), String> {
    let default_header = match cred.api {
        Api::Anthropic => "x-api-key",
        _ => "authorization",
    };
    let default_scheme = match cred.api {
        Api::Anthropic => "",
        Api::Openai | Api::Http => "Bearer",
        Api::Github => "Basic",
    };
    let header = cred.header.as_deref().unwrap_or(default_header);
    let scheme = cred.scheme.as_deref().unwrap_or(default_scheme);
    let secret = cred.secret.expose();
    let value = if scheme.is_empty() {
        secret.to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let user_pass = match (cred.api, secret.contains(':')) {
            (_, true) => secret.to_owned(),
            (Api::Github, false) => format!("x-access-token:{secret}"),
            (_, false) => format!("{secret}:"),
        };
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    } else {
        format!("{scheme} {secret}")
    };
    let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
        format!("the credential's header name {header:?} is not a valid header name")
    })?;
    let mut value = HeaderValue::from_str(&value)
        .map_err(|_| "the credential's secret cannot be sent in a header".to_owned())?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// Checks a raw (still percent-encoded) request path against `allowed`.
pub(crate) fn check_path(path: &str, allowed: &[String]) -> Result<(), String> {
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "\\"]
        .iter()
        .any(|bad| lower.contains(bad))
    {
        return Err(format!(
            "the path {path} hides a dot, slash or backslash in percent-encoding; send it plainly"
        ));
    }
    if path
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
    {
        return Err(format!(
            "the path {path} has a '.' or '..' segment; send the resolved path"
        ));
    }
    if allowed.is_empty()
        || allowed
            .iter()
            .any(|prefix| path.starts_with(prefix.as_str()))
    {
        Ok(())
    } else {
        Err(format!(
            "the path {path} is outside the allowed paths ({})",
            allowed.join(", ")
        ))
    }
}

/// Whether `model` is allowed by `models` (empty allows any; `x*` is a prefix).
pub(crate) fn model_allowed(model: &str, models: &[String]) -> bool {
    models.is_empty()
        || models.iter().any(|m| match m.strip_suffix('*') {
            Some(prefix) => model.starts_with(prefix),
            None => model == m,
        })
}

/// Whether `authority` (host or host:port) is one of `hosts`, 443 being the default port.
pub(crate) fn host_declared(host: &str, port: u16, hosts: &[String]) -> bool {
    hosts.iter().any(|declared| {
        let declared = declared.trim().to_ascii_lowercase();
        let (h, p) = match declared.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                (h.to_owned(), p.parse::<u16>().ok())
            }
            _ => (declared.clone(), None),
        };
        h.trim_start_matches('[').trim_end_matches(']') == host.to_ascii_lowercase()
            && p.unwrap_or(443) == port
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Limits, OnLimit, Secret};

    fn cred(api: Api) -> Credential {
        Credential {
            api,
            secret: Secret::new("s3cret"),
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

    #[test]
    fn credential_headers_per_api() {
        let (n, v) = credential_header(&cred(Api::Anthropic)).unwrap();
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("x-api-key", "s3cret"));
        let (n, v) = credential_header(&cred(Api::Openai)).unwrap();
        assert_eq!(
            (n.as_str(), v.to_str().unwrap()),
            ("authorization", "Bearer s3cret")
        );
        let (_, v) = credential_header(&cred(Api::Github)).unwrap();
        assert_eq!(v.to_str().unwrap(), "Basic eC1hY2Nlc3MtdG9rZW46czNjcmV0");
        let mut c = cred(Api::Http);
        c.header = Some("PRIVATE-TOKEN".into());
        c.scheme = Some(String::new());
        let (n, v) = credential_header(&c).unwrap();
        assert_eq!(
            (n.as_str(), v.to_str().unwrap()),
            ("private-token", "s3cret")
        );
        c.secret = Secret::new("bad\nvalue");
        assert!(credential_header(&c).is_err());
    }

    #[test]
    fn paths_refuse_tricks() {
        let allowed = vec!["/v1/messages".to_owned()];
        assert!(check_path("/v1/messages", &allowed).is_ok());
        assert!(check_path("/v1/messages/count_tokens", &allowed).is_ok());
        assert!(check_path("/v1/models", &allowed).is_err());
        assert!(check_path("/v1/messages/../models", &allowed).is_err());
        assert!(check_path("/v1/messages/%2e%2e/models", &allowed).is_err());
        assert!(check_path("/v1/messages%2F..%2Fmodels", &allowed).is_err());
        assert!(check_path("/anything", &[]).is_ok());
    }

    #[test]
    fn models_and_hosts() {
        let models = vec!["claude-sonnet-*".to_owned(), "gpt-5".to_owned()];
        assert!(model_allowed("claude-sonnet-4", &models));
        assert!(model_allowed("gpt-5", &models));
        assert!(!model_allowed("gpt-5-pro", &models));
        assert!(model_allowed("x", &[]));
        let hosts = vec!["github.com".to_owned(), "git.example:8443".to_owned()];
        assert!(host_declared("github.com", 443, &hosts));
        assert!(host_declared("GitHub.com", 443, &hosts));
        assert!(!host_declared("github.com", 80, &hosts));
        assert!(host_declared("git.example", 8443, &hosts));
        assert!(!host_declared("git.example", 443, &hosts));
    }
}
