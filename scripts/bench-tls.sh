#!/usr/bin/env bash
# The cost of TLS and of the cluster secret on the write path: the same
# short `cairn bench steady` runs against a fresh 3-node cluster (release
# build, RF 3, every write fsync'd on a majority) three times in one
# session — plaintext, with --cluster-secret-file, and with the secret plus
# TLS on every listener (certificates made here with openssl). With TLS the
# bench's own connections (binary protocol, HTTP) are TLS too, and so are
# the forwards between nodes and Raft replication.
# The modes run twice, in mirrored order (plain, secret, tls, tls, secret,
# plain), so a drift in the machine's background load shows as a difference
# between the two runs of one mode rather than between modes.
# Usage: scripts/bench-tls.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
scratch=$PWD/target/bench-tls
rm -rf "$scratch"; mkdir -p "$scratch"
source scripts/cluster-lib.sh
trap 'stop_cluster; rm -rf "$scratch"' EXIT

# A throwaway CA and one node certificate for 127.0.0.1 (all nodes share it).
(
  cd "$scratch"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=cairn-bench-ca -keyout ca.key -out ca.pem 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj /CN=cairn-node -keyout node.key -out node.csr 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' > san.ext
  openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
    -extfile san.ext -out node.pem 2>/dev/null
  head -c 32 /dev/urandom | base64 > secret
)
echo "== machine: $(nproc) cores, $(uname -r), $(date -u '+%F %H:%M UTC'); load average $(cut -d' ' -f1-3 /proc/loadavg)"

run() {  # label, then bench arguments
  local label=$1; shift
  local json="$scratch/$label.json"
  $bin bench steady "$@" --server "$url" --json "$json" "${tls_args[@]}" \
    >"$scratch/$label.out" 2>"$scratch/$label.err" || { cat "$scratch/$label.err"; exit 1; }
  python3 scripts/bench_summary.py "$label" "$json"
}

mode() {  # label, then node flags
  local label=$1; shift
  rm -rf "$scratch/data"*
  start_cluster "$scratch" "$@"
  # Warm-up (not reported): leaders elected, first segments, page cache.
  $bin bench steady --server "$url" --api binary --tcp "$tcp" --rate 5k --duration 3s \
    --batch-size 10 --no-verify "${tls_args[@]}" >/dev/null 2>&1
  run "$label-one-in-flight" --api binary --tcp "$tcp" --rate 300 --duration "${secs}s" \
    --batch-size 1 --connections 1 --max-in-flight 1
  run "$label-1-entry-10k" --api binary --tcp "$tcp" --rate 10k --duration "${secs}s" \
    --batch-size 1 --connections 4 --max-in-flight 250
  run "$label-1000-entry-400k" --api binary --tcp "$tcp" --rate 400k --duration "${secs}s" \
    --batch-size 1000 --connections 4 --max-in-flight 8
  run "$label-http-100-entry-50k" --api http --rate 50k --duration "${secs}s" \
    --batch-size 100 --connections 4 --max-in-flight 16
  local cpu=0
  for i in 1 2 3; do
    c=$(curl -sf "${curl_opts[@]}" "$scheme://127.0.0.1:$((base + 10 + i))/metrics" |
      awk '/^cairn_process_cpu_seconds_total/ {print $2}')
    cpu=$(python3 -c "print($cpu + ${c:-0})")
  done
  echo "$label: node CPU over the whole mode (3 nodes): ${cpu}s"
  stop_cluster
}

plain() { scheme=http; curl_opts=(); tls_args=(); mode "plain$1"; }
secret() {
  scheme=http; curl_opts=(); tls_args=()
  mode "secret$1" --cluster-secret-file "$scratch/secret"
}
tls() {
  scheme=https; curl_opts=(--cacert "$scratch/ca.pem"); tls_args=(--tls-ca "$scratch/ca.pem")
  mode "tls$1" --cluster-secret-file "$scratch/secret" \
    --tls-cert "$scratch/node.pem" --tls-key "$scratch/node.key" --tls-ca "$scratch/ca.pem"
}
plain 1; secret 1; tls 1; tls 2; secret 2; plain 2
