#!/usr/bin/env bash
# The main job on the bundled example town: build nuketown, apply
# examples/town.toml to this host (as root), and show the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --runtime
# The core CLI only: the Matrix bridge and the Kubernetes render (cargo
# features `chat`, `cloud`) are most of the build and the example needs neither.
cargo build --release --quiet -p nuketown --no-default-features
./target/release/nuketown plan examples/town.toml
./target/release/nuketown apply examples/town.toml
./target/release/nuketown status --town examples/town.toml
