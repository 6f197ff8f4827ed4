//! The scorecard's harness: the cluster under test (started here or
//! given), the steady load with its per-second write p99, and how each
//! fault is injected and lifted — the same ways the monitor's
//! integration test uses (`tests/monitor.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cairn_client::Client;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{FAULT_TTL_MS, HOT_SOURCE, REMEDIATE_NODE_FLAGS, STREAM, Scenario};
use crate::cli::{FaultsArgs, ProduceApi};
use crate::demo::load::{self, LoadConfig, LoadStats, Target};
use crate::demo::nodes::{self, DemoNode};

/// The cluster under test.
pub(super) struct Cluster {
    pub(super) http: reqwest::Client,
    /// Node id `i + 1`'s URL.
    pub(super) urls: Vec<String>,
    /// The processes, when started here.
    pub(super) started: Option<Started>,
    pub(super) alive: Vec<Arc<AtomicBool>>,
}

pub(super) struct Started {
    pub(super) dir: PathBuf,
    pub(super) _temp: Option<tempfile::TempDir>,
    pub(super) peers: String,
    pub(super) nodes: Vec<DemoNode>,
    pub(super) flags: Vec<&'static str>,
}

impl Cluster {
    pub(super) fn url(&self, node: u64) -> &str {
        &self.urls[node as usize - 1]
    }

    pub(super) async fn start(args: &FaultsArgs, http: reqwest::Client) -> Result<Cluster> {
        let (dir, temp) = match &args.data_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new().prefix("cairn-faults-").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let peers = nodes::peers(&dir, 3)?;
        let mut flags = vec!["--ae-interval", "0"];
        if args.remediate {
            flags.extend_from_slice(REMEDIATE_NODE_FLAGS);
        }
        let mut started = Vec::new();
        for id in 1..=3 {
            started.push(DemoNode::start_with(id, &peers, &dir, &flags).await?);
        }
        let urls = started.iter().map(|n| n.http_url.clone()).collect();
        Ok(Cluster {
            http,
            urls,
            alive: (0..3).map(|_| Arc::new(AtomicBool::new(true))).collect(),
            started: Some(Started {
                dir,
                _temp: temp,
                peers,
                nodes: started,
                flags,
            }),
        })
    }

    /// The given nodes, by id, from the first one's cluster view.
    pub(super) async fn given(urls: &[String], http: reqwest::Client) -> Result<Cluster> {
        let view = Client::with_http_client(&urls[0], http.clone())?
            .cluster()
            .await
            .with_context(|| format!("{} is not reachable", urls[0]))?;
        let scheme = if urls[0].starts_with("https") {
            "https"
        } else {
            "http"
        };
        let mut ids: Vec<(u64, String)> = view
            .nodes
            .iter()
            .map(|n| (n.id, format!("{scheme}://{}", n.http_addr)))
            .collect();
        ids.sort();
        ensure!(
            ids.len() >= 3
                && ids
                    .iter()
                    .take(3)
                    .enumerate()
                    .all(|(i, (id, _))| *id == i as u64 + 1),
            "the scorecard needs nodes 1, 2 and 3; the cluster has {:?}",
            ids.iter().map(|n| n.0).collect::<Vec<_>>()
        );
        Ok(Cluster {
            http,
            urls: ids.into_iter().take(3).map(|n| n.1).collect(),
            started: None,
            alive: (0..3).map(|_| Arc::new(AtomicBool::new(true))).collect(),
        })
    }

    pub(super) fn pid(&self, node: u64) -> Result<rustix::process::Pid> {
        let s = self
            .started
            .as_ref()
            .context("not a cluster started here")?;
        rustix::process::Pid::from_raw(s.nodes[node as usize - 1].pid as i32).context("pid")
    }

    pub(super) async fn stop(mut self) {
        if let Some(s) = &mut self.started {
            for n in &mut s.nodes {
                n.terminate();
            }
            for n in &mut s.nodes {
                n.wait_or_kill(Duration::from_secs(10)).await;
            }
        }
    }

    /// The active findings as `node` answers (the controller leader's).
    pub(super) async fn findings(&self, node: u64) -> Result<Vec<Value>> {
        let r = self
            .http
            .get(format!("{}/v1/monitor/findings", self.url(node)))
            .timeout(Duration::from_secs(3))
            .send()
            .await?;
        ensure!(r.status().is_success(), "findings: {}", r.status());
        Ok(r.json().await?)
    }

    pub(super) async fn post(&self, node: u64, path: &str, body: Value) -> Result<()> {
        let url = format!("{}{path}", self.url(node));
        let r = self.http.post(&url).json(&body).send().await?;
        ensure!(r.status().is_success(), "POST {url}: {}", r.status());
        Ok(())
    }

    pub(super) async fn delete(&self, node: u64, path: &str) -> Result<()> {
        let url = format!("{}{path}", self.url(node));
        let r = self.http.delete(&url).send().await?;
        ensure!(r.status().is_success(), "DELETE {url}: {}", r.status());
        Ok(())
    }

    /// Node's writes in flight and connections refused so far, from its
    /// `/metrics`: the raw signs that a flood has begun.
    pub(super) async fn flood_signals(&self, node: u64) -> Result<(f64, f64)> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url(node)))
            .send()
            .await?
            .text()
            .await?;
        let sum = |prefix: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        Ok((
            sum("cairn_writes_in_flight "),
            sum("cairn_connections_refused_total{"),
        ))
    }
}

/// The steady load and its per-second write p99s.
pub(super) struct Steady {
    pub(super) stop: watch::Sender<bool>,
    pub(super) task: tokio::task::JoinHandle<()>,
    pub(super) sampler: tokio::task::JoinHandle<()>,
    /// (when, write p99 ms) each second.
    p99: Arc<parking_lot::Mutex<Vec<(Instant, f64)>>>,
}

impl Steady {
    pub(super) fn start(c: &Cluster, rate: f64) -> Steady {
        let stats = Arc::new(LoadStats::default());
        let config = LoadConfig {
            stream: STREAM.into(),
            rate,
            api: ProduceApi::Http,
            targets: c
                .urls
                .iter()
                .zip(&c.alive)
                .map(|(u, a)| Target {
                    http_url: u.clone(),
                    tcp_addr: String::new(),
                    alive: a.clone(),
                })
                .collect(),
        };
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(load::run(config, stats.clone(), rx));
        let p99: Arc<parking_lot::Mutex<Vec<(Instant, f64)>>> = Default::default();
        let samples = p99.clone();
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Some(v) = stats.take_interval_p99_ms() {
                    samples.lock().push((Instant::now(), v));
                }
            }
        });
        Steady {
            stop,
            task,
            sampler,
            p99,
        }
    }

    pub(super) fn median_since(&self, since: Instant) -> Option<f64> {
        let mut v: Vec<f64> = self
            .p99
            .lock()
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, v)| *v)
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }

    /// The first second after `since` whose p99 was within `bound`.
    pub(super) fn first_within(&self, since: Instant, bound: f64) -> Option<Instant> {
        self.p99
            .lock()
            .iter()
            .find(|(t, v)| *t > since && *v <= bound)
            .map(|(t, _)| *t)
    }

    pub(super) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.sampler.abort();
    }
}

/// An injected fault, to be lifted.
pub(super) enum Injected {
    Api(u64, &'static str),
    Paused(u64),
    Killed(u64),
    Flood(tokio::process::Child, String),
    Hot(Arc<AtomicBool>, Vec<tokio::task::JoinHandle<()>>),
}

pub(super) async fn inject(c: &Cluster, s: &Scenario, run: u32) -> Result<(Injected, Instant)> {
    let ttl = FAULT_TTL_MS;
    let injected = match s.name {
        "slow-disk" => {
            c.post(
                s.node,
                "/v1/faults/disk",
                json!({"fsync_delay_ms": 40, "ttl_ms": ttl}),
            )
            .await?;
            Injected::Api(s.node, "/v1/faults/disk")
        }
        "slow-link" => {
            c.post(
                s.node,
                "/v1/faults/network",
                json!({"action": "delay", "peers": [3], "delay_ms": 60, "ttl_ms": ttl}),
            )
            .await?;
            Injected::Api(s.node, "/v1/faults/network")
        }
        "cpu" => {
            c.post(
                s.node,
                "/v1/faults/cpu",
                json!({"threads": 2, "duty_percent": 100, "ttl_ms": ttl}),
            )
            .await?;
            Injected::Api(s.node, "/v1/faults/cpu")
        }
        "pause" => {
            // The load stops sending to it, as a client would after its
            // timeouts; the monitor must still find it.
            c.alive[s.node as usize - 1].store(false, Ordering::Relaxed);
            rustix::process::kill_process(c.pid(s.node)?, rustix::process::Signal::STOP)?;
            Injected::Paused(s.node)
        }
        "node-kill" => {
            c.alive[s.node as usize - 1].store(false, Ordering::Relaxed);
            rustix::process::kill_process(c.pid(s.node)?, rustix::process::Signal::KILL)?;
            Injected::Killed(s.node)
        }
        "hot-partition" => {
            let stop = Arc::new(AtomicBool::new(false));
            let client = Client::with_http_client(c.url(s.node), c.http.clone())?;
            let tasks = (0..4)
                .map(|_| {
                    let (client, stop) = (client.clone(), stop.clone());
                    tokio::spawn(async move {
                        let entries: Vec<cairn_types::NewEntry> = (0..200)
                            .map(|i| cairn_types::NewEntry {
                                timestamp: None,
                                level: None,
                                source: HOT_SOURCE.into(),
                                message: format!("hot {i}"),
                                attributes: Default::default(),
                            })
                            .collect();
                        while !stop.load(Ordering::Relaxed) {
                            if client.append(STREAM, &entries).await.is_err() {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    })
                })
                .collect();
            Injected::Hot(stop, tasks)
        }
        "overload" => {
            // An open-loop flood far past what the node completes, all
            // through one node: it piles up writes and sheds connections
            // at its caps — the overload detector's signs.
            let prefix = format!("flood{run}-{:04x}", rand::random::<u16>());
            let (_, refused_before) = c.flood_signals(s.node).await?;
            let exe = std::env::current_exe()?;
            let child = tokio::process::Command::new(exe)
                .args([
                    "bench",
                    "steady",
                    "--server",
                    c.url(s.node),
                    "--api",
                    "http",
                ])
                .args([
                    "--rate",
                    "400000",
                    "--batch-size",
                    "20",
                    "--connections",
                    "64",
                ])
                .args(["--max-in-flight", "64", "--duration", "120s", "--no-verify"])
                .args(["--stream-prefix", &prefix])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("start the flood")?;
            // The clock starts when the flood does, as the node's own
            // counters show it, not when its process was started.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let (in_flight, refused) = c.flood_signals(s.node).await?;
                if in_flight >= 100.0 || refused > refused_before {
                    break;
                }
                ensure!(Instant::now() < deadline, "the flood never started");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Injected::Flood(child, prefix)
        }
        other => bail!("no way to inject {other}"),
    };
    Ok((injected, Instant::now()))
}

pub(super) async fn lift(c: &mut Cluster, injected: Injected) -> Result<()> {
    match injected {
        Injected::Api(node, path) => c.delete(node, path).await?,
        Injected::Paused(node) => {
            rustix::process::kill_process(c.pid(node)?, rustix::process::Signal::CONT)?;
            c.alive[node as usize - 1].store(true, Ordering::Relaxed);
        }
        Injected::Killed(node) => {
            // Restarted on its data; it comes back on a new HTTP port,
            // which the load (built with the old one) no longer uses.
            let s = c.started.as_mut().context("started here")?;
            let i = node as usize - 1;
            s.nodes[i].wait_or_kill(Duration::from_secs(1)).await;
            let fresh = DemoNode::start_with(node, &s.peers, &s.dir, &s.flags).await?;
            c.urls[i] = fresh.http_url.clone();
            s.nodes[i] = fresh;
        }
        Injected::Flood(mut child, prefix) => {
            let _ = child.kill().await;
            // Its streams go too, or repeated floods fill the disk.
            let admin = Client::with_http_client(&c.urls[0], c.http.clone())?;
            for s in admin.list_streams().await? {
                if s.name.starts_with(&prefix) {
                    let _ = admin.delete_stream(&s.name).await;
                }
            }
        }
        Injected::Hot(stop, tasks) => {
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                let _ = t.await;
            }
        }
    }
    Ok(())
}
