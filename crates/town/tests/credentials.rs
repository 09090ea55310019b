//! Credentials the agent uses through the town's gateway: how they are
//! written, the one key that moves an extra secret over, what the agent's
//! environment says, and bad input refused naming the key and the fix.

use nuketown_town::{parse, Format, Town, TownError};

fn toml(text: &str) -> Result<Town, TownError> {
    parse(text, Format::Toml, "town.toml", "forge")
}

fn err(text: &str) -> String {
    toml(text).expect_err("must be rejected").to_string()
}

const TOWN: &str = r#"
sopsFile = "/etc/nuketown/agents.yaml"
humanUser = "mara"

[agents.ada]
uid = 1100
role = "backend"

[agents.ada.credentials.anthropic]
api = "anthropic"
source = "ada/anthropic-key"
models = ["claude-sonnet-*"]
limits = { tokensPerHour = 200000, requestsPerDay = 2000 }
onLimit = "ask"

[agents.ada.credentials.gh]
api = "github"
source = "/run/keys/ada-gh"
paths = ["/repos/forge/", "/forge/"]

[agents.ada.secrets.extraSecrets.openai]
source = "ada/openai-key"
path = ".config/openai/key"
gateway = "openai"

[agents.vox]
uid = 1101
role = "reviewer"
"#;

#[test]
fn declared_credentials_and_a_switched_extra_secret_are_one_list() {
    let town = toml(TOWN).unwrap();
    let creds = town.credentials_of("ada");
    assert_eq!(
        creds.keys().collect::<Vec<_>>(),
        ["anthropic", "gh", "openai"]
    );
    assert_eq!(creds["openai"].api, "openai");
    assert_eq!(
        creds["openai"].source.as_deref(),
        Some(std::path::Path::new("ada/openai-key"))
    );
    assert_eq!(creds["anthropic"].limits.tokens_per_hour, Some(200000));
    assert_eq!(creds["anthropic"].on_limit, "ask");
    assert!(town.credentials_of("vox").is_empty());
    assert!(town.has_credentials());
    assert_eq!(town.hall.gateway.port, 8399);
    assert_eq!(town.hall.gateway.user, "nuketown-gateway");
}

#[test]
fn the_agents_environment_points_its_tools_at_the_gateway_and_holds_no_key() {
    let town = toml(TOWN).unwrap();
    let env: std::collections::BTreeMap<_, _> = town.gateway_env("ada").into_iter().collect();
    assert_eq!(env["ANTHROPIC_BASE_URL"], "http://127.0.0.1:8399/anthropic");
    assert_eq!(env["OPENAI_BASE_URL"], "http://127.0.0.1:8399/openai/v1");
    assert_eq!(env["ANTHROPIC_API_KEY"], "nuketown-gateway-anthropic");
    assert_eq!(env["HTTPS_PROXY"], "http://127.0.0.1:8399");
    assert_eq!(env["GIT_SSL_CAINFO"], "/run/nuketown/gateway/ca-bundle.pem");
    assert!(town.gateway_env("vox").is_empty());
}

#[test]
fn credentials_survive_town_json() {
    let town = toml(TOWN).unwrap();
    let json = serde_json::to_string(&town).unwrap();
    let again = parse(&json, Format::Json, "town.json", "forge").unwrap();
    assert_eq!(again.credentials_of("ada"), town.credentials_of("ada"));
}

#[test]
fn bad_credentials_are_refused_naming_the_key_and_the_fix() {
    let with = |extra: &str| format!("{TOWN}\n{extra}");
    let cases: &[(&str, &str, &str)] = &[
        (
            "[agents.vox.credentials.k]\napi = \"anthropic\"\n",
            "agents.vox.credentials.k",
            "source",
        ),
        (
            "[agents.vox.credentials.k]\napi = \"gitlab\"\nsource = \"/run/keys/k\"\n",
            "agents.vox.credentials.k.api",
            "anthropic, openai, github, http",
        ),
        (
            "[agents.vox.credentials.K]\napi = \"openai\"\nsource = \"/run/keys/k\"\n",
            "agents.vox.credentials.K",
            "lowercase",
        ),
        (
            "[agents.vox.credentials.k]\napi = \"openai\"\nsource = \"/run/keys/k\"\nupstream = \"http://api.openai.com\"\n",
            "agents.vox.credentials.k.upstream",
            "https://",
        ),
        (
            "[agents.vox.credentials.k]\napi = \"http\"\nsource = \"/run/keys/k\"\n",
            "agents.vox.credentials.k.hosts",
            "hosts",
        ),
        (
            "[agents.vox.credentials.k]\napi = \"github\"\nsource = \"/run/keys/k\"\nmodels = [\"x\"]\n",
            "agents.vox.credentials.k.models",
            "only model APIs",
        ),
        (
            "[agents.vox.credentials.k]\napi = \"openai\"\nsource = \"/run/keys/k\"\nonLimit = \"beg\"\n",
            "agents.vox.credentials.k.onLimit",
            "\"deny\" or \"ask\"",
        ),
        (
            "[agents.vox.credentials.k]\napi = \"openai\"\nsource = \"/run/keys/k\"\nlimits = { tokensPerHour = 0 }\n",
            "agents.vox.credentials.k.limits.tokensPerHour",
            "pause",
        ),
        (
            "[agents.vox.credentials.k]\napi = \"openai\"\nsource = \"/run/keys/k\"\n[agents.vox.credentials.j]\napi = \"openai\"\nsource = \"/run/keys/j\"\n",
            "agents.vox.credentials.k",
            "keep one",
        ),
        (
            "[agents.vox.secrets.extraSecrets.k]\nsource = \"/run/keys/k\"\ngateway = \"ftp\"\n",
            "agents.vox.secrets.extraSecrets.k.gateway",
            "not an API",
        ),
        (
            "[agents.vox.credentials.k]\napi = \"openai\"\nsource = \"/run/keys/k\"\nlimit = 5\n",
            "agents.vox.credentials.k.limit",
            "unknown key `limit`; remove it or use one of",
        ),
        (
            "[agents.vox.credentials.k]\napi = \"anthropic\"\nsource = \"/run/keys/k\"\n[agents.vox.secrets.extraSecrets.j]\nsource = \"/run/keys/j\"\ngateway = \"anthropic\"\n",
            "agents.vox.credentials.k",
            "keep one",
        ),
        (
            "[hall.gateway]\nuser = \"root\"\n",
            "hall.gateway.user",
            "not root",
        ),
    ];
    for (extra, key, fix) in cases {
        let e = err(&with(extra));
        assert!(e.contains(key), "{extra}: {e}");
        assert!(e.contains(fix), "{extra}: {e}");
    }
}
