//! Credentials the agent uses through the town's gateway and never holds:
//! the declared ones (`agents.<n>.credentials.<name>`) and the extra
//! secrets switched over with `gateway = "<api>"`, resolved into one list;
//! where the agent's tools find the gateway (the environment the town
//! writes); and their checks.

use std::collections::BTreeMap;

use crate::{Credential, CredentialLimits, Town};

/// The APIs a credential may be for.
pub const APIS: &[&str] = &["anthropic", "openai", "github", "http"];

/// The gateway's CA certificate, published in `hall.gateway.runDir` for
/// the agents' tools (public; the key stays sealed in the town's key store).
pub const CA_CERT: &str = "ca.pem";
/// The system's CA bundle with the town's CA added, for tools that read one
/// file (`SSL_CERT_FILE`, `GIT_SSL_CAINFO`, `REQUESTS_CA_BUNDLE`).
pub const CA_BUNDLE: &str = "ca-bundle.pem";
/// The directory of pause markers (`<agent>` present: refused at once).
pub const PAUSED: &str = "paused";
/// The directory of usage summaries (`<agent>.json`, readable by the agent).
pub const USAGE: &str = "usage";

/// The default upstream of a model API.
pub fn default_upstream(api: &str) -> Option<&'static str> {
    match api {
        "anthropic" => Some("https://api.anthropic.com"),
        "openai" => Some("https://api.openai.com"),
        _ => None,
    }
}

/// The hosts a `github` credential is for unless written.
pub const GITHUB_HOSTS: &[&str] = &["github.com", "api.github.com"];

/// Whether `api` is a model API (reached at the gateway's `/<name>`),
/// not through its HTTPS proxy.
pub fn is_model_api(api: &str) -> bool {
    matches!(api, "anthropic" | "openai")
}

impl Town {
    /// Agent `name`'s credentials: the declared ones and its extra secrets
    /// with `gateway` set (named as the entry, of that API).
    pub fn credentials_of(&self, name: &str) -> BTreeMap<String, Credential> {
        let Some(agent) = self.agents.get(name) else {
            return BTreeMap::new();
        };
        let mut out = agent.credentials.clone();
        for (sname, secret) in &agent.secrets.extra_secrets {
            if let Some(api) = &secret.gateway {
                out.entry(sname.clone()).or_insert_with(|| Credential {
                    source: secret.source.clone(),
                    systemd_credential: None,
                    api: api.clone(),
                    upstream: None,
                    hosts: Vec::new(),
                    paths: Vec::new(),
                    models: Vec::new(),
                    header: None,
                    scheme: None,
                    limits: CredentialLimits::default(),
                    on_limit: "deny".into(),
                    upstream_ca: None,
                });
            }
        }
        out
    }

    /// Whether any agent of this host has a credential (the hall runs the
    /// gateway then).
    pub fn has_credentials(&self) -> bool {
        self.host_agents()
            .any(|(n, _)| !self.credentials_of(n).is_empty())
    }

    /// What the town sets in agent `name`'s environment so its tools use
    /// the gateway: model APIs' base URLs (and a placeholder key, which the
    /// gateway replaces), the HTTPS proxy and the town's CA when it has a
    /// `github` or `http` credential. Empty without credentials.
    pub fn gateway_env(&self, name: &str) -> Vec<(String, String)> {
        let creds = self.credentials_of(name);
        let base = format!("http://127.0.0.1:{}", self.hall.gateway.port);
        let mut env = Vec::new();
        let mut set = |k: &str, v: String| {
            if !env.iter().any(|(x, _): &(String, String)| x == k) {
                env.push((k.to_string(), v));
            }
        };
        let mut proxied = false;
        for (cname, c) in &creds {
            let placeholder = format!("nuketown-gateway-{cname}");
            match c.api.as_str() {
                "anthropic" => {
                    set("ANTHROPIC_BASE_URL", format!("{base}/{cname}"));
                    set("ANTHROPIC_API_KEY", placeholder);
                }
                "openai" => {
                    set("OPENAI_BASE_URL", format!("{base}/{cname}/v1"));
                    set("OPENAI_API_BASE", format!("{base}/{cname}/v1"));
                    set("OPENAI_API_KEY", placeholder);
                }
                "github" => {
                    set("GH_TOKEN", placeholder);
                    proxied = true;
                }
                _ => proxied = true,
            }
        }
        if proxied {
            for k in ["HTTPS_PROXY", "https_proxy"] {
                set(k, base.clone());
            }
            for k in ["NO_PROXY", "no_proxy"] {
                set(k, "localhost,127.0.0.1,::1".into());
            }
            let run = &self.hall.gateway.run_dir;
            let bundle = run.join(CA_BUNDLE).display().to_string();
            for k in [
                "SSL_CERT_FILE",
                "GIT_SSL_CAINFO",
                "REQUESTS_CA_BUNDLE",
                "CURL_CA_BUNDLE",
            ] {
                set(k, bundle.clone());
            }
            set(
                "NODE_EXTRA_CA_CERTS",
                run.join(CA_CERT).display().to_string(),
            );
        }
        env
    }
}

/// Whether `name` may name a credential (it is a URL path segment).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

/// Whether `url` is an upstream the gateway will call: https, or http to
/// this machine's loopback.
pub fn valid_upstream(url: &str) -> bool {
    if let Some(rest) = url.strip_prefix("https://") {
        return !rest.is_empty() && !rest.starts_with('/');
    }
    if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split(['/', '?']).next().unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        return matches!(host, "127.0.0.1" | "localhost" | "[::1]");
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_https_or_this_machines_loopback() {
        assert!(valid_upstream("https://api.anthropic.com"));
        assert!(valid_upstream("http://127.0.0.1:8080"));
        assert!(valid_upstream("http://localhost/v1"));
        assert!(valid_upstream("http://[::1]:9"));
        assert!(!valid_upstream("http://api.anthropic.com"));
        assert!(!valid_upstream("http://127.0.0.1.evil.example"));
        assert!(!valid_upstream("ftp://x"));
        assert!(!valid_upstream("https://"));
    }

    #[test]
    fn names_are_path_segments() {
        assert!(valid_name("anthropic"));
        assert!(valid_name("gh-2"));
        assert!(!valid_name("../x"));
        assert!(!valid_name("A"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(33)));
    }
}
