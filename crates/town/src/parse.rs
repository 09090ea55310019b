//! Reading a town from TOML or JSON.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::validate::{validate, Problem};
use crate::Town;

/// The two serialisations of a town.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `town.toml`, written by hand.
    Toml,
    /// `town.json`, written by the NixOS module.
    Json,
}

impl Format {
    /// The format a file name implies: `.json` is JSON, anything else TOML.
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            _ => Format::Toml,
        }
    }
}

/// Why a town could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TownError {
    /// The file could not be read.
    #[error("cannot read town {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No town file was given and none was found at the default places.
    #[error("no town given and none found at /etc/nuketown/town.json or /etc/nuketown/town.toml; pass one as an argument, with --town, or in NUKETOWN_TOWN")]
    NotFound,
    /// The text is not a town: bad syntax, a wrong type, or an unknown key.
    #[error("{origin}: {key}: {message}")]
    Syntax {
        /// The file (or `<input>`).
        origin: String,
        /// The key path, e.g. `agents.ada.sudo.timeout`.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The town parses but breaks a rule.
    #[error("{origin}: the town is invalid:\n{}", ProblemList(.problems))]
    Invalid {
        /// The file (or `<input>`).
        origin: String,
        /// Every problem found, each naming its key.
        problems: Vec<Problem>,
    },
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// The town file used when none is named: `town.json`, then `town.toml` in `/etc/nuketown`.
pub fn default_town_path() -> Option<PathBuf> {
    ["/etc/nuketown/town.json", "/etc/nuketown/town.toml"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// This host's name, for the default domain.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Read, default and validate the town at `path`.
pub fn load(path: &Path) -> Result<Town, TownError> {
    let text = std::fs::read_to_string(path).map_err(|source| TownError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(
        &text,
        Format::of(path),
        &path.display().to_string(),
        &hostname(),
    )
}

/// Parse `text`, fill host defaults from `hostname`, and validate.
/// `origin` names the input in error messages.
pub fn parse(text: &str, format: Format, origin: &str, hostname: &str) -> Result<Town, TownError> {
    let mut town = deserialize(text, format, origin)?;
    if !town.cloud.is_unset() {
        town = with_town_cloud(text, format, origin)?;
    }
    town.resolve_defaults(hostname);
    let problems = validate(&town);
    if problems.is_empty() {
        Ok(town)
    } else {
        Err(TownError::Invalid {
            origin: origin.to_string(),
            problems,
        })
    }
}

fn deserialize(text: &str, format: Format, origin: &str) -> Result<Town, TownError> {
    let syntax = |key: String, message: String| {
        let message = moved(&key, &message).unwrap_or(message);
        TownError::Syntax {
            origin: origin.to_string(),
            key: if key.is_empty() || key == "." {
                "(top level)".to_string()
            } else {
                key
            },
            message,
        }
    };
    match format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let town: Town = serde_path_to_error::deserialize(&mut de)
                .map_err(|e| syntax(e.path().to_string(), explain(&e.inner().to_string())))?;
            de.end().map_err(|e| syntax(String::new(), e.to_string()))?;
            Ok(town)
        }
        Format::Toml => {
            let de = toml::Deserializer::new(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let mut msg = explain(inner.message());
                if let Some(span) = inner.span() {
                    let line = text[..span.start].matches('\n').count() + 1;
                    msg = format!("{msg} (line {line})");
                }
                syntax(path, msg)
            })
        }
    }
}

/// The town read again with the town-wide `cloud` table as the default of
/// every agent's: each key an agent's `cloud` leaves out is taken from it
/// (tables key by key). The text has been read once already, so every
/// key and type is known to be right.
fn with_town_cloud(text: &str, format: Format, origin: &str) -> Result<Town, TownError> {
    let syntax = |message: String| TownError::Syntax {
        origin: origin.to_string(),
        key: "cloud".to_string(),
        message,
    };
    let mut v: serde_json::Value = match format {
        Format::Json => serde_json::from_str(text).map_err(|e| syntax(e.to_string()))?,
        Format::Toml => toml::from_str(text).map_err(|e| syntax(e.to_string()))?,
    };
    let defaults = v.get("cloud").cloned().unwrap_or_default();
    if let Some(agents) = v.get_mut("agents").and_then(|a| a.as_object_mut()) {
        for agent in agents.values_mut().filter_map(|a| a.as_object_mut()) {
            let cloud = agent
                .entry("cloud")
                .or_insert_with(|| serde_json::json!({}));
            fill_missing(cloud, &defaults);
        }
    }
    serde_path_to_error::deserialize(v)
        .map_err(|e| syntax(format!("{}: {}", e.path(), explain(&e.inner().to_string()))))
}

/// Copy into `into` every key of `from` it lacks, tables key by key.
fn fill_missing(into: &mut serde_json::Value, from: &serde_json::Value) {
    let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) else {
        return;
    };
    for (k, v) in from {
        match into.get_mut(k) {
            None => {
                into.insert(k.clone(), v.clone());
            }
            Some(have) => fill_missing(have, v),
        }
    }
}

/// Keys that moved: what to write instead.
fn moved(key: &str, message: &str) -> Option<String> {
    let rest = key.strip_prefix("agents.")?;
    if let Some(agent) = rest.strip_suffix(".cloud.scaling.maxResources") {
        if message.contains("map") || message.contains("table") {
            return Some(format!(
                "is now the largest tier agents.{agent} may be moved to when it asks (e.g. maxResources = \"large\"); \
                 the namespace quota moved to `agents.{agent}.cloud.scaling.quota`: move the table there"
            ));
        }
        return None;
    }
    let agent = rest.strip_suffix(".cloud.egress")?;
    Some(format!(
        "`cloud.egress` moved to `agents.{agent}.network.egress`, one key for the host's firewall and the cluster's NetworkPolicy; \
         move the list there (`network.egress = [{{ cidr = \"10.0.0.0/8\", ports = [443] }}]`; `\"all\"` or `\"none\"` also work)"
    ))
}

/// Turn serde's wording into advice.
fn explain(message: &str) -> String {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((key, known)) = rest.split_once('`') {
            let known = known
                .trim_start_matches(',')
                .trim()
                .trim_start_matches("expected one of ")
                .trim_start_matches("expected ")
                .replace("` or `", ", ")
                .replace('`', "");
            return format!("unknown key `{key}`; remove it or use one of: {known}");
        }
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        if let Some((key, _)) = rest.split_once('`') {
            return format!("missing required key `{key}`; add it");
        }
    }
    message.to_string()
}
