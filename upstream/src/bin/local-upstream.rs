//! `cargo run -p upstream --bin local-upstream -- [--port 8080] [--host 127.0.0.1] [--pace-ms 20] [--tokens 24]`
//!
//! Then point the server at it: `OPENAI_BASE_URL=http://127.0.0.1:8080/v1`.

use std::sync::Arc;
use std::time::Duration;

use upstream::{Stats, UpstreamConfig};

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .init();
    let mut host = "127.0.0.1".to_owned();
    let mut port: u16 = 8080;
    let mut config = UpstreamConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        let ok = match flag.as_str() {
            "--host" => {
                host.clone_from(&value);
                true
            }
            "--port" => value.parse().map(|p| port = p).is_ok(),
            "--pace-ms" => value
                .parse()
                .map(|ms| config.pace = Duration::from_millis(ms))
                .is_ok(),
            "--tokens" => value.parse().map(|n| config.default_tokens = n).is_ok(),
            _ => false,
        };
        if !ok {
            eprintln!(
                "usage: local-upstream [--host H] [--port P] [--pace-ms MS] [--tokens N]  (bad: {flag} {value})"
            );
            return std::process::ExitCode::from(2);
        }
    }
    let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
    runtime.block_on(async move {
        let addr = match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(mut addrs) => addrs.next(),
            Err(_) => None,
        };
        let listener = match addr.map_or_else(
            || Err(std::io::Error::other("no address")),
            upstream::listen,
        ) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {host}:{port}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        tracing::info!(
            "local upstream on http://{}/v1 (pace {:?}, {} tokens by default)",
            listener.local_addr().expect("bound"),
            config.pace,
            config.default_tokens
        );
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        match upstream::serve(listener, config, Arc::new(Stats::default()), shutdown).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}
