#!/usr/bin/env bash
# The main job, for now: start a Cairn node, write a few realistic log
# entries, read and query them back, and show the node's telemetry. The node
# keeps serving until Ctrl-C (set CAIRN_QUICKSTART_EXIT=1 to stop at once).
# A 3-node demo replaces this once the cluster lands.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p cairn
cairn=$PWD/target/release/cairn
data=$(mktemp -d "${TMPDIR:-/tmp}/cairn-quickstart.XXXXXX")
port=${CAIRN_PORT:-7070}
url=http://127.0.0.1:$port

"$cairn" node --data-dir "$data" --http "127.0.0.1:$port" &
node=$!
cleanup() { kill -TERM "$node" 2>/dev/null && wait "$node" 2>/dev/null; rm -rf "$data"; }
trap cleanup EXIT INT TERM
for _ in $(seq 100); do curl -sf "$url/health" >/dev/null 2>&1 && break; sleep 0.1; done

export CAIRN_SERVER=$url
"$cairn" stream create app --partitions 4
now=$(date +%s%6N)
for i in $(seq 0 199); do
  case $((i % 10)) in
    0) level=ERROR; msg="payment declined for order $((1000 + i)): card expired" ;;
    1|2) level=WARN; msg="slow query on orders: $((100 + i)) ms" ;;
    *) level=INFO; msg="GET /v1/orders/$((1000 + i)) 200 $((i % 40)) ms" ;;
  esac
  services=(checkout payments search web)
  printf '{"timestamp":%d,"level":"%s","source":"%s","message":"%s","attributes":{"region":"eu-1"}}\n' \
    $((now - (200 - i) * 1000000)) "$level" "${services[$((i % 4))]}" "$msg"
done | "$cairn" produce --stream app
echo "== plain lines work too:"
printf 'disk usage at 71%%\nbackup finished\n' | "$cairn" produce --stream app --source ops

echo "== the first 3 entries of partition 0:"
"$cairn" read --stream app --partition 0 --limit 3
echo "== errors in the last 5 minutes, all partitions merged by time:"
"$cairn" query --stream app --since 5m --level ERROR --limit 5
echo "== streams:"
"$cairn" stream list
echo "== where the writes' time went (mean per stage, from $url/metrics):"
curl -s "$url/metrics" | awk '
  /^cairn_write_stage_seconds_sum/   { split($1, a, "\""); sum[a[2]] = $2 }
  /^cairn_write_stage_seconds_count/ { split($1, a, "\""); n[a[2]] = $2 }
  END { for (s in n) if (n[s] > 0) printf "  %-8s %8.1f us  (%d samples)\n", s, sum[s] / n[s] * 1e6, n[s] }'
sleep 1.2
echo "== disk probe and resources (from $url/v1/telemetry/snapshot):"
curl -s "$url/v1/telemetry/snapshot" | python3 -c '
import json, sys
s = json.load(sys.stdin)
for p in s["probes"]:
    print("  disk probe %s: slow score %.0f, last %.0f us" % (p["target"], p["slow_score"], p["last_us"] or 0))
r = s.get("resources") or {}
print("  process RSS %.1f MiB, host CPU %.0f%%" % (r.get("process_rss_bytes", 0) / 2**20, 100 * r.get("host_cpu_utilization", 0)))
' || true
cat <<MSG

Cairn is running at $url (data in $data):
  $url/metrics                  Prometheus metrics
  $url/v1/telemetry/snapshot    JSON summary of the last second
  CAIRN_SERVER=$url target/release/cairn query --stream app --since 10m
MSG
if [ "${CAIRN_QUICKSTART_EXIT:-0}" != 1 ]; then
  echo "Press Ctrl-C to stop."
  wait "$node"
fi
