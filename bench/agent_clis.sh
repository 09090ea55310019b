#!/usr/bin/env bash
# Benchmark the real agent CLIs behind the chat bridge (claude-code, codex,
# aider from scripts/deps.sh) with a scripted model that answers at once:
# message -> the agent typing, and message -> its reply, per backend, over
# a real Synapse on 127.0.0.1. Run as root:
#   bash bench/agent_clis.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh >/dev/null
cargo test --release -p nuketown --test agent_clis -- --ignored --exact \
  bench_agent_clis_with_a_scripted_model_message_to_typing_and_reply --nocapture | grep BENCH
