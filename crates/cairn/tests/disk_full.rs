//! A node on a small tmpfs: once free space falls below its reserve
//! (`--min-free-bytes`), appends and stream creation are refused with 507
//! `insufficient_storage` and nothing is written; once space is freed,
//! appends resume by themselves; the stopped node's data directory then
//! inspects clean.
//!
//! Mounting a tmpfs needs root (CAP_SYS_ADMIN); without it the test says
//! SKIPPED on stderr and passes.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use support::NodeProcess;

/// A mounted tmpfs, unmounted on drop (after whatever uses it is gone:
/// declare it before the node).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs> {
        std::fs::create_dir_all(at)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .context("run mount")?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn free_bytes(path: &Path) -> Result<u64> {
    let s = rustix::fs::statvfs(path)?;
    Ok(s.f_bavail * s.f_frsize)
}

async fn post(url: &str, body: Value) -> Result<(u16, Value)> {
    let response = cairn_client::http_client()
        .post(url)
        .json(&body)
        .timeout(Duration::from_secs(20))
        .send()
        .await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

async fn end_offset(url: &str) -> Result<u64> {
    let v: Value = cairn_client::http_client()
        .get(format!(
            "{url}/v1/streams/full/partitions/0/entries?limit=1"
        ))
        .send()
        .await?
        .json()
        .await?;
    v["end_offset"].as_u64().context("end_offset")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_reserve_writes_are_refused_and_resume_when_space_is_freed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mount_point = dir.path().join("fs");
    let fs = match Tmpfs::mount(&mount_point, "64m") {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("SKIPPED: the disk-full test needs to mount a tmpfs (root): {e}");
            return Ok(());
        }
    };
    let data = fs.0.join("node");
    let node = NodeProcess::start(&data, &["--min-free-bytes", "16M"])?;
    let url = node.url.clone();
    let (status, body) = post(
        &format!("{url}/v1/streams"),
        json!({"name": "full", "partitions": 1}),
    )
    .await?;
    ensure!(status == 201, "create: {status} {body}");
    let entry = json!([{"source": "s", "message": "before"}]);
    let (status, body) = post(&format!("{url}/v1/streams/full/entries"), entry).await?;
    ensure!(status == 200, "append: {status} {body}");

    // Leave 4 MiB free: under the 16 MiB reserve, above zero.
    let filler = fs.0.join("filler");
    let free = free_bytes(&fs.0)?;
    let fill = free.saturating_sub(4 << 20);
    std::fs::write(&filler, vec![0u8; fill as usize])?;
    let before = end_offset(&url).await?;
    // The node measures free space at most 100 ms apart.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..5 {
        let (status, body) = post(
            &format!("{url}/v1/streams/full/entries"),
            json!([{"source": "s", "message": format!("refused {i}")}]),
        )
        .await?;
        ensure!(
            status == 507 && body["code"] == "insufficient_storage",
            "append below the reserve: {status} {body}"
        );
    }
    ensure!(
        body_mentions(
            &post(
                &format!("{url}/v1/streams"),
                json!({"name": "late", "partitions": 1})
            )
            .await?,
            507,
            "reserve"
        ),
        "stream creation below the reserve was not refused"
    );
    ensure!(
        end_offset(&url).await? == before,
        "a refused append was stored"
    );

    // Free the space: appends resume without a restart.
    std::fs::remove_file(&filler)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = post(
            &format!("{url}/v1/streams/full/entries"),
            json!([{"source": "s", "message": "after"}]),
        )
        .await?;
        if status == 200 {
            break;
        }
        if Instant::now() > deadline {
            bail!("appends did not resume after space was freed: {status} {body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(end_offset(&url).await? == before + 1);

    // Stopped, its data directory is consistent.
    node.terminate()?;
    let out = support::run(&["inspect", data.to_str().context("utf-8")?], "")?;
    ensure!(
        out.status.success(),
        "inspect after the disk-full episode: {}\n{}",
        out.stdout,
        out.stderr
    );
    drop(fs);
    Ok(())
}

fn body_mentions((status, body): &(u16, Value), want: u16, word: &str) -> bool {
    *status == want && body["message"].as_str().is_some_and(|m| m.contains(word))
}
