//! `schema.graphql` at the repository root is the exported SDL of the schema the server runs.

#[test]
fn schema_graphql_is_in_sync() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql");
    let actual = api::graphql::sdl();
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == actual,
        "schema.graphql is out of date: run `cargo run -p api --bin export-schema > schema.graphql`\n--- served schema\n{actual}"
    );
}
