use std::process::ExitCode;

/// mimalloc: fewer cycles per allocation than glibc's malloc under the many short-lived
/// allocations of GraphQL execution across threads (see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use api::app::Application;
use api::config::Config;

#[tokio::main]
async fn main() -> ExitCode {
    api::telemetry::init("info,api=info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn");
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if config.auth.secret_is_dev_default {
        tracing::warn!(
            "BETTER_AUTH_SECRET is not set: using a development secret; set one before exposing this server"
        );
    }
    let backend = config.database.backend();
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %app.local_addr(), ?backend, "listening");
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}
