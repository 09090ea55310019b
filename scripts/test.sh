#!/usr/bin/env bash
# Everything CI runs: host tools, formatting, lints, and the whole test suite
# (unit, snapshot, and end-to-end tests with real users, sudo and sockets).
# Run as root on a Debian/Ubuntu machine with a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
NUKETOWN_K8S_LATER=1 bash scripts/deps.sh
# The Kubernetes control plane (Go, minutes from cold) builds beside the
# lints and the Rust build: only the k8s tests need it, and the two builds'
# downloads and single-threaded links interleave.
k8s_log=$(mktemp)
bash scripts/deps.sh --k8s >"$k8s_log" 2>&1 &
k8s_build=$!
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The core CLI alone (no Matrix bridge, no Kubernetes render) must build clean too.
cargo clippy -p nuketown --no-default-features --all-targets --quiet -- -D warnings
# Compile every test before the control plane is waited for.
cargo test --workspace --no-run --quiet
if ! wait "$k8s_build"; then
  cat "$k8s_log" >&2
  echo "scripts/test.sh: building the Kubernetes control plane failed (scripts/k8s.sh)" >&2
  exit 1
fi
cat "$k8s_log" >&2
# Snapshots are compared, never rewritten, here.
INSTA_UPDATE=no cargo test --workspace --no-fail-fast 2>&1
