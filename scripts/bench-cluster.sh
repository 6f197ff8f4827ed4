#!/usr/bin/env bash
# A 3-node cluster on this machine (replication factor 3, every entry fsync'd
# on a majority before it is acknowledged), loaded by `cairn bench` over the
# binary protocol: one write in flight (latency), 1-entry requests with 1000
# in flight, and 1000-entry batches. The generator shares the cores with the
# nodes; its CPU is reported per phase.
# Usage: scripts/bench-cluster.sh [seconds-per-step]
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:-4}
scratch=$PWD/target/bench-cluster
rm -rf "$scratch"; mkdir -p "$scratch"
source scripts/cluster-lib.sh
cleanup() {
  stop_cluster
  rm -rf "$scratch"
}
trap cleanup EXIT
start_cluster "$scratch"
echo "== machine: $(nproc) cores, $(uname -r), $(date -u +%F); load average $(cut -d' ' -f1-3 /proc/loadavg)"

run() {
  local label=$1; shift
  local json="$scratch/$label.json"
  $bin bench "$@" --server "$url" --api binary --tcp "$tcp" --json "$json" \
    >"$scratch/$label.out" 2>"$scratch/$label.err" || { cat "$scratch/$label.err"; exit 1; }
  python3 scripts/bench_summary.py "$label" "$json"
}

# Warm-up (not reported): leaders elected, first segments, page cache.
$bin bench steady --server "$url" --api binary --tcp "$tcp" --rate 5k --duration 3s \
  --batch-size 10 --no-verify >/dev/null 2>&1

echo "== one write in flight: 1-entry requests, 1 connection, 1 in flight, 1000/s offered"
run latency steady --rate 1k --duration 10s --batch-size 1 --connections 1 --max-in-flight 1
echo "== 1-entry requests, 4 connections x 250 in flight (1000), 100 B entries"
run one-sweep sweep --start-rate 20k --factor 1.6 --step-duration "${step}s" --max-steps 6 \
  --max-p99 20ms --batch-size 1 --connections 4 --max-in-flight 250
knee() {  # half the knee of a sweep report, in entries/s (issue 5: steady at 50% of the knee)
  python3 -c 'import json,sys; k=json.load(open(sys.argv[1]))["sweep"]["knee"]; print(int(k["achieved_entries_per_s"]/2) if k else 0)' "$1"
}
half=$(knee "$scratch/one-sweep.json")
if [ "$half" -gt 0 ]; then
  echo "== steady at 50% of the 1-entry knee: $half/s"
  run one-steady steady --rate "$half" --duration 10s --batch-size 1 --connections 4 --max-in-flight 250
fi
echo "== 1000-entry requests, 4 connections x 8 in flight"
run big-sweep sweep --start-rate 400k --factor 1.6 --step-duration "${step}s" --max-steps 5 \
  --max-p99 100ms --batch-size 1000 --connections 4 --max-in-flight 8
half=$(knee "$scratch/big-sweep.json")
if [ "$half" -gt 0 ]; then
  echo "== steady at 50% of the 1000-entry knee: $half/s"
  run big-steady steady --rate "$half" --duration 10s --batch-size 1000 --connections 4 --max-in-flight 8
fi
