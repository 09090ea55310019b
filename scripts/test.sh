#!/usr/bin/env bash
# Everything CI runs: host tools, formatting, lints, and the whole test suite
# (unit, snapshot, and end-to-end tests with real users, sudo and sockets).
# Run as root on a Debian/Ubuntu machine with a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The core CLI alone (no Matrix bridge, no Kubernetes render) must build clean too.
cargo clippy -p nuketown --no-default-features --all-targets --quiet -- -D warnings
# Snapshots are compared, never rewritten, here.
INSTA_UPDATE=no cargo test --workspace --no-fail-fast 2>&1
