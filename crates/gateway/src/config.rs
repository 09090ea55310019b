//! The gateway's configuration: which Unix users are agents, and which
//! credentials each may use, where, and how much. The town hall sends it as
//! one JSON line; secrets live only here and in upstream requests.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// Everything the gateway needs to run; sent by the town hall on stdin.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Loopback address to listen on (the town's default is 127.0.0.1:8399).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The agents by Unix uid; JSON keys are the uid as a string ("1950").
    #[serde(default)]
    pub agents: BTreeMap<u32, AgentSpec>,
    /// The town CA that signs leaf certificates for intercepted hosts.
    #[serde(default)]
    pub ca: Option<TownCa>,
    /// A file named after an agent in this directory pauses that agent.
    #[serde(default)]
    pub pause_dir: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8399))
}

/// One agent: its name and the credentials it may use through the gateway.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// The agent's name, used in messages, events and the pause marker.
    pub name: String,
    /// When set, CONNECT to hosts no credential declares is refused.
    #[serde(default)]
    pub egress_restricted: bool,
    /// The agent's credentials by the name it uses for them.
    #[serde(default)]
    pub credentials: BTreeMap<String, Credential>,
}

/// A credential the agent may use but never sees.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    /// Which kind of API this is; decides how the secret is added.
    pub api: Api,
    /// The secret itself.
    pub secret: Secret,
    /// Model APIs: base URL; proxy APIs: where to connect instead of the requested host.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Proxy APIs: hosts (`host` or `host:port`) whose HTTPS traffic gets the credential.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Allowed path prefixes; empty allows every path.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Model APIs: allowed `model` values, a trailing `*` matching a prefix; empty allows any.
    #[serde(default)]
    pub models: Vec<String>,
    /// Header that carries the secret, when not the API's usual one.
    #[serde(default)]
    pub header: Option<String>,
    /// Scheme put before the secret (`Bearer`, `Basic`, `token`, or "" for none).
    #[serde(default)]
    pub scheme: Option<String>,
    /// How much the agent may use this credential.
    #[serde(default)]
    pub limits: Limits,
    /// What reaching a limit means besides the refusal.
    #[serde(default)]
    pub on_limit: OnLimit,
    /// Extra PEM root certificates trusted for this upstream.
    #[serde(default)]
    pub upstream_ca: Option<String>,
    /// Earlier calls, to seed the rolling windows after a restart.
    #[serde(default)]
    pub used: Vec<Usage>,
}

/// The kinds of API the gateway knows how to add a credential to.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// Anthropic's Messages API: `x-api-key`, reverse proxied.
    Anthropic,
    /// OpenAI's APIs: `Authorization: Bearer`, reverse proxied.
    Openai,
    /// GitHub over HTTPS: Basic `x-access-token`, intercepted at CONNECT.
    Github,
    /// Any HTTPS service: a header and scheme of your choosing, intercepted at CONNECT.
    Http,
}

impl Api {
    /// Whether this API is used through the reverse proxy rather than CONNECT.
    pub fn is_model_api(self) -> bool {
        matches!(self, Api::Anthropic | Api::Openai)
    }
}

/// Rolling-window limits on one credential; `None` means unlimited.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Requests in the last hour.
    #[serde(default)]
    pub requests_per_hour: Option<u64>,
    /// Requests in the last day.
    #[serde(default)]
    pub requests_per_day: Option<u64>,
    /// Tokens (in + out) in the last hour.
    #[serde(default)]
    pub tokens_per_hour: Option<u64>,
    /// Tokens (in + out) in the last day.
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
}

/// What the town wants when a limit is reached.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum OnLimit {
    /// Refuse until calls age out of the window.
    #[default]
    Deny,
    /// Refuse, and tell the agent it may ask a human for more
    /// (`nuketown ask credential NAME`).
    Ask,
}

/// One earlier call: when (unix seconds) and how many tokens it used.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Unix seconds of the call.
    pub at: u64,
    /// Tokens it used (0 when unknown).
    #[serde(default)]
    pub tokens: u64,
}

/// The town's certificate authority, trusted by agents for intercepted hosts.
#[derive(Deserialize, Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct TownCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA's private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for TownCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TownCa")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<secret>")
            .finish()
    }
}

/// A secret string: wiped from memory on drop, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret itself, for building the upstream request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_halls_json() {
        let json = r#"{"listen":"127.0.0.1:0","agents":{"1950":{"name":"ada","egressRestricted":true,
            "credentials":{"anthropic":{"api":"anthropic","secret":"sk-real","models":["claude-*"],
            "limits":{"tokensPerHour":1000},"onLimit":"ask","used":[{"at":5,"tokens":7}]}}}}}"#;
        let config: Config = serde_json::from_str(json).unwrap();
        let ada = &config.agents[&1950];
        assert!(ada.egress_restricted);
        let cred = &ada.credentials["anthropic"];
        assert_eq!(cred.secret.expose(), "sk-real");
        assert_eq!(cred.limits.tokens_per_hour, Some(1000));
        assert_eq!(cred.on_limit, OnLimit::Ask);
        assert_eq!(cred.used, vec![Usage { at: 5, tokens: 7 }]);
        assert!(!format!("{config:?}").contains("sk-real"));
    }
}
