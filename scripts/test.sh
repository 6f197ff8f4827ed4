#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test of the workspace.
# Tests start real processes on loopback with free ports and clean up after
# themselves; nothing else needs to be running.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  # nextest ships with this project's machines; plain cargo test works too.
  cargo test --workspace --locked --no-fail-fast
fi
