#!/usr/bin/env bash
# Benchmark the town hall with real users, real sudo and the real daemon
# (release build): `sudo true` through an autoApprove rule against plain
# `sudo true`, and 1,000 concurrent pending requests (request -> approver
# notified latency, all answered). Run as root:
#   bash bench/hall.sh
# Results go to docs/benchmarks.md by hand; nothing here asserts a goal.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --runtime >/dev/null
cargo test --release -p nuketown --test hall_bench -- --ignored --nocapture --test-threads=1 2>&1 | grep BENCH
