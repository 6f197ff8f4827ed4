#!/usr/bin/env python3
"""Prints one line per phase (sweep step) of a `cairn bench --json` report,
then the knee and the verification result. Usage: bench_summary.py LABEL FILE"""
import json, sys
label, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
steps = r["sweep"]["steps"] if r.get("sweep") else []
phases = r["phases"]
for i, p in enumerate(phases):
    w = p  # the phase's write figures are flattened into it
    print(f"{label:<26} {p['name']:<8} target {p['target_entries_per_s']:>10,.0f}/s  acked {p['achieved_entries_per_s']:>10,.0f}/s"
          f"  resp p50 {w['response']['p50_ms']:7.2f} ms  p99 {w['response']['p99_ms']:8.2f} ms"
          f"  p999 {w['response']['p999_ms']:8.2f} ms"
          f"  svc p50/p99/p999 {w['service']['p50_ms']:.2f}/{w['service']['p99_ms']:.2f}/{w['service']['p999_ms']:.2f} ms  errors {w['errors']}  backlog {w['backlogged']}"
          + f"  bench CPU {steps[i]['bench_cpu_cores'] if i < len(steps) else r['bench_cpu']['cores']:.2f}")
if r.get("sweep"):
    k = r["sweep"]["knee"]
    knee = f"knee {k['achieved_entries_per_s']:,.0f}/s at p99 {k['response_p99_ms']:.2f} ms" if k else "no knee"
    print(f"{label:<26} {knee}; stop: {r['sweep']['stop_reason']}")
v = r.get("verification") or {}
print(f"{label:<26} verification ok={v.get('ok')} acknowledged={v.get('acknowledged')} read_back={v.get('read_back')} missing={v.get('missing')} duplicated={v.get('duplicated')}")
