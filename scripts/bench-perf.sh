#!/usr/bin/env bash
# Issue 15's table in one run: the disk's floor (fio, 4 KiB writes each
# followed by fdatasync, in the directory the nodes use), then four
# workloads against a fresh 3-node cluster (RF 3, every entry fdatasync'd
# on a majority before it is acknowledged; nodes and generator share the
# machine's cores) for each variant:
#   light   5k entries/s in 10-entry requests for LIGHT_SECONDS (60), first
#   one     1-entry requests, 1 in flight (latency)
#   window  1-entry requests, 1000 in flight (4 x 250, closed window)
#   big     1000-entry requests at 1.5M entries/s offered
# Every run verifies every acknowledged entry by reading it back, and each
# workload starts only once the disk is quiet again (bench_perf.py's
# settle_disk: deleting the previous workload's stream stalls every fsync
# on the disk for seconds; see docs/PERFORMANCE.md, issue 15).
#
# Variants (VARIANTS, default "routed whole"): `routed` is the producer as
# shipped (each partition's share sent to its leader, appends merged per
# partition); `whole` sends each request whole to its connection's node
# (--no-leader-routing), as producers did before. BASELINE_BIN=path adds a
# variant `baseline` run with another build (e.g. an older commit's).
# Needs fio (apt-get install fio). Usage: scripts/bench-perf.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$PWD/target/bench-perf
rm -rf "$scratch"; mkdir -p "$scratch"
source scripts/cluster-lib.sh
cleanup() {
  stop_cluster
  rm -rf "$scratch"/*/data* "$scratch"/fio
}
trap cleanup EXIT
echo "== machine: $(nproc) cores, $(uname -r), $(date -u '+%F %H:%M'); load average $(cut -d' ' -f1-3 /proc/loadavg)"

command -v fio >/dev/null || { echo "fio is needed: apt-get install -y fio" >&2; exit 1; }
mkdir -p "$scratch/fio"
fio --name=floor --directory="$scratch/fio" --rw=write --bs=4k --size=64m --fdatasync=1 \
  --runtime=10 --time_based --output-format=json >"$scratch/fio.json"
python3 - "$scratch/fio.json" <<'EOF'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
p = job["sync"]["lat_ns"]["percentile"]
print(f"== fio floor: 4 KiB write + fdatasync, {job['write']['iops']:,.0f}/s; "
      f"fdatasync p50 {p['50.000000']/1000:.0f} us, p99 {p['99.000000']/1000:.0f} us")
EOF

run_variant() {
  local label=$1 binary=$2; shift 2
  mkdir -p "$scratch/$label"
  CAIRN_BIN=$binary start_cluster "$scratch/$label"
  # Warm-up (not reported): leaders elected, first segments, page cache.
  $bin bench steady --server "$url" --api binary --tcp "$tcp" --rate 5k --duration 3s \
    --batch-size 10 --no-verify >/dev/null 2>&1
  python3 scripts/bench_perf.py "$label" "$bin" "$url" "$tcp" "$(IFS=,; echo "${pids[*]}")" \
    "$scratch" "$@"
  stop_cluster
}

[ -n "${CAIRN_BIN:-}" ] || { cargo build -q --release -p cairn; CAIRN_BIN=target/release/cairn; }
for variant in ${VARIANTS:-routed whole}; do
  case $variant in
    routed) run_variant routed "$CAIRN_BIN" ;;
    whole) run_variant whole "$CAIRN_BIN" --no-leader-routing ;;
    *) echo "unknown variant $variant" >&2; exit 2 ;;
  esac
done
if [ -n "${BASELINE_BIN:-}" ]; then
  run_variant baseline "$BASELINE_BIN"
fi
