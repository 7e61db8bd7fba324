//! The WebSocket transport against clients this project did not write: the `graphql-ws` npm
//! package's client and raw `ws` sockets (`tests/interop/ws-conformance.mjs`). Every row of the
//! suite must read as the graphql-transport-ws protocol says; the table is printed.
//!
//! Run: `(cd tests/interop && npm ci) && cargo test -p tests --test graphql_ws_conformance -- --nocapture`
//! (on PostgreSQL too, with `TEST_BACKEND=postgres`).

use std::path::PathBuf;
use std::process::Command;

use tests::spawn_app_with_env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_ws_clients_see_the_protocol() {
    let app = spawn_app_with_env(&[("WS_INIT_TIMEOUT_MS", "500")]).await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop");
    assert!(
        dir.join("node_modules/graphql-ws").exists(),
        "graphql-ws is not installed: run `npm ci` in {}",
        dir.display()
    );
    let url = app.url("/graphql");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("ws-conformance.mjs")
            .arg(url)
            .current_dir(dir)
            .output()
            .expect("run node (Node.js 20 or later must be installed)")
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(
        out.status.success(),
        "the conformance suite found differences:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.shutdown().await;
}
