//! The module guide's short forms, read as the schema's richer ones: a list
//! for `persist`, a sops secret name for an extra secret, a sudoers-style
//! command line for `sudo.commands`, seconds as an integer for a duration.
//! Each is only a way of writing the long form: what is stored (and what
//! town.json says) is always the long form.

use std::fmt;
use std::path::PathBuf;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::{CommandRule, ExtraSecret, Persist};

/// `persist`'s long form, as written.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PersistTable {
    #[serde(default)]
    directories: Vec<String>,
    #[serde(default)]
    files: Vec<String>,
}

impl<'de> Deserialize<'de> for Persist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Persist;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a list of home-relative directories, or a table with directories and files",
                )
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Persist, A::Error> {
                let directories = Vec::<String>::deserialize(SeqAccessDeserializer::new(seq))?;
                Ok(Persist {
                    directories,
                    files: Vec::new(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Persist, A::Error> {
                let t = PersistTable::deserialize(MapAccessDeserializer::new(map))?;
                Ok(Persist {
                    directories: t.directories,
                    files: t.files,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// An extra secret's long form, as written.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SecretTable {
    #[serde(default)]
    source: Option<PathBuf>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default = "default_secret_mode")]
    mode: String,
    #[serde(default)]
    gateway: Option<String>,
}

fn default_secret_mode() -> String {
    "0400".to_string()
}

impl<'de> Deserialize<'de> for ExtraSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExtraSecret;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the name of a sops secret (\"ada/gh-token\"), or a table with source, path and mode")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ExtraSecret, E> {
                Ok(ExtraSecret {
                    source: Some(PathBuf::from(v)),
                    path: None,
                    mode: default_secret_mode(),
                    gateway: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ExtraSecret, A::Error> {
                let t = SecretTable::deserialize(MapAccessDeserializer::new(map))?;
                Ok(ExtraSecret {
                    source: t.source,
                    path: t.path,
                    mode: t.mode,
                    gateway: t.gateway,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A command line as sudoers writes one: the program alone allows any
/// arguments (a prefix rule); with arguments, exactly those.
pub fn command_line(line: &str) -> CommandRule {
    let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
    CommandRule {
        prefix: argv.len() == 1,
        argv,
        extra: None,
    }
}

struct Rule(CommandRule);

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Rule;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a command line (\"systemctl restart nginx\") or a table with argv (and prefix or extra)",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Rule, E> {
                Ok(Rule(command_line(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Rule, A::Error> {
                // The long form, as written (argv, prefix, extra).
                Ok(Rule(CommandRule::deserialize(MapAccessDeserializer::new(
                    map,
                ))?))
            }
        }
        d.deserialize_any(V)
    }
}

/// A list of command rules, each a table or a sudoers-style command line.
pub fn command_rules<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<CommandRule>, D::Error> {
    let rules = Vec::<Rule>::deserialize(d)?;
    Ok(rules.into_iter().map(|r| r.0).collect())
}

/// A duration: a string (`"1h"`) as written, or a number of seconds.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as \"1h\", or a number of seconds")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<String>, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<String>, E> {
            Ok(Some(format!("{v}s")))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<String>, E> {
            if v < 0 {
                return Err(E::custom(format!(
                    "{v} seconds is negative; write a positive number of seconds or a duration such as \"1h\""
                )));
            }
            Ok(Some(format!("{v}s")))
        }
    }
    d.deserialize_any(V)
}
