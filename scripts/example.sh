#!/usr/bin/env bash
# The main job on the bundled example town: build nuketown, apply
# examples/town.toml to this host (as root), and show the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --runtime
cargo build --release --quiet
./target/release/nuketown plan examples/town.toml
./target/release/nuketown apply examples/town.toml
./target/release/nuketown status --town examples/town.toml
