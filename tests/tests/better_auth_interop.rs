//! Interop with the real `better-auth` package (Drizzle adapter, PostgreSQL) sharing one
//! database with this server: a user who signed up through Better Auth signs in here with the
//! same password; the cookie Better Auth issued authenticates `me` here; a session created here
//! is accepted by Better Auth's `getSession`.
//!
//! Run: `(cd tests/interop && npm ci) && TEST_BACKEND=postgres cargo test -p tests --test better_auth_interop`

use std::path::PathBuf;
use std::process::Command;

use reqwest::header;
use serde_json::{Value, json};
use tests::{TEST_SECRET, TestApp, TestBackend, spawn_app};

const BETTER_AUTH_URL: &str = "http://localhost:4000";

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// Run the Better Auth side and parse the JSON it prints.
async fn better_auth(app: &TestApp, args: &[&str]) -> Value {
    let dir = interop_dir();
    assert!(
        dir.join("node_modules/better-auth").exists(),
        "better-auth is not installed: run `npm ci` in {}",
        dir.display()
    );
    let url = app.database.url.clone();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("interop.mjs")
            .args(&args)
            .current_dir(&dir)
            .env("DATABASE_URL", url)
            .env("BETTER_AUTH_SECRET", TEST_SECRET)
            .env("BETTER_AUTH_URL", BETTER_AUTH_URL)
            .env("TZ", "UTC")
            .output()
            .expect("run node (Node.js 20 or later must be installed)")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "better-auth side failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from interop.mjs")
}

async fn app() -> TestApp {
    assert_eq!(
        tests::backend(),
        TestBackend::Postgres,
        "Better Auth's Drizzle adapter needs PostgreSQL: run with TEST_BACKEND=postgres"
    );
    spawn_app().await
}

#[tokio::test]
async fn a_better_auth_user_signs_in_here_and_its_cookie_works_here() {
    let app = app().await;
    let out = better_auth(
        &app,
        &[
            "sign-up",
            "Grace@Example.com",
            "better auth password",
            "Grace",
        ],
    )
    .await;
    let user_id = out["userId"].as_str().unwrap();
    let hash = out["passwordHash"].as_str().unwrap();
    let (salt, key) = hash
        .split_once(':')
        .expect("Better Auth's salt:key scrypt format");
    assert_eq!((salt.len(), key.len()), (32, 128), "{hash}");

    // The same password signs in here (scrypt verification).
    let body = app
        .gql(
            None,
            "mutation($i: SignInInput!) { signIn(input: $i) { user { id email } } }",
            json!({ "i": { "email": "grace@example.com", "password": "better auth password" } }),
        )
        .await;
    assert_eq!(body["data"]["signIn"]["user"]["id"], user_id, "{body}");
    let wrong = app
        .gql(
            None,
            "mutation($i: SignInInput!) { signIn(input: $i) { token } }",
            json!({ "i": { "email": "grace@example.com", "password": "not the password" } }),
        )
        .await;
    assert_eq!(tests::error_code(&wrong), Some("INVALID_CREDENTIALS"));

    // The cookie Better Auth set authenticates here, and the user gets a default profile.
    let set_cookie = out["setCookie"].as_str().expect("Better Auth set a cookie");
    let cookie = set_cookie
        .split(|c| c == ';' || c == ',')
        .map(str::trim)
        .find(|c| c.starts_with("better-auth.session_token="))
        .expect("a session cookie");
    let me: Value = app
        .http
        .post(app.url("/graphql"))
        .header(header::COOKIE, cookie)
        .json(&json!({ "query": "{ me { id email name profile { defaultModel } } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["data"]["me"]["id"], user_id, "{me}");
    assert_eq!(me["data"]["me"]["name"], "Grace");
    assert_eq!(me["data"]["me"]["profile"]["defaultModel"], "gpt-4o-mini");
    app.shutdown().await;
}

#[tokio::test]
async fn a_session_created_here_is_accepted_by_better_auth() {
    let app = app().await;
    let u = app.sign_up("ada@example.com").await;
    let res = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({
            "query": "mutation($i: SignInInput!) { signIn(input: $i) { token } }",
            "variables": { "i": { "email": u.email, "password": u.password } }
        }))
        .send()
        .await
        .unwrap();
    let cookie = res
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let body: Value = res.json().await.unwrap();
    let token = body["data"]["signIn"]["token"].as_str().unwrap();

    let session = better_auth(&app, &["get-session", &cookie]).await;
    assert_eq!(session["session"]["token"], token, "{session}");
    assert_eq!(session["user"]["id"], u.id.as_str());
    assert_eq!(session["user"]["email"], "ada@example.com");

    // A forged cookie is refused by Better Auth too.
    let forged =
        format!("better-auth.session_token={token}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D");
    assert!(better_auth(&app, &["get-session", &forged]).await.is_null());
    app.shutdown().await;
}
