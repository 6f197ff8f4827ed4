#!/usr/bin/env bash
# Measures what one open dashboard costs the cluster (docs/PERFORMANCE.md,
# "The dashboard"): an idle 3-node cluster of the release binary; node CPU
# from /proc/PID/stat (utime + stime) over SECONDS (default 60) without a
# page, then with one headless Chromium (fresh profile) showing node 1's
# /ui/, alternated ROUNDS times (default 2) so drift shows. Idle, because
# under load the difference drowns in the load's noise. One page's cost is
# near the noise of a 60 s window, so a last window runs PAGES (default
# 20) simulated pages — each making the page's requests: every second
# /v1/health and one /v1/monitor/series for the five overview charts since
# its last point, every 5 s /v1/cluster — and divides the difference by
# PAGES.
#
#   scripts/bench-dashboard.sh [SECONDS] [ROUNDS] [PAGES]
#
# Page weight and time to first paint are printed by the browser test:
#   cargo nextest run -p cairn --test dashboard --no-capture
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster-lib.sh

secs=${1:-60}
rounds=${2:-2}
pages=${3:-20}
chromium=$(command -v chromium || command -v chromium-browser || true)
[ -n "$chromium" ] || { echo "needs chromium (apt-get install chromium)" >&2; exit 1; }
scratch=$(mktemp -d /tmp/cairn-bench-dashboard.XXXXXX)
browser=
trap '[ -n "$browser" ] && kill "$browser" 2>/dev/null; stop_cluster; rm -rf "$scratch"' EXIT

ticks() { # pid -> utime + stime in clock ticks
  awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"
}
hz=$(getconf CLK_TCK)

start_cluster "$scratch"
sleep 10
measure() { # label
  local before=() after=()
  for p in "${pids[@]}"; do before+=("$(ticks "$p")"); done
  sleep "$secs"
  for p in "${pids[@]}"; do after+=("$(ticks "$p")"); done
  python3 - "$1" "$secs" "$hz" "${before[*]}" "${after[*]}" <<'PY'
import sys
label, secs, hz = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
b = [int(x) for x in sys.argv[4].split()]
a = [int(x) for x in sys.argv[5].split()]
pct = [(y - x) / hz / secs * 100 for x, y in zip(b, a)]
print(f"{label:>9}: node CPU " + "  ".join(f"{p:5.2f} %" for p in pct) + f"  (sum {sum(pct):.2f} % of a core)")
PY
}
for r in $(seq "$rounds"); do
  measure "no page"
  # Chromium leaves org.chromium.Chromium.* behind in TMPDIR when killed.
  TMPDIR=$scratch "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$scratch/profile-$r" "$url/ui/" >/dev/null 2>&1 &
  browser=$!
  sleep 5 # the first load (15 minutes of history) is not the steady cost
  kill -0 "$browser" || { echo "chromium exited" >&2; exit 1; }
  measure "page open"
  kill "$browser"; wait "$browser" 2>/dev/null || true; browser=
done

measure "no page"
python3 - "$url" "$pages" "$((secs + 5))" <<'PY' &
import json, sys, threading, time, urllib.request
url, pages, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
metrics = "entries_per_second,write_p50_ms,write_p99_ms,read_p99_ms,peer_rtt_p99_ms"
def get(path):
    with urllib.request.urlopen(url + path, timeout=5) as r:
        return json.load(r)
def page(i):
    last = None
    end = time.time() + secs
    tick = 0
    while time.time() < end:
        t0 = time.time()
        get("/v1/health")
        since = last + 1 if last else int(t0 * 1000) - 15 * 60 * 1000
        r = get(f"/v1/monitor/series?metric={metrics}&since={since}")
        newest = max((p["unix_ms"] for pts in r["metrics"].values() for p in pts), default=0)
        last = max(last or 0, newest) or last
        if tick % 5 == 0:
            get("/v1/cluster")
        tick += 1
        time.sleep(max(0, 1 - (time.time() - t0)))
threads = [threading.Thread(target=page, args=(i,)) for i in range(pages)]
for t in threads: t.start()
for t in threads: t.join()
PY
sim=$!
sleep 5 # past the first load of 15 minutes of history
measure "$pages pages"
wait "$sim"
