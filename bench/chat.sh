#!/usr/bin/env bash
# Benchmark the chat bridge against a real Synapse on 127.0.0.1: idle RSS of
# one bridge, and message -> backend-start latency. Run as root:
#   bash bench/chat.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh >/dev/null
cargo test --release -p nuketown --test chat -- --ignored --nocapture chat_bridge_benchmark 2>&1 | grep BENCH
