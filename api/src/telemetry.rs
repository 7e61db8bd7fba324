//! Logging. `RUST_LOG` selects what is shown (default: info for this server, warnings for the rest).

use tracing_subscriber::EnvFilter;

/// Install the global subscriber; later calls are no-ops (tests call it once per process).
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}
