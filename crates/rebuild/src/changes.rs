//! What changed in the configuration since a revision: commits (author,
//! subject) and flake.lock inputs, read with git.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// One commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Short hash.
    pub rev: String,
    /// Author name.
    pub author: String,
    /// Subject line.
    pub subject: String,
}

/// One flake input that moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputChange {
    /// Input name.
    pub input: String,
    /// Locked revision before (none: added).
    pub from: Option<String>,
    /// Locked revision now (none: removed).
    pub to: Option<String>,
}

/// What changed between the caller's last build and now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The revision the caller last built, if any.
    pub since: Option<String>,
    /// The revision about to be built.
    pub head: Option<String>,
    /// Commits since, newest first.
    pub commits: Vec<Commit>,
    /// flake.lock inputs that changed.
    pub inputs: Vec<InputChange>,
}

/// Run git in `repo` as `reader`, a (uid, gid) without privilege, never as
/// root on someone else's repository: a repository's own configuration can
/// run programs (core.fsmonitor, core.pager, …).
fn git(repo: &Path, reader: Reader, args: &[&str]) -> Option<String> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("git");
    cmd.arg("-c")
        .arg(format!("safe.directory={}", repo.display()))
        .args([
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .arg("-C")
        .arg(repo)
        .args(args)
        .env_clear()
        .env("PATH", "/run/current-system/sw/bin:/usr/bin:/bin")
        .env("HOME", "/nonexistent")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::null());
    if let Some((uid, gid)) = reader {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Who reads a repository: a (uid, gid), or `None` for the coordinator itself (root).
pub type Reader = Option<(u32, u32)>;

/// The current commit of `repo`.
pub fn head(repo: &Path, reader: Reader) -> Option<String> {
    git(repo, reader, &["rev-parse", "HEAD"]).map(|s| s.trim().to_string())
}

/// Locked revisions of a flake.lock's inputs (root inputs by name).
pub fn lock_inputs(lock: &str) -> BTreeMap<String, String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(lock) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    let root = v["root"].as_str().unwrap_or("root");
    if let Some(inputs) = v["nodes"][root]["inputs"].as_object() {
        for (name, node) in inputs {
            let Some(node) = node.as_str() else { continue };
            let locked = &v["nodes"][node]["locked"];
            let rev = locked["rev"]
                .as_str()
                .or_else(|| locked["narHash"].as_str())
                .unwrap_or("?");
            out.insert(name.clone(), rev.to_string());
        }
    }
    out
}

/// Inputs that differ between two flake.lock texts.
pub fn diff_inputs(before: &str, after: &str) -> Vec<InputChange> {
    let (a, b) = (lock_inputs(before), lock_inputs(after));
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| a.get(*n) != b.get(*n))
        .map(|n| InputChange {
            input: n.clone(),
            from: a.get(n).cloned(),
            to: b.get(n).cloned(),
        })
        .collect()
}

/// Summarise `repo` from `since` (the caller's last built revision) to HEAD.
/// git runs as `reader` (the caller), so the caller learns only what it may read.
pub fn summarise(repo: &Path, since: Option<&str>, reader: Reader) -> Summary {
    let head = head(repo, reader);
    let mut s = Summary {
        since: since.map(str::to_string),
        head: head.clone(),
        ..Summary::default()
    };
    let Some(head) = head else { return s };
    let range = match since {
        Some(old)
            if git(
                repo,
                reader,
                &["cat-file", "-e", &format!("{old}^{{commit}}")],
            )
            .is_some() =>
        {
            format!("{old}..{head}")
        }
        _ => format!("{head}~10..{head}"),
    };
    let log = git(repo, reader, &["log", "--format=%h%x09%an%x09%s", &range]).or_else(|| {
        git(
            repo,
            reader,
            &["log", "-10", "--format=%h%x09%an%x09%s", &head],
        )
    });
    for line in log.unwrap_or_default().lines() {
        let mut f = line.splitn(3, '\t');
        if let (Some(rev), Some(author), Some(subject)) = (f.next(), f.next(), f.next()) {
            s.commits.push(Commit {
                rev: rev.into(),
                author: author.into(),
                subject: subject.into(),
            });
        }
    }
    if let Some(old) = since {
        let before = git(repo, reader, &["show", &format!("{old}:flake.lock")]).unwrap_or_default();
        let after = git(repo, reader, &["show", &format!("{head}:flake.lock")]).unwrap_or_default();
        s.inputs = diff_inputs(&before, &after);
    }
    s
}

impl Summary {
    /// Lines for a terminal or an approval request.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        match (&self.since, &self.head) {
            (Some(a), Some(b)) if a == b => out.push(format!(
                "nothing changed since your last build ({})",
                &a[..a.len().min(12)]
            )),
            (Some(a), Some(_)) => out.push(format!(
                "{} commit(s) since your last build ({}):",
                self.commits.len(),
                &a[..a.len().min(12)]
            )),
            (None, Some(_)) => out.push(format!(
                "first build by you; the latest {} commit(s):",
                self.commits.len()
            )),
            _ => {
                out.push("no configuration repository to summarise (set rebuild.configRepo)".into())
            }
        }
        for c in &self.commits {
            out.push(format!("  {} {} — {}", c.rev, c.author, c.subject));
        }
        for i in &self.inputs {
            let short = |r: &Option<String>| {
                r.as_deref()
                    .map(|x| x[..x.len().min(12)].to_string())
                    .unwrap_or_else(|| "(none)".into())
            };
            out.push(format!(
                "  flake input {}: {} -> {}",
                i.input,
                short(&i.from),
                short(&i.to)
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = r#"{"nodes":{"root":{"inputs":{"nixpkgs":"nixpkgs","hm":"home-manager"}},"nixpkgs":{"locked":{"rev":"aaa"}},"home-manager":{"locked":{"rev":"hhh"}}},"root":"root","version":7}"#;
    const B: &str = r#"{"nodes":{"root":{"inputs":{"nixpkgs":"nixpkgs","sops":"sops"}},"nixpkgs":{"locked":{"rev":"bbb"}},"sops":{"locked":{"rev":"sss"}}},"root":"root","version":7}"#;

    #[test]
    fn flake_lock_inputs_diff() {
        assert_eq!(
            diff_inputs(A, B),
            vec![
                InputChange {
                    input: "hm".into(),
                    from: Some("hhh".into()),
                    to: None
                },
                InputChange {
                    input: "nixpkgs".into(),
                    from: Some("aaa".into()),
                    to: Some("bbb".into())
                },
                InputChange {
                    input: "sops".into(),
                    from: None,
                    to: Some("sss".into())
                },
            ]
        );
        assert!(diff_inputs(A, A).is_empty());
    }
}
