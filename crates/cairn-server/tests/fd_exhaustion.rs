//! A node that runs out of file descriptors keeps its partitions and its
//! controller: for a moment shorter than storage's retry budget, writes
//! just wait; for longer, a partition's Raft core stops on the storage
//! error and is restarted from disk once descriptors are back, and writes
//! commit again. So is the controller's, stopped by a metadata change it
//! could not write: streams can be created again without restarting the
//! node. Before, the first `EMFILE` under a `raft.json` write stopped the
//! partition's Raft for good, and the controller's stayed stopped.
//!
//! One test in this file on purpose: it lowers the process's descriptor
//! limit and exhausts it, which would disturb other tests in the process.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cairn_client::{Client, StreamConfig};
use cairn_cluster::controller::{ControllerCommand, ControllerResponse};
use cairn_server::{Node, NodeConfig};
use cairn_telemetry::metrics::Api;
use cairn_types::{ErrorCode, NewEntry, partition_for_source};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

const PARTITIONS: u32 = 2;

/// Keeps the process out of descriptors until dropped: a thread opens
/// `/dev/null` until it fails, and takes every descriptor another part of
/// the process gives back (the node's own reads of `/proc`, a closed
/// connection), so the outage lasts as long as the test says.
struct Outage {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Outage {
    fn start() -> Outage {
        let stop = Arc::new(AtomicBool::new(false));
        let (full_tx, full) = std::sync::mpsc::channel();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut hoard = Vec::new();
                let mut full_tx = Some(full_tx);
                while !stop.load(Ordering::Relaxed) {
                    match File::open("/dev/null") {
                        Ok(f) => hoard.push(f),
                        Err(_) => {
                            if let Some(tx) = full_tx.take() {
                                let _ = tx.send(());
                            }
                            std::thread::sleep(Duration::from_micros(200));
                        }
                    }
                }
            })
        };
        let _ = full.recv();
        Outage {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn entries(partition: u32, message: &str) -> Vec<NewEntry> {
    let source = (0..)
        .map(|i| format!("svc-{i}"))
        .find(|s| partition_for_source(s, PARTITIONS) == partition)
        .expect("some source hashes to every partition");
    vec![NewEntry {
        timestamp: None,
        level: None,
        source,
        message: message.into(),
        attributes: Default::default(),
    }]
}

/// Creates `name` through the HTTP API, retrying until `deadline` (an
/// earlier attempt may have created it after all).
async fn create_stream(url: &str, name: &str, deadline: Instant) -> Result<()> {
    let client = Client::new(url)?;
    loop {
        let config = StreamConfig {
            partitions: PARTITIONS,
            ..StreamConfig::default()
        };
        match client.create_stream(name, config).await {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == Some(ErrorCode::StreamExists) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => bail!("stream {name} was not created: {e}"),
        }
    }
}

/// Appends to every partition of `stream`, retrying each until `deadline`.
async fn append_everywhere(
    node: &Node,
    stream: &str,
    message: &str,
    deadline: Instant,
) -> Result<()> {
    for p in 0..PARTITIONS {
        loop {
            match node
                .append_entries(stream, entries(p, message), Api::Http)
                .await
            {
                Ok(r) if r.appended == 1 => break,
                Ok(r) => bail!("{r:?}"),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => bail!("partition {p} takes no writes: {e}"),
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_and_controller_survive_running_out_of_file_descriptors() -> Result<()> {
    let limit = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(1024),
            maximum: limit.maximum,
        },
    )?;
    let dir = tempfile::tempdir()?;
    let mut config = NodeConfig::new(dir.path());
    // Nothing but the partitions writes files meanwhile.
    config.monitor.interval = Duration::ZERO;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let node = Node::open(config, listener.local_addr()?.to_string()).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(node.clone().serve(listener, async {
        let _ = stopped.await;
    }));
    Client::new(&url)?
        .create_stream(
            "app",
            StreamConfig {
                partitions: PARTITIONS,
                ..StreamConfig::default()
            },
        )
        .await?;
    append_everywhere(
        &node,
        "app",
        "before",
        Instant::now() + Duration::from_secs(20),
    )
    .await?;
    let restarts = node.cluster().group_restarts();

    // A moment without descriptors, shorter than the retry budget: the
    // lazy raft.json write waits for them, the writes go through.
    tokio::time::sleep(Duration::from_millis(1100)).await; // a raft.json write is due
    let retries_before = cairn_storage::fsutil::transient_retries();
    let outage = Outage::start();
    let writes = {
        let node = node.clone();
        tokio::spawn(async move {
            append_everywhere(
                &node,
                "app",
                "short",
                Instant::now() + Duration::from_secs(20),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    drop(outage);
    writes.await??;
    let retried = cairn_storage::fsutil::transient_retries() - retries_before;
    println!("short outage: {retried} file operations retried, no restart");
    assert!(retried > 0, "nothing needed a descriptor during the outage");
    assert_eq!(restarts.load(Ordering::Relaxed), 0);

    // Longer than the retry budget: the partitions' Raft cores stop on the
    // failed write; they are restarted once descriptors are back.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let retries_before = cairn_storage::fsutil::transient_retries();
    let outage = Outage::start();
    let writes = {
        let node = node.clone();
        tokio::spawn(async move {
            for p in 0..PARTITIONS {
                // Fails (or waits): the group's core stops under it.
                let r = node
                    .append_entries("app", entries(p, "lost?"), Api::Http)
                    .await;
                println!(
                    "during the outage, partition {p}: {:?}",
                    r.map(|r| r.appended)
                );
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(3500)).await;
    drop(outage);
    let released = Instant::now();
    let _ = writes.await;
    println!(
        "retries during the long outage: {}",
        cairn_storage::fsutil::transient_retries() - retries_before
    );
    append_everywhere(
        &node,
        "app",
        "after",
        Instant::now() + Duration::from_secs(20),
    )
    .await
    .context("writes after the outage")?;
    let restarted = restarts.load(Ordering::Relaxed);
    println!(
        "long outage: {restarted} partition groups restarted; writes commit again {:?} after descriptors were back",
        released.elapsed()
    );
    // Until issue 15 the hint file raft.json was written on the write
    // path, and its failed write stopped every core here. It is written in
    // the background now (a failure is logged, the next write retries), so
    // an outage may stop no partition core at all; when one does stop (a
    // segment roll needing a descriptor), it must have been restarted, as
    // the writes above committing again show.
    if restarted == 0 {
        println!("no partition core stopped during the long outage");
    }

    // The controller: applying a new stream writes controller.json, which
    // needs a descriptor; longer than the retry budget without one, the
    // controller's Raft core stops. Once they are back it is restarted in
    // place, and streams can be created and written again.
    let controller_restarts = node.cluster().controller_restarts();
    assert_eq!(controller_restarts.load(Ordering::Relaxed), 0);
    let outage = Outage::start();
    let during = {
        let node = node.clone();
        tokio::spawn(async move {
            node.cluster()
                .command(ControllerCommand::CreateStream {
                    name: "during".into(),
                    partitions: 1,
                    replication_factor: None,
                    log: Default::default(),
                    created_us: 0,
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(3500)).await;
    drop(outage);
    let released = Instant::now();
    println!(
        "creating a stream during the outage: {:?}",
        during
            .await?
            .map(|r| matches!(r, ControllerResponse::StreamCreated(_)))
    );
    create_stream(&url, "later", Instant::now() + Duration::from_secs(20))
        .await
        .context("creating a stream after the outage")?;
    append_everywhere(
        &node,
        "later",
        "after",
        Instant::now() + Duration::from_secs(20),
    )
    .await
    .context("writes to a stream created after the outage")?;
    println!(
        "controller: {} restarts; a stream created and written {:?} after descriptors were back",
        controller_restarts.load(Ordering::Relaxed),
        released.elapsed()
    );
    assert!(
        controller_restarts.load(Ordering::Relaxed) >= 1,
        "the controller's Raft core did not stop: the outage was too short to test"
    );
    // The stream whose creation stopped the controller was committed to
    // its log before: the restarted controller applies it.
    assert!(
        node.cluster()
            .wait_meta(Duration::from_secs(10), |m| m
                .streams
                .contains_key("during"))
            .await,
        "the stream committed before the controller stopped is lost"
    );
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), served).await???;
    Ok(())
}
