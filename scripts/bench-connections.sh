#!/usr/bin/env bash
# Many idle connections against one node with its default limits: a 3-node
# cluster (release build; CAIRN_BIN=path runs another binary), then
# `N` connections (default 19,000, split between node 1's HTTP and binary
# listeners, from 20 loopback addresses 127.0.0.2..21 so the per-address cap
# is not the only one hit) that send nothing. While they are held, writes
# are sent through node 1 and `/v1/health` is asked; then the connections
# close. Prints node 1's RSS and open descriptors before, while held and
# after, how many connections were held vs refused, and the write and
# health round trips meanwhile.
# Usage: scripts/bench-connections.sh [connections]
# The script's own process needs a descriptor per connection: N must stay
# below `ulimit -n` (the hard limit is raised to when possible).
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-19000}
ulimit -n "$(ulimit -Hn)"
scratch=$PWD/target/bench-connections
rm -rf "$scratch"; mkdir -p "$scratch"
source scripts/cluster-lib.sh
trap 'stop_cluster; [ -n "${KEEP:-}" ] || rm -rf "$scratch"' EXIT
start_cluster "$scratch"
http_addr=${url#*://}
tcp1=${tcp%%,*}
pid1=${pids[0]}
curl -sf -X POST "$url/v1/streams" -H 'content-type: application/json' \
  -d '{"name":"conn","partitions":3,"replication_factor":3}' >/dev/null
sleep 2

python3 - "$conns" "$http_addr" "$tcp1" "$pid1" "$url" <<'EOF'
import errno, json, os, resource, socket, sys, time, urllib.request

n, http_addr, tcp_addr, pid, url = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

def node():
    status = open(f"/proc/{pid}/status").read()
    rss = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmRSS:"))
    return rss / 1024, len(os.listdir(f"/proc/{pid}/fd"))

def timed(f):
    t = time.monotonic(); r = f(); return r, (time.monotonic() - t) * 1000

def health():
    with urllib.request.urlopen(f"{url}/v1/health", timeout=10) as r:
        h = json.load(r)
        return h["status"] + "".join(f" {r['code']}{json.dumps(r['subject'])}" for r in h["reasons"])

def write(i):
    body = json.dumps([{"source": f"s{j}", "message": f"held {i}"} for j in range(3)]).encode()
    req = urllib.request.Request(f"{url}/v1/streams/conn/entries", data=body,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status

def addr(a):
    h, p = a.rsplit(":", 1); return h, int(p)

print(f"node 1 before: RSS {node()[0]:.1f} MiB, {node()[1]} open descriptors")
targets = [addr(http_addr), addr(tcp_addr)]
socks, failed = [], 0
t0 = time.monotonic()
for i in range(n):
    s = socket.socket()
    s.bind((f"127.0.0.{2 + i % 20}", 0))
    try:
        s.connect(targets[i % 2]); socks.append((i % 2, s))
    except OSError as e:
        failed += 1; s.close()
print(f"opened {len(socks)} connections in {time.monotonic() - t0:.1f} s ({failed} connects failed)")
time.sleep(5)  # refusals are written at once; the node waits ≤ 1 s for the close
# Held: still open and silent. Refused: an answer came (HTTP 503, or the
# binary protocol's ERROR frame). Closed: EOF without a word — HTTP's
# header timeout (10 s from the accept) ends connections that never send
# a request, so the first ones opened are gone by now.
held = [0, 0]; refused = [0, 0]; closed = [0, 0]
for kind, s in socks:
    s.setblocking(False)
    try:
        data = s.recv(4096)
        (refused if data else closed)[kind] += 1
    except BlockingIOError:
        held[kind] += 1
    except OSError:
        closed[kind] += 1
rss, fds = node()
with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
    metrics = [l for l in r.read().decode().splitlines()
               if l.startswith(("cairn_connections_open", "cairn_connections_refused", "cairn_connections_closed"))]
print("node 1's own counts:", "; ".join(metrics))
print(f"HTTP: {held[0]} held, {refused[0]} refused, {closed[0]} closed silently; "
      f"binary: {held[1]} held, {refused[1]} refused, {closed[1]} closed silently")
print(f"node 1 while held: RSS {rss:.1f} MiB, {fds} open descriptors")
w = [timed(lambda: write(i))[1] for i in range(20)]
hs = [timed(health) for _ in range(5)]
w.sort()
print(f"20 writes through node 1 while held: all 200, median {w[10]:.1f} ms, max {w[-1]:.1f} ms")
print(f"/v1/health while held: {hs[-1][0]}; answered in {max(t for _, t in hs):.1f} ms at most")
for _, s in socks:
    s.close()
time.sleep(3)
rss, fds = node()
print(f"node 1 after closing them: RSS {rss:.1f} MiB, {fds} open descriptors")
EOF
echo "refusals logged by node 1: $(grep -c 'refusing connections' "$scratch/node1.err" || true)"
