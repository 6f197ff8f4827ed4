//! `cairn top` as a person uses it, in a real terminal: tmux runs it
//! against three real nodes; the test reads the screen (`capture-pane`)
//! and types (`send-keys`). It shows 3 nodes, switches to the partitions
//! and findings views, keeps working after the node it talks to is killed
//! (it moves to another member and shows the dead one as not up), and
//! quits on `q`.
//!
//! Needs `tmux` (`.ci/run` installs it). Without it the test prints
//! `SKIPPED:` and passes locally; under CI (`CI` set) it fails. The tmux
//! server is a private one (`-L` with a unique socket name), killed at the
//! end, so a user's own tmux sessions are never touched.

mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cairn_client::StreamConfig;

use support::BIN;
use support::cluster::TestCluster;

/// A private tmux server with one session running a command.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn available() -> Result<bool> {
        let ok = Command::new("tmux")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            ensure!(
                std::env::var_os("CI").is_none(),
                "the cairn top test needs tmux in CI (apt-get install tmux)"
            );
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: the cairn top test (apt-get install tmux)"
            );
        }
        Ok(ok)
    }

    fn tmux(&self, args: &[&str]) -> Result<Output> {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("run tmux")
    }

    fn start(command: &str) -> Result<Tmux> {
        let t = Tmux {
            socket: format!("cairn-top-test-{}", std::process::id()),
        };
        let out = t.tmux(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "130",
            "-y",
            "45",
            command,
        ])?;
        ensure!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(t)
    }

    fn screen(&self) -> Result<String> {
        let out = self.tmux(&["capture-pane", "-p", "-t", "top"])?;
        ensure!(out.status.success(), "the tmux session is gone");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn keys(&self, keys: &str) -> Result<()> {
        let out = self.tmux(&["send-keys", "-t", "top", keys])?;
        ensure!(out.status.success(), "send-keys {keys}");
        Ok(())
    }

    fn running(&self) -> bool {
        self.tmux(&["has-session", "-t", "top"])
            .is_ok_and(|o| o.status.success())
    }

    /// Waits until the screen satisfies `ok`; the screen, or an error
    /// showing the last one.
    fn wait(&self, limit: Duration, what: &str, ok: impl Fn(&str) -> bool) -> Result<String> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < limit {
            if let Ok(s) = self.screen() {
                if ok(&s) {
                    return Ok(s);
                }
                last = s;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("{what}: not within {limit:?}; the screen:\n{last}")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// The node grid's line for `node`.
fn node_line(screen: &str, node: u64) -> Option<&str> {
    let label = format!("│node {node} ");
    screen.lines().find(|l| l.contains(&label))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_three_nodes_when_running_top_should_show_them_switch_views_survive_a_death_and_quit()
-> Result<()> {
    if !Tmux::available()? {
        return Ok(());
    }
    let mut c = TestCluster::start_with(3, &["--ae-interval", "0"]).await?;
    c.client(0)?
        .create_stream(
            "app",
            StreamConfig {
                partitions: 3,
                replication_factor: Some(3),
                ..StreamConfig::default()
            },
        )
        .await?;
    c.wait_groups("app", 3).await?;
    let urls: Vec<String> = (0..3).map(|i| c.url(i).expect("running")).collect();
    // `env TERM=…`: tmux panes are xterm-like; set it so a CI runner's
    // missing or dumb TERM cannot change what crossterm draws.
    let command = format!(
        "env TERM=xterm-256color {BIN} top --cluster {}",
        urls.join(",")
    );
    let tmux = Tmux::start(&command)?;

    let screen = tmux.wait(Duration::from_secs(20), "3 nodes up", |s| {
        s.contains("nodes (3)")
            && (1..=3).all(|n| node_line(s, n).is_some_and(|l| l.contains(" up ")))
    })?;
    println!("{screen}");

    tmux.keys("2")?;
    tmux.wait(Duration::from_secs(5), "the partitions view", |s| {
        s.contains("partitions (3)") && s.contains("committed")
    })?;
    tmux.keys("3")?;
    tmux.wait(Duration::from_secs(5), "the findings view", |s| {
        s.contains("findings (")
    })?;
    tmux.keys("1")?;
    tmux.wait(Duration::from_secs(5), "the nodes view", |s| {
        s.contains("nodes (3)")
    })?;

    // Kill the node top talks to: it moves on, and shows node 1 as not up.
    c.kill(0);
    let screen = tmux.wait(
        Duration::from_secs(30),
        "another node answering, node 1 not up",
        |s| {
            let moved =
                s.contains(&format!("via {}", urls[1])) || s.contains(&format!("via {}", urls[2]));
            moved && node_line(s, 1).is_some_and(|l| !l.contains(" up "))
        },
    )?;
    println!("{screen}");

    tmux.keys("q")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.running() {
        ensure!(Instant::now() < deadline, "top did not quit on q");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
