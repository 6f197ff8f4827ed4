#!/usr/bin/env bash
# Leader transfer under load: a fresh 3-node cluster (release build, RF 3)
# takes a steady `cairn bench` load on the binary protocol while every
# partition's leadership is moved round the nodes, one move every second,
# with `cairn leader move`; the same load without moves runs first in the
# same session for comparison. Prints each move's time (as the old leader
# measured it: from taking the request until it saw the new leader lead)
# and the bench's summary: errors, latency and the read-back verification
# (every acknowledged entry present exactly once).
# Usage: scripts/bench-leader-move.sh [seconds-per-run] [rate]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
rate=${2:-20k}
scratch=$PWD/target/bench-leader-move
rm -rf "$scratch"; mkdir -p "$scratch"
source scripts/cluster-lib.sh
trap 'stop_cluster; rm -rf "$scratch"' EXIT
echo "== machine: $(nproc) cores, $(uname -r), $(date -u '+%F %H:%M UTC'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
start_cluster "$scratch" --ae-interval 0

run() {  # label, then "moves" or "still"
  local label=$1 moves=$2 json="$scratch/$1.json"
  $bin bench steady --server "$url" --api binary --tcp "$tcp" --rate "$rate" \
    --duration "${secs}s" --batch-size 10 --connections 4 --max-in-flight 64 \
    --partitions 6 --stream-prefix "$label" --json "$json" \
    >"$scratch/$label.out" 2>"$scratch/$label.err" &
  local bench=$!
  if [ "$moves" = moves ]; then
    local stream=""
    for _ in $(seq 50); do
      stream=$(curl -sf "$url/v1/streams" | python3 -c "import json,sys; print(next((s['name'] for s in json.load(sys.stdin)['streams'] if s['name'].startswith('$label')), ''))" || true)
      [ -n "$stream" ] && break
      sleep 0.2
    done
    sleep 3
    local n=0
    while kill -0 $bench 2>/dev/null && [ $n -lt $((secs - 6)) ]; do
      p=$((n % 6))
      leader=$(curl -sf "$url/v1/cluster" | python3 -c "import json,sys; print(next(g['leader'] for g in json.load(sys.stdin)['groups'] if g['stream']=='$stream' and g['partition']==$p))")
      to=$((leader % 3 + 1))
      $bin leader move "$stream" $p --to $to --server "$url" || true
      n=$((n + 1))
      sleep 1
    done
  fi
  wait $bench || { cat "$scratch/$label.err"; exit 1; }
  python3 scripts/bench_summary.py "$label" "$json"
}

run still still
run moves moves
