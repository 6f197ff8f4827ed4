//! Helpers for tests that run the real `cairn` binary: a node process guard
//! that kills the child on drop, and bounded runs of client commands.
#![allow(dead_code)]

pub mod cluster;
pub mod load;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

pub const BIN: &str = env!("CARGO_BIN_EXE_cairn");
/// Upper bound on every wait: startup, a command, a shutdown.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A running `cairn node`; killed (SIGKILL) on drop unless stopped.
pub struct NodeProcess {
    child: Option<Child>,
    pub url: String,
    /// `IP:PORT` of the binary protocol, when started with `--tcp`.
    pub tcp: Option<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl NodeProcess {
    /// Starts a node on 127.0.0.1:0 (unless `extra` has `--http`) and waits for its announcement line
    /// (and the binary protocol's, when `extra` has `--tcp`).
    pub fn start(data_dir: &Path, extra: &[&str]) -> Result<NodeProcess> {
        let mut command = Command::new(BIN);
        command.arg("node").arg("--data-dir").arg(data_dir);
        if !extra.contains(&"--http") {
            command.args(["--http", "127.0.0.1:0"]);
        }
        command
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // For chasing a failure: every node's log kept in a directory that
        // outlives the test (and a chattier filter via CAIRN_TEST_RUST_LOG).
        let log_dir = std::env::var_os("CAIRN_TEST_LOG_DIR");
        if let Some(dir) = &log_dir {
            std::fs::create_dir_all(dir)?;
            let name = format!(
                "{}-{}.log",
                data_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                unique_suffix()
            );
            command.stderr(std::fs::File::create(Path::new(dir).join(name))?);
            if let Ok(filter) = std::env::var("CAIRN_TEST_RUST_LOG") {
                command.env("RUST_LOG", filter);
            }
        }
        let mut child = command.spawn().context("spawn cairn node")?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take();
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            if let Some(stderr) = stderr {
                let _ = BufReader::new(stderr).read_to_string(&mut s);
            }
            s
        });
        let mut node = NodeProcess {
            child: Some(child),
            url: String::new(),
            tcp: None,
            stderr: Some(stderr),
        };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("cairn node listening on ") {
                    let _ = tx.send((false, url.to_string()));
                }
                if let Some(addr) = line.strip_prefix("cairn node tcp listening on ") {
                    let _ = tx.send((true, addr.to_string()));
                }
            }
        });
        let want_tcp = extra.contains(&"--tcp");
        while node.url.is_empty() || (want_tcp && node.tcp.is_none()) {
            match rx.recv_timeout(TIMEOUT) {
                Ok((false, url)) => node.url = url,
                Ok((true, addr)) => node.tcp = Some(addr),
                Err(_) => {
                    let log = node.kill_and_log();
                    bail!("node did not announce its address; stderr:\n{log}");
                }
            }
        }
        Ok(node)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(mut self) -> Result<ExitStatus> {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("positive pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        let mut child = self.child.take().expect("running");
        let status = wait_bounded(&mut child, TIMEOUT);
        if status.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = self.stderr.take().map(|h| h.join().unwrap_or_default());
        status.with_context(|| format!("node stderr:\n{}", log.unwrap_or_default()))
    }

    pub fn kill_and_log(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Time-ordered suffix so restarts of one node get separate log files.
fn unique_suffix() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// A child process killed on drop.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn spawn(args: &[&str]) -> Result<ChildGuard> {
        let child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn cairn")?;
        Ok(ChildGuard(Some(child)))
    }

    /// Like [`ChildGuard::spawn`], with stdout and stderr appended to the
    /// file `log` instead of pipes nobody reads (a long-running, chatty
    /// child would block once a pipe filled).
    pub fn spawn_logged(args: &[&str], log: &std::path::Path) -> Result<ChildGuard> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawn cairn")?;
        Ok(ChildGuard(Some(child)))
    }

    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }

    /// Closes stdin, waits (bounded) and collects the output.
    pub fn finish(mut self) -> Result<Output> {
        let mut child = self.0.take().expect("running");
        drop(child.stdin.take());
        let status = match wait_bounded(&mut child, TIMEOUT) {
            Ok(s) => s,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut o) = child.stdout.take() {
            o.read_to_string(&mut stdout)?;
        }
        if let Some(mut e) = child.stderr.take() {
            e.read_to_string(&mut stderr)?;
        }
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Node `url`'s `/metrics`, as text.
pub async fn metrics(http: &reqwest::Client, url: &str) -> Result<String> {
    Ok(http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// The sum of the samples in an exposition whose lines start with
/// `prefix`: one sample (`name ` or `name{labels} `) or a family's
/// (`name{`). 0 when there is none.
pub fn sum_samples(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits for `child` to exit, at most `timeout`.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "process {} did not exit within {timeout:?}",
                child.id()
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout as one JSON value per line.
    pub fn json_lines(&self) -> Result<Vec<serde_json::Value>> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
            .collect()
    }
}

/// Runs `cairn ARGS` with `stdin`, killing it if it outlives [`TIMEOUT`].
pub fn run(args: &[&str], stdin: &str) -> Result<Output> {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn cairn")?;
    let mut input = child.stdin.take().expect("piped");
    let stdin = stdin.to_string();
    let writer = thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let read_all = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read_all(Box::new(child.stdout.take().expect("piped")));
    let err = read_all(Box::new(child.stderr.take().expect("piped")));
    let status = match wait_bounded(&mut child, TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.context(format!("cairn {args:?}")));
        }
    };
    let _ = writer.join();
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Runs `cairn ARGS` and requires success.
pub fn run_ok(args: &[&str], stdin: &str) -> Result<Output> {
    let out = run(args, stdin)?;
    if !out.status.success() {
        bail!(
            "cairn {args:?} failed with {}:\nstdout: {}\nstderr: {}",
            out.status,
            out.stdout,
            out.stderr
        );
    }
    Ok(out)
}
