#!/usr/bin/env bash
# Measures the cluster monitor (docs/PERFORMANCE.md, "The cluster monitor"):
#
#   scripts/bench-monitor.sh quiet [SECONDS]  false alarms: a fault-free run of
#       steady load with a 3x burst every 25 s (default 600 s); /v1/health is
#       polled every second and every second that is not green is counted, with
#       the reasons it gave.
#   scripts/bench-monitor.sh cost [SECONDS]   the monitor's CPU per node: an
#       idle 3-node cluster (heartbeats, probes, telemetry) with the monitor off
#       (--monitor-interval 0) and on (1 s), node CPU from
#       cairn_process_cpu_seconds_total over SECONDS (default 60), side by side.
#       Idle, because under load the difference drowns in the load's noise.
#
# Time to detect each fault is measured by the monitor integration test:
#   CAIRN_MONITOR_RUNS=5 cargo test --release -p cairn --test monitor -- --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster-lib.sh

mode=${1:-quiet}
secs=${2:-}
scratch=$(mktemp -d /tmp/cairn-bench-monitor.XXXXXX)
trap 'stop_cluster; rm -rf "$scratch"' EXIT

cpu_of() { # node index -> process CPU seconds
  curl -sf "http://127.0.0.1:$((base + 10 + $1))/metrics" |
    awk '$1 == "cairn_process_cpu_seconds_total" {print $2}'
}

case $mode in
quiet)
  secs=${secs:-600}
  start_cluster "$scratch"
  : >"$scratch/health.ndjson"
  (
    end=$((SECONDS + secs))
    while [ $SECONDS -lt $end ]; do
      $bin bench burst --server "$url" --api binary --tcp "$tcp" --rate 3000 --factor 3 \
        --baseline 10s --burst 5s --partitions 6 --no-verify >/dev/null 2>&1 || true
    done
  ) &
  load=$!
  end=$((SECONDS + secs))
  while [ $SECONDS -lt $end ]; do
    curl -sf "$url/v1/health" >>"$scratch/health.ndjson" && echo >>"$scratch/health.ndjson" || true
    sleep 1
  done
  wait $load || true
  python3 - "$scratch/health.ndjson" <<'PY'
import collections, json, sys
rounds = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
bad = [r for r in rounds if r["status"] != "green"]
codes = collections.Counter((x["code"], json.dumps(x["subject"])) for r in bad for x in r["reasons"])
print(f"{len(rounds)} seconds polled, {len(bad)} not green")
for (code, subject), n in codes.most_common():
    print(f"  {n:5d} s  {code} {subject}")
PY
  ;;
cost)
  secs=${secs:-60}
  for interval in 0 1s; do
    mkdir -p "$scratch/$interval"
    start_cluster "$scratch/$interval" --monitor-interval "$interval"
    sleep 10
    before=($(cpu_of 1) $(cpu_of 2) $(cpu_of 3))
    sleep "$secs"
    after=($(cpu_of 1) $(cpu_of 2) $(cpu_of 3))
    eval_cpu=$(curl -sf "$url/metrics" | awk '$1 == "cairn_monitor_evaluation_cpu_seconds_total" {print $2}')
    python3 - "$interval" "$secs" "${before[*]}" "${after[*]}" "${eval_cpu:-0}" <<'PY'
import sys
interval, secs = sys.argv[1], float(sys.argv[2])
b = [float(x) for x in sys.argv[3].split()]
a = [float(x) for x in sys.argv[4].split()]
cores = [(y - x) / secs for x, y in zip(b, a)]
print(f"monitor interval {interval:>3}: node CPU " + "  ".join(f"{c*100:5.1f} %" for c in cores)
      + f"  (mean {sum(cores)/len(cores)*100:.1f} % of a core); node 1 evaluation CPU total {float(sys.argv[5]):.3f} s")
PY
    stop_cluster
    pids=()
  done
  ;;
*)
  echo "usage: $0 quiet|cost [SECONDS]" >&2
  exit 2
  ;;
esac
