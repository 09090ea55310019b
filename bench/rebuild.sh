#!/usr/bin/env bash
# Benchmark the rebuild coordinator: lease hand-off latency with 20 waiting
# agents (real processes, real users). Run as root:  bash bench/rebuild.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p nuketown --test rebuild -- --ignored --nocapture rebuild_handoff_benchmark 2>&1 | grep BENCH
