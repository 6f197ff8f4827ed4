#!/usr/bin/env bash
# Storage append benchmark beside this machine's disk limits, in one run.
# Usage: scripts/bench-storage.sh [seconds-per-scenario]
# Needs fio (apt-get install -y fio). Writes scratch files under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
scratch=target/bench-scratch
mkdir -p "$scratch"
trap 'rm -rf "$scratch"' EXIT

echo "== machine: $(nproc) cores, $(uname -r), $(df -h --output=source,fstype . | tail -1), $(date -u +%F)"
if command -v fio >/dev/null; then
  echo "== fio: sequential 1 MiB writes (O_DIRECT)"
  fio --name=seq --rw=write --bs=1M --size=1G --direct=1 --ioengine=psync \
      --filename="$scratch/seq.dat" 2>&1 | grep -E '^ +write:'
  rm -f "$scratch/seq.dat"
  echo "== fio: 4 KiB append + fdatasync (file grows with each write)"
  fio --name=append --rw=write --bs=4k --size=32M --fdatasync=1 --ioengine=sync \
      --fallocate=none --filename="$scratch/append.dat" 2>&1 | grep -E '^ +write:'
  rm -f "$scratch/append.dat"
  echo "== fio: 4 KiB write + fdatasync into a preallocated file"
  fio --name=prealloc --rw=write --bs=4k --size=32M --fdatasync=1 --ioengine=sync \
      --fallocate=native --filename="$scratch/prealloc.dat" 2>&1 | grep -E '^ +write:'
  rm -f "$scratch/prealloc.dat"
else
  echo "fio not installed: apt-get install -y fio" >&2
fi
echo "== cairn-storage append (cargo bench -p cairn-storage --bench append)"
CAIRN_BENCH_SECS=$secs CAIRN_BENCH_DIR="$PWD/$scratch" cargo bench -q -p cairn-storage --bench append
