//! `cairn node`: open the data directory, bind, announce, serve until
//! SIGTERM or SIGINT (or, with `--exit-with-parent`, until the parent
//! process exits), then shut down gracefully.
//!
//! The announcement `cairn node listening on http://IP:PORT` is printed to
//! stdout (and flushed) only once the socket is bound, with the real port,
//! so scripts and tests can start a node on port 0 and read where it is.
//! With `--tcp`, the line `cairn node tcp listening on IP:PORT` follows it.
//!
//! Limits (see `cairn_server::limits`): the soft open-file limit is raised
//! to the hard one first, and the caps, timeouts and receive budget in
//! force are printed once the node is open (`cairn node limits: …`).
//!
//! Authentication (see `cairn_server::auth`): with `--auth-token-file`
//! every request needs a token; without it the node refuses to listen
//! beyond loopback unless `--insecure`, and says which at start (`cairn
//! node auth: …`). The node-to-node transport is authenticated by
//! `--cluster-secret-file` (see `cairn_cluster::transport::secure`); a
//! transport beyond loopback without one also needs `--insecure`, and the
//! start line `cairn node transport: …` says which. `--tls-cert`,
//! `--tls-key` and `--tls-ca` turn TLS on for every listener; the
//! announcement then reads `https://`.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use cairn_server::node::ClusterOptions;
use cairn_server::{Node, NodeConfig};
use tracing_subscriber::EnvFilter;

use crate::cli::NodeArgs;

pub fn run(args: NodeArgs) -> Result<()> {
    // openraft's INFO is per-election chatter, and its replication module
    // logs every failed AppendEntries as an ERROR — at every restart, while
    // peers reopen their groups. Replication failures are counted
    // (`cairn_replication_rpc_failures_total`) and judged by the monitor
    // (lag, under-replicated, slow link), so the per-RPC lines are off by
    // default; RUST_LOG overrides.
    init_logging("info,openraft=warn,openraft::replication=off");
    // Before anything opens files: the caps are sized from this limit.
    let fd_limit = cairn_server::limits::raise_fd_limit();
    tracing::debug!(fd_limit, "open-file limit");
    let tokens = match &args.auth_token_file {
        Some(path) => Some(
            cairn_server::auth::Tokens::load(path)
                .with_context(|| format!("--auth-token-file {}", path.display()))?,
        ),
        None => None,
    };
    let secret = match &args.cluster_secret_file {
        Some(path) => {
            warn_if_readable_by_others(path, "--cluster-secret-file");
            Some(cairn_server::ClusterSecret::load(path).context("--cluster-secret-file")?)
        }
        None => None,
    };
    if let Some(key) = &args.tls_key {
        warn_if_readable_by_others(key, "--tls-key");
    }
    let tls = match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        (Some(cert), Some(key), Some(ca)) => {
            Some(cairn_server::NodeTls::load(cert, key, ca).context("TLS settings")?)
        }
        _ => None,
    };
    check_exposure(&args, tokens.is_some(), secret.is_some())?;
    println!(
        "cairn node auth: {}",
        match (&args.auth_token_file, args.insecure) {
            (Some(path), _) => format!("tokens from {}", path.display()),
            (None, false) => "off: anyone who reaches the node may do anything, so it \
                              listens on loopback only (give --auth-token-file to expose it)"
                .to_string(),
            (None, true) =>
                "off, and --insecure: listening beyond loopback unauthenticated".to_string(),
        }
    );
    println!(
        "cairn node transport: {}; {}",
        match &args.cluster_secret_file {
            Some(path) => format!("cluster secret from {}", path.display()),
            None if args.raft.ip().is_loopback() => {
                "unauthenticated (no --cluster-secret-file; loopback only)".to_string()
            }
            None => "UNAUTHENTICATED beyond loopback (no --cluster-secret-file, --insecure): \
                     any process that reaches it can take part in Raft"
                .to_string(),
        },
        match &args.tls_cert {
            Some(cert) => format!("TLS on every listener with {}", cert.display()),
            None => "TLS off".to_string(),
        }
    );
    let config = NodeConfig {
        data_dir: args.data_dir.clone(),
        max_body_bytes: args.max_body_bytes,
        retention_check: Duration::from_millis(args.retention_check_ms),
        orphan_grace: args.orphan_grace,
        snapshot_rate_bytes_per_sec: args.snapshot_rate as u64,
        snapshot_behind_bytes: args.snapshot_behind as u64,
        controller_snapshot_every: args.controller_snapshot_every,
        node_name: args.name,
        telemetry: cairn_telemetry::TelemetryOptions {
            disk_probe_timeout: Duration::from_millis(args.disk_probe_timeout_ms),
            ..Default::default()
        },
        cluster: ClusterOptions {
            node_id: args.id,
            raft_listen: args.raft,
            peers: args.peers,
            join: args.join,
            replace: args.replace,
            secret,
            raft: cairn_server::RaftTimings {
                heartbeat: Duration::from_millis(args.raft_heartbeat_ms),
                election_timeout: (
                    Duration::from_millis(args.raft_election_timeout_ms.0),
                    Duration::from_millis(args.raft_election_timeout_ms.1),
                ),
                rpc_timeout_floor: Duration::from_millis(args.raft_rpc_timeout_ms.0),
                rpc_timeout_max: Duration::from_millis(args.raft_rpc_timeout_ms.1),
                install_snapshot_timeout: Duration::from_millis(args.raft_snapshot_timeout_ms),
            },
        },
        anti_entropy: cairn_server::AntiEntropyConfig {
            interval: args.ae_interval,
            deep_interval: args.ae_deep_interval,
            rate_bytes_per_sec: args.ae_rate as u64,
            ..Default::default()
        },
        monitor: cairn_server::monitor::MonitorOptions {
            interval: args.monitor_interval,
            config: match &args.monitor_config {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("read --monitor-config {}", path.display()))?;
                    cairn_monitor::MonitorConfig::from_toml(&text)
                        .with_context(|| format!("--monitor-config {}", path.display()))?
                }
                None => cairn_monitor::MonitorConfig::default(),
            },
            receivers: cairn_server::monitor::deliver::Receivers {
                alertmanager: args.alertmanager,
                webhook: args.alert_webhook,
            },
            // A relative path lives in the data directory, so nodes that
            // share flags (the demo, tests) never share a file.
            record: args.monitor_record.map(|p| {
                if p.is_relative() {
                    args.data_dir.join(p)
                } else {
                    p
                }
            }),
            remediate: args.remediate,
            report_interval: args.report_interval,
            report_dir: Some(args.data_dir.join("reports")),
        },
        access: cairn_server::auth::Access::new(tokens),
        min_free_bytes: args.min_free_bytes as u64,
        limits: cairn_server::Limits {
            max_connections: args.max_connections,
            max_connections_per_ip: args.max_connections_per_ip,
            http_header_timeout: args.http_header_timeout,
            http_body_timeout: args.http_body_timeout,
            http_idle_timeout: args.http_idle_timeout,
            tcp_idle_timeout: args.tcp_idle_timeout,
            tcp_frame_timeout: args.tcp_frame_timeout,
            receive_budget_bytes: args.receive_budget,
        },
        tls,
    };
    config.validate().map_err(anyhow::Error::msg)?;
    let stage_timing = !args.no_stage_timing;
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    let parent = args
        .exit_with_parent
        .then(rustix::process::getppid)
        .flatten();
    runtime.block_on(serve(config, args.http, args.tcp, stage_timing, parent))
}

/// A secret anyone on the machine can read is no secret: say so (the node
/// still starts; the operator may have reasons, e.g. a container).
fn warn_if_readable_by_others(path: &std::path::Path, flag: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "{flag}: the file is readable by other users; chmod 600 it"
        );
    }
}

/// Refuses to expose an unauthenticated listener beyond loopback unless
/// `--insecure`, and warns when it does.
fn check_exposure(args: &NodeArgs, tokens: bool, secret: bool) -> Result<()> {
    let mut exposed: Vec<String> = Vec::new();
    if !tokens {
        exposed.extend(
            [
                Some(("HTTP", args.http)),
                args.tcp.map(|a| ("binary protocol", a)),
            ]
            .into_iter()
            .flatten()
            .filter(|(_, a)| !a.ip().is_loopback())
            .map(|(what, a)| format!("{what} on {a} (no --auth-token-file)")),
        );
    }
    // Tokens do not cover the node-to-node transport: without the cluster
    // secret, a process that reaches it can take part in Raft.
    if !secret && !args.raft.ip().is_loopback() {
        exposed.push(format!(
            "the node-to-node transport on {} (no --cluster-secret-file)",
            args.raft
        ));
    }
    if exposed.is_empty() {
        return Ok(());
    }
    if !args.insecure {
        anyhow::bail!(
            "refusing to listen beyond loopback without authentication: {}. Anyone who \
             reaches these could delete streams, inject faults or join the cluster. \
             Give --auth-token-file FILE (and --cluster-secret-file FILE for the \
             transport), listen on 127.0.0.1, or pass --insecure on a trusted network",
            exposed.join("; ")
        );
    }
    tracing::warn!(
        exposed = %exposed.join("; "),
        "--insecure: listening beyond loopback without authentication"
    );
    Ok(())
}

async fn serve(
    config: NodeConfig,
    http: SocketAddr,
    tcp: Option<SocketAddr>,
    stage_timing: bool,
    parent: Option<rustix::process::Pid>,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "cairn node config: id={} name={} data_dir={} http={http} tcp={} raft={} peers={:?} join={:?} \
         max_body_bytes={} retention_check_ms={} orphan_grace_s={} snapshot_rate={} snapshot_behind={} disk_probe_timeout_ms={} stage_timing={stage_timing} {} \
         monitor_interval_ms={} report_interval_s={} alertmanager={:?} alert_webhook={:?}",
        config.cluster.node_id,
        config.node_name,
        config.data_dir.display(),
        tcp.map_or_else(|| "off".to_string(), |a| a.to_string()),
        config.cluster.raft_listen,
        config.cluster.peers,
        config.cluster.join,
        config.max_body_bytes,
        config.retention_check.as_millis(),
        config.orphan_grace.as_secs(),
        config.snapshot_rate_bytes_per_sec,
        config.snapshot_behind_bytes,
        config.telemetry.disk_probe_timeout.as_millis(),
        config.cluster.raft,
        config.monitor.interval.as_millis(),
        config.monitor.report_interval.as_secs(),
        config.monitor.receivers.alertmanager,
        config.monitor.receivers.webhook,
    )?;
    // Bind before opening the data directory: an open node must not be
    // dropped on an async thread without `serve` (storage shutdown blocks).
    let listener = tokio::net::TcpListener::bind(http)
        .await
        .with_context(|| format!("bind {http}"))?;
    let tcp_listener = match tcp {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind {addr} (--tcp)"))?,
        ),
        None => None,
    };
    let data_dir = config.data_dir.clone();
    let addr = listener.local_addr()?;
    let node = Node::open(config, addr.to_string())
        .await
        .with_context(|| format!("start node with data directory {}", data_dir.display()))?;
    node.telemetry().metrics.set_stage_timing(stage_timing);
    let g = node.guards();
    let l = &g.limits;
    writeln!(
        out,
        "cairn node limits: max_connections={} max_connections_per_ip={} (per listener; \
         fd_limit={} of which {} reserved) http_header_timeout={:?} http_body_timeout={:?} \
         http_idle_timeout={:?} tcp_idle_timeout={:?} tcp_frame_timeout={:?} receive_budget_bytes={}",
        g.http.max(),
        g.http.max_per_ip(),
        g.fds.limit(),
        g.fds.reserve(),
        l.http_header_timeout,
        l.http_body_timeout,
        l.http_idle_timeout,
        l.tcp_idle_timeout,
        l.tcp_frame_timeout,
        g.budget.capacity(),
    )?;
    let scheme = if node.tls_acceptor().is_some() {
        "https"
    } else {
        "http"
    };
    writeln!(out, "cairn node listening on {scheme}://{addr}")?;
    if let Some(l) = &tcp_listener {
        writeln!(out, "cairn node tcp listening on {}", l.local_addr()?)?;
    }
    writeln!(
        out,
        "cairn node {} transport on {}",
        node.cluster().node_id(),
        node.cluster().raft_addr()
    )?;
    out.flush()?;
    drop(out);

    let shutdown = async move {
        tokio::select! {
            () = shutdown_signal() => {}
            () = parent_gone(parent) => {}
        }
    };
    node.serve_with_tcp(listener, tcp_listener, shutdown)
        .await?;
    tracing::info!("node stopped");
    Ok(())
}

/// Completes on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers; stop with SIGKILL");
            let never: std::convert::Infallible = std::future::pending().await;
            match never {}
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down: finishing in-flight requests");
}

/// Completes once the parent process is no longer `parent` (it exited and
/// this process was re-parented); never completes for `None`.
async fn parent_gone(parent: Option<rustix::process::Pid>) {
    let Some(parent) = parent else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        if rustix::process::getppid() != Some(parent) {
            tracing::info!("parent process exited: shutting down");
            return;
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: `default_level`).
pub fn init_logging(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
