//! Secrets without key files (`cloud.secrets = "sops-kms"`): the pod gets
//! the sops file itself (ciphertext, in the agent's ConfigMap) and an init
//! container decrypts the agent's secrets with `sops`, which reaches the
//! cloud KMS through the pod's workload identity — no key in the pod, in
//! the Secret store or in git. It writes them into a memory-backed volume
//! under the names the agent's Secret would have (`id_ed25519`, each
//! extra secret's name), so the lay-down script places them exactly as it
//! places a Secret's.
//!
//! The render reads the file's structure, which sops leaves in clear (only
//! values are encrypted), to check before anything changes that every
//! declared secret is in it: `<agent>/ssh-key` (with `<agent>/ssh-key.pub`)
//! and `<agent>/<name>` for each extra secret, the layout sops-nix uses on
//! NixOS.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nuketown_town::{Agent, Town};

use super::quote;
use crate::plan::{SSH_KEY, SSH_PUB};

/// The largest sops file the ConfigMap carries (a ConfigMap holds 1 MiB,
/// the identity files included).
const MAX_FILE: usize = 768 << 10;

/// The ConfigMap key holding the sops file.
pub const SOPS_KEY: &str = "sops-file";

/// The sops key of the agent's private SSH key (and, with `.pub`, its public key).
pub const SOPS_SSH_KEY: &str = "ssh-key";

/// One agent's sops-kms secrets, checked.
#[derive(Debug, Clone)]
pub struct Sops {
    /// The file as it is (ciphertext; shared by the agents that use it).
    pub text: Arc<str>,
    /// `yaml` or `json`, for `sops --input-type`.
    pub format: &'static str,
    /// `(key under the agent in the file, file name in the keys volume)`.
    pub items: Vec<(String, String)>,
}

/// A sops file read once for every agent that uses it.
#[derive(Debug, Clone)]
pub struct SopsFile {
    text: Arc<str>,
    format: &'static str,
    tree: serde_json::Value,
}

/// Files read so far, by path: a thousand agents sharing one file read it once.
pub type Files = BTreeMap<PathBuf, Result<SopsFile, String>>;

fn read(path: &Path) -> Result<SopsFile, String> {
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => "yaml",
        Some("json") => "json",
        _ => return Err(format!("{}: \"sops-kms\" reads YAML or JSON sops files (.yaml, .yml, .json), whose keys sops leaves readable; convert it (`sops --decrypt … | sops --encrypt --input-type yaml …`)", path.display())),
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: cannot read it ({e}); a relative path is taken from the directory the render runs in (on Argo CD, the application's source directory)",
            path.display()
        )
    })?;
    if text.len() > MAX_FILE {
        return Err(format!(
            "{}: {} bytes, too large to travel in the agent's ConfigMap (at most {MAX_FILE} bytes, beside the identity files); give the agent a file of its own (cloud.sopsFile)",
            path.display(),
            text.len()
        ));
    }
    let tree: serde_json::Value = if format == "json" {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_norway::from_str(&text).map_err(|e| e.to_string())
    }
    .map_err(|e| format!("{}: not {format} ({e})", path.display()))?;
    if !tree
        .get("sops")
        .and_then(|s| s.get("mac"))
        .is_some_and(|m| m.is_string())
    {
        return Err(format!(
            "{} is not a sops-encrypted file (it has no sops metadata); encrypt it with `sops --encrypt --in-place {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(SopsFile {
        text: text.into(),
        format,
        tree,
    })
}

/// Check agent `name`'s `cloud.secrets = "sops-kms"` against its sops file:
/// `None` (and problems in `fail`) when it cannot work; `None` and no
/// problem when the agent uses a Secret.
pub fn check(
    fail: &mut dyn FnMut(String, String),
    files: &mut Files,
    town: &Town,
    name: &str,
    agent: &Agent,
) -> Option<Sops> {
    let cloud = &agent.cloud;
    let k = format!("agents.{name}.cloud");
    if cloud.secrets != "sops-kms" {
        if cloud.sops_file.is_some() {
            fail(
                format!("{k}.sopsFile"),
                "is only read with secrets = \"sops-kms\"; set that, or remove sopsFile".into(),
            );
        }
        return None;
    }
    let id = &cloud.identity;
    if id.gcp_service_account.is_none() && id.aws_role_arn.is_none() && id.azure_client_id.is_none()
    {
        fail(
            format!("{k}.identity"),
            "secrets = \"sops-kms\" decrypts with the cloud KMS through the pod's workload identity; declare it: identity.gcpServiceAccount (GKE), identity.awsRoleArn (EKS) or identity.azureClientId (AKS)".into(),
        );
    }
    let (path, key) = match (&cloud.sops_file, &town.sops_file) {
        (Some(p), _) => (p, format!("{k}.sopsFile")),
        (None, Some(p)) => (p, "sopsFile".to_string()),
        (None, None) => {
            fail(
                format!("{k}.secrets"),
                "\"sops-kms\" needs the sops file to decrypt: set the town's sopsFile (or this agent's cloud.sopsFile), or use secrets = \"secret\"".into(),
            );
            return None;
        }
    };
    let file = match files.entry(path.clone()).or_insert_with(|| read(path)) {
        Ok(f) => f.clone(),
        Err(e) => {
            fail(key, e.clone());
            return None;
        }
    };
    let mine = file.tree.get(name);
    let has = |s: &str| mine.and_then(|m| m.get(s)).is_some();
    let mut items = Vec::new();
    let mut ok = true;
    if has(SOPS_SSH_KEY) {
        let public = format!("{SOPS_SSH_KEY}.pub");
        if has(&public) {
            items.push((SOPS_SSH_KEY.to_string(), SSH_KEY.to_string()));
            items.push((public, SSH_PUB.to_string()));
        } else {
            ok = false;
            fail(
                key.clone(),
                format!("{} has {name}/{SOPS_SSH_KEY} but not {name}/{SOPS_SSH_KEY}.pub; add the public key beside it (`ssh-keygen -y -f KEY`)", path.display()),
            );
        }
    }
    if agent.chats_in_pod() {
        use nuketown_town::chat::{POD_PASSWORD, POD_TOKEN};
        match [POD_PASSWORD, POD_TOKEN].into_iter().find(|k| has(k)) {
            Some(k) => items.push((k.to_string(), k.to_string())),
            None => {
                ok = false;
                fail(
                    format!("agents.{name}.chat"),
                    format!("{} has no {name}/{POD_PASSWORD} (nor {name}/{POD_TOKEN}): the chat bridge in the pod logs in with it; add the agent's Matrix password with `sops edit {}`", path.display(), path.display()),
                );
            }
        }
    }
    for sname in agent.secrets.extra_secrets.keys() {
        if has(sname) {
            items.push((sname.clone(), sname.clone()));
        } else {
            ok = false;
            fail(
                format!("agents.{name}.secrets.extraSecrets.{sname}"),
                format!(
                    "{} has no {name}/{sname} (under the key {name}, as sops-nix reads it); add it with `sops edit {}`, or remove the secret",
                    path.display(),
                    path.display()
                ),
            );
        }
    }
    ok.then_some(Sops {
        text: file.text.clone(),
        format: file.format,
        items,
    })
}

/// The decrypting init container's script: reads the sops file from
/// `$NUKETOWN_IDENTITY`, writes each secret into `$NUKETOWN_KEYS` (a
/// memory-backed volume), readable by the agent alone.
pub fn script(name: &str, sops: &Sops) -> String {
    let mut s = String::new();
    s.push_str("# The round's secrets, decrypted by sops with the cloud KMS through the pod's workload identity (nuketown; docs/cloud.md).\n");
    s.push_str("set -eu\numask 077\n");
    let _ = writeln!(
        s,
        "f=\"$NUKETOWN_IDENTITY\"/{SOPS_KEY}; keys=\"$NUKETOWN_KEYS\""
    );
    let _ = writeln!(
        s,
        "get() {{ sops --decrypt --input-type {} --extract \"$1\" \"$f\" > \"$keys/$2.new\"; mv \"$keys/$2.new\" \"$keys/$2\"; }}",
        sops.format
    );
    for (key, file) in &sops.items {
        // Agent and secret names are plain (DNS labels, Secret keys): no quote inside.
        let _ = writeln!(
            s,
            "get {} {}",
            quote(&format!("[\"{name}\"][\"{key}\"]")),
            quote(file)
        );
    }
    let _ = writeln!(
        s,
        "echo \"nuketown: {} secret(s) of {name} decrypted\"",
        sops.items.len()
    );
    s
}
