//! The lay-down script: the init container that starts each round, doing in
//! the pod what `nuketown reset` does on a host. It runs as the agent, so
//! everything it makes in the (empty) home is the agent's own: the parents of
//! every volume mount (Kubernetes would make them as root), the identity
//! files, the SSH key and git config, and the extra secrets.
//!
//! It reads its inputs from `$NUKETOWN_IDENTITY` (the ConfigMap),
//! `$NUKETOWN_KEYS` (the optional Secret) and `$NUKETOWN_PERSIST` (the file
//! volumes), and writes under `$HOME`, so it can be run outside a cluster too.

pub mod sops;

use std::fmt::Write as _;
use std::path::Path;

use crate::plan::{AgentPlan, SSH_KEY, SSH_PUB};

/// One file the script copies from the ConfigMap into the home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// ConfigMap key.
    pub key: String,
    /// Path relative to the home.
    pub path: String,
    /// File mode.
    pub mode: u32,
}

/// Quote `s` for a POSIX shell.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Where a home-relative path is written from the init container: into
/// the volume when the path is persisted or lies in a persisted directory
/// (where the agent's container will see it, as on a host, where the home's
/// persisted paths are bind mounts), else into the home.
fn target(a: &AgentPlan<'_>, path: &str) -> String {
    for v in &a.volumes {
        if v.file && v.path == path {
            return format!(
                "\"$persist\"/{}/{}",
                quote(&v.claim),
                quote(&file_name(&v.path))
            );
        }
        if !v.file {
            if let Some(rest) = path.strip_prefix(&format!("{}/", v.path)) {
                return format!("\"$persist\"/{}/{}", quote(&v.claim), quote(rest));
            }
            if path == v.path {
                return format!("\"$persist\"/{}", quote(&v.claim));
            }
        }
    }
    format!("\"$HOME\"/{}", quote(path))
}

/// The script for agent `a`: `identity` are the ConfigMap files, `signed`
/// whether the ConfigMap has a signing git config, `email` the agent's address.
pub fn script(a: &AgentPlan<'_>, identity: &[Placed], signed: bool, email: &str) -> String {
    let mut s = String::new();
    s.push_str("# A new round: lay the agent's home down (nuketown; docs/cloud.md).\n");
    s.push_str("set -eu\numask 022\n");
    s.push_str("put() { mkdir -p \"$(dirname \"$2\")\"; rm -f \"$2\"; cp \"$1\" \"$2\"; chmod \"$3\" \"$2\"; }\n");
    s.push_str(
        "id=\"$NUKETOWN_IDENTITY\"; keys=\"$NUKETOWN_KEYS\"; persist=\"$NUKETOWN_PERSIST\"\n",
    );

    if !a.volumes.is_empty() {
        s.push_str("# Mount points of the persisted paths, made by the agent.\n");
        for v in &a.volumes {
            if v.file {
                let parent = Path::new(&v.path)
                    .parent()
                    .and_then(|p| p.to_str())
                    .unwrap_or("");
                if !parent.is_empty() {
                    let _ = writeln!(s, "mkdir -p \"$HOME\"/{}", quote(parent));
                }
                let _ = writeln!(
                    s,
                    "[ -e \"$HOME\"/{p} ] || : > \"$HOME\"/{p}",
                    p = quote(&v.path)
                );
                // Mounted by subPath, the file must exist in its volume first,
                // or the kubelet would make a directory in its place.
                let _ = writeln!(s, "[ -e {t} ] || : > {t}", t = target(a, &v.path));
            } else {
                let _ = writeln!(s, "mkdir -p \"$HOME\"/{}", quote(&v.path));
            }
        }
    }

    s.push_str("# Identity, projected from the town.\n");
    for p in identity {
        let _ = writeln!(
            s,
            "put \"$id\"/{} {} {:o}",
            quote(&p.key),
            target(a, &p.path),
            p.mode
        );
    }

    let _ = writeln!(
        s,
        "# Keys and secrets, when Secret {} carries them.",
        quote(a.name)
    );
    let _ = writeln!(
        s,
        "if [ -f \"$keys\"/{SSH_KEY} ] && [ -f \"$keys\"/{SSH_PUB} ]; then"
    );
    let ssh = target(a, ".ssh");
    // A persisted ~/.ssh is a volume whose root the agent does not own (it is
    // the kubelet's, group-writable for the agent); ssh only checks the key.
    let _ = writeln!(s, "  mkdir -p {ssh}; chmod 700 {ssh} 2>/dev/null || :");
    let _ = writeln!(
        s,
        "  put \"$keys\"/{SSH_KEY} {} 600",
        target(a, &format!(".ssh/{SSH_KEY}"))
    );
    let _ = writeln!(
        s,
        "  put \"$keys\"/{SSH_PUB} {} 644",
        target(a, &format!(".ssh/{SSH_PUB}"))
    );
    let signers = target(a, ".config/git/allowed_signers");
    let _ = writeln!(s, "  mkdir -p \"$(dirname {signers})\"");
    let _ = writeln!(
        s,
        "  printf '%s namespaces=\"git\" %s\\n' {} \"$(cat \"$keys\"/{SSH_PUB})\" > {signers}",
        quote(email)
    );
    let gitconfig = target(a, ".gitconfig");
    let _ = writeln!(
        s,
        "  put \"$id\"/{} {gitconfig} 644",
        if signed {
            "gitconfig-signed"
        } else {
            "gitconfig"
        }
    );
    let _ = writeln!(s, "else\n  put \"$id\"/gitconfig {gitconfig} 644\nfi");
    for (name, secret) in &a.agent.secrets.extra_secrets {
        // Without a path the secret has no place in the home (on a host it
        // stays at its source).
        let Some(path) = &secret.path else { continue };
        let _ = writeln!(
            s,
            "if [ -f \"$keys\"/{n} ]; then put \"$keys\"/{n} {t} {m}; fi",
            n = quote(name),
            t = target(a, &crate::plan::normal(path)),
            m = quote(&secret.mode),
        );
    }
    let _ = writeln!(
        s,
        "echo \"nuketown: a new round for {}: $HOME laid down\"",
        a.name
    );
    s
}

/// The last component of a home-relative path.
pub fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quoting() {
        assert_eq!(quote("dev"), "dev");
        assert_eq!(quote(".local/share"), ".local/share");
        assert_eq!(quote("my file"), "'my file'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$(x)"), "'$(x)'");
    }
}
