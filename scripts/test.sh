#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test of the workspace.
# Tests start real processes on loopback with free ports and clean up after
# themselves; nothing else needs to be running. The tests get a temporary
# directory of their own, and the suite fails if anything is left in it or
# any process still runs from it: a test that leaks is a bug.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

suite_tmp=$(mktemp -d "${TMPDIR:-/tmp}/cairn-suite.XXXXXX")
rc=0
if cargo nextest --version >/dev/null 2>&1; then
  TMPDIR=$suite_tmp cargo nextest run --workspace --locked --no-fail-fast || rc=$?
else
  # nextest ships with this project's machines; plain cargo test works too.
  TMPDIR=$suite_tmp cargo test --workspace --locked --no-fail-fast || rc=$?
fi

# Give processes that are shutting down a moment, then look for leftovers.
sleep 2
if pgrep -f "$suite_tmp" >/dev/null; then
  echo "the test suite left processes running:" >&2
  pgrep -af "$suite_tmp" >&2 || true
  pkill -9 -f "$suite_tmp" || true
  rc=1
fi
left=$(find "$suite_tmp" -mindepth 1 -maxdepth 1 2>/dev/null | head -20)
if [ -n "$left" ]; then
  echo "the test suite left files behind ($(du -sh "$suite_tmp" | cut -f1)):" >&2
  echo "$left" >&2
  rc=1
fi
rm -rf "$suite_tmp"
exit $rc
