//! The benchmark harness: `cargo run --release -p bench` (see the README's Performance section).
//!
//! It starts a throwaway PostgreSQL cluster (the test harness's), the local upstream (in this
//! process, so its send times and the client's receive times share one clock), and the server
//! as a child process (this binary re-executed as `bench serve`, which runs exactly what the
//! `api` binary runs), so the server's CPU time and memory are its own. Then it drives real
//! HTTP and WebSocket load over loopback, scenario by scenario, checks that nothing was lost,
//! prints a table and writes the figures as JSON. Any lost event, wrong answer, error response
//! or missing row makes the run fail. With `--floor`, streaming runs are repeated against
//! `bench floor` (`floor.rs`), the least a server can do per stream.
#![allow(clippy::print_stdout)] // a command-line report
#![allow(unsafe_code)] // setrlimit and sysconf, documented where used

mod client;
mod floor;
mod proc_stats;
mod scenarios;
mod stats;

use std::process::ExitCode;

/// mimalloc: fewer cycles per allocation than glibc's malloc under the many short-lived
/// allocations of GraphQL execution across threads (see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => return serve(),
        Some("floor") => return floor::serve(),
        _ => {}
    }
    let options = match scenarios::Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}\n\n{}", scenarios::Options::USAGE);
            return ExitCode::from(2);
        }
    };
    proc_stats::raise_fd_limit();
    // reqwest is built without a default TLS provider (the server installs ring the same way).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    match runtime.block_on(scenarios::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `bench serve`: the `api` binary's `main`, reporting its address on stdout.
fn serve() -> ExitCode {
    proc_stats::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(async {
        let _telemetry = api::telemetry::init("warn");
        api::app::serve_from_env(|addr| println!("LISTENING {addr}")).await
    })
}
