//! The `graphql-http` npm package's GraphQL-over-HTTP server audit (`auditServer`) against a
//! running server: every MUST and every SHOULD passes (no error, no warning).
//!
//! Run: `(cd tests/interop && npm ci) && cargo test -p tests --test graphql_http_audit`

use tests::spawn_app;

#[tokio::test]
async fn the_server_passes_the_graphql_over_http_audit() {
    let app = spawn_app().await;
    let run = tests::run_interop("audit.mjs", "graphql-http", app.url("/graphql")).await;
    assert!(
        run.success,
        "the audit found errors or warnings:\n{}\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains(" 0 warn, 0 error of "),
        "{}",
        run.stdout
    );
    app.shutdown().await;
}
