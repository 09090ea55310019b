#!/usr/bin/env bash
# Benchmark the chat bridge against a real Synapse on 127.0.0.1: idle RSS of
# one bridge, and message -> backend-start latency. The bridge measured is
# the one deployed: nuketown-chat built with the `lean` profile (size), put
# beside the release `nuketown` that runs it. Run as root:
#   bash bench/chat.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh >/dev/null
target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --profile lean -p nuketown --bin nuketown-chat
bin=$(cargo test --release -p nuketown --test chat --no-run 2>&1 |
  sed -n 's/.*(\(.*\/deps\/chat-[0-9a-f]*\)).*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "bench/chat.sh: the chat test binary was not built" >&2; exit 1; }
install -m755 "$target/lean/nuketown-chat" "$target/release/nuketown-chat"
(cd crates/nuketown && "$bin" --ignored --exact chat_bridge_benchmark --nocapture) | grep BENCH
