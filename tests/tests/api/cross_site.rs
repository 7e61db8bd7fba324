//! Cross-site protection: cookie-authenticated requests from untrusted origins, mutations over
//! GET, and bodies a browser can send cross-site without a preflight are all refused.

use reqwest::header;
use serde_json::{Value, json};
use tests::{TestApp, error_code, spawn_app_with_env};

async fn app() -> TestApp {
    spawn_app_with_env(&[
        ("BETTER_AUTH_URL", "http://app.localhost:4000"),
        ("TRUSTED_ORIGINS", "http://localhost:3000"),
    ])
    .await
}

async fn signed_in_browser(app: &TestApp) -> (reqwest::Client, String) {
    let u = app.sign_up("ada@example.com").await;
    let browser = app.browser();
    let res = browser
        .post(app.url("/graphql"))
        .json(&json!({
            "query": "mutation($i: SignInInput!) { signIn(input: $i) { token } }",
            "variables": { "i": { "email": u.email, "password": u.password } }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    (browser, u.id)
}

async fn me_from(client: &reqwest::Client, app: &TestApp, origin: Option<&str>) -> (u16, Value) {
    let mut req = client
        .post(app.url("/graphql"))
        .json(&json!({ "query": "{ me { id } }" }));
    if let Some(origin) = origin {
        req = req.header(header::ORIGIN, origin);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn cookie_requests_must_come_from_a_trusted_origin_or_none() {
    let app = app().await;
    let (browser, id) = signed_in_browser(&app).await;
    for origin in [
        None,
        Some("http://app.localhost:4000"),
        Some("http://localhost:3000"),
    ] {
        let (status, body) = me_from(&browser, &app, origin).await;
        assert_eq!(
            (status, body["data"]["me"]["id"].as_str()),
            (200, Some(id.as_str())),
            "{origin:?}"
        );
    }
    for origin in ["https://evil.example", "http://localhost:3001", "null"] {
        let (status, body) = me_from(&browser, &app, Some(origin)).await;
        assert_eq!(status, 403, "{origin}");
        assert_eq!(error_code(&body), Some("FORBIDDEN"));
    }
    // A bearer token is not sent by browsers on their own: any origin may use one.
    let u = app.sign_up("bob@example.com").await;
    let res = app
        .http
        .post(app.url("/graphql"))
        .header(header::ORIGIN, "https://evil.example")
        .bearer_auth(&u.token)
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn trusted_origins_get_credentialed_cors() {
    let app = app().await;
    let res = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/graphql"))
        .header(header::ORIGIN, "http://localhost:3000")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://localhost:3000"
    );
    assert_eq!(
        res.headers()[header::ACCESS_CONTROL_ALLOW_CREDENTIALS],
        "true"
    );
    let res = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/graphql"))
        .header(header::ORIGIN, "https://evil.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn mutations_over_get_are_refused() {
    let app = app().await;
    let (browser, _) = signed_in_browser(&app).await;
    let res = browser
        .get(app.url("/graphql"))
        .query(&[("query", "mutation { signOut }")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()[header::ALLOW], "POST");
    let body: Value = res.json().await.unwrap();
    assert_eq!(error_code(&body), Some("METHOD_NOT_ALLOWED"));
    // Named operations too.
    let res = browser
        .get(app.url("/graphql"))
        .query(&[
            ("query", "query Q { me { id } } mutation M { signOut }"),
            ("operationName", "M"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    // A single named mutation without operationName (which async-graphql would run).
    let res = browser
        .get(app.url("/graphql"))
        .query(&[("query", "mutation M { signOut }")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    // The session survived, and queries over GET work.
    let res = browser
        .get(app.url("/graphql"))
        .query(&[("query", "{ me { email } }")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["data"]["me"]["email"], "ada@example.com");
    app.shutdown().await;
}

#[tokio::test]
async fn bodies_a_browser_can_send_cross_site_are_refused() {
    let app = app().await;
    let (browser, _) = signed_in_browser(&app).await;
    let query = r#"{"query":"mutation { signOut }"}"#;
    for content_type in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let res = browser
            .post(app.url("/graphql"))
            .header(header::CONTENT_TYPE, content_type)
            .body(query)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 415, "{content_type}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(error_code(&body), Some("UNSUPPORTED_MEDIA_TYPE"));
    }
    let res = browser
        .post(app.url("/graphql"))
        .body(query)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415, "no content type");
    // Still signed in: none of those ran.
    let (status, body) = me_from(&browser, &app, None).await;
    assert_eq!(status, 200);
    assert!(body["data"]["me"].is_object(), "{body}");
    app.shutdown().await;
}
