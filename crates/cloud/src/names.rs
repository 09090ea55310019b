//! Stable Kubernetes names for the things an agent owns.
//!
//! Every per-agent object is named after the agent; a persisted path's volume
//! claim is `<agent>--<slug>`. The slug never contains `--` and never starts
//! or ends with `-`, and an agent name never ends with `-`, so the name splits
//! back into agent and path one way only: two agents can never be handed the
//! same claim.

use std::collections::BTreeMap;

/// FNV-1a, 64 bit: a stable, dependency-free hash for names and change detection.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `path` as lowercase letters, digits and single dashes.
fn slug(path: &str) -> String {
    let mut s = String::new();
    for c in path.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    s.trim_matches('-').to_string()
}

/// The longest a name may be to stay a DNS label.
const LABEL: usize = 63;

/// The claim name of every persisted path of agent `agent`, by path.
///
/// `<agent>--<slug>`; when that is ambiguous (two paths with one slug, like
/// `.cache` and `cache`), empty, or longer than a DNS label, the slug is cut
/// and followed by a hash of the path, so the name is still stable.
pub fn claims<'a>(
    agent: &str,
    paths: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<String, String> {
    let paths: Vec<&str> = paths.into_iter().collect();
    let mut by_slug: BTreeMap<String, usize> = BTreeMap::new();
    for p in &paths {
        *by_slug.entry(slug(p)).or_default() += 1;
    }
    paths
        .iter()
        .map(|p| {
            let s = slug(p);
            let plain = format!("{agent}--{s}");
            let name = if !s.is_empty() && by_slug[&s] == 1 && plain.len() <= LABEL {
                plain
            } else {
                let hash = format!("{:08x}", fnv1a(p.as_bytes()) as u32);
                let room = LABEL.saturating_sub(agent.len() + 2 + 1 + hash.len());
                let cut = s[..s.len().min(room)].trim_end_matches('-');
                if cut.is_empty() {
                    format!("{agent}--{hash}")
                } else {
                    format!("{agent}--{cut}-{hash}")
                }
            };
            (p.to_string(), name)
        })
        .collect()
}

/// A ConfigMap key for a home-relative file: the path without its leading
/// dots, `/` as `-`, anything outside `[-._a-zA-Z0-9]` as `_`.
pub fn config_key(path: &str) -> String {
    path.split('/')
        .map(|part| part.trim_start_matches('.'))
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Whether `s` may be a key of a ConfigMap or Secret.
pub fn is_config_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether `s` is a label key (or an annotation key): an optional DNS
/// subdomain prefix and `/`, then a name of at most 63 characters.
pub fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(|p| !p.is_empty() && nuketown_town::is_dns_subdomain(p))
        && is_label_value(name)
        && !name.is_empty()
}

/// Whether `s` may be a label value: at most 63 alphanumerics, `-`, `_`, `.`,
/// starting and ending alphanumeric (or empty).
pub fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || s.len() <= LABEL
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_readable_and_unambiguous() {
        let c = claims("ada", ["dev", ".local/share/direnv", ".bash_history"]);
        assert_eq!(c["dev"], "ada--dev");
        assert_eq!(c[".local/share/direnv"], "ada--local-share-direnv");
        assert_eq!(c[".bash_history"], "ada--bash-history");
        let c = claims("ada", [".cache", "cache"]);
        assert_ne!(c[".cache"], c["cache"]);
        assert!(c[".cache"].starts_with("ada--cache-"), "{c:?}");
        let long = "a".repeat(80);
        let c = claims("ada", [long.as_str(), "..."]);
        assert!(
            c.values()
                .all(|n| n.len() <= 63 && nuketown_town::is_dns_label(n)),
            "{c:?}"
        );
    }

    #[test]
    fn config_keys() {
        assert_eq!(
            config_key(".config/nuketown/identity.toml"),
            "config-nuketown-identity.toml"
        );
        assert_eq!(config_key("AGENTS.md"), "AGENTS.md");
        assert_eq!(
            config_key(".claude/agents/my agent.md"),
            "claude-agents-my_agent.md"
        );
        assert!(is_config_key("claude-CLAUDE.md"));
        assert!(!is_config_key("a/b"));
    }

    #[test]
    fn label_keys() {
        assert!(is_label_key("cloud.google.com/gke-accelerator"));
        assert!(is_label_key("gpu"));
        assert!(!is_label_key("/gpu"));
        assert!(!is_label_key("Cloud_Google/x"));
        assert!(!is_label_key("a/-b"));
    }
}
