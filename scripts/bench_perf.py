#!/usr/bin/env python3
"""Runs issue 15's workloads against a running 3-node cluster and prints one
row each. Called by scripts/bench-perf.sh, which starts the cluster.

Usage: bench_perf.py LABEL BIN URL TCP PIDS OUT_DIR [bench flags...]

PIDS is a comma-separated list of the nodes' process ids: their CPU time is
sampled every 0.2 s from /proc while each workload runs, so the CPU per
acknowledged request covers exactly the seconds the load ran (not stream
creation or the read-back), nodes plus the generator.

Before each workload it waits until the disk is quiet (settle_disk): on the
VM this was measured on, deleting a large stream (the previous workload's
or the previous variant's gigabytes) makes every fdatasync on the disk
stall for 50-300 ms at the deletion and again about every 2 s for several
seconds after it, which is what the light load's first seconds used to
measure (docs/PERFORMANCE.md, issue 15)."""
import json, os, subprocess, sys, threading, time

label, binary, url, tcp, pids, out_dir = sys.argv[1:7]
extra = sys.argv[7:]
pids = [int(p) for p in pids.split(",")]
TICK = os.sysconf("SC_CLK_TCK")
LIGHT_SECONDS = int(os.environ.get("LIGHT_SECONDS", "60"))
STEP_SECONDS = int(os.environ.get("STEP_SECONDS", "10"))


def node_cpu_s():
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.samples, self.stop = [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.samples.append((time.time(), node_cpu_s()))
            time.sleep(0.2)

    def cpu_between(self, t0, t1):
        before = [s for s in self.samples if s[0] <= t0] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= t1] or self.samples[-1:]
        (a_t, a_cpu), (b_t, b_cpu) = before[-1], after[0]
        return (b_cpu - a_cpu) * (t1 - t0) / max(b_t - a_t, 1e-9)


def settle_disk(directory, quiet_s=10.0, limit_ms=40.0, max_wait_s=120.0):
    """Times a 4 KiB overwrite + fdatasync in `directory` every 10 ms until
    none took over `limit_ms` for `quiet_s` (longer than the ~2 s between
    the stalls a deletion leaves behind), or `max_wait_s` passed. Returns
    the seconds waited and the slowest sync seen."""
    path = os.path.join(directory, "settle-probe")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    block = b"\0" * 4096
    os.pwrite(fd, block, 0)
    os.fsync(fd)
    start = quiet_since = time.monotonic()
    slowest = 0.0
    try:
        while True:
            t = time.monotonic()
            os.pwrite(fd, block, 0)
            os.fdatasync(fd)
            now = time.monotonic()
            slowest = max(slowest, now - t)
            if (now - t) * 1000 > limit_ms:
                quiet_since = now
            if now - quiet_since >= quiet_s or now - start >= max_wait_s:
                return now - start, slowest
            time.sleep(0.01)
    finally:
        os.close(fd)
        os.unlink(path)


def bench(name, args):
    waited, slowest = settle_disk(out_dir)
    print(f"{label:<8} {name:<10} disk settled after {waited:.1f} s (slowest sync {slowest * 1000:.0f} ms)",
          file=sys.stderr, flush=True)
    path = f"{out_dir}/{label}-{name}.json"
    sampler = Sampler()
    sampler.start()
    cmd = [binary, "bench", "steady", "--server", url, "--api", "binary", "--tcp", tcp,
           "--json", path, *args, *extra]
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sampler.stop.set()
    sampler.join()
    if done.returncode != 0:
        sys.exit(f"{name}: {' '.join(cmd)} failed:\n{done.stderr}")
    r = json.load(open(path))
    load = [i for i in r["intervals"] if i["phase"] != "drain"] or r["intervals"]
    start = r["started_at_unix_ms"] / 1000
    t0, t1 = start + load[0]["t_s"] - 1, start + load[-1]["t_s"]
    nodes_cpu = sampler.cpu_between(t0, t1)
    phase = r["phases"][0]
    requests = phase["requests"] - phase["errors"]
    bench_cpu = r["bench_cpu"]["cpu_s"]
    v = r.get("verification") or {}
    row = {
        "acked_per_s": phase["achieved_entries_per_s"],
        "requests": requests,
        "service_p50_ms": phase["service"]["p50_ms"],
        "service_p99_ms": phase["service"]["p99_ms"],
        "response_p99_ms": phase["response"]["p99_ms"],
        "worst_second_p99_ms": max(i["response_p99_ms"] for i in load),
        "errors": phase["errors"],
        "nodes_cores": nodes_cpu / (t1 - t0),
        "bench_cores": r["bench_cpu"]["cores"],
        "core_us_per_request": (nodes_cpu + bench_cpu) / max(requests, 1) * 1e6,
        "missing": v.get("missing"),
        "duplicated": v.get("duplicated"),
    }
    print(f"{label:<8} {name:<10} acked {row['acked_per_s']:>11,.0f}/s"
          f"  svc p50 {row['service_p50_ms']:6.2f} p99 {row['service_p99_ms']:7.2f} ms"
          f"  resp p99 {row['response_p99_ms']:7.2f} ms  worst 1 s p99 {row['worst_second_p99_ms']:7.2f} ms"
          f"  CPU nodes {row['nodes_cores']:.2f} + bench {row['bench_cores']:.2f} cores"
          f" = {row['core_us_per_request']:6.1f} core-us/request"
          f"  errors {row['errors']}  missing {row['missing']} dup {row['duplicated']}", flush=True)
    return row


step = f"{STEP_SECONDS}s"
rows = {}
# Light load first, on a cluster that has done nothing else yet. Each
# workload starts once the disk is quiet (settle_disk, in bench()): the
# stream a workload wrote is deleted when it ends, and the stalls that
# leaves behind last seconds.
rows["light"] = bench("light", ["--rate", "5k", "--duration", f"{LIGHT_SECONDS}s",
                                "--batch-size", "10", "--connections", "4", "--max-in-flight", "8"])
rows["one"] = bench("one", ["--rate", "1k", "--duration", step, "--batch-size", "1",
                            "--connections", "1", "--max-in-flight", "1"])
# Offered far above what the cluster takes: the 1000-request window is
# always full, so this is the closed-window throughput.
rows["window"] = bench("window", ["--rate", "1M", "--duration", step, "--batch-size", "1",
                                  "--connections", "4", "--max-in-flight", "250",
                                  "--timeout", "30s"])
rows["big"] = bench("big", ["--rate", "1.5M", "--duration", step, "--batch-size", "1000",
                            "--connections", "4", "--max-in-flight", "8", "--timeout", "30s"])
json.dump(rows, open(f"{out_dir}/{label}.json", "w"), indent=1)
