#!/usr/bin/env bash
# Benchmark the cloud path on a real Kubernetes API server (etcd and
# kube-apiserver from scripts/k8s.sh, on 127.0.0.1): server-side apply of
# 1,000 agents' manifests, the operator's reconcile of 1,000 agents (per
# reconcile p50/p99, API calls per agent from the API server's audit log,
# writes in steady state), and an approved request -> Deployment patched,
# watch-driven. Run as root:
#   bash bench/k8s.sh
# Results go to docs/benchmarks.md by hand; nothing here asserts a goal.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/k8s.sh >/dev/null
CARGO_INCREMENTAL=0 cargo test --release -p nuketown --no-default-features --features cloud --test k8s_bench -- --ignored --nocapture 2>&1 | grep BENCH
