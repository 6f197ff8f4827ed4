#!/usr/bin/env bash
# HTTP ingest and query benchmarks of a single node, with telemetry's cost.
# Usage: scripts/bench-http.sh [seconds-per-round] [entries-for-query-test]
# Needs wrk (apt-get install -y wrk). Builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
query_entries=${2:-10000000}
scratch=$PWD/target/bench-http
rm -rf "$scratch"; mkdir -p "$scratch"
cargo build -q --release -p cairn
bin=target/release/cairn
port=$((20000 + RANDOM % 20000))
url=http://127.0.0.1:$port

$bin node --data-dir "$scratch/data" --http 127.0.0.1:$port >"$scratch/node.out" 2>"$scratch/node.err" &
node_pid=$!
trap 'kill $node_pid 2>/dev/null; wait $node_pid 2>/dev/null; rm -rf "$scratch"' EXIT
for _ in $(seq 50); do curl -sf "$url/health" >/dev/null && break; sleep 0.1; done

metric() { curl -s "$url/metrics" | awk -v k="$1" '$1 == k { print $2 }'; }
cpu_of_node() { awk '{ print $14 + $15 }' /proc/$node_pid/stat; }  # ticks
hz=$(getconf CLK_TCK)

echo "== machine: $(nproc) cores, $(uname -r), $(date -u +%F)"
curl -sf -XPOST "$url/v1/streams" -d '{"name":"ingest","partitions":4}' >/dev/null

# Telemetry idle cost.
t0=$(metric cairn_telemetry_cpu_seconds_total); c0=$(cpu_of_node); sleep 10
t1=$(metric cairn_telemetry_cpu_seconds_total); c1=$(cpu_of_node)
echo "idle 10 s: node CPU $(echo "($c1 - $c0) / $hz / 10" | bc -l | cut -c1-6) cores, telemetry CPU $(echo "($t1 - $t0) / 10" | bc -l | cut -c1-8) cores"

echo "== ingest: wrk, NDJSON bodies of 1000 entries (~100 B each), 2 threads, 16 connections, ${secs}s rounds, stage timing on/off alternating"
round() {
  local label=$1
  curl -sf -XPUT "$url/v1/telemetry/stage-timing" -d "{\"enabled\":$2}" >/dev/null
  local t0 c0 t1 c1 out rps
  t0=$(metric cairn_telemetry_cpu_seconds_total); c0=$(cpu_of_node)
  out=$(STREAM=ingest STATIC=1 THREADS=2 wrk -t2 -c16 -d"${secs}s" --latency -s scripts/wrk/ingest.lua "$url")
  t1=$(metric cairn_telemetry_cpu_seconds_total); c1=$(cpu_of_node)
  rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
  p50=$(echo "$out" | awk '$1 == "50%" { print $2 }')
  p99=$(echo "$out" | awk '$1 == "99%" { print $2 }')
  printf '%-14s %10.0f entries/s  req p50 %-8s p99 %-8s node CPU %.2f cores  telemetry CPU %.4f cores\n' \
    "$label" "$(echo "$rps * 1000" | bc -l)" "$p50" "$p99" \
    "$(echo "($c1 - $c0) / $hz / $secs" | bc -l)" "$(echo "($t1 - $t0) / $secs" | bc -l)"
  echo "$label $rps" >> "$scratch/rounds"
}
for i in 1 2 3; do
  round "timing-on" true
  round "timing-off" false
done
curl -sf -XPUT "$url/v1/telemetry/stage-timing" -d '{"enabled":true}' >/dev/null
awk '{ s[$1] += $2; n[$1]++ } END { on = s["timing-on"] / n["timing-on"]; off = s["timing-off"] / n["timing-off"];
  printf "mean: on %.0f entries/s, off %.0f entries/s, telemetry costs %.2f%%\n", on * 1000, off * 1000, (1 - on / off) * 100 }' "$scratch/rounds"

echo "== query: loading $query_entries entries spanning one hour (dynamic bodies)"
curl -sf -XPOST "$url/v1/streams" -d '{"name":"bench","partitions":4}' >/dev/null
requests=$((query_entries / 1000))
start=$(date +%s.%N)
# wrk has no request count: run until the stream holds enough entries.
STREAM=bench THREADS=2 STEP_US=360 wrk -t2 -c8 -d3600s -s scripts/wrk/ingest.lua "$url" >/dev/null 2>&1 &
wrk_pid=$!
while :; do
  n=$(curl -s "$url/v1/streams/bench" | python3 -c 'import json,sys; print(sum(p["end_offset"] for p in json.load(sys.stdin)["partitions"]))')
  [ "$n" -ge "$query_entries" ] && break
  sleep 1
done
kill $wrk_pid; wait $wrk_pid 2>/dev/null || true
end=$(date +%s.%N)
n=$(curl -s "$url/v1/streams/bench" | python3 -c 'import json,sys; print(sum(p["end_offset"] for p in json.load(sys.stdin)["partitions"]))')
echo "loaded $n entries in $(echo "$end - $start" | bc -l | cut -c1-6) s"
du -sh "$scratch/data/streams/bench"
for filter in "" "&level=ERROR" "&contains=user%3D4242%20" ; do
  out=$(STREAM=bench FILTER="$filter" wrk -t1 -c1 -d"${secs}s" --latency -s scripts/wrk/query.lua "$url")
  printf 'query 1-minute window, limit 1000, filter [%s]: %s req/s, p50 %s, p99 %s\n' "${filter:-none}" \
    "$(echo "$out" | awk '/Requests\/sec/ { print $2 }')" "$(echo "$out" | awk '$1 == "50%" { print $2 }')" \
    "$(echo "$out" | awk '$1 == "99%" { print $2 }')"
done
