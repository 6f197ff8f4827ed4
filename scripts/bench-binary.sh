#!/usr/bin/env bash
# Binary protocol vs HTTP ingest on one node, side by side in one run, with
# `cairn bench` (open loop, every acknowledged entry verified).
# Usage: scripts/bench-binary.sh [seconds-per-step]
# Builds the release binary. Each sweep has at most 5 steps.
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:-3}
scratch=$PWD/target/bench-binary
rm -rf "$scratch"; mkdir -p "$scratch"
cargo build -q --release -p cairn
bin=target/release/cairn
port=$((20000 + RANDOM % 20000))
url=http://127.0.0.1:$port
tcp=127.0.0.1:$((port + 1))

$bin node --data-dir "$scratch/data" --http 127.0.0.1:$port --tcp "$tcp" \
  >"$scratch/node.out" 2>"$scratch/node.err" &
node_pid=$!
trap 'kill $node_pid 2>/dev/null; wait $node_pid 2>/dev/null; rm -rf "$scratch"' EXIT
for _ in $(seq 50); do curl -sf "$url/health" >/dev/null && break; sleep 0.1; done
echo "== machine: $(nproc) cores, $(uname -r), $(date -u +%F); load average $(cut -d' ' -f1-3 /proc/loadavg)"

# Prints one line per sweep step, then the knee, from a bench JSON report.
summarize() { python3 scripts/bench_summary.py "$1" "$2"; }

# run LABEL API BENCH-ARGS...
run() {
  local label=$1 api=$2; shift 2
  local json="$scratch/$label.json"
  $bin bench "$@" --server "$url" --api "$api" --tcp "$tcp" --json "$json" \
    >"$scratch/$label.out" 2>"$scratch/$label.err" || { cat "$scratch/$label.err"; exit 1; }
  summarize "$label" "$json"
}

one=(--batch-size 1 --connections 4 --max-in-flight 64)
big=(--batch-size 1000 --connections 4 --max-in-flight 8)
sweep=(--factor 1.6 --step-duration "${step}s" --max-steps 5 --max-p99 50ms)

# Warm-up (not reported): the node's first segments and the page cache,
# so neither API's first run pays for them.
for api in http binary; do
  $bin bench steady --server "$url" --api $api --tcp "$tcp" --rate 5k --duration 2s \
    --batch-size 10 --no-verify >/dev/null 2>&1
done

echo "== 1-entry requests, 4 connections x 64 in flight, 100 B entries, 4 partitions, fsync"
run http-1-sweep http sweep --start-rate 10k "${sweep[@]}" "${one[@]}"
run binary-1-sweep binary sweep --start-rate 10k "${sweep[@]}" "${one[@]}"
run http-1-steady http steady --rate 20k --duration 10s "${one[@]}"
run binary-1-steady binary steady --rate 20k --duration 10s "${one[@]}"

echo "== 1000-entry requests, 4 connections x 8 in flight, 100 B entries, 4 partitions, fsync"
run http-1000-sweep http sweep --start-rate 1M "${sweep[@]}" "${big[@]}"
run binary-1000-sweep binary sweep --start-rate 1M "${sweep[@]}" "${big[@]}"
run http-1000-steady http steady --rate 1M --duration 10s "${big[@]}"
run binary-1000-steady binary steady --rate 1M --duration 10s "${big[@]}"
