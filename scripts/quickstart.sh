#!/usr/bin/env bash
# The main job: `cairn demo` — three nodes on loopback, a demo stream, a
# steady load of realistic log entries and a live status, until Ctrl-C.
# Arguments are passed on (e.g. --rate 5k, --data-dir DIR, --duration 30s);
# CAIRN_QUICKSTART_EXIT=1 runs it for 10 s only, as before.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p cairn
args=("$@")
if [ "${CAIRN_QUICKSTART_EXIT:-0}" = 1 ]; then
  args+=(--duration 10s)
fi
exec target/release/cairn demo "${args[@]}"
