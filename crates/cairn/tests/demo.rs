//! `cairn demo` as a user runs it: it starts three nodes, prints where they
//! are, serves its load (every node's replica of the demo stream fills up,
//! and the printed example query works), and stops by itself
//! (`--duration`) or on SIGINT, exiting 0 with no node process left and
//! its temporary data removed (or `--data-dir` kept).

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cairn_client::Client;
use parking_lot::Mutex;
use support::{BIN, ChildGuard, run_ok, wait_bounded};
use tokio::sync::mpsc;

/// A node as the demo announced it.
#[derive(Debug, Clone)]
struct Announced {
    url: String,
    pid: u32,
}

/// A running `cairn demo` (SIGKILLed on drop; its nodes then exit by
/// themselves, having been started with `--exit-with-parent`).
struct Demo {
    guard: ChildGuard,
    lines: mpsc::UnboundedReceiver<String>,
    /// Everything printed so far, for assertions and failure messages.
    transcript: Arc<Mutex<String>>,
    data_dir: PathBuf,
    nodes: Vec<Announced>,
}

impl Demo {
    /// Starts `cairn demo ARGS` and waits for its header (printed once the
    /// cluster is ready and the stream exists).
    async fn start(args: &[&str]) -> Result<Demo> {
        let mut child = Command::new(BIN)
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn cairn demo")?;
        let transcript = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        let t = transcript.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                t.lock().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let t = transcript.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                t.lock().push_str(&format!("stderr: {line}\n"));
            }
        });
        let mut demo = Demo {
            guard: ChildGuard(Some(child)),
            lines,
            transcript,
            data_dir: PathBuf::new(),
            nodes: Vec::new(),
        };
        // `data: DIR (...)`, then `  node N  URL  binary ADDR  pid PID  log FILE`.
        while demo.nodes.len() < 3 {
            let line = demo.next_line(Duration::from_secs(60)).await?;
            if let Some(rest) = line.strip_prefix("data: ") {
                let dir = rest.rsplit_once(" (").map_or(rest, |(d, _)| d);
                demo.data_dir = PathBuf::from(dir);
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if let ["node", id, url, "binary", _, "pid", pid, "log", _] = words[..] {
                ensure!(id == (demo.nodes.len() + 1).to_string(), "{line}");
                demo.nodes.push(Announced {
                    url: url.to_string(),
                    pid: pid.parse()?,
                });
            }
        }
        ensure!(demo.data_dir.is_dir(), "{}", demo.transcript());
        Ok(demo)
    }

    fn transcript(&self) -> String {
        self.transcript.lock().clone()
    }

    async fn next_line(&mut self, limit: Duration) -> Result<String> {
        match tokio::time::timeout(limit, self.lines.recv()).await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => bail!("the demo closed its output:\n{}", self.transcript()),
            Err(_) => bail!(
                "no output from the demo for {limit:?}:\n{}",
                self.transcript()
            ),
        }
    }

    /// Waits until every node's own replica of the demo stream holds
    /// entries in every partition (what `GET /v1/streams/demo` answers
    /// from is the answering node's replica).
    async fn wait_for_entries_on_every_node(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes {
            let client = Client::new(&node.url)?;
            loop {
                let info = client.get_stream("demo").await;
                let filled = info.as_ref().is_ok_and(|s| {
                    s.partitions.len() == 6 && s.partitions.iter().all(|p| p.end_offset > 0)
                });
                if filled {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "{} has no entries in every partition: {info:?}\n{}",
                    node.url,
                    self.transcript()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// Waits (bounded) for the demo to exit; requires exit status 0.
    async fn wait_success(mut self) -> Result<String> {
        let mut child = self.guard.0.take().context("running")?;
        let status = tokio::task::spawn_blocking(move || {
            let status = wait_bounded(&mut child, Duration::from_secs(60));
            if status.is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
            status
        })
        .await??;
        // The output threads end with the process's pipes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let transcript = self.transcript();
        ensure!(
            status.success(),
            "cairn demo exited with {status}:\n{transcript}"
        );
        Ok(transcript)
    }
}

/// Whether `pid` is still a running `cairn` process (a pid reused by
/// something else does not count).
fn cairn_running(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("cairn"))
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_writes_on_every_node_and_stops_by_itself() -> Result<()> {
    let demo = Demo::start(&["--duration", "8s"]).await?;
    demo.wait_for_entries_on_every_node().await?;
    // The example query the demo prints works against its nodes.
    let url = demo.nodes[1].url.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_ok(
            &[
                "query", "--server", &url, "--stream", "demo", "--since", "1m", "--limit", "5",
            ],
            "",
        )
    })
    .await??;
    let entries = out.json_lines()?;
    ensure!(entries.len() == 5, "{}", out.stdout);
    ensure!(
        entries
            .iter()
            .all(|e| e["attributes"]["trace_id"].is_string())
    );

    let (nodes, data_dir) = (demo.nodes.clone(), demo.data_dir.clone());
    let transcript = demo.wait_success().await?;
    for want in [
        "8 s elapsed: stopping the load",
        "entries acknowledged",
        "node 1 stopped",
        "node 2 stopped",
        "node 3 stopped",
        "removed ",
    ] {
        ensure!(
            transcript.contains(want),
            "{want:?} missing in:\n{transcript}"
        );
    }
    // Not a terminal: one plain status line per second.
    let status_lines = transcript
        .lines()
        .filter(|l| l.starts_with('[') && l.contains("entries/s acked"))
        .count();
    ensure!(status_lines >= 5, "{transcript}");
    // A healthy cluster refuses none of the load.
    ensure!(transcript.contains(", 0 failed requests"), "{transcript}");
    for n in &nodes {
        ensure!(!cairn_running(n.pid), "node pid {} left running", n.pid);
    }
    ensure!(!data_dir.exists(), "{data_dir:?} was not removed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_stops_cleanly_on_sigint_and_keeps_a_given_data_dir() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("demo-data");
    let data_arg = data.to_str().context("utf-8 path")?;
    let demo = Demo::start(&["--data-dir", data_arg, "--api", "http", "--rate", "1000"]).await?;
    demo.wait_for_entries_on_every_node().await?;

    let pid = demo.guard.0.as_ref().context("running")?.id();
    let pid = rustix::process::Pid::from_raw(pid as i32).context("pid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::INT)?;
    let nodes = demo.nodes.clone();
    let transcript = demo.wait_success().await?;
    for want in [
        "SIGINT: stopping the load",
        "node 3 stopped",
        "data kept in",
    ] {
        ensure!(
            transcript.contains(want),
            "{want:?} missing in:\n{transcript}"
        );
    }
    // The load stops before the nodes, so shutting down fails no write.
    ensure!(transcript.contains(", 0 failed requests"), "{transcript}");
    for n in &nodes {
        ensure!(!cairn_running(n.pid), "node pid {} left running", n.pid);
    }
    for i in 1..=3 {
        ensure!(
            data.join(format!("node-{i}")).is_dir(),
            "node-{i} data not kept"
        );
    }
    Ok(())
}
