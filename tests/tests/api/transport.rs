//! GraphQL over HTTP: status codes and media types, request body limits, depth, complexity and
//! recursion limits, and introspection and the IDE (GraphiQL), which can be turned off.

use serde_json::{Value, json};
use tests::{spawn_app, spawn_app_with_env};

#[tokio::test]
async fn responses_follow_graphql_over_http() {
    let app = spawn_app().await;
    let post = |accept: &'static str, query: &'static str| {
        let app = &app;
        async move {
            app.http
                .post(app.url("/graphql"))
                .header("accept", accept)
                .json(&json!({ "query": query }))
                .send()
                .await
                .unwrap()
        }
    };
    let res = post("application/graphql-response+json", "{ nope }").await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.headers()["content-type"],
        "application/graphql-response+json"
    );
    let body: Value = res.json().await.unwrap();
    assert!(
        body.get("data").is_none() && body["errors"].is_array(),
        "{body}"
    );
    let res = post("application/json", "{ nope }").await;
    assert_eq!(
        (
            res.status().as_u16(),
            res.headers()["content-type"].to_str().unwrap()
        ),
        (200, "application/json")
    );
    let res = post(
        "application/graphql-response+json, application/json;q=0.9",
        "{ __typename }",
    )
    .await;
    assert_eq!(
        res.headers()["content-type"],
        "application/graphql-response+json"
    );
    let res = post("text/xml", "{ __typename }").await;
    assert_eq!(res.status(), 406);
    app.shutdown().await;
}

#[tokio::test]
async fn depth_complexity_and_recursion_are_limited() {
    let app = spawn_app_with_env(&[
        ("GRAPHQL_MAX_DEPTH", "6"),
        ("GRAPHQL_MAX_COMPLEXITY", "300"),
        ("GRAPHQL_MAX_RECURSIVE_DEPTH", "20"),
    ])
    .await;
    let user = app.sign_up("ada@example.com").await;
    let deep =
        "{ __schema { types { fields { type { ofType { ofType { ofType { name } } } } } } } }";
    let body = app.gql(Some(&user.token), deep, json!({})).await;
    assert_eq!(
        body["errors"][0]["message"], "Query is nested too deep.",
        "{body}"
    );
    let complex = "{ history(first: 100) { edges { node { id model prompt completion status user { email } } } } }";
    let body = app.gql(Some(&user.token), complex, json!({})).await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("complex"),
        "{body}"
    );
    let within = "{ history(first: 10) { edges { node { id model } } } }";
    assert!(app.gql(Some(&user.token), within, json!({})).await["errors"].is_null());
    let nested = format!(
        "{{ {}__typename{} }}",
        "... on Query { ".repeat(40),
        " }".repeat(40)
    );
    let body = app.gql(Some(&user.token), &nested, json!({})).await;
    assert!(body["data"].is_null(), "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("recursion depth"),
        "{body}"
    );
    app.shutdown().await;
}

/// Brackets nested past 128 are refused from the text, before the parser recurses into them:
/// 3,000 nested list brackets (a 6 KB document) overflowed a worker thread's stack and aborted
/// the server process, which took this test binary with it.
#[tokio::test]
async fn documents_nested_too_deep_are_refused_before_parsing() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let (server, token) = (&app, user.token.as_str());
    let ask = |query: String| async move { server.gql(Some(token), &query, json!({})).await };
    let message = |body: &Value| {
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let deep = |open: &str, inner: &str, close: &str, n: usize| {
        format!("{}{inner}{}", open.repeat(n), close.repeat(n))
    };
    for query in [
        format!(
            "{{ history(first: {}) {{ nodes {{ id }} }} }}",
            deep("[", "1", "]", 3000)
        ),
        format!(
            "{{ history(filter: {}) {{ nodes {{ id }} }} }}",
            deep("{a:", "1", "}", 3000)
        ),
        format!(
            "query($v: {}) {{ me {{ id }} }}",
            deep("[", "Int", "]", 3000)
        ),
    ] {
        let body = ask(query).await;
        assert_eq!(
            tests::error_code(&body),
            Some("GRAPHQL_VALIDATION_FAILED"),
            "{body}"
        );
        assert!(
            message(&body).contains("nest brackets at most 128 deep"),
            "{body}"
        );
    }
    // Brackets in strings, block strings and comments are text, not nesting: the document is
    // parsed, and validation finds what is wrong with it (its variables are not used).
    let brackets = "[".repeat(3000);
    let body = ask(format!(
        "query($p: String = \"{brackets}\", $q: String = \"\"\"{brackets}\"\"\") {{ me {{ id }} }} # {brackets}"
    ))
    .await;
    let messages = body["errors"].to_string();
    assert!(messages.contains("is not used"), "{body}");
    assert!(!messages.contains("nest brackets"), "{body}");
    // Within the limit, a deep value reaches the parser and is refused for its type; selection
    // sets past the parser's own 64 levels are a limit too, not a syntax error.
    let within = deep("[", "1", "]", 100);
    let body = ask(format!(
        "{{ history(first: {within}) {{ nodes {{ id }} }} }}"
    ))
    .await;
    assert!(body["data"].is_null(), "{body}");
    assert!(!message(&body).contains("nest brackets"), "{body}");
    let body = ask(format!(
        "{{ {} }}",
        deep("... on Query { ", "__typename", " }", 70)
    ))
    .await;
    assert_eq!(
        tests::error_code(&body),
        Some("GRAPHQL_VALIDATION_FAILED"),
        "{body}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn request_bodies_are_bounded() {
    let app = spawn_app_with_env(&[("GRAPHQL_MAX_BODY_BYTES", "4096")]).await;
    let big = json!({ "query": format!("{{ __typename }} # {}", "x".repeat(8192)) });
    let res = app
        .http
        .post(app.url("/graphql"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    let small = json!({ "query": "{ __typename }" });
    let res = app
        .http
        .post(app.url("/graphql"))
        .json(&small)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn introspection_and_the_ide_can_be_turned_off() {
    let on = spawn_app().await;
    let res = on
        .http
        .get(on.url("/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let page = res.text().await.unwrap();
    assert!(page.contains("GraphiQL"), "the IDE is served by default");
    // Offline: everything the page loads comes from this server.
    assert!(
        !page.contains("http://") && !page.contains("https://") && !page.contains("//unpkg"),
        "{page}"
    );
    for asset in page.split('"').filter(|s| s.starts_with("/graphiql/")) {
        let res = on.http.get(on.url(asset)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{asset}");
        assert!(res.bytes().await.unwrap().len() > 1000, "{asset}");
    }
    assert!(
        on.gql(None, "{ __schema { queryType { name } } }", json!({}))
            .await["errors"]
            .is_null()
    );
    // The introspection query GraphiQL and codegen tools send (graphql-js's TypeRef nests
    // `ofType` nine deep) fits the default limits.
    let type_ref = format!(
        "kind name {}",
        "ofType { kind name ".repeat(9) + &"}".repeat(9)
    );
    let introspection = format!(
        "{{ __schema {{ types {{ fields(includeDeprecated: true) {{ args {{ type {{ {type_ref} }} }} type {{ {type_ref} }} }} }} }} }}"
    );
    let body = on.gql(None, &introspection, json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    on.shutdown().await;

    let off =
        spawn_app_with_env(&[("GRAPHQL_INTROSPECTION", "false"), ("GRAPHQL_IDE", "false")]).await;
    let res = off
        .http
        .get(off.url("/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        406,
        "no IDE: a browser's GET is not something this endpoint can answer"
    );
    let body = off
        .gql(None, "{ __schema { queryType { name } } }", json!({}))
        .await;
    assert!(body["data"]["__schema"].is_null(), "{body}");
    assert!(off.gql(None, "{ models { id } }", json!({})).await["errors"].is_null());
    off.shutdown().await;
}
