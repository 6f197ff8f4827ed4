#!/usr/bin/env bash
# Replicated retention and catch-up by snapshot (issue 18) on a 3-node
# cluster of the release binary (RF 3, every node on this machine's disk):
#  1. node 3 is stopped and one partition is written (1000-byte entries)
#     into a stream with retention_bytes RETAIN and SEG-byte segments, until
#     the leader's log start has moved past everything node 3 holds, twice;
#  2. a steady ingest runs (20k entries/s, 10-entry requests, its own
#     stream, per-second log) and after 10 s node 3 is restarted: it catches
#     up by snapshot while the ingest goes on. Reported: the transfer's bytes
#     and time (MB/s) and the ingest's per-second p99 before and during it.
# With MODE=window there is no retention: while node 3 is down, FILL_MB
# (default 400) are written, past the leader's replay window
# (--snapshot-behind, default 256M), so node 3 comes back by snapshot too,
# fetching only what it lacks (appended after the log it holds).
# Usage: scripts/bench-retention.sh ; env SNAPSHOT_RATE (default 64M),
# RETAIN (default 268435456), SEG (default 16777216), MODE (cut|window),
# FILL_MB (window mode)
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${SNAPSHOT_RATE:-64M}
mode=${MODE:-cut}
fill_mb=${FILL_MB:-400}
retain=${RETAIN:-268435456}
[ "$mode" = window ] && retain=$((1 << 40))
seg=${SEG:-16777216}
scratch=$PWD/target/bench-retention
rm -rf "$scratch"; mkdir -p "$scratch"
source scripts/cluster-lib.sh
cleanup() {
  stop_cluster
  mkdir -p "$scratch.logs"; cp "$scratch"/node*.err "$scratch.logs/" 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT
start_cluster "$scratch" --retention-check-ms 1000 --snapshot-rate "$rate"
echo "== machine: $(nproc) cores, $(uname -r), $(date -u +%F); load average $(cut -d' ' -f1-3 /proc/loadavg); snapshot rate $rate B/s, retention $retain B, segments $seg B"
peers="1=127.0.0.1:$((base + 1)),2=127.0.0.1:$((base + 2)),3=127.0.0.1:$((base + 3))"
node3() {
  $bin node --id 3 --data-dir "$scratch/data3" --http 127.0.0.1:$((base + 13)) \
    --raft 127.0.0.1:$((base + 3)) --peers "$peers" --tcp 127.0.0.1:$((base + 23)) \
    --retention-check-ms 1000 --snapshot-rate "$rate" >>"$scratch/node3.out" 2>>"$scratch/node3.err" &
  pids[2]=$!
}
view() {  # node, stream prefix -> "log_start applied catching_up"
  curl -sf "http://127.0.0.1:$((base + 10 + $1))/v1/cluster" | python3 -c '
import json,sys
v=json.load(sys.stdin)
g=[g for g in v["groups"] if g["stream"].startswith(sys.argv[1])]
print(g[0]["log_start_index"], g[0]["applied_index"] or 0, 1 if g[0].get("catching_up") else 0) if g else print("0 0 0")' "$2"
}
metric() {  # node, name
  curl -sf "http://127.0.0.1:$((base + 10 + $1))/metrics" | awk -v m="$2" '$1==m {print $2}'
}

# 1. Fill with node 3 down.
stream=ret
curl -sf -X POST "$url/v1/streams" -H 'content-type: application/json' \
  -d "{\"name\":\"$stream\",\"partitions\":1,\"replication_factor\":3,\"segment_bytes\":$seg,\"retention_bytes\":$retain}" >/dev/null
fill() {  # rounds of 20 x 1 MB requests
  python3 - "$url" "$stream" "$1" <<'PY'
import json, sys, urllib.request
url, stream, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
body = "\n".join(json.dumps({"source": "fill", "message": "x" * 980}) for _ in range(1000)).encode()
for _ in range(rounds * 20):
    urllib.request.urlopen(urllib.request.Request(f"{url}/v1/streams/{stream}/entries", data=body,
        headers={"content-type": "application/x-ndjson"}), timeout=60).read()
PY
}
for _ in $(seq 50); do read -r _ behind _ < <(view 3 ret) && [ "$behind" -gt 0 ] && break; fill 1; done
fill 1
read -r _ behind _ < <(view 3 ret)
kill "${pids[2]}"; wait "${pids[2]}" 2>/dev/null || true
if [ "$mode" = window ]; then
  echo "== node 3 stopped at applied index $behind; writing $fill_mb MB with no retention (past the replay window)"
  fill $(( (fill_mb + 19) / 20 ))
  read -r start applied _ < <(view 1 ret)
  cuts=0
else
echo "== node 3 stopped at applied index $behind; filling until the leader cuts past it, 3 cuts at least"
fill_start=$(date +%s)
cuts=0; last_start=0
while true; do
  fill 1
  read -r start applied _ < <(view 1 ret)
  if [ "$start" != "$last_start" ]; then cuts=$((cuts + 1)); last_start=$start; fi
  if [ "$start" -gt "$behind" ] && [ "$cuts" -ge 3 ]; then break; fi
  [ $(( $(date +%s) - fill_start )) -lt 600 ] || { echo "retention never cut past node 3" >&2; exit 1; }
done
fi
size=$(curl -sf "$url/v1/streams/$stream" | python3 -c 'import json,sys; p=json.load(sys.stdin)["partitions"][0]; print(p["size_bytes"], p["segments"], p["start_offset"], p["end_offset"])')
echo "== leader log start index $start (cuts seen: $cuts), applied $applied; partition size/segments/start/end: $size"
echo "   retention figures (nodes 1, 2): cuts $(metric 1 cairn_retention_cuts_total)/$(metric 2 cairn_retention_cuts_total) segments $(metric 1 cairn_retention_cut_segments_total)/$(metric 2 cairn_retention_cut_segments_total)"

# 2. Ingest, and node 3 back after 10 s.
$bin bench steady --server "$url" --api binary --tcp "${tcp%,*}" --rate 20k --duration 40s \
  --batch-size 10 --partitions 4 --connections 4 --max-in-flight 64 --no-verify \
  --interval-log "$scratch/ingest.csv" --json "$scratch/ingest.json" >"$scratch/ingest.out" 2>&1 &
bench=$!
sleep 10
t_restart=$(date +%s.%N)
node3
catch_start=; catch_end=
deadline=$((SECONDS + 120))
while true; do
  now=$(date +%s.%N)
  read -r s3 a3 c3 < <(view 3 ret 2>/dev/null || echo "0 0 0") || true
  s3=${s3:-0}; a3=${a3:-0}; c3=${c3:-0}
  [ "$c3" = 1 ] && [ -z "$catch_start" ] && catch_start=$now
  if [ "$s3" -ge "$start" ] && [ "$c3" = 0 ] && [ "$a3" -ge "$applied" ]; then catch_end=$now; break; fi
  if [ $SECONDS -ge $deadline ]; then echo "node 3 did not catch up: log start $s3 applied $a3 catching up $c3" >&2; break; fi
  sleep 0.05
done
bytes=$(metric 3 cairn_snapshot_catchup_bytes_total)
wait "$bench" || true
python3 - "$scratch/ingest.csv" "$t_restart" "${catch_start:-$t_restart}" "${catch_end:-$t_restart}" "${bytes:-0}" "$scratch/ingest.json" <<'PY'
import csv, json, sys, statistics
path, t_restart, c0, c1, nbytes, report = sys.argv[1], *map(float, sys.argv[2:6]), sys.argv[6]
start = json.load(open(report)).get("started_unix_ms")
rows = list(csv.DictReader(open(path)))
print(f"== catch-up: {nbytes/1e6:.1f} MB fetched; from restart to caught up {c1 - t_restart:.2f} s"
      f" (reported catching up for {max(c1 - c0, 0):.2f} s) = {nbytes/1e6/max(c1 - t_restart, 1e-9):.1f} MB/s"
      f" end to end, {nbytes/1e6/max(c1 - c0, 1e-9):.1f} MB/s while fetching")
# Interval rows are seconds since the bench started; the bench started about
# 10 s before the restart.
before = [float(r["response_p99_ms"]) for r in rows if 2 <= float(r["t_s"]) <= 10]
dur = c1 - t_restart
during = [float(r["response_p99_ms"]) for r in rows if 10 < float(r["t_s"]) <= 10 + max(dur, 1) + 1]
after = [float(r["response_p99_ms"]) for r in rows if float(r["t_s"]) > 10 + max(dur, 1) + 3]
for name, v in (("before (node 3 down)", before), ("during the catch-up", during), ("after (3 replicas)", after)):
    if v:
        print(f"   ingest per-second p99, {name}: median {statistics.median(v):.2f} ms, max {max(v):.2f} ms over {len(v)} s")
r = json.load(open(report))
w = r["phases"][0]
print(f"   ingest whole run: acked {w['achieved_entries_per_s']:,.0f}/s, p50 {w['response']['p50_ms']:.2f} ms, p99 {w['response']['p99_ms']:.2f} ms, errors {w['errors']}")
PY
