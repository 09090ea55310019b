#!/usr/bin/env bash
# The credential gateway's numbers for docs/benchmarks.md: added latency per
# request and to the first streamed byte on loopback (through the gateway
# vs straight to the HTTPS upstream), 1,000 concurrent SSE streams, and the
# audit chain's verification over a day's worth of calls. Release builds.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
cargo bench -q -p nuketown-gateway --bench gateway 2>&1 | grep BENCH
cargo test -q --release -p nuketown-hall --test audit_bench -- --ignored --nocapture 2>&1 | grep BENCH
