# Sourced by the cluster benchmarks: starts a 3-node cluster of the release
# binary on loopback (random base port), each node also serving the binary
# protocol. After `start_cluster SCRATCH [node flags...]`: `bin`, `url` (node
# 1's HTTP API), `tcp` (every node's binary-protocol address, comma
# separated), `base` (node i's HTTP port is base+10+i) and `pids`.
# `stop_cluster` stops the nodes. CAIRN_BIN=path runs that binary instead
# of building the release one. Set `scheme=https` and `curl_opts=(--cacert
# CA)` first for nodes started with --tls-cert.
pids=()
scheme=${scheme:-http}
curl_opts=()
start_cluster() {
  local scratch=$1; shift
  if [ -n "${CAIRN_BIN:-}" ]; then
    bin=$CAIRN_BIN
  else
    cargo build -q --release -p cairn
    bin=target/release/cairn
  fi
  base=$((20000 + RANDOM % 20000))
  local peers="1=127.0.0.1:$((base + 1)),2=127.0.0.1:$((base + 2)),3=127.0.0.1:$((base + 3))"
  local tcps=()
  for i in 1 2 3; do
    $bin node --id $i --data-dir "$scratch/data$i" --http 127.0.0.1:$((base + 10 + i)) \
      --raft 127.0.0.1:$((base + i)) --peers "$peers" --tcp 127.0.0.1:$((base + 20 + i)) "$@" \
      >"$scratch/node$i.out" 2>"$scratch/node$i.err" &
    pids+=($!)
    tcps+=(127.0.0.1:$((base + 20 + i)))
  done
  url=$scheme://127.0.0.1:$((base + 11))
  tcp=$(IFS=,; echo "${tcps[*]}")
  for _ in $(seq 100); do
    n=$(curl -sf "${curl_opts[@]}" "$url/v1/cluster" | python3 -c 'import json,sys; v=json.load(sys.stdin); print(sum(1 for n in v["nodes"] if n["http_addr"]) if v["controller_leader"] else 0)' 2>/dev/null || echo 0)
    [ "$n" = 3 ] && return 0
    sleep 0.2
  done
  echo "cluster did not form; see $scratch/node*.err" >&2
  return 1
}
stop_cluster() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}
