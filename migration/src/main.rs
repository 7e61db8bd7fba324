//! `cargo run -p migration -- <up|down|status|fresh|refresh|reset>`
//!
//! Migrations are session-level work (DDL, long transactions), so they use the direct endpoint:
//! `DATABASE_URL_DIRECT`, else `DATABASE_URL`, else the embedded SQLite default.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::Database;

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL_DIRECT")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| migration::DEFAULT_DATABASE_URL.to_owned());
    cli::run_cli_with_custom_connection(migration::Migrator, async || Database::connect(url).await)
        .await;
}
