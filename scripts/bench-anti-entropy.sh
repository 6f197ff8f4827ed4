#!/usr/bin/env bash
# Anti-entropy cost on a 3-node cluster (RF 3, every node on this machine's
# one disk): one partition is filled to about GB gigabytes per replica, then
#  1. a deep scan (every byte re-read and CRC-checked on all three replicas)
#     and a cached scan (digests of unchanged segment files reused): time,
#     bytes read, bytes copied;
#  2. ingest latency with no scan running, then with deep scans running back
#     to back, side by side in the same run (same offered load).
# The nodes run with the default anti-entropy read limit unless AE_RATE is
# set (e.g. AE_RATE=0 for unlimited). Periodic scans are off (scans run only
# when asked), so the comparison is exact.
# Usage: scripts/bench-anti-entropy.sh [GB] ; env AE_RATE (default 16M)
set -euo pipefail
cd "$(dirname "$0")/.."
gb=${1:-1}
rate=${AE_RATE:-16M}
scratch=$PWD/target/bench-anti-entropy
rm -rf "$scratch"; mkdir -p "$scratch"
source scripts/cluster-lib.sh
scanner=
cleanup() {
  [ -n "$scanner" ] && kill "$scanner" 2>/dev/null || true
  stop_cluster
  rm -rf "$scratch"
}
trap cleanup EXIT
start_cluster "$scratch" --ae-interval 0 --ae-rate "$rate"
echo "== machine: $(nproc) cores, $(uname -r), $(date -u +%F); load average $(cut -d' ' -f1-3 /proc/loadavg); anti-entropy read limit $rate B/s per node"

# Fill one partition with ~GB GB of 1000-byte entries in 1000-entry requests.
fill_rate=60000
fill_secs=$(python3 -c "print(int($gb * 1e9 / ($fill_rate * 1000)) + 1)")
echo "== filling: $fill_rate entries/s x 1000 B for ${fill_secs}s"
$bin bench steady --server "$url" --api binary --tcp "$tcp" --rate $fill_rate --duration "${fill_secs}s" \
  --batch-size 1000 --entry-size 1000 --partitions 1 --connections 2 --max-in-flight 8 \
  --keep-streams --stream-prefix fill --no-verify --json "$scratch/fill.json" >"$scratch/fill.out" 2>&1
python3 scripts/bench_summary.py fill "$scratch/fill.json" | grep -v verification
sleep 2
curl -sf "$url/v1/streams" | python3 -c '
import json,sys
for s in json.load(sys.stdin)["streams"]:
    for p in s["partitions"]:
        print("   stream %s partition %d: %.2f GB in %d segments, entries [%d, %d)" % (
            s["name"], p["partition"], p["size_bytes"] / 1e9, p["segments"], p["start_offset"], p["end_offset"]))'

scan() {  # label, extra flags
  local label=$1; shift
  local t0=$(date +%s.%N)
  $bin anti-entropy scan --server "$url" --json "$@" >"$scratch/$label.json"
  local t1=$(date +%s.%N)
  python3 - "$label" "$scratch/$label.json" "$t0" "$t1" <<'PY'
import json, sys
label, path, t0, t1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
for line in open(path):
    r = json.loads(line)
    if "outcome" not in r:
        print(f"{label:<14} not scanned: {r}"); continue
    print(f"{label:<14} {r['stream']}/{r['partition']}: {r['outcome']:<8} indexes [{r['from_index']}, {r['to_index']})"
          f"  replicas {r['replicas']}  scan {r['duration_ms']/1e3:7.2f} s  read {r['bytes_read']/1e9:6.3f} GB"
          f" ({r['bytes_read']/1e6/max(r['duration_ms']/1e3,1e-9):7.1f} MB/s, all replicas)  tree nodes compared {r['ranges_compared']}"
          f"  copied {r['bytes_repaired']} B")
print(f"{label:<14} wall time of the CLI call {t1-t0:.2f} s")
PY
}
echo "== scans of the clean cluster"
scan deep-scan --deep
scan cached-scan
scan cached-again

# Ingest beside scans: same offered load, no scan, then deep scans back to back.
load() {
  $bin bench steady --server "$url" --api binary --tcp "$tcp" --rate 20k --duration 20s \
    --batch-size 10 --partitions 4 --connections 4 --max-in-flight 64 --no-verify \
    --json "$scratch/$1.json" >"$scratch/$1.out" 2>&1
  python3 scripts/bench_summary.py "$1" "$scratch/$1.json" | grep -v verification
}
echo "== ingest 20k entries/s in 10-entry requests, scan off vs on"
load ingest-scan-off
fill=$(curl -sf "$url/v1/streams" | python3 -c 'import json,sys; print([s["name"] for s in json.load(sys.stdin)["streams"] if s["name"].startswith("fill")][0])')
( while true; do $bin anti-entropy scan --server "$url" --deep --stream "$fill" >/dev/null 2>&1 || true; done ) &
scanner=$!
sleep 1
load ingest-scan-on
kill "$scanner" 2>/dev/null || true; wait "$scanner" 2>/dev/null || true; scanner=
for i in 1 2 3; do
  echo "   node $i anti-entropy bytes read: $(curl -sf http://127.0.0.1:$((base + 10 + i))/metrics | grep '^cairn_anti_entropy_read_bytes_total' | cut -d' ' -f2)"
done
