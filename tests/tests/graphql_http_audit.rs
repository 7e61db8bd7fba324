//! The `graphql-http` npm package's GraphQL-over-HTTP server audit (`auditServer`) against a
//! running server: every MUST and every SHOULD passes (no error, no warning).
//!
//! Run: `(cd tests/interop && npm ci) && cargo test -p tests --test graphql_http_audit`

use std::path::PathBuf;
use std::process::Command;

use tests::spawn_app;

#[tokio::test]
async fn the_server_passes_the_graphql_over_http_audit() {
    let app = spawn_app().await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop");
    assert!(
        dir.join("node_modules/graphql-http").exists(),
        "graphql-http is not installed: run `npm ci` in {}",
        dir.display()
    );
    let url = app.url("/graphql");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("audit.mjs")
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
        "the audit found errors or warnings:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains(" 0 warn, 0 error of "), "{report}");
    app.shutdown().await;
}
