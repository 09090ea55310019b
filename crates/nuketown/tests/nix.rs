//! The Nix side against the Rust schema, with nothing but `nix-instantiate`
//! (apt nix-bin): every .nix file parses, and the projection the NixOS module
//! writes to town.json (nix/lib/town.nix, plain Nix) turns
//! examples/example.nix into the Rust town of examples/town.toml. The module
//! itself is evaluated against the real home-manager, impermanence and
//! sops-nix in nix_upstream.rs.

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
