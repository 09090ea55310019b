//! The lay-down init container's script, run by a real POSIX shell outside a
//! cluster: its ConfigMap, Secret and file volumes are temporary directories
//! standing in for the pod's mounts, `$HOME` a temporary home. This proves
//! what the script does to a home; that the kubelet mounts those volumes
//! where the manifests say is Kubernetes' part and is not exercised here.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use nuketown_cloud::{load, render, Manifest};
use nuketown_town::Format;

const EXAMPLE: &str = include_str!("../../../examples/cloud.toml");

struct Pod {
    script: String,
    /// The claims the init container mounts under $NUKETOWN_PERSIST.
    claims: Vec<String>,
    data: std::collections::BTreeMap<String, String>,
}

fn pod(agent: &str) -> Pod {
    pod_of(EXAMPLE, agent)
}

/// ada with an extra secret, read-only to its owner.
fn with_secret() -> String {
    EXAMPLE.replace(
        "[agents.ada.cloud]",
        "secrets.extraSecrets.anthropic-key = { path = \".config/anthropic/key\", mode = \"0400\" }\n[agents.ada.cloud]",
    )
}

fn pod_of(text: &str, agent: &str) -> Pod {
    let town = load(text, Format::Toml, "cloud.toml").unwrap();
    let manifests = render(&town, None).unwrap();
    let mut script = None;
    let mut data = None;
    let mut claims = Vec::new();
    for m in manifests {
        match m {
            Manifest::Deployment(d) if d.metadata.name.as_deref() == Some(agent) => {
                let spec = d.spec.unwrap().template.spec.unwrap();
                let init = &spec.init_containers.unwrap()[0];
                let cmd = init.command.clone().unwrap();
                assert_eq!(cmd[..2], ["/bin/sh", "-c"]);
                script = Some(cmd[2].clone());
                for mount in init.volume_mounts.as_ref().unwrap() {
                    if let Some(claim) = mount.mount_path.strip_prefix("/run/nuketown/persist/") {
                        claims.push(claim.to_string());
                    }
                }
            }
            Manifest::ConfigMap(c) if c.metadata.name.as_deref() == Some(agent) => data = c.data,
            _ => {}
        }
    }
    Pod {
        script: script.unwrap(),
        claims,
        data: data.unwrap(),
    }
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn chown_nobody(root: &Path) {
    let ok = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(root)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chown {}", root.display());
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Lay down `pod` with the mounts in `root`; `keys` puts an SSH key in the Secret.
fn lay_down(pod: &Pod, root: &Path, keys: bool) {
    let (home, id, secret, persist) = (
        root.join("home"),
        root.join("identity"),
        root.join("keys"),
        root.join("persist"),
    );
    for d in [&home, &id, &secret] {
        fs::create_dir_all(d).unwrap();
    }
    for claim in &pod.claims {
        fs::create_dir_all(persist.join(claim)).unwrap();
    }
    for (k, v) in &pod.data {
        fs::write(id.join(k), v).unwrap();
    }
    if keys {
        fs::write(secret.join("id_ed25519"), "PRIVATE\n").unwrap();
        fs::write(
            secret.join("id_ed25519.pub"),
            "ssh-ed25519 AAAAC3Nza ada@agents.example.org\n",
        )
        .unwrap();
    }
    // Like the pod, run as an unprivileged user: as root, switch to nobody.
    let mut cmd = if is_root() {
        chown_nobody(root);
        // A volume's root as the kubelet leaves it with fsGroup: root's, the
        // agent's group, setgid and group-writable.
        for claim in &pod.claims {
            let dir = persist.join(claim);
            std::os::unix::fs::chown(&dir, Some(0), Some(65534)).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o2775)).unwrap();
        }
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "sh"]);
        c
    } else {
        Command::new("sh")
    };
    let out = cmd
        .arg("-c")
        .arg(&pod.script)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &home)
        .env("NUKETOWN_IDENTITY", &id)
        .env("NUKETOWN_KEYS", &secret)
        .env("NUKETOWN_PERSIST", &persist)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn laydown_script_in_a_simulated_pod_filesystem_with_a_key() {
    let pod = pod("ada");
    let root = tempfile::tempdir().unwrap();
    lay_down(&pod, root.path(), true);
    let home = root.path().join("home");

    // The identity projections, where the host puts them.
    for (path, key) in [
        (
            ".config/nuketown/identity.toml",
            "config-nuketown-identity.toml",
        ),
        (".claude/CLAUDE.md", "claude-CLAUDE.md"),
        (
            ".claude/agents/ada-software.md",
            "claude-agents-ada-software.md",
        ),
        (".claude/settings.json", "claude-settings.json"),
        ("AGENTS.md", "AGENTS.md"),
        (".codex/AGENTS.md", "codex-AGENTS.md"),
    ] {
        assert_eq!(
            fs::read_to_string(home.join(path)).unwrap(),
            pod.data[key],
            "{path}"
        );
        assert_eq!(mode(&home.join(path)), 0o644, "{path}");
    }
    // Mount points made by the agent, so their parents are the agent's.
    assert!(home.join("dev").is_dir());
    assert!(home.join(".local/share/direnv").is_dir());
    assert!(home.join(".bash_history").is_file());
    // The persisted file exists in its volume before the subPath mount.
    assert!(root
        .path()
        .join("persist/ada--bash-history/.bash_history")
        .is_file());
    // The key, and git signing with it.
    assert_eq!(
        fs::read_to_string(home.join(".ssh/id_ed25519")).unwrap(),
        "PRIVATE\n"
    );
    assert_eq!(mode(&home.join(".ssh/id_ed25519")), 0o600);
    assert_eq!(mode(&home.join(".ssh")), 0o700);
    assert_eq!(
        fs::read_to_string(home.join(".gitconfig")).unwrap(),
        pod.data["gitconfig-signed"]
    );
    assert_eq!(
        fs::read_to_string(home.join(".config/git/allowed_signers")).unwrap(),
        "ada@agents.example.org namespaces=\"git\" ssh-ed25519 AAAAC3Nza ada@agents.example.org\n"
    );
}

#[test]
fn laydown_script_in_a_simulated_pod_filesystem_without_a_key() {
    let pod = pod("ada");
    let root = tempfile::tempdir().unwrap();
    lay_down(&pod, root.path(), false);
    let home = root.path().join("home");
    assert!(!home.join(".ssh").exists());
    assert!(!pod.data["gitconfig"].contains("gpgsign"));
    assert_eq!(
        fs::read_to_string(home.join(".gitconfig")).unwrap(),
        pod.data["gitconfig"]
    );
}

#[test]
fn laydown_script_runs_again_over_its_own_work() {
    let pod = pod_of(&with_secret(), "ada");
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("keys")).unwrap();
    fs::write(root.path().join("keys/anthropic-key"), "sk-test\n").unwrap();
    lay_down(&pod, root.path(), true);
    fs::write(
        root.path().join("persist/ada--bash-history/.bash_history"),
        "ls\n",
    )
    .unwrap();
    fs::write(
        root.path().join("home/.claude/CLAUDE.md"),
        "edited by the agent",
    )
    .unwrap();
    lay_down(&pod, root.path(), true);
    // Persisted data is kept; the identity is laid down afresh.
    assert_eq!(
        fs::read_to_string(root.path().join("persist/ada--bash-history/.bash_history")).unwrap(),
        "ls\n"
    );
    assert_eq!(
        fs::read_to_string(root.path().join("home/.claude/CLAUDE.md")).unwrap(),
        pod.data["claude-CLAUDE.md"]
    );
}

#[test]
fn laydown_script_places_extra_secrets_from_the_secret() {
    let pod = pod_of(&with_secret(), "ada");
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("keys")).unwrap();
    fs::write(root.path().join("keys/anthropic-key"), "sk-test\n").unwrap();
    lay_down(&pod, root.path(), false);
    let key = root.path().join("home/.config/anthropic/key");
    assert_eq!(fs::read_to_string(&key).unwrap(), "sk-test\n");
    assert_eq!(mode(&key), 0o400);
}

#[test]
fn laydown_script_writes_through_persisted_directories_as_on_a_host() {
    // .claude and .ssh persisted: the projections and keys that belong in
    // them go into their volumes, which the agent's container mounts there.
    let text = EXAMPLE.replace(
        "persist.directories = [\"dev\", \".local/share/direnv\"]",
        "persist.directories = [\"dev\", \".local/share/direnv\", \".claude\", \".ssh\"]",
    );
    let pod = pod_of(&text, "ada");
    assert!(
        pod.claims.contains(&"ada--claude".to_string()),
        "{:?}",
        pod.claims
    );
    let root = tempfile::tempdir().unwrap();
    lay_down(&pod, root.path(), true);
    let persist = root.path().join("persist");
    assert_eq!(
        fs::read_to_string(persist.join("ada--claude/CLAUDE.md")).unwrap(),
        pod.data["claude-CLAUDE.md"]
    );
    assert!(persist.join("ada--claude/agents/ada-software.md").is_file());
    assert!(persist.join("ada--claude/settings.json").is_file());
    assert_eq!(
        fs::read_to_string(persist.join("ada--ssh/id_ed25519")).unwrap(),
        "PRIVATE\n"
    );
    assert_eq!(mode(&persist.join("ada--ssh/id_ed25519")), 0o600);
    // In the home only the mount points, the agent's own.
    let home = root.path().join("home");
    assert!(home.join(".claude").is_dir() && !home.join(".claude/CLAUDE.md").exists());
    assert!(home.join(".ssh").is_dir() && !home.join(".ssh/id_ed25519").exists());
    // Unpersisted paths still go to the home.
    assert!(home.join("AGENTS.md").is_file());
    assert!(home.join(".gitconfig").is_file());
}
