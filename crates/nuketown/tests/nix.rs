//! The Nix side against the Rust schema: every .nix file parses, and the town
//! the NixOS module writes for examples/example.nix is the Rust town of
//! examples/town.toml. Uses `nix-instantiate` (apt nix-bin); nixpkgs is not
//! needed except for the module evaluation, which runs when
//! NUKETOWN_NIXPKGS_LIB names a nixpkgs `lib` directory and says so otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use nuketown_town::{parse, Format, Town};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if p.is_dir() {
            nix_files(&p, out);
        } else if name.ends_with(".nix") {
            out.push(p);
        }
    }
}

fn eval_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .args(args)
        .current_dir(repo())
        .output()
        .expect("nix-instantiate (apt nix-bin) must be installed: scripts/deps.sh installs it");
    assert!(
        out.status.success(),
        "nix-instantiate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn example_toml(hostname: &str) -> Town {
    parse(
        &std::fs::read_to_string(repo().join("examples/town.toml")).unwrap(),
        Format::Toml,
        "town.toml",
        hostname,
    )
    .unwrap()
}

#[test]
fn every_nix_file_parses() {
    let mut files = Vec::new();
    nix_files(&repo(), &mut files);
    assert!(files.len() >= 6, "found only {files:?}");
    for f in files {
        let out = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(&f)
            .output()
            .expect("nix-instantiate must be installed");
        assert!(
            out.status.success(),
            "{} does not parse: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn example_nix_projects_to_the_same_town_as_example_toml() {
    let json = eval_json(&["nix/tests/town-json.nix"]);
    let town = parse(
        &json.to_string(),
        Format::Json,
        "town.json (from example.nix)",
        "forge",
    )
    .unwrap_or_else(|e| panic!("the Rust parser rejects the module's town.json: {e}"));
    assert_eq!(town, example_toml("forge"));
}

#[test]
fn nixos_module_evaluates_to_the_example_town() {
    let Some(lib) = std::env::var_os("NUKETOWN_NIXPKGS_LIB") else {
        eprintln!("SKIPPING the NixOS module evaluation: set NUKETOWN_NIXPKGS_LIB to a nixpkgs lib directory (nixpkgs cannot be fetched on CI)");
        return;
    };
    let arg = format!("import {}", Path::new(&lib).display());
    let v = eval_json(&["nix/tests/eval-module.nix", "--arg", "lib", &arg]);
    assert_eq!(v["failedAssertions"], serde_json::json!([]), "{v}");
    // The module's town.json (all defaults filled by the module) is the Rust town.
    let town = parse(
        &v["town"].to_string(),
        Format::Json,
        "town.json (module)",
        "unused",
    )
    .unwrap_or_else(|e| panic!("the Rust parser rejects the module's town.json: {e}"));
    // On NixOS the entry point lives in the package, not /usr/local.
    assert!(town.hall.elevate_path.ends_with("bin/nuketown-elevate"));
    let mut expected = example_toml("forge");
    expected.hall.elevate_path = town.hall.elevate_path.clone();
    assert_eq!(town, expected);
    // Users: private group, 0700 home under agentsDir, no wheel.
    assert_eq!(v["users"]["ada"]["uid"], 1100);
    assert_eq!(v["users"]["ada"]["group"], "ada");
    assert_eq!(v["users"]["ada"]["home"], "/agents/ada");
    assert_eq!(v["users"]["ada"]["homeMode"], "700");
    assert_eq!(
        v["users"]["ada"]["extraGroups"],
        serde_json::json!(["plugdev"])
    );
    assert_eq!(v["approvers"], serde_json::json!(["josh"]));
    // sudo: only ada, only the entry point, NOPASSWD, no SETENV.
    let rules = v["sudoRules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["users"], serde_json::json!(["ada"]));
    let cmds = rules[0]["commands"].as_array().unwrap();
    assert_eq!(cmds.len(), 1);
    assert!(
        cmds[0]["command"]
            .as_str()
            .unwrap()
            .ends_with("/bin/nuketown-elevate"),
        "{cmds:?}"
    );
    assert_eq!(cmds[0]["options"], serde_json::json!(["NOPASSWD"]));
    assert!(v["sudoConfig"].as_str().unwrap().contains("!setenv"));
    assert!(v["hallExec"]
        .as_str()
        .unwrap()
        .ends_with("/bin/nuketown hall"));
    assert_eq!(v["sockets"]["nuketown-hall"]["SocketMode"], "0600");
    assert_eq!(
        v["sockets"]["nuketown-approvers"]["SocketGroup"],
        "nuketown-approvers"
    );
    // Persisted paths exist for the binds; home-manager lays the rendered identity files.
    assert!(v["tmpfiles"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!(
            "d /persist/agents/ada/dev 0700 ada ada -"
        )));
    assert!(v["hmFiles"]["ada"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!(".config/nuketown/identity.toml")));
    assert_eq!(v["hmGit"]["ada"]["userEmail"], "ada@forge.local");
    assert_eq!(v["claude"]["ada"]["enable"], true);
    assert_eq!(v["claude"]["vox"], serde_json::Value::Null);
    assert_eq!(
        v["udevPackages"],
        serde_json::json!(["nuketown-udev-rules"])
    );
}
