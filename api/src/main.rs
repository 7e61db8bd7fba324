use std::process::ExitCode;

/// mimalloc: fewer cycles per allocation than glibc's malloc under the many short-lived
/// allocations of GraphQL execution across threads (see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let _telemetry =
        api::telemetry::init("info,api=info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn");
    api::app::serve_from_env(|_| {}).await
}
