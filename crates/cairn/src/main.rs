//! The `cairn` command.
//!
//! `cairn node` runs a node; `cairn demo` runs a 3-node cluster of them
//! under load with a live status (see `demo`); `cairn bench` is an
//! open-loop load generator (see `bench`); the other subcommands are thin clients
//! over the HTTP API (`cairn-client`). Every flag can also be set
//! through the environment variable named in `--help`.
//!
//! Exit codes: 0 on success, 1 when the server or the transport reports an
//! error (the message goes to stderr as `error: <code>: <message>`), 2 for
//! usage errors (clap's own). `cairn inspect` exits 1 when the data does
//! not verify and 2 when the directory is missing.

mod anti_entropy_cmd;
mod bench;
mod cli;
mod client_cmds;
mod demo;
mod fault_cmd;
mod format;
mod inspect_cmd;
mod leader_cmd;
mod node_cmd;
mod recommend_cmd;
mod report_cmd;
mod status_cmd;
mod tail_cmd;
mod top_cmd;

use std::process::ExitCode;

/// A node allocates and frees small buffers for every request, frame and
/// batch on many threads; glibc malloc's arena locking and consolidation
/// showed up as a quarter of a node's CPU under 1-entry writes.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

fn main() -> ExitCode {
    // Before any TLS config or HTTP client is built (see cairn_client::tls).
    cairn_client::tls::install_crypto_provider();
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Node(args) => node_cmd::run(*args),
        cli::Command::Bench(args) => bench::run(args),
        cli::Command::Demo(args) => demo::run(args),
        cli::Command::Inspect(args) => return inspect_cmd::run(args),
        cli::Command::Status(args) => return status_cmd::run(args),
        cli::Command::Monitor(cmd) => status_cmd::monitor(cmd),
        cli::Command::AntiEntropy(cmd) => client_cmds::block_on(anti_entropy_cmd::run(cmd)),
        cli::Command::Fault(cmd) => client_cmds::block_on(fault_cmd::run(cmd)),
        cli::Command::Tail(args) => client_cmds::block_on(tail_cmd::run(args)),
        cli::Command::Top(args) => top_cmd::run(args),
        cli::Command::Leader(cmd) => client_cmds::block_on(leader_cmd::run(cmd)),
        cli::Command::Recommend(args) => client_cmds::block_on(recommend_cmd::run(args)),
        cli::Command::Report(args) => client_cmds::block_on(report_cmd::run(args)),
        other => client_cmds::run(other),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
