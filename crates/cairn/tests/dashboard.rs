//! The dashboard in a real browser: Debian's headless Chromium, driven
//! over WebDriver (chromedriver + fantoccini), against three real `cairn
//! node` processes under a light steady load.
//!
//! Checks: the page loads from a cold profile with no console errors; the
//! charts hold points; the node grid shows 3 nodes; after a slow disk is
//! injected on node 2 the verdict turns yellow and names node 2 within
//! 10 s; the drill-down views show data. A screenshot is saved under
//! `target/tmp/` and its path printed. The cold load's page weight and
//! paint timings are printed (docs/PERFORMANCE.md); with
//! `CAIRN_DASHBOARD_CPU=1` the test also measures the CPU the nodes spend
//! serving one open page (60 s with it, 60 s without).
//!
//! Needs `chromium` and `chromium-driver` (`apt-get install chromium
//! chromium-driver`; `.ci/run` installs them). Without them the test
//! prints `SKIPPED:` and passes locally; under CI (`CI` set) it fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

use support::cluster::{TestCluster, free_port};
use support::load::Load;

const STREAM: &str = "app";
const PARTITIONS: u32 = 6;
/// The issue's bound for the verdict to name the slow node.
const NAMED_WITHIN: Duration = Duration::from_secs(10);

/// The flags the brief asks for: no GPU, no QUIC, nothing phoning home, so
/// the page's traffic is the only traffic and a cold load is cold.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
];

fn find(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// chromedriver and the browser it drives; both (and every browser
/// process using this profile) killed on drop.
struct Browser {
    driver: Option<Child>,
    profile: tempfile::TempDir,
    /// chromedriver's and Chromium's TMPDIR: Chromium leaves
    /// `org.chromium.Chromium.*` directories behind in it when killed, and
    /// the suite fails on anything left in its own temporary directory.
    _tmp: tempfile::TempDir,
    url: String,
}

impl Browser {
    /// `None` (with a loud note) where Chromium is missing, except under CI.
    fn start() -> Result<Option<(Browser, PathBuf)>> {
        let chromium = find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]);
        let driver = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            ensure!(
                std::env::var_os("CI").is_none(),
                "the dashboard test needs chromium and chromedriver in CI (apt-get install chromium chromium-driver)"
            );
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: the dashboard browser test (apt-get install chromium chromium-driver)"
            );
            return Ok(None);
        };
        let port = free_port()?;
        let tmp = tempfile::Builder::new()
            .prefix("cairn-chromium-tmp-")
            .tempdir()?;
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", driver.display()))?;
        let browser = Browser {
            driver: Some(child),
            profile: tempfile::Builder::new()
                .prefix("cairn-chromium-")
                .tempdir()?,
            _tmp: tmp,
            url: format!("http://127.0.0.1:{port}"),
        };
        Ok(Some((browser, chromium)))
    }

    async fn connect(&self, chromium: &Path) -> Result<Client> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let http = cairn_client::tls::http_client();
        while http
            .get(format!("{}/status", self.url))
            .send()
            .await
            .is_err()
        {
            ensure!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", self.profile.path().display()));
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        Ok(ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await?)
    }

    /// The browser's console messages since the last call (chromedriver's
    /// log endpoint; WebDriver itself has none).
    async fn console(&self, client: &Client) -> Result<Vec<Value>> {
        let session = client.session_id().await?.context("no session")?;
        let r: Value = cairn_client::tls::http_client()
            .post(format!("{}/session/{session}/se/log", self.url))
            .json(&json!({"type": "browser"}))
            .send()
            .await?
            .json()
            .await?;
        Ok(r["value"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(mut d) = self.driver.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        // A browser orphaned by a failed test: only processes started with
        // this test's own profile directory.
        let marker = format!("--user-data-dir={}", self.profile.path().display());
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&marker)
                    && let Some(pid) = rustix::process::Pid::from_raw(pid)
                {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
    }
}

/// Runs `script` (a function body) in the page and returns its value.
async fn js(client: &Client, script: &str) -> Result<Value> {
    Ok(client.execute(script, vec![]).await?)
}

/// What the page shows, in one round trip.
async fn page_state(client: &Client) -> Result<Value> {
    js(
        client,
        r#"
        const v = document.getElementById('verdict');
        const reasons = [...document.querySelectorAll('#reasons li.reason')].map(li => ({
            code: li.dataset.code, subject: JSON.parse(li.dataset.subject || 'null'), text: li.textContent }));
        const points = id => Number((document.getElementById(id) || {}).dataset?.points || 0);
        return {
            status: v.dataset.status, reasons,
            nodes: document.querySelectorAll('#nodes tbody tr').length,
            states: Object.fromEntries([...document.querySelectorAll('#nodes tbody tr')].map(tr =>
                [tr.dataset.node, tr.children[1].textContent])),
            throughput: points('chart-throughput'), write: points('chart-write'),
            conn: document.getElementById('conn').textContent,
        };
        "#,
    )
    .await
}

async fn wait_page(
    client: &Client,
    limit: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Result<(Duration, Value)> {
    let start = Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < limit {
        let s = page_state(client).await?;
        if ok(&s) {
            return Ok((start.elapsed(), s));
        }
        last = s;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("{what}: not within {limit:?}; the page showed {last:#}")
}

fn names_slow_disk_on(s: &Value, node: u64) -> bool {
    s["reasons"].as_array().is_some_and(|rs| {
        rs.iter().any(|r| {
            r["code"] == "slow_disk"
                && r["subject"]["node"] == node
                && r["text"]
                    .as_str()
                    .is_some_and(|t| t.contains(&format!("node {node}")))
        })
    })
}

/// utime + stime of `pid` in clock ticks (`/proc/PID/stat` fields 14, 15).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; fields count from after its `)`.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// CPU of each node over `window`, in % of one core (USER_HZ is 100).
async fn cpu_percent(pids: &[u32], window: Duration) -> Result<Vec<f64>> {
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<Result<_>>()?;
    tokio::time::sleep(window).await;
    let after: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<Result<_>>()?;
    Ok(before
        .iter()
        .zip(after)
        .map(|(b, a)| (a - b) as f64 / window.as_secs_f64())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_loaded_cluster_when_a_disk_slows_the_dashboard_should_name_the_node() -> Result<()>
{
    let Some((browser, chromium)) = Browser::start()? else {
        return Ok(());
    };
    let mut c = TestCluster::start_with(3, &["--ae-interval", "0"]).await?;
    c.create_stream(STREAM, PARTITIONS).await?;
    let load = Load::start(&c, STREAM, PARTITIONS);
    let url = |i: usize| c.url(i).expect("node is running");
    // The charts need a few rounds of history to draw lines.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let client = browser.connect(&chromium).await?;
    let mut result = drive(&browser, &client, &url(0), &url(1)).await;
    let (ok, failed, _) = load.stop().await?;
    println!("load: {ok} batches acknowledged, {failed} failed");
    if result.is_ok() && std::env::var_os("CAIRN_DASHBOARD_CPU").is_some() {
        result = measure_cpu(&client, &c, &url(0)).await;
    }
    if result.is_ok() {
        result = survive_death(&client, &mut c).await;
    }
    if result.is_err() {
        // What the page showed when it failed.
        let _ = screenshot(&client, "failed").await;
    }
    let _ = client.close().await;
    drop(browser);
    result
}

/// Saves a screenshot under `target/tmp/` (kept after the test) and
/// prints where.
async fn screenshot(client: &Client, what: &str) -> Result<PathBuf> {
    let png = client.screenshot().await?;
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("dashboard-{what}-{}.png", std::process::id()));
    std::fs::write(&path, png)?;
    println!("screenshot: {}", path.display());
    Ok(path)
}

async fn drive(browser: &Browser, client: &Client, node1: &str, node2: &str) -> Result<()> {
    // `/` redirects to `/ui/`.
    client.goto(&format!("{node1}/")).await?;
    let (t, s) = wait_page(
        client,
        Duration::from_secs(30),
        "green, 3 nodes, charts",
        |s| {
            // Green — or yellow only because placement's leaders have not
            // settled or the 2-core host is busy with Chromium beside three
            // nodes: true, but not what this test is about.
            let settled = s["status"] == "green"
                || (s["status"] == "yellow"
                    && s["reasons"].as_array().is_some_and(|rs| {
                        rs.iter().all(|r| {
                            r["code"] == "leader_imbalance" || r["code"] == "cpu_saturation"
                        })
                    }));
            settled
                && s["nodes"] == 3
                && s["throughput"].as_u64() >= Some(3)
                && s["write"].as_u64() >= Some(3)
        },
    )
    .await?;
    println!(
        "page ready in {t:?}: {} nodes, throughput chart {} points, write chart {} points",
        s["nodes"], s["throughput"], s["write"]
    );
    ensure!(client.current_url().await?.path() == "/ui/");

    // The cold load: what came over the wire for the page itself, and when
    // it first painted.
    let cold = js(
        client,
        r#"
        const nav = performance.getEntriesByType('navigation')[0];
        const files = performance.getEntriesByType('resource').filter(r => r.name.includes('/ui/'));
        const paint = Object.fromEntries(performance.getEntriesByType('paint').map(p => [p.name, p.startTime]));
        return {
            html: nav.transferSize, files: files.map(r => [r.name.replace(/^.*\/ui\//, ''), r.transferSize]),
            bytes: nav.transferSize + files.reduce((a, r) => a + r.transferSize, 0),
            first_paint_ms: paint['first-paint'], first_contentful_paint_ms: paint['first-contentful-paint'],
            dom_content_loaded_ms: nav.domContentLoadedEventEnd, load_ms: nav.loadEventEnd,
        };
        "#,
    )
    .await?;
    println!(
        "cold load: {:.1} KB over the wire ({}), first paint {:.0} ms, first contentful paint {:.0} ms, load {:.0} ms",
        cold["bytes"].as_f64().unwrap_or(0.0) / 1024.0,
        cold["files"],
        cold["first_paint_ms"].as_f64().unwrap_or(f64::NAN),
        cold["first_contentful_paint_ms"]
            .as_f64()
            .unwrap_or(f64::NAN),
        cold["load_ms"].as_f64().unwrap_or(f64::NAN),
    );
    ensure!(
        cold["bytes"].as_f64().unwrap_or(0.0) > 40_000.0,
        "the page came without its charting library: {cold}"
    );

    // The two routes the page leans on beyond the verdict.
    let http = cairn_client::tls::http_client();
    let series: Value = http
        .get(format!(
            "{node1}/v1/monitor/series?metric=entries_per_second,write_p99_ms"
        ))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        series["metrics"]["entries_per_second"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
            && series["metrics"]["write_p99_ms"].is_array(),
        "series of two metrics: {series}"
    );
    let parts: Value = http
        .get(format!("{node1}/v1/monitor/partitions"))
        .send()
        .await?
        .json()
        .await?;
    let parts = parts["partitions"].as_array().cloned().unwrap_or_default();
    ensure!(
        parts.len() == PARTITIONS as usize
            && parts
                .iter()
                .all(|p| p["leader"].is_u64() && p["followers"].as_array().map(Vec::len) == Some(2)),
        "partitions: {parts:#?}"
    );

    // A slow disk on node 2: the verdict turns yellow and names it.
    let r = cairn_client::tls::http_client()
        .post(format!("{node2}/v1/faults/disk"))
        .json(&json!({"fsync_delay_ms": 40, "ttl_ms": 30000}))
        .send()
        .await?;
    ensure!(r.status().is_success(), "inject: {}", r.status());
    let (t, _) = wait_page(client, NAMED_WITHIN, "yellow naming node 2", |s| {
        s["status"] == "yellow" && names_slow_disk_on(s, 2)
    })
    .await?;
    println!("the page named the slow disk on node 2 after {t:?}");
    screenshot(client, "slow-disk").await?;

    // "What to do" recommends for node 2: moving its leaders (with an
    // Apply button) or, if it leads nothing, moving its replicas (advice).
    let deadline = Instant::now() + Duration::from_secs(15);
    let rec = loop {
        let r = js(
            client,
            "const li = [...document.querySelectorAll('#recommendations li.recommendation')]\
               .find(li => /-node-2$/.test(li.dataset.id));\
             return li ? {id: li.dataset.id, text: li.textContent, button: !!li.querySelector('button.apply')} : null;",
        )
        .await?;
        if !r.is_null() {
            break r;
        }
        ensure!(
            Instant::now() < deadline,
            "no recommendation for node 2 on the page"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("the page recommends: {rec}");
    ensure!(
        rec["text"].as_str().is_some_and(|t| t.contains("effect:")),
        "{rec}"
    );
    if rec["id"] == "transfer-leaders-off-node-2" {
        ensure!(rec["button"] == true, "{rec}");
        js(
            client,
            "document.querySelector(\"#recommendations li[data-id='transfer-leaders-off-node-2'] button.apply\").click();",
        )
        .await?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = js(
                client,
                "const p = document.getElementById('apply-result'); \
                 return {outcome: p.dataset.outcome || null, text: p.textContent};",
            )
            .await?;
            if out["outcome"] == "applied" {
                println!("applied from the page: {}", out["text"]);
                break;
            }
            ensure!(
                out["outcome"].is_null() && Instant::now() < deadline,
                "apply from the page: {out}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    // Drill-down: node 2's view, partitions, findings.
    // Clicked from inside the page: the table is redrawn every second, so
    // an element found first may be gone by the time it is clicked.
    js(
        client,
        "document.querySelector(\"#nodes tbody tr[data-node='2']\").click();",
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = js(
            client,
            "return {title: document.getElementById('node-title').textContent, \
             visible: !document.getElementById('view-node').hidden, \
             cpu: Number(document.getElementById('chart-node-cpu').dataset.points || 0), \
             stages: Number(document.getElementById('chart-node-stages').dataset.points || 0), \
             finding: document.getElementById('node-facts').textContent.includes('disk')};",
        )
        .await?;
        if v["visible"] == true
            && v["title"] == "Node 2"
            && v["cpu"].as_u64() > Some(0)
            && v["stages"].as_u64() > Some(0)
        {
            println!("node view: {v}");
            break;
        }
        ensure!(Instant::now() < deadline, "node 2's view: {v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    client.goto(&format!("{node1}/ui/#/partitions")).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = js(
            client,
            "return document.querySelectorAll('#partitions tbody tr').length;",
        )
        .await?;
        // Leader, replicas, lag, rate and the last anti-entropy scan.
        let columns = js(
            client,
            "const tr = document.querySelector('#partitions tbody tr'); \
             return tr ? tr.children.length : 0;",
        )
        .await?;
        if rows == PARTITIONS && columns == 9 {
            break;
        }
        ensure!(Instant::now() < deadline, "partitions view: {rows} rows");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A replica installing a snapshot shows its progress instead of its
    // lag (rendered from a partition line as /v1/monitor/partitions gives
    // it; a real catch-up is tested in tests/retention.rs).
    let text = js(
        client,
        "const g = {stream: 'x', partition: 0, leader: 1, term: 1, replicas: [1, 2, 3], \
           committed_end_offset: 10, reporting: [1, 2, 3], \
           followers: [{node: 2, voter: true, entries: 0, seconds: 0, in_sync: true}, \
                       {node: 3, voter: true, entries: 900, seconds: 40, in_sync: false}], \
           catching_up: [{node: 3, percent: 41, staged_bytes: 1000}]}; \
         return followersText(g);",
    )
    .await?;
    ensure!(
        text.as_str() == Some("node 2: 0 / 0.00, node 3: catching up 41%"),
        "followers column: {text}"
    );
    client.goto(&format!("{node1}/ui/#/events")).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = js(
            client,
            "return document.getElementById('findings').textContent;",
        )
        .await?;
        if text.as_str().is_some_and(|t| t.contains("node 2")) {
            break;
        }
        ensure!(Instant::now() < deadline, "findings view: {text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The action applied above is listed under "Actions taken".
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = js(
            client,
            "return document.getElementById('actions').textContent;",
        )
        .await?;
        let listed = text.as_str().is_some_and(|t| {
            if rec["id"] == "transfer-leaders-off-node-2" {
                t.contains("transfer-leaders-off-node-2 by operator")
            } else {
                t.contains("no actions taken")
            }
        });
        if listed {
            break;
        }
        ensure!(Instant::now() < deadline, "actions view: {text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Reports: one made now over the last 15 minutes, shown in the page.
    client.goto(&format!("{node1}/ui/#/reports")).await?;
    js(client, "document.getElementById('report-now').click();").await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = js(
            client,
            "const f = document.getElementById('report-frame'); \
             return {loaded: f.dataset.loaded || null, html: (f.srcdoc || '').slice(0, 20000), \
                     title: document.getElementById('report-title').textContent};",
        )
        .await?;
        let html = r["html"].as_str().unwrap_or("");
        if r["loaded"].is_string() && html.contains("Cairn report") && html.contains("slow_disk") {
            break;
        }
        ensure!(Instant::now() < deadline, "reports view: {}", r["title"]);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    client.goto(&format!("{node1}/ui/#/overview")).await?;
    let _ = cairn_client::tls::http_client()
        .delete(format!("{node2}/v1/faults/disk"))
        .send()
        .await;
    wait_page(client, Duration::from_secs(10), "overview again", |s| {
        s["nodes"] == 3
    })
    .await?;

    let errors: Vec<Value> = browser
        .console(client)
        .await?
        .into_iter()
        .filter(|m| m["level"] == "SEVERE")
        .collect();
    ensure!(errors.is_empty(), "console errors: {errors:#?}");
    Ok(())
}

/// The node that served the page dies: the page moves to another member
/// and shows the dead one as not up.
async fn survive_death(client: &Client, c: &mut TestCluster) -> Result<()> {
    let dead = c.url(0).expect("running");
    client.goto(&format!("{dead}/ui/")).await?;
    wait_page(client, Duration::from_secs(10), "the page on node 1", |s| {
        s["nodes"] == 3
    })
    .await?;
    c.kill(0);
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(30);
    loop {
        let here = client.current_url().await?;
        let moved = !dead.contains(&format!(":{}", here.port().unwrap_or(0)));
        if moved
            && let Ok(s) = page_state(client).await
            && s["states"]["1"].as_str().is_some_and(|st| st != "up")
        {
            println!(
                "node 1 killed: the page moved to {here} and shows node 1 {} after {:?}",
                s["states"]["1"],
                killed.elapsed()
            );
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "after node 1 died the page is at {here}, showing {:#}",
            page_state(client).await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The nodes' CPU over 60 s with one dashboard open on node 1, then 60 s
/// with the browser on a blank page; the load is stopped first, so the
/// difference is the page's.
async fn measure_cpu(client: &Client, c: &TestCluster, node1: &str) -> Result<()> {
    let pids: Vec<u32> = c
        .nodes
        .iter()
        .map(|n| n.as_ref().expect("running").pid())
        .collect();
    let window = Duration::from_secs(60);
    client.goto(&format!("{node1}/ui/")).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let with = cpu_percent(&pids, window).await?;
    client.goto("about:blank").await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let without = cpu_percent(&pids, window).await?;
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    println!(
        "CPU % of a core over {window:?}, with the page open: {with:.2?} (sum {:.2}); without: {without:.2?} (sum {:.2}); the page's cost: {:.2} % on the serving node, {:.2} % over the cluster",
        sum(&with),
        sum(&without),
        with[0] - without[0],
        sum(&with) - sum(&without)
    );
    Ok(())
}

/// With `--auth-token-file`, the page loads without a token, asks for one
/// when the API says 401, and works with a read token, which it keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_tokens_when_opening_the_dashboard_should_ask_for_one_and_work_with_it() -> Result<()>
{
    const ADMIN: &str = "admin-token-0123456789abcdef";
    const READ: &str = "read-token-0123456789abcdef";
    let Some((browser, chromium)) = Browser::start()? else {
        return Ok(());
    };
    let files = tempfile::tempdir()?;
    let tokens = files.path().join("tokens");
    std::fs::write(&tokens, format!("admin {ADMIN}\nread {READ}\n"))?;
    let tokens = tokens.to_str().context("utf-8 path")?;
    let c = TestCluster::start_with_token(1, &["--auth-token-file", tokens], Some(ADMIN)).await?;
    let url = c.url(0).context("running")?;
    let client = browser.connect(&chromium).await?;
    let result = async {
        client.goto(&format!("{url}/ui/")).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while js(
            &client,
            "return !document.getElementById('token-form').hidden;",
        )
        .await?
            != true
        {
            ensure!(
                Instant::now() < deadline,
                "the page did not ask for a token"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        client
            .find(fantoccini::Locator::Id("token-input"))
            .await?
            .send_keys(READ)
            .await?;
        client
            .find(fantoccini::Locator::Css("#token-form button"))
            .await?
            .click()
            .await?;
        wait_page(
            &client,
            Duration::from_secs(15),
            "the verdict with a token",
            |s| s["nodes"] == 1 && s["status"] != "unknown",
        )
        .await?;
        let kept = js(&client, "return localStorage.getItem('cairn-token');").await?;
        ensure!(kept == READ, "the token was not kept: {kept}");
        Ok(())
    }
    .await;
    let _ = client.close().await;
    drop(browser);
    result
}
