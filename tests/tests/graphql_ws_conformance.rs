//! The WebSocket transport against clients this project did not write: the `graphql-ws` npm
//! package's client and raw `ws` sockets (`tests/interop/ws-conformance.mjs`). Every row of the
//! suite must read as the graphql-transport-ws protocol says; the table is printed.
//!
//! Run: `(cd tests/interop && npm ci) && cargo test -p tests --test graphql_ws_conformance -- --nocapture`
//! (on PostgreSQL too, with `TEST_BACKEND=postgres`).

use tests::spawn_app_with_env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_ws_clients_see_the_protocol() {
    let app = spawn_app_with_env(&[("WS_INIT_TIMEOUT_MS", "500")]).await;
    let run = tests::run_interop("ws-conformance.mjs", "graphql-ws", app.url("/graphql")).await;
    assert!(
        run.success,
        "the conformance suite found differences:\n{}\n{}",
        run.stdout, run.stderr
    );
    app.shutdown().await;
}
