//! A cluster of real `cairn node` processes on loopback, for tests: fixed
//! transport ports (so a killed node restarts at the same address), HTTP
//! on port 0, and helpers to find leaders and read whole partitions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cairn_client::{Client, ClusterView, Consistency, OffsetEntry, ReadParams, StreamConfig};

use super::NodeProcess;

/// A free loopback port for a listener that must keep its address across
/// restarts (the listener is closed again). Drawn below the kernel's
/// ephemeral range: a port from that range (what binding port 0 gives) is
/// also what any outgoing connection may take as its local port, and a
/// restarted node then finds its address in use.
pub fn free_port() -> Result<u16> {
    use rand::Rng;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    for _ in 0..200 {
        let port = rand::rng().random_range(low..high);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port in {low}..{high}")
}

pub struct TestCluster {
    /// Declared before `dir`: fields drop in order, so the nodes are
    /// killed before their data directory is removed (a node still running
    /// would keep writing into the deleted tree and leak its space).
    pub nodes: Vec<Option<NodeProcess>>,
    pub dir: tempfile::TempDir,
    raft_addrs: Vec<String>,
    peers: String,
    /// Flags every node is started with, beyond the cluster's own.
    extra: Vec<String>,
    /// Presented by the cluster's own clients (nodes with a token file).
    token: Option<String>,
    /// Trusted by the cluster's own clients (nodes with TLS on).
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl TestCluster {
    /// Starts `n` nodes (ids 1..=n) bootstrapping one cluster, and waits
    /// until a controller leader exists and every node has registered.
    pub async fn start(n: usize) -> Result<TestCluster> {
        TestCluster::start_with(n, &[]).await
    }

    /// Like [`TestCluster::start`], every node also serving the binary
    /// protocol (`--tcp` on a free port; see [`TestCluster::tcp`]).
    pub async fn start_with_tcp(n: usize) -> Result<TestCluster> {
        TestCluster::start_with(n, &["--tcp", "127.0.0.1:0"]).await
    }

    /// Like [`TestCluster::start`], with `extra` flags for every node.
    pub async fn start_with(n: usize, extra: &[&str]) -> Result<TestCluster> {
        TestCluster::start_with_token(n, extra, None).await
    }

    /// Like [`TestCluster::start_with`], the cluster's own clients
    /// presenting `token` (for nodes given `--auth-token-file` in `extra`).
    pub async fn start_with_token(
        n: usize,
        extra: &[&str],
        token: Option<&str>,
    ) -> Result<TestCluster> {
        TestCluster::start_with_options(n, extra, token, None).await
    }

    /// Like [`TestCluster::start_with_token`], the cluster's own clients
    /// also trusting `tls` (for nodes given `--tls-cert` in `extra`).
    pub async fn start_with_options(
        n: usize,
        extra: &[&str],
        token: Option<&str>,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<TestCluster> {
        // A port found free can be taken by another test's process before
        // the node binds it: start over on new ports then.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(n, extra, token, tls.clone()).await {
                Err(e) if attempt < 3 && format!("{e:#}").contains("Address already in use") => {
                    eprintln!("a port was taken before a node bound it; starting over: {e:#}");
                }
                other => return other,
            }
        }
    }

    async fn start_once(
        n: usize,
        extra: &[&str],
        token: Option<&str>,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<TestCluster> {
        let dir = tempfile::tempdir()?;
        let raft_addrs: Vec<String> = (0..n)
            .map(|_| Ok(format!("127.0.0.1:{}", free_port()?)))
            .collect::<Result<_>>()?;
        let peers = raft_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = TestCluster {
            nodes: (0..n).map(|_| None).collect(),
            dir,
            raft_addrs,
            peers,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            token: token.map(str::to_string),
            tls,
        };
        for i in 0..n {
            cluster.start_node(i)?;
        }
        cluster.wait_ready(n).await?;
        Ok(cluster)
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{}", i + 1))
    }

    /// Starts (or restarts, with its data) node index `i` (id `i + 1`).
    pub fn start_node(&mut self, i: usize) -> Result<()> {
        let id = (i + 1).to_string();
        let name = format!("node-{id}");
        let mut args = vec![
            "--id",
            &id,
            "--name",
            &name,
            "--raft",
            &self.raft_addrs[i],
            "--peers",
            &self.peers,
        ];
        args.extend(self.extra.iter().map(String::as_str));
        let node = NodeProcess::start(&self.data_dir(i), &args)
            .with_context(|| format!("start node {id}"))?;
        self.nodes[i] = Some(node);
        Ok(())
    }

    /// Starts a new node (next id) that joins the cluster through node
    /// index `via`; returns its index.
    pub fn join_node(&mut self, via: usize) -> Result<usize> {
        let i = self.nodes.len();
        let id = (i + 1).to_string();
        let name = format!("node-{id}");
        let raft = format!("127.0.0.1:{}", free_port()?);
        let seed = self.url(via).context("seed node is down")?;
        let node = NodeProcess::start(
            &self.data_dir(i),
            &[
                "--id", &id, "--name", &name, "--raft", &raft, "--join", &seed,
            ],
        )
        .with_context(|| format!("start joining node {id}"))?;
        self.raft_addrs.push(raft);
        self.nodes.push(Some(node));
        Ok(i)
    }

    /// SIGKILLs node index `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i] = None;
    }

    /// The token and TLS trust of the cluster's own clients.
    pub fn client_options(&self) -> cairn_client::ClientOptions {
        cairn_client::ClientOptions {
            token: self.token.clone(),
            tls_ca: self.tls.clone(),
        }
    }

    /// The transport address (`IP:PORT`) of node index `i`.
    pub fn raft_addr(&self, i: usize) -> &str {
        &self.raft_addrs[i]
    }

    pub fn url(&self, i: usize) -> Option<String> {
        self.nodes[i].as_ref().map(|n| n.url.clone())
    }

    /// Node index `i`'s binary-protocol address (`IP:PORT`), when the
    /// cluster was started with `--tcp`.
    pub fn tcp(&self, i: usize) -> Option<String> {
        self.nodes[i].as_ref().and_then(|n| n.tcp.clone())
    }

    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    pub fn client(&self, i: usize) -> Result<Client> {
        let url = self.url(i).context("node is down")?;
        Ok(Client::with_options(&url, &self.client_options())?)
    }

    pub async fn view(&self, i: usize) -> Result<ClusterView> {
        let url = self.url(i).context("node is down")?;
        let view = self
            .client_options()
            .http_client()?
            .get(format!("{url}/v1/cluster"))
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(view)
    }

    /// Waits until every live node sees a controller leader and `n`
    /// registered nodes with HTTP addresses.
    pub async fn wait_ready(&self, n: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        'outer: loop {
            if Instant::now() > deadline {
                bail!("cluster not ready within 30 s");
            }
            for i in self.live() {
                match self.view(i).await {
                    Ok(v)
                        if v.controller_leader.is_some()
                            && v.nodes.len() == n
                            && v.nodes.iter().all(|n| !n.http_addr.is_empty()) => {}
                    _ => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue 'outer;
                    }
                }
            }
            return Ok(());
        }
    }

    /// Creates `name` (through node 1) with `partitions` partitions of 3
    /// replicas each, and waits until every live node runs their groups.
    pub async fn create_stream(&self, name: &str, partitions: u32) -> Result<()> {
        let info = self
            .client(0)?
            .create_stream(
                name,
                StreamConfig {
                    partitions,
                    replication_factor: Some(3),
                    ..StreamConfig::default()
                },
            )
            .await?;
        ensure!(
            info.partitions.iter().all(|p| p.replicas.len() == 3),
            "{name}: not every partition has 3 replicas: {info:?}"
        );
        self.wait_groups(name, partitions as usize).await
    }

    /// Waits until every live node runs `groups` partition groups of
    /// `stream`, each with a leader.
    pub async fn wait_groups(&self, stream: &str, groups: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        'outer: loop {
            if Instant::now() > deadline {
                bail!("partition groups of {stream} not led within 30 s");
            }
            for i in self.live() {
                let ok = match self.view(i).await {
                    Ok(v) => {
                        let g: Vec<_> = v.groups.iter().filter(|g| g.stream == stream).collect();
                        g.len() == groups && g.iter().all(|g| g.leader.is_some())
                    }
                    Err(_) => false,
                };
                if !ok {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'outer;
                }
            }
            return Ok(());
        }
    }

    /// The leader of `stream`'s `partition` that a majority of live nodes
    /// agree on (node id), if any.
    pub async fn leader_of(&self, stream: &str, partition: u32) -> Option<u64> {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for i in self.live() {
            if let Ok(v) = self.view(i).await
                && let Some(l) = v
                    .groups
                    .iter()
                    .find(|g| g.stream == stream && g.partition == partition)
                    .and_then(|g| g.leader)
            {
                *votes.entry(l).or_default() += 1;
            }
        }
        let majority = self.nodes.len() / 2 + 1;
        votes
            .into_iter()
            .find(|(l, v)| *v >= majority && self.nodes[(*l - 1) as usize].is_some())
            .map(|(l, _)| l)
    }

    /// Every committed entry of one partition as node `i`'s replica has it.
    pub async fn read_all(
        &self,
        i: usize,
        stream: &str,
        partition: u32,
    ) -> Result<Vec<OffsetEntry>> {
        let client = self.client(i)?;
        let mut out = Vec::new();
        let mut offset = Some(0);
        loop {
            let page = client
                .read(
                    stream,
                    partition,
                    ReadParams {
                        offset,
                        limit: Some(10_000),
                        consistency: Some(Consistency::Any),
                    },
                )
                .await?;
            let done = page.entries.is_empty() || page.next_offset >= page.end_offset;
            out.extend(page.entries);
            if done {
                return Ok(out);
            }
            offset = Some(page.next_offset);
        }
    }

    /// Waits until every live node's replica of the partition holds the
    /// same committed entries; returns them.
    pub async fn converged(&self, stream: &str, partition: u32) -> Result<Vec<OffsetEntry>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut logs = Vec::new();
            for i in self.live() {
                logs.push(self.read_all(i, stream, partition).await);
            }
            let logs: Result<Vec<_>> = logs.into_iter().collect();
            if let Ok(logs) = &logs
                && logs.windows(2).all(|w| w[0] == w[1])
            {
                return Ok(logs[0].clone());
            }
            if Instant::now() > deadline {
                let lens = logs.map(|l| l.iter().map(Vec::len).collect::<Vec<_>>());
                bail!("replicas of {stream}/{partition} did not converge within 30 s: {lens:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
