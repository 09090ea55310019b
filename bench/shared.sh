#!/usr/bin/env bash
# Benchmark the shared directories' reconciliation: a tree of 1,000
# directories of 100 files each (101,000 entries) brought to a membership
# change (a member made read-only), then walked again with nothing to
# change. Real users, real ACLs. Run as root:
#   bash bench/shared.sh
# Results go to docs/benchmarks.md by hand; nothing here asserts a goal.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --runtime >/dev/null
cargo test --release -p nuketown --test shared -- --ignored --nocapture --test-threads=1 reconcile_100000_files 2>&1 | grep BENCH
