//! The demo's nodes: `cairn node` child processes of this same binary.
//!
//! Each node gets a transport port chosen up front (the peers list needs
//! every address before any node starts), HTTP and binary-protocol ports
//! of 0 (the node announces the real ones on stdout, so there is no race
//! for those), its own data directory and a log file beside it.
//!
//! Children run in their own process group, so a Ctrl-C on the terminal
//! reaches only the demo, which then stops the load before the nodes —
//! otherwise the nodes would start shutting down under a load still
//! running and the demo would report their going as failures. Because a
//! separate group also means a killed demo would not take its nodes with
//! it, they are started with `--exit-with-parent`; and `kill_on_drop` is a
//! last resort should the demo unwind without stopping them.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long a node may take to bind and announce its addresses.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or exited) demo node.
#[derive(Debug)]
pub struct DemoNode {
    pub id: u64,
    pub http_url: String,
    /// `IP:PORT` of the binary protocol.
    pub tcp_addr: String,
    pub pid: u32,
    pub log_path: PathBuf,
    child: Child,
    /// Set once the process has been seen to exit.
    pub exited: Option<ExitStatus>,
}

/// The peers list for `n` nodes: `1=127.0.0.1:P1,2=...`. Kept in
/// `dir/peers` so a demo started again on the same `--data-dir` reuses the
/// transport addresses its cluster already knows.
pub fn peers(dir: &Path, n: usize) -> Result<String> {
    let file = dir.join("peers");
    if let Ok(text) = std::fs::read_to_string(&file) {
        let text = text.trim().to_string();
        if text.split(',').count() == n {
            return Ok(text);
        }
    }
    let mut addrs = Vec::with_capacity(n);
    for i in 1..=n {
        // A free port now; the node binds it a moment later. Another
        // process could take it in between, in which case that node fails
        // to start and the demo says so.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("find a free loopback port")?
            .port();
        addrs.push(format!("{i}=127.0.0.1:{port}"));
    }
    let text = addrs.join(",");
    std::fs::write(&file, format!("{text}\n")).with_context(|| format!("write {file:?}"))?;
    Ok(text)
}

impl DemoNode {
    /// Starts node `id` of the cluster described by `peers` and waits for
    /// its HTTP and binary-protocol announcements.
    pub async fn start(id: u64, peers: &str, dir: &Path) -> Result<DemoNode> {
        DemoNode::start_with(id, peers, dir, &[]).await
    }

    /// [`DemoNode::start`] with more `cairn node` flags.
    pub async fn start_with(id: u64, peers: &str, dir: &Path, extra: &[&str]) -> Result<DemoNode> {
        let exe = std::env::current_exe().context("find the cairn binary")?;
        let raft = peers
            .split(',')
            .find_map(|p| p.strip_prefix(&format!("{id}=")))
            .context("node missing from the peers list")?;
        let data_dir = dir.join(format!("node-{id}"));
        let log_path = dir.join(format!("node-{id}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("create the log file {log_path:?}"))?;
        let mut child = Command::new(exe)
            .arg("node")
            .args(["--id", &id.to_string()])
            .args(["--name", &format!("node-{id}")])
            .args(["--raft", raft])
            .args(["--peers", peers])
            .args(["--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--exit-with-parent")
            .args(extra)
            // The demo's own environment must not reconfigure its nodes.
            .env_remove("CAIRN_DATA_DIR")
            .env_remove("CAIRN_HTTP")
            .env_remove("CAIRN_TCP")
            .env_remove("CAIRN_JOIN")
            .env_remove("CAIRN_PEERS")
            .env_remove("CAIRN_NODE_ID")
            .env_remove("CAIRN_RAFT")
            .env_remove("CAIRN_NODE_NAME")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .context("start a cairn node")?;
        let pid = child.id().context("the node exited at once")?;
        let stdout = child.stdout.take().context("node stdout")?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Reads the announcements, then keeps draining stdout so the node
        // never blocks on a full pipe.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("cairn node listening on ") {
                    let _ = tx.send((false, url.to_string()));
                } else if let Some(addr) = line.strip_prefix("cairn node tcp listening on ") {
                    let _ = tx.send((true, addr.to_string()));
                }
            }
        });
        let mut node = DemoNode {
            id,
            http_url: String::new(),
            tcp_addr: String::new(),
            pid,
            log_path,
            child,
            exited: None,
        };
        let announced = async {
            while node.http_url.is_empty() || node.tcp_addr.is_empty() {
                match rx.recv().await {
                    Some((false, url)) => node.http_url = url,
                    Some((true, addr)) => node.tcp_addr = addr,
                    // stdout closed: the node exited before announcing.
                    None => return false,
                }
            }
            true
        };
        match tokio::time::timeout(ANNOUNCE_TIMEOUT, announced).await {
            Ok(true) => Ok(node),
            outcome => {
                node.kill().await;
                let log = log_tail(&node.log_path);
                let why = if outcome.is_err() {
                    "did not announce its addresses in time"
                } else {
                    "exited during startup"
                };
                bail!(
                    "node {id} {why}; the end of its log ({}):\n{log}",
                    node.log_path.display()
                )
            }
        }
    }

    /// Whether the process is still running; records its exit status once
    /// it has gone.
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exited = Some(status);
        }
        self.exited
    }

    /// Asks the node to stop (SIGTERM), as an operator would.
    pub fn terminate(&mut self) {
        if self.poll_exit().is_some() {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }

    /// Waits up to `limit` for the process to exit; SIGKILLs it after that.
    /// Returns how it ended: its exit status, or `None` if it was killed.
    pub async fn wait_or_kill(&mut self, limit: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited {
            return Some(status);
        }
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.exited = Some(status);
                Some(status)
            }
            _ => {
                self.kill().await;
                None
            }
        }
    }

    /// SIGKILL, and reaps it.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        if let Ok(status) = self.child.wait().await {
            self.exited = Some(status);
        }
    }
}

/// The last lines of a node's log, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
