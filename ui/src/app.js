// Cairn dashboard. Plain JS, no build step: it polls the node that served
// it once a second (/v1/health, and one /v1/monitor/series request for
// every chart's points since the last one; /v1/cluster every 5 s; the
// partitions, findings, alerts and actions only while their view is open;
// the recommendations every 2 s on the overview, each applicable one with
// an Apply button that POSTs it; the saved reports' list every 30 s on the
// reports view, a report's HTML when asked for) and redraws. The server
// keeps no per-page state, so an open page costs a node only these small
// answers.
//
// Failover: the page knows every member's HTTP address from /v1/cluster.
// When the node that served it stops answering, it checks the others and
// moves to the first that answers (its own /ui/, same origin there, so no
// cross-origin requests are ever needed); the token travels in the URL
// fragment, which is never sent to a server.
"use strict";

const TICK_MS = 1000;
const HISTORY_MS = 15 * 60 * 1000;
const REQUEST_TIMEOUT_MS = 2500;
// Consecutive failed ticks before looking for another node.
const FAILOVER_AFTER = 3;

const state = {
  token: null,
  health: null,
  cluster: null,
  members: [], // [{id, url}] from /v1/cluster
  failures: 0,
  tick: 0,
  view: "overview",
  node: null, // node id in the per-node view
  series: {}, // metric -> Map(key -> [[unix_ms, value], ...]); key = node or "node>peer"
  lastMs: {}, // metric -> latest unix_ms seen
  partitions: null, // from /v1/monitor/partitions, while that view is open
  scans: null, // "stream/p" -> last anti-entropy scan, with the partitions
  recommendations: [], // from /v1/monitor/recommendations, on the overview
  remediate: null,
  commits: new Map(), // "stream/p" -> {end, at}
  rates: new Map(),
  charts: {},
};

// ---- token ------------------------------------------------------------
(function takeToken() {
  const m = location.hash.match(/[#&]t=([^&]+)/);
  if (m) {
    localStorage.setItem("cairn-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.hash.replace(/[#&]t=[^&]+/, "").replace(/^$/, "#/overview"));
  }
  state.token = localStorage.getItem("cairn-token");
})();

function askToken(why) {
  const form = document.getElementById("token-form");
  if (why) form.querySelector("label").firstChild.textContent = why + " ";
  if (!form.hidden) return;
  form.hidden = false;
  form.onsubmit = (e) => {
    e.preventDefault();
    const v = document.getElementById("token-input").value.trim();
    if (!v) return;
    state.token = v;
    localStorage.setItem("cairn-token", v);
    form.hidden = true;
  };
}

class Unauthorized extends Error {}

async function api(path) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), REQUEST_TIMEOUT_MS);
  const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
  try {
    const r = await fetch(path, { headers, signal: ctl.signal, cache: "no-store" });
    if (r.status === 401 || r.status === 403) throw new Unauthorized(await r.text());
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return await r.json();
  } finally {
    clearTimeout(timer);
  }
}

// A POST (applying a recommendation): the answer's JSON, or its error
// message (`{code, message}`) thrown.
async function apiPost(path) {
  const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
  const r = await fetch(path, { method: "POST", headers, cache: "no-store" });
  const body = await r.json().catch(() => ({}));
  if (r.status === 401 || r.status === 403) throw new Unauthorized(body.message || "HTTP " + r.status);
  if (!r.ok) throw new Error(body.message || path + ": HTTP " + r.status);
  return body;
}

// A rendered page (a report's HTML) as text.
async function apiText(path) {
  const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
  const r = await fetch(path, { headers, cache: "no-store" });
  if (r.status === 401 || r.status === 403) throw new Unauthorized(await r.text());
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return await r.text();
}

// ---- formatting ---------------------------------------------------------
const el = (tag, attrs, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : String(k ?? ""));
  return e;
};
const num = (v, d = 1) => (v == null || Number.isNaN(v) ? "—" : Number(v).toFixed(d));
function bytes(v) {
  if (v == null) return "—";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return v.toFixed(i ? 1 : 0) + " " + u[i];
}
function subject(s) {
  if (!s) return "cluster";
  if (s.link) return "link " + s.link[0] + "→" + s.link[1];
  if (s.stream != null) return s.stream + "/" + s.partition + (s.node != null ? " on node " + s.node : "");
  if (s.node != null) return "node " + s.node;
  return JSON.stringify(s);
}
// A node's (or a link's first node's) name links to its view.
function subjectLink(s) {
  const node = s && (s.node != null ? s.node : s.link ? s.link[0] : null);
  const strong = el("strong", {}, subject(s));
  return node == null ? strong : el("a", { href: "#/node/" + node }, strong);
}
function evidence(ev) {
  const base = ev.baseline != null ? ", baseline " + num(ev.baseline, 2) : "";
  return ev.metric + " = " + num(ev.observed, 2) + " " + (ev.unit || "") + base + ", threshold " + num(ev.threshold, 2);
}
const clock = (ms) => new Date(ms).toLocaleTimeString();

// ---- charts -------------------------------------------------------------
const COLOURS = ["#3182ce", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795"];

function chart(id, labels) {
  const target = document.getElementById(id);
  if (typeof uPlot === "undefined") {
    target.textContent = "charts were not built into this binary (npm was missing at build time)";
    return null;
  }
  const key = id + "|" + labels.join(",");
  if (state.charts[id] && state.charts[id].key === key) return state.charts[id].plot;
  if (state.charts[id]) state.charts[id].plot.destroy();
  const opts = {
    width: Math.max(300, target.clientWidth || 440),
    height: 180,
    series: [{}].concat(labels.map((l, i) => ({ label: l, stroke: COLOURS[i % COLOURS.length], width: 1.5 }))),
    axes: [{}, { size: 50 }],
    scales: { x: { time: true } },
    legend: { live: false },
  };
  const plot = new uPlot(opts, [[]].concat(labels.map(() => [])), target);
  // The number of points on show, for people and for the browser test.
  const setData = plot.setData.bind(plot);
  plot.setData = (data) => {
    target.dataset.points = data[0].length;
    setData(data);
  };
  state.charts[id] = { key, plot };
  return plot;
}

// Aligns series (Map key -> [[ms, v]]) on their union of timestamps.
function align(maps, combine) {
  const times = new Set();
  for (const pts of maps) for (const [t] of pts) times.add(t);
  const xs = [...times].sort((a, b) => a - b);
  const lookup = maps.map((pts) => new Map(pts));
  const ys = lookup.map((m) => xs.map((t) => (m.has(t) ? m.get(t) : null)));
  if (combine) return [xs.map((t) => t / 1000), ...combine(xs, lookup)];
  return [xs.map((t) => t / 1000), ...ys];
}

function seriesOf(metric) {
  return state.series[metric] || new Map();
}

// Per timestamp, sum (or max, or median) over nodes.
function reduceNodes(metric, how) {
  const byTime = new Map();
  for (const pts of seriesOf(metric).values())
    for (const [t, v] of pts) {
      if (!byTime.has(t)) byTime.set(t, []);
      byTime.get(t).push(v);
    }
  const out = [];
  for (const [t, vs] of byTime) {
    let v;
    if (how === "sum") v = vs.reduce((a, b) => a + b, 0);
    else if (how === "max") v = Math.max(...vs);
    else { vs.sort((a, b) => a - b); v = vs[Math.floor(vs.length / 2)]; }
    out.push([t, v]);
  }
  return out.sort((a, b) => a[0] - b[0]);
}

function drawOverviewCharts() {
  const tp = chart("chart-throughput", ["entries/s"]);
  if (!tp) return;
  tp.setData(align([reduceNodes("entries_per_second", "sum")]));
  chart("chart-write", ["p50 (median node)", "p99 (worst node)"]).setData(
    align([reduceNodes("write_p50_ms", "median"), reduceNodes("write_p99_ms", "max")]));
  const reads = reduceNodes("read_p99_ms", "max");
  chart("chart-read", ["p99 (worst node)" + (reads.length ? "" : ": no reads in the last 15 minutes")]).setData(align([reads]));
}

function drawNodeCharts(id) {
  const one = (metric, scale) => (seriesOf(metric).get(String(id)) || []).map(([t, v]) => [t, v * (scale || 1)]);
  const c = chart("chart-node-cpu", ["cores"]);
  if (!c) return;
  c.setData(align([one("cpu_cores")]));
  chart("chart-node-stages", ["queue", "fsync", "replicate", "commit", "disk probe", "write total"]).setData(
    align([one("queue_p99_ms"), one("fsync_p99_ms"), one("replicate_p99_ms"), one("commit_p99_ms"),
      one("disk_probe_p99_ms"), one("write_p99_ms")]));
  chart("chart-node-rate", ["entries/s"]).setData(align([one("entries_per_second")]));
  chart("chart-node-rss", ["RSS"]).setData(align([one("rss_bytes", 1 / 1048576)]));
}

// ---- data -------------------------------------------------------------
const OVERVIEW_METRICS = ["entries_per_second", "write_p50_ms", "write_p99_ms", "read_p99_ms", "peer_rtt_p99_ms"];
const NODE_METRICS = ["cpu_cores", "rss_bytes", "queue_p99_ms", "fsync_p99_ms", "replicate_p99_ms", "commit_p99_ms", "disk_probe_p99_ms"];

// Every metric of `metrics` since the oldest point any of them lacks, in
// one request (`metric=a,b,...`); points a metric already has are skipped.
async function pullSeries(metrics) {
  const now = Date.now();
  let since = Infinity;
  for (const m of metrics) since = Math.min(since, state.lastMs[m] != null ? state.lastMs[m] + 1 : now - HISTORY_MS);
  const r = await api("/v1/monitor/series?metric=" + metrics.join(",") + "&since=" + since);
  // The newest round in the answer: a metric without points in it (no
  // reads, say) is as up to date as the others, and must not drag every
  // next request back to 15 minutes ago.
  let newest = 0;
  for (const metric of metrics)
    for (const p of (r.metrics && r.metrics[metric]) || []) if (p.unix_ms > newest) newest = p.unix_ms;
  for (const metric of metrics) {
    const m = state.series[metric] || (state.series[metric] = new Map());
    const have = state.lastMs[metric] ?? 0;
    let last = have;
    for (const p of (r.metrics && r.metrics[metric]) || []) {
      if (p.unix_ms <= have) continue;
      const key = p.peer != null ? p.node + ">" + p.peer : String(p.node);
      if (!m.has(key)) m.set(key, []);
      m.get(key).push([p.unix_ms, p.value]);
      if (p.unix_ms > last) last = p.unix_ms;
    }
    state.lastMs[metric] = Math.max(last, newest) || null;
    // Keep 15 minutes behind the newest point (the server's clock, not ours).
    const cutoff = last - HISTORY_MS;
    for (const pts of m.values()) while (pts.length && pts[0][0] < cutoff) pts.shift();
  }
}

async function pullCluster() {
  const c = await api("/v1/cluster");
  state.cluster = c;
  state.members = (c.nodes || []).map((n) => ({ id: n.id, url: "http://" + n.http_addr }));
}

// Every partition with its leader's view of the followers' lag; the rate
// is the committed offset's growth between two polls.
async function pullPartitions() {
  const r = await api("/v1/monitor/partitions");
  state.partitions = r.partitions || [];
  // The last anti-entropy scan of each partition (every 10 s is plenty:
  // scans run minutes apart).
  if (state.tick % 10 === 1 || !state.scans) {
    const ae = await api("/v1/anti-entropy/status").catch(() => null);
    state.scans = new Map();
    for (const s of (ae && ae.partitions) || []) state.scans.set(s.stream + "/" + s.partition, s);
    for (const q of (ae && ae.quarantined) || []) state.scans.set(q.stream + "/" + q.partition, { outcome: "quarantined", node: q.node });
  }
  const now = Date.now();
  for (const g of state.partitions) {
    const key = g.stream + "/" + g.partition;
    const prev = state.commits.get(key);
    if (prev && now > prev.at) state.rates.set(key, ((g.committed_end_offset - prev.end) * 1000) / (now - prev.at));
    state.commits.set(key, { end: g.committed_end_offset, at: now });
  }
}

let busy = false;
async function tick() {
  // A slow answer must not pile ticks up behind it.
  if (busy) return;
  busy = true;
  state.tick++;
  try {
    state.health = await api("/v1/health");
    await pullSeries(state.view === "node" ? OVERVIEW_METRICS.concat(NODE_METRICS) : OVERVIEW_METRICS);
    if (state.tick % 5 === 1 || !state.cluster) await pullCluster();
    if (state.view === "overview" && state.tick % 2 === 1) await pullRecommendations();
    if (state.view === "events" && state.tick % 3 === 1) await pullEvents();
    if (state.view === "partitions" && state.tick % 2 === 1) await pullPartitions();
    if (state.view === "reports" && state.tick % 30 === 1) await pullReports();
    state.failures = 0;
    document.getElementById("conn").textContent =
      "via " + location.host + " (node " + (state.cluster ? state.cluster.node_id : "?") + ") · " + clock(Date.now());
    render();
  } catch (e) {
    if (e instanceof Unauthorized) {
      askToken();
      document.getElementById("conn").textContent = "needs a token";
      return;
    }
    state.failures++;
    document.getElementById("conn").textContent = location.host + " not answering (" + state.failures + ")";
    if (state.failures >= FAILOVER_AFTER) await failover();
  } finally {
    busy = false;
  }
}

// Moves to the first other member whose liveness probe answers. `no-cors`
// gives an opaque answer, but it resolves only if the node is there.
async function failover() {
  markAllDown();
  for (const m of state.members) {
    if (m.url === location.origin) continue;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 1500);
    try {
      await fetch(m.url + "/health", { mode: "no-cors", signal: ctl.signal });
      const frag = "#/" + state.view + (state.node != null ? "/" + state.node : "") + (state.token ? "&t=" + encodeURIComponent(state.token) : "");
      location.replace(m.url + "/ui/" + frag);
      return;
    } catch (_) {
      // try the next one
    } finally {
      clearTimeout(timer);
    }
  }
}

function markAllDown() {
  const v = document.getElementById("verdict");
  v.className = "verdict unknown";
  v.dataset.status = "unknown";
  v.textContent = "no answer";
}

async function pullEvents() {
  const f = await api("/v1/monitor/findings");
  const a = await api("/v1/monitor/alerts");
  const x = await api("/v1/monitor/actions");
  renderEvents(Array.isArray(f) ? f : f.findings || [], a);
  renderActions(x.actions || []);
}

async function pullRecommendations() {
  const r = await api("/v1/monitor/recommendations");
  state.recommendations = r.recommendations || [];
  state.remediate = r.remediate;
}

// Carries a recommendation out (admin role); the result line says what
// happened, and the action's judgement appears under "Actions taken".
async function applyRecommendation(id, button) {
  const out = document.getElementById("apply-result");
  button.disabled = true;
  out.textContent = "applying " + id + "…";
  try {
    const a = await apiPost("/v1/monitor/recommendations/" + encodeURIComponent(id) + "/apply");
    out.textContent = "#" + a.seq + " " + a.recommendation + ": " + a.outcome + " — " + a.detail +
      " (judged over the next 15 s: see Findings & alerts)";
    out.dataset.outcome = a.outcome;
  } catch (e) {
    if (e instanceof Unauthorized) {
      // Reading needs the read role, applying the admin one.
      askToken("Applying needs a token with the admin role:");
      out.textContent = id + " not applied: this page's token may not apply actions (" + e.message +
        "); give an admin token above and press Apply again";
    } else {
      out.textContent = id + " not applied: " + e.message;
    }
    out.dataset.outcome = "error";
  } finally {
    button.disabled = false;
  }
}

// ---- rendering ----------------------------------------------------------
function render() {
  renderVerdict();
  if (state.view === "overview") {
    renderRecommendations();
    renderNodes();
    renderLinks();
    drawOverviewCharts();
  } else if (state.view === "node") {
    renderNode(state.node);
    drawNodeCharts(state.node);
  } else if (state.view === "partitions") {
    renderPartitions();
  }
}

function renderVerdict() {
  const h = state.health;
  const v = document.getElementById("verdict");
  v.className = "verdict " + h.status;
  v.dataset.status = h.status;
  v.textContent = h.status;
  const ul = document.getElementById("reasons");
  ul.replaceChildren();
  if (!h.reasons || !h.reasons.length)
    ul.append(el("li", {}, "All nodes up, every partition has a leader and its replicas, no performance finding."));
  for (const r of h.reasons || []) {
    const li = el("li", { class: "reason", "data-code": r.code, "data-subject": JSON.stringify(r.subject || null) },
      el("span", { class: "sev " + r.severity }, r.severity), " ",
      subjectLink(r.subject), ": ", r.summary,
      // Summaries of injected causes already say so; others get the note.
      r.injected && !/injected/.test(r.summary) ? el("em", {}, " (injected: " + r.injected + ")") : "",
      " ", el("time", {}, "since " + clock(r.since)));
    for (const ev of r.evidence || []) li.append(el("div", { class: "evidence" }, evidence(ev)));
    ul.append(li);
  }
}

function renderRecommendations() {
  const ul = document.getElementById("recommendations");
  ul.replaceChildren();
  const recs = state.recommendations || [];
  if (!recs.length) ul.append(el("li", {}, "Nothing to do."));
  for (const r of recs) {
    const e = r.predicted_effect || {};
    const li = el("li", { class: "recommendation", "data-id": r.id },
      el("strong", {}, r.id), ": ", r.reason,
      el("div", { class: "evidence" }, "effect: " + e.metric + " from " + num(e.from, 1) + " to " +
        num(e.to, 1) + " " + (e.unit || "") + " — " + (e.how || "")),
      el("div", { class: "evidence" }, "risk " + (r.risk || {}).level + ": " + (r.risk || {}).note));
    if (r.applicable) {
      const b = el("button", { type: "button", class: "apply" }, "Apply");
      b.addEventListener("click", () => applyRecommendation(r.id, b));
      li.append(" ", b);
    } else {
      li.append(el("div", { class: "evidence" }, "advice: for an operator to carry out"));
    }
    ul.append(li);
  }
  if (state.remediate === "leaders")
    ul.append(el("li", { class: "hint" }, "automatic remediation is on for leader moves"));
}

function renderActions(actions) {
  const ul = document.getElementById("actions");
  ul.replaceChildren();
  if (!actions.length) ul.append(el("li", {}, "no actions taken"));
  for (const a of [...actions].reverse())
    ul.append(el("li", { "data-outcome": a.outcome }, el("time", {}, new Date(a.applied_unix_ms).toLocaleString()),
      el("strong", {}, "#" + a.seq + " " + a.recommendation), " by " + a.by + ": " + a.outcome + " — " + a.detail));
}

function renderNodes() {
  const tbody = document.querySelector("#nodes tbody");
  tbody.replaceChildren();
  for (const n of state.health.nodes || []) {
    tbody.append(el("tr", { class: n.state === "down" ? "node down" : "node", "data-node": n.node,
        onclick: () => (location.hash = "#/node/" + n.node) },
      el("td", {}, "node " + n.node),
      el("td", { class: "state-" + n.state }, n.state),
      el("td", {}, num(n.phi, 1)),
      el("td", {}, n.cpu == null ? "—" : num(n.cpu * 100, 0) + " %"),
      el("td", {}, bytes(n.rss)),
      el("td", {}, n.fsync_p99_ms == null ? "—" : num(n.fsync_p99_ms, 2) + " ms"),
      el("td", {}, bytes(n.free_bytes)),
      el("td", {}, n.leaders),
      el("td", {}, n.partitions)));
  }
}

// Heatmap: green at ≤ 1 ms, red at ≥ 50 ms, log scale in between.
function heat(ms) {
  const x = Math.min(1, Math.max(0, Math.log10(Math.max(ms, 1)) / Math.log10(50)));
  return "hsl(" + Math.round(120 * (1 - x)) + ", 65%, " + (85 - 25 * x) + "%)";
}

function renderLinks() {
  const ids = (state.health.nodes || []).map((n) => n.node);
  const latest = new Map();
  for (const [key, pts] of seriesOf("peer_rtt_p99_ms")) if (pts.length) latest.set(key, pts[pts.length - 1][1]);
  const t = document.getElementById("links");
  t.replaceChildren(el("tr", {}, el("th", {}, ""), ...ids.map((i) => el("th", {}, i))));
  for (const a of ids) {
    const row = el("tr", {}, el("th", {}, a));
    for (const b of ids) {
      const v = latest.get(a + ">" + b);
      const td = el("td", { "data-link": a + ">" + b }, a === b ? "" : num(v, 2));
      if (a !== b && v != null) td.style.background = heat(v);
      row.append(td);
    }
    t.append(row);
  }
}

function renderNode(id) {
  const n = (state.health.nodes || []).find((x) => x.node === id);
  document.getElementById("node-title").textContent = "Node " + id;
  const member = state.members.find((m) => m.id === id);
  const t = document.getElementById("node-facts");
  t.replaceChildren();
  const rows = [
    ["state", n ? n.state : "unknown"], ["HTTP", member ? member.url : "—"],
    ["phi", n ? num(n.phi, 2) : "—"], ["CPU", n && n.cpu != null ? num(n.cpu * 100, 0) + " % of a core" : "—"],
    ["memory (RSS)", n ? bytes(n.rss) : "—"], ["fsync p99", n ? num(n.fsync_p99_ms, 2) + " ms" : "—"],
    ["free disk", n ? bytes(n.free_bytes) : "—"], ["leads / holds", n ? n.leaders + " / " + n.partitions : "—"],
  ];
  for (const r of (state.health.reasons || []).filter((r) => r.subject && (r.subject.node === id || (r.subject.link || []).includes(id))))
    rows.push(["finding", r.summary]);
  for (const [k, v] of rows) t.append(el("tr", {}, el("td", {}, k), el("td", {}, v)));
}

function renderPartitions() {
  const tbody = document.querySelector("#partitions tbody");
  tbody.replaceChildren();
  const groups = state.partitions || [];
  const rates = groups.map((g) => state.rates.get(g.stream + "/" + g.partition) || 0);
  const sorted = [...rates].sort((a, b) => a - b);
  const median = sorted.length ? sorted[Math.floor(sorted.length / 2)] : 0;
  groups.forEach((g, i) => {
    const hot = median > 0 && rates[i] >= 3 * median;
    tbody.append(el("tr", { class: hot ? "hot" : "" },
      el("td", {}, g.stream), el("td", {}, g.partition),
      el("td", {}, g.leader == null ? "none" : "node " + g.leader),
      el("td", {}, g.replicas.join(", ")), el("td", {}, g.term),
      el("td", {}, g.committed_end_offset),
      el("td", {}, followersText(g)),
      el("td", {}, num(rates[i], 0) + (hot ? " (hot)" : "")),
      el("td", {}, scanText(state.scans && state.scans.get(g.stream + "/" + g.partition)))));
  });
}

// Each follower's lag as the leader sees it; a replica installing a
// snapshot says so itself ("node 3: catching up 41%"), since its lag is
// then a transfer under way, not a follower stuck behind.
function followersText(g) {
  const catching = new Map((g.catching_up || []).map((c) => [c.node, c]));
  const text = (c) => "node " + c.node + ": catching up" + (c.percent == null ? "" : " " + num(c.percent, 0) + "%");
  const parts = (g.followers || []).map((f) => catching.has(f.node) ? text(catching.get(f.node)) :
    "node " + f.node + ": " + f.entries + " / " + num(f.seconds, 2) + (f.in_sync ? "" : " *"));
  // One the leader does not list (yet) is shown too.
  for (const c of catching.values()) if (!(g.followers || []).some((f) => f.node === c.node)) parts.push(text(c));
  return parts.join(", ") || "—";
}

// "clean 2m ago", "repaired 3 ranges", "quarantined on node 2", "—".
function scanText(s) {
  if (!s) return "—";
  if (s.outcome === "quarantined") return "quarantined on node " + s.node;
  const ago = s.started_at_unix_ms ? Math.round((Date.now() - s.started_at_unix_ms) / 60000) + "m ago" : "";
  const repaired = s.repaired_ranges ? ", " + s.repaired_ranges + " ranges repaired" : "";
  return String(s.outcome) + repaired + " " + ago;
}

function renderEvents(findings, alerts) {
  const ul = document.getElementById("findings");
  ul.replaceChildren();
  if (!findings.length) ul.append(el("li", {}, "none"));
  for (const f of findings)
    ul.append(el("li", {}, el("span", { class: "sev " + f.severity }, f.severity), " ",
      subjectLink(f.subject), ": ", f.summary, " ", el("time", {}, "since " + clock(f.since))));
  const tl = document.getElementById("alerts");
  tl.replaceChildren();
  const items = [];
  for (const a of alerts.active || []) items.push([a.starts_at, "active " + a.state, a]);
  for (const h of alerts.history || []) items.push([h.at, h.alert.state, h.alert]);
  items.sort((x, y) => y[0] - x[0]);
  if (!items.length) tl.append(el("li", {}, "no alerts yet"));
  for (const [at, what, a] of items.slice(0, 200)) {
    const labels = a.labels || {};
    tl.append(el("li", {}, el("time", {}, new Date(at).toLocaleString()),
      el("strong", {}, labels.alertname || "alert"), " " + what + " ",
      Object.entries(labels).filter(([k]) => k !== "alertname").map(([k, v]) => k + "=" + v).join(" "),
      a.annotations && a.annotations.summary ? " — " + a.annotations.summary : ""));
  }
}

// ---- reports ----------------------------------------------------------
// The saved reports' list; one report shown as the server renders it
// (self-contained HTML, no scripts) in a sandboxed frame.
async function pullReports() {
  const r = await api("/v1/reports");
  const tbody = document.querySelector("#reports tbody");
  tbody.replaceChildren();
  const list = r.reports || [];
  if (!list.length) tbody.append(el("tr", {}, el("td", { colspan: 5 }, "none saved yet")));
  for (const x of list)
    tbody.append(el("tr", { class: "report-row", "data-id": x.id, onclick: () => showReport("/v1/reports/" + x.id, "Report " + x.id) },
      el("td", {}, x.id), el("td", {}, clock(x.start_unix_ms) + " – " + clock(x.end_unix_ms)),
      el("td", { class: "state-" + x.status }, x.status), el("td", {}, x.worst), el("td", {}, x.findings)));
}

async function showReport(path, title) {
  const frame = document.getElementById("report-frame");
  document.getElementById("report-title").textContent = title + " (loading…)";
  try {
    frame.srcdoc = await apiText(path + (path.includes("?") ? "&" : "?") + "format=html");
    document.getElementById("report-title").textContent = title;
    frame.dataset.loaded = path;
  } catch (e) {
    document.getElementById("report-title").textContent = title + ": " + e.message;
  }
}

document.getElementById("report-now").addEventListener("click", () =>
  showReport("/v1/reports/current?window_s=900", "The last 15 minutes"));

// ---- views ------------------------------------------------------------
function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("&")[0].split("/");
  const view = ["overview", "node", "partitions", "events", "reports"].includes(parts[0]) ? parts[0] : "overview";
  state.view = view;
  state.node = view === "node" ? Number(parts[1]) : null;
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === view);
  // Charts sized while hidden have width 0: rebuild on view change.
  for (const c of Object.values(state.charts)) c.plot.destroy();
  state.charts = {};
  if (state.health) {
    render();
    if (view === "events") pullEvents().catch(() => {});
    if (view === "partitions") pullPartitions().then(render).catch(() => {});
    if (view === "reports") pullReports().catch(() => {});
  }
}

window.addEventListener("hashchange", route);
route();
tick();
setInterval(tick, TICK_MS);
