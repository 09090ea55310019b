#!/usr/bin/env bash
# Benchmark: `nuketown reset` of a home holding 100,000 small files, on a btrfs
# subvolume vs. a plain directory. Run as root on a scratch machine:
#   bash bench/reset.sh [FILES] [RUNS]
# It creates a throw-away user `nkbench` (uid 1890) and removes it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-100000}
runs=${2:-5}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
cargo build --release --quiet
bin=$PWD/target/release/nuketown
work=$(mktemp -d /tmp/nuketown-bench-XXXXXX)
export NUKETOWN_STATE_DIR=$work/state NUKETOWN_ETC_DIR=$work/etc NUKETOWN_UDEV_RULES=$work/udev.rules NUKETOWN_SUDOERS=$work/sudoers
cleanup() {
  pkill -KILL -u nkbench 2>/dev/null || true
  for m in $(grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null || true; done
  userdel nkbench 2>/dev/null || true; groupdel nkbench 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

fill() { # 100 directories of files/100 small files each, as the agent would leave them
  python3 - "$1" "$files" <<'PY'
import os, sys
home, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(home, "litter", f"d{i % 100:03}")
    if i < 100: os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}"), "w") as f: f.write("x" * 64)
PY
}

bench() { # $1 = label, $2 = agentsDir
  cat > "$work/town.toml" <<TOML
domain = "bench.local"
agentsDir = "$2"
persistDir = "$work/persist"
[agents.nkbench]
uid = 1890
persist.directories = ["dev"]
TOML
  "$bin" apply "$work/town.toml" >/dev/null
  local total=0 best=999999 t0 t1 ms
  for _ in $(seq "$runs"); do
    fill "$2/nkbench"
    sync
    t0=$(date +%s%N)
    "$bin" reset nkbench --town "$work/town.toml" >/dev/null
    t1=$(date +%s%N)
    ms=$(( (t1 - t0) / 1000000 ))
    total=$((total + ms)); [ "$ms" -lt "$best" ] && best=$ms
    [ ! -e "$2/nkbench/litter" ] || { echo "litter survived" >&2; exit 1; }
  done
  echo "$1: $files files, $runs runs: mean $((total / runs)) ms, best $best ms"
  "$bin" apply --prune "$work/empty.toml" >/dev/null 2>&1 || true
  userdel nkbench 2>/dev/null || true; groupdel nkbench 2>/dev/null || true
  rm -rf "$work/state"
}

truncate -s 2G "$work/btrfs.img"
mkfs.btrfs -q "$work/btrfs.img"
mkdir -p "$work/btrfs"
mount -o loop "$work/btrfs.img" "$work/btrfs"
bench "btrfs subvolume" "$work/btrfs/agents"
# For reference: the deletion reset leaves to the background, timed synchronously.
total=0
for _ in $(seq "$runs"); do
  btrfs -q subvolume create "$work/btrfs/ref"
  fill "$work/btrfs/ref"; sync
  t0=$(date +%s%N); btrfs -q subvolume delete "$work/btrfs/ref"; t1=$(date +%s%N)
  total=$((total + (t1 - t0) / 1000000))
done
echo "btrfs subvolume delete itself (done in the background by reset): mean $((total / runs)) ms"
bench "plain directory ($(stat -f -c %T "$work"))" "$work/plain/agents"
