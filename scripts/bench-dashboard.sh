#!/usr/bin/env bash
# Measures what one open dashboard costs the cluster (docs/PERFORMANCE.md,
# "The dashboard"): an idle 3-node cluster of the release binary; node CPU
# from /proc/PID/stat (utime + stime) over SECONDS (default 60) without a
# page, then with one headless Chromium (fresh profile) showing node 1's
# /ui/, alternated ROUNDS times (default 2) so drift shows. Idle, because
# under load the difference drowns in the load's noise.
#
#   scripts/bench-dashboard.sh [SECONDS] [ROUNDS]
#
# Page weight and time to first paint are printed by the browser test:
#   cargo nextest run -p cairn --test dashboard --no-capture
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster-lib.sh

secs=${1:-60}
rounds=${2:-2}
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
  "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$scratch/profile-$r" "$url/ui/" >/dev/null 2>&1 &
  browser=$!
  sleep 5 # the first load (15 minutes of history) is not the steady cost
  kill -0 "$browser" || { echo "chromium exited" >&2; exit 1; }
  measure "page open"
  kill "$browser"; wait "$browser" 2>/dev/null || true; browser=
done
