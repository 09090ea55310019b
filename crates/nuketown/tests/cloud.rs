//! `nuketown cloud render`, the Argo CD plugin's generate step and the Nix
//! function `nix/lib/cloud.nix`, each run for real outside a cluster: the
//! binary on files and stdin, the plugin's shell script with `sh` in a
//! directory standing in for the repository Argo CD hands it (including a
//! real `nix eval` of a flake, offline), and the Nix function built by
//! `nix-build` with stand-ins for the few nixpkgs functions it calls.
//! No Kubernetes and no Argo CD run here (docs/cloud.md).

mod argocd_plugin;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use argocd_plugin::plugin_script;
use nuketown_town::Format;

const REVISION: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn nuketown() -> &'static str {
    env!("CARGO_BIN_EXE_nuketown")
}

fn example_text() -> String {
    fs::read_to_string(repo().join("examples/cloud.toml")).unwrap()
}

/// What the library renders for the example, the reference for every path here.
fn expected(revision: Option<&str>) -> String {
    let town = nuketown_cloud::load(&example_text(), Format::Toml, "cloud.toml").unwrap();
    nuketown_cloud::render_yaml(&town, revision).unwrap()
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn render_a_town_file() {
    let out = run(
        Command::new(nuketown())
            .args(["cloud", "render"])
            .arg(repo().join("examples/cloud.toml"))
            .args(["--revision", REVISION]),
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), expected(Some(REVISION)));
}

#[test]
fn render_json_from_stdin_as_the_nixos_module_writes_it() {
    let town = nuketown_cloud::load(&example_text(), Format::Toml, "cloud.toml").unwrap();
    let json = serde_json::to_string_pretty(&town).unwrap();
    let out = run(
        Command::new(nuketown())
            .args(["cloud", "render", "-"])
            .env("NUKETOWN_REVISION", REVISION),
        Some(&json),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), expected(Some(REVISION)));
}

#[test]
fn render_refuses_a_bad_town_with_the_key() {
    let bad = example_text().replace("resources = \"small\"", "resources = \"tiny\"");
    let out = run(
        Command::new(nuketown()).args(["cloud", "render", "-"]),
        Some(&bad),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "nuketown: <stdin>: the town is invalid:\n  agents.vox.cloud.resources: \"tiny\" is not a tier; use \"small\", \"standard\", \"large\" or \"gpu\"\n"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn render_a_town_without_cloud_agents_says_so() {
    let out = run(
        Command::new(nuketown())
            .args(["cloud", "render"])
            .arg(repo().join("examples/town.toml")),
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("no agent of"),
        "{}",
        text(&out.stderr)
    );
}

/// Run the plugin's generate step in `dir` as Argo CD would: the source
/// directory as cwd, the revision and parameters in the environment.
fn generate(dir: &Path, params: &[(&str, &str)]) -> Output {
    let bin = Path::new(nuketown()).parent().unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(plugin_script())
        .current_dir(dir)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("HOME", dir)
        .env("ARGOCD_APP_REVISION", REVISION)
        .env("ARGOCD_APP_NAME", "nuketown");
    for (k, v) in params {
        cmd.env(k, v);
    }
    run(&mut cmd, None)
}

#[test]
fn argocd_plugin_generate_step_run_locally_on_a_town_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("town.toml"), example_text()).unwrap();
    let out = generate(dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), expected(Some(REVISION)));

    fs::create_dir(dir.path().join("clusters")).unwrap();
    fs::rename(
        dir.path().join("town.toml"),
        dir.path().join("clusters/prod.toml"),
    )
    .unwrap();
    let out = generate(dir.path(), &[("PARAM_TOWN", "clusters/prod.toml")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), expected(Some(REVISION)));
}

#[test]
fn argocd_plugin_generate_step_refuses_unsafe_parameters() {
    let dir = tempfile::tempdir().unwrap();
    for (param, value, why) in [
        (
            "PARAM_NIXOS_CONFIGURATION",
            "forge\"; builtins.abort \"x",
            "must be plain names",
        ),
        ("PARAM_NUKETOWN_INPUT", "$(id)", "must be plain names"),
        (
            "PARAM_TOWN",
            "../../etc/nuketown/town.toml",
            "inside the repository",
        ),
        (
            "PARAM_TOWN",
            "/etc/nuketown/town.toml",
            "inside the repository",
        ),
    ] {
        let out = generate(dir.path(), &[(param, value)]);
        assert_eq!(out.status.code(), Some(1), "{param}={value}");
        assert!(
            text(&out.stderr).contains(why),
            "{param}={value}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
    let out = generate(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no town here"),
        "{}",
        text(&out.stderr)
    );
}

fn nix_available() -> bool {
    Command::new("nix")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn argocd_plugin_generate_step_run_locally_on_a_flake_with_real_nix_eval() {
    if !nix_available() {
        eprintln!("\n*** SKIPPED argocd_plugin_generate_step_run_locally_on_a_flake_with_real_nix_eval: nix is not installed (scripts/deps.sh installs nix-bin)\n");
        return;
    }
    // A repository whose flake declares the town as NixOS options, with a
    // stand-in for the nuketown input that carries the real lib.toTown.
    let dir = tempfile::tempdir().unwrap();
    let stub = dir.path().join("nuketown-input");
    fs::create_dir(&stub).unwrap();
    fs::write(
        stub.join("flake.nix"),
        format!(
            "{{ outputs = _: {{ lib.toTown = import {}; }}; }}\n",
            repo().join("nix/lib/town.nix").display()
        ),
    )
    .unwrap();
    let town = nuketown_cloud::load(&example_text(), Format::Toml, "cloud.toml").unwrap();
    fs::write(
        dir.path().join("town.json"),
        serde_json::to_string(&town).unwrap(),
    )
    .unwrap();
    fs::write(
        dir.path().join("flake.nix"),
        // Option values as the module has them: `package` and extraHomeConfig included, for toTown to drop.
        "{\n  inputs.nuketown.url = \"path:./nuketown-input\";\n  outputs = { self, nuketown }: {\n    nixosConfigurations.forge.config.nuketown =\n      let t = builtins.fromJSON (builtins.readFile ./town.json);\n      in t // { package = { outPath = \"/nix/store/x-nuketown\"; name = \"nuketown\"; }; agents = t.agents // { ada = t.agents.ada // { extraHomeConfig = { programs.git.enable = true; }; }; }; };\n  };\n}\n",
    )
    .unwrap();
    // A repository commits its flake.lock; getFlake will not write one.
    let lock = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "flake",
            "lock",
        ])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(lock.status.success(), "{}", text(&lock.stderr));

    let out = generate(dir.path(), &[("PARAM_NIXOS_CONFIGURATION", "forge")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), expected(Some(REVISION)));

    // A configuration that does not exist fails with nix's message, not an empty render.
    let out = generate(dir.path(), &[("PARAM_NIXOS_CONFIGURATION", "nowhere")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("nowhere"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn nix_lib_cloud_nix_builds_the_same_yaml() {
    if !nix_available() {
        eprintln!("\n*** SKIPPED nix_lib_cloud_nix_builds_the_same_yaml: nix is not installed (scripts/deps.sh installs nix-bin)\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let town = nuketown_cloud::load(&example_text(), Format::Toml, "cloud.toml").unwrap();
    fs::write(
        dir.path().join("town.json"),
        serde_json::to_string(&town).unwrap(),
    )
    .unwrap();
    // The three nixpkgs functions cloud.nix uses, and the binary under test
    // as the nuketown package (a plain path: nothing is copied to the store).
    let bin_dir = dir.path().join("nuketown");
    fs::create_dir_all(bin_dir.join("bin")).unwrap();
    std::os::unix::fs::symlink(nuketown(), bin_dir.join("bin/nuketown")).unwrap();
    let expr = format!(
        r#"
let
  pkgs = {{
    writeText = name: text: builtins.toFile name text;
    lib.escapeShellArg = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] s + "'";
    runCommand = name: env: script: derivation {{
      inherit name;
      system = builtins.currentSystem;
      builder = "/bin/sh";
      PATH = builtins.concatStringsSep ":" (map (p: "${{p}}/bin") env.nativeBuildInputs ++ [ "/usr/bin" "/bin" ]);
      args = [ "-c" script ];
    }};
  }};
  town = builtins.fromJSON (builtins.readFile {dir}/town.json);
in import {repo}/nix/lib/cloud.nix {{
  inherit pkgs;
  nuketown = "{bin}";
  # Option values, as a NixOS configuration has them.
  town = town // {{ package = null; agents = town.agents // {{ ada = town.agents.ada // {{ extraHomeConfig = {{ }}; }}; }}; }};
  revision = "{rev}";
}}
"#,
        dir = dir.path().display(),
        repo = repo().display(),
        bin = bin_dir.display(),
        rev = REVISION,
    );
    let out = Command::new("nix-build")
        // No build users: Debian's nix-bin alone creates no nixbld group.
        .args([
            "--no-out-link",
            "--option",
            "sandbox",
            "false",
            "--option",
            "build-users-group",
            "",
            "-E",
            &expr,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "nix-build: {}", text(&out.stderr));
    let path = text(&out.stdout).trim().to_string();
    assert_eq!(fs::read_to_string(&path).unwrap(), expected(Some(REVISION)));
}
