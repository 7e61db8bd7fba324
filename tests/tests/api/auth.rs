//! Accounts and sessions: sign-up, sign-in, cookies and bearer tokens, sliding sessions,
//! sign-out, and every refusal.

use chrono::Utc;
use entity::prelude::*;
use entity::user_profiles;
use reqwest::header;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, Set,
};
use serde_json::{Value, json};
use tests::{TestApp, error_code, spawn_app, spawn_app_with_env};

const ME: &str = "{ me { id email name emailVerified profile { defaultModel monthlyTokenBudget tokensUsedThisMonth } } }";
const SIGN_IN: &str =
    "mutation($i: SignInInput!) { signIn(input: $i) { token user { id email } } }";
const SIGN_UP: &str = "mutation($i: SignUpInput!) { signUp(input: $i) { token user { id } } }";

async fn row_counts(app: &TestApp) -> [u64; 4] {
    [
        User::find().count(&app.db).await.unwrap(),
        Account::find().count(&app.db).await.unwrap(),
        UserProfiles::find().count(&app.db).await.unwrap(),
        Session::find().count(&app.db).await.unwrap(),
    ]
}

fn sign_up_vars(email: &str, password: &str, name: &str) -> Value {
    json!({ "i": { "email": email, "password": password, "name": name } })
}

#[tokio::test]
async fn sign_up_writes_user_credential_profile_and_session() {
    let app = spawn_app_with_env(&[
        ("DEFAULT_MODEL", "gpt-4.1-mini"),
        ("DEFAULT_MONTHLY_TOKEN_BUDGET", "250000"),
    ])
    .await;
    let u = app.sign_up("  Ada@Example.COM ").await;
    assert_eq!(u.email, "ada@example.com");
    assert_eq!(u.token.len(), 32);
    assert!(u.token.chars().all(|c| c.is_ascii_alphanumeric()));

    let acct = Account::find().one(&app.db).await.unwrap().unwrap();
    assert_eq!(
        (
            acct.provider_id.as_str(),
            acct.account_id.as_str(),
            acct.user_id.as_str()
        ),
        ("credential", u.id.as_str(), u.id.as_str())
    );
    let hash = acct.password.unwrap();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    let profile = UserProfiles::find().one(&app.db).await.unwrap().unwrap();
    assert_eq!(
        (profile.default_model.as_str(), profile.monthly_token_budget),
        ("gpt-4.1-mini", 250_000)
    );
    let s = Session::find().one(&app.db).await.unwrap().unwrap();
    assert_eq!(s.token, u.token);
    assert_eq!(s.ip_address.as_deref(), Some("127.0.0.1"));
    let ttl = s.expires_at - Utc::now().naive_utc();
    assert!(
        ttl > chrono::Duration::days(7) - chrono::Duration::minutes(1)
            && ttl <= chrono::Duration::days(7),
        "{ttl}"
    );

    let me = app.gql(Some(&u.token), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["email"], "ada@example.com");
    assert_eq!(me["data"]["me"]["emailVerified"], false);
    assert_eq!(me["data"]["me"]["profile"]["monthlyTokenBudget"], "250000");
    assert_eq!(me["data"]["me"]["profile"]["tokensUsedThisMonth"], "0");
    app.shutdown().await;
}

#[tokio::test]
async fn sign_up_refuses_bad_input_and_writes_nothing() {
    let app = spawn_app().await;
    for (email, password, name) in [
        ("not-an-email", "long enough pw", "N"),
        ("a@example.com", "short", "N"),
        ("a@example.com", &"x".repeat(129), "N"),
        ("a@example.com", "long enough pw", "   "),
    ] {
        let body = app
            .gql(None, SIGN_UP, sign_up_vars(email, password, name))
            .await;
        assert_eq!(
            error_code(&body),
            Some("BAD_USER_INPUT"),
            "{email} {password} {name}: {body}"
        );
        assert!(body["data"].is_null());
    }
    assert_eq!(row_counts(&app).await, [0, 0, 0, 0]);
    app.shutdown().await;
}

#[tokio::test]
async fn a_taken_email_gives_email_taken_and_writes_nothing() {
    let app = spawn_app().await;
    app.sign_up("ada@example.com").await;
    let before = row_counts(&app).await;
    let body = app
        .gql(
            None,
            SIGN_UP,
            sign_up_vars(" ADA@example.com", "another password", "Ada 2"),
        )
        .await;
    assert_eq!(error_code(&body), Some("EMAIL_TAKEN"), "{body}");
    assert_eq!(row_counts(&app).await, before);
    app.shutdown().await;
}

#[tokio::test]
async fn concurrent_sign_ups_for_one_email_create_one_account() {
    let app = spawn_app().await;
    let attempts = (0..4).map(|_| {
        app.gql(
            None,
            SIGN_UP,
            sign_up_vars("race@example.com", "long enough pw", "R"),
        )
    });
    let results = futures_util::future::join_all(attempts).await;
    let ok = results
        .iter()
        .filter(|b| b["data"]["signUp"].is_object())
        .count();
    let taken = results
        .iter()
        .filter(|b| error_code(b) == Some("EMAIL_TAKEN"))
        .count();
    assert_eq!((ok, taken), (1, 3), "{results:?}");
    assert_eq!(row_counts(&app).await, [1, 1, 1, 1]);
    app.shutdown().await;
}

#[tokio::test]
async fn sign_in_checks_the_password_and_answers_alike_for_unknown_emails() {
    let app = spawn_app().await;
    let u = app.sign_up("ada@example.com").await;

    let ok = app
        .gql(
            None,
            SIGN_IN,
            json!({ "i": { "email": "ADA@example.com", "password": u.password } }),
        )
        .await;
    let token = ok["data"]["signIn"]["token"].as_str().expect("signed in");
    assert_ne!(token, u.token, "each sign-in is a new session");
    assert_eq!(ok["data"]["signIn"]["user"]["id"], u.id.as_str());

    let wrong = app
        .gql(
            None,
            SIGN_IN,
            json!({ "i": { "email": "ada@example.com", "password": "wrong password" } }),
        )
        .await;
    let unknown = app
        .gql(
            None,
            SIGN_IN,
            json!({ "i": { "email": "nobody@example.com", "password": "wrong password" } }),
        )
        .await;
    let malformed = app
        .gql(
            None,
            SIGN_IN,
            json!({ "i": { "email": "nobody", "password": "wrong password" } }),
        )
        .await;
    for body in [&wrong, &unknown, &malformed] {
        assert_eq!(error_code(body), Some("INVALID_CREDENTIALS"), "{body}");
        assert!(body["data"].is_null());
    }
    assert_eq!(
        wrong["errors"][0]["message"],
        unknown["errors"][0]["message"]
    );
    assert_eq!(Session::find().count(&app.db).await.unwrap(), 2);
    app.shutdown().await;
}

#[tokio::test]
async fn bearer_tokens_authenticate_and_bad_ones_do_not() {
    let app = spawn_app().await;
    let u = app.sign_up("ada@example.com").await;
    assert_eq!(
        app.gql(Some(&u.token), "{ me { id } }", json!({})).await["data"]["me"]["id"],
        u.id.as_str()
    );
    for bad in [
        "",
        "nope",
        &u.token.to_lowercase(),
        &format!("{}x", u.token),
    ] {
        let body = app.gql(Some(bad), "{ me { id } }", json!({})).await;
        assert!(body["data"]["me"].is_null(), "{bad}: {body}");
    }
    // Protected fields say UNAUTHENTICATED rather than answering.
    let body = app
        .gql(
            None,
            "mutation { updateProfile(input: { displayName: \"x\" }) { displayName } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), Some("UNAUTHENTICATED"), "{body}");
    let body = app
        .gql(Some(&u.token), "mutation { updateProfile(input: { displayName: \" Ada \" }) { displayName defaultModel } }", json!({}))
        .await;
    assert_eq!(
        body["data"]["updateProfile"]["displayName"], "Ada",
        "{body}"
    );
    app.shutdown().await;
}

fn set_cookie(res: &reqwest::Response) -> String {
    res.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("better-auth.session_token="))
        .expect("a session Set-Cookie")
}

#[tokio::test]
async fn the_session_cookie_is_better_auths_and_authenticates() {
    let app = spawn_app().await;
    let u = app.sign_up("ada@example.com").await;
    let browser = app.browser();
    let res = browser
        .post(app.url("/graphql"))
        .json(&json!({ "query": SIGN_IN, "variables": { "i": { "email": u.email, "password": u.password } } }))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&res);
    let body: Value = res.json().await.unwrap();
    let token = body["data"]["signIn"]["token"].as_str().unwrap();
    assert_eq!(
        cookie,
        format!(
            "better-auth.session_token={}; HttpOnly; SameSite=Lax; Path=/; Max-Age=604800",
            tests::signed_cookie_value(token)
        )
    );
    // The browser now sends it back.
    let me: Value = browser
        .post(app.url("/graphql"))
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["data"]["me"]["id"], u.id.as_str());

    // A cookie whose signature is wrong is ignored.
    let forged =
        format!("better-auth.session_token={token}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D");
    let me: Value = app
        .http
        .post(app.url("/graphql"))
        .header(header::COOKIE, forged)
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(me["data"]["me"].is_null(), "{me}");
    app.shutdown().await;
}

#[tokio::test]
async fn https_cookies_are_secure_prefixed() {
    let app = spawn_app_with_env(&[("BETTER_AUTH_URL", "https://app.example.com")]).await;
    let body = app
        .gql(
            None,
            SIGN_UP,
            sign_up_vars("ada@example.com", "long enough pw", "Ada"),
        )
        .await;
    assert!(body["data"]["signUp"].is_object(), "{body}");
    let res = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": SIGN_IN, "variables": { "i": { "email": "ada@example.com", "password": "long enough pw" } } }))
        .send()
        .await
        .unwrap();
    let cookie = res
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.starts_with("__Secure-better-auth.session_token="),
        "{cookie}"
    );
    assert!(cookie.contains("; Secure"), "{cookie}");
    app.shutdown().await;
}

#[tokio::test]
async fn sessions_slide_after_a_day_and_expired_ones_are_refused_and_deleted() {
    let app = spawn_app().await;
    let u = app.sign_up("ada@example.com").await;
    let s = Session::find().one(&app.db).await.unwrap().unwrap();

    // Used less than a day after the last refresh: unchanged.
    app.gql(Some(&u.token), "{ me { id } }", json!({})).await;
    assert_eq!(
        Session::find()
            .one(&app.db)
            .await
            .unwrap()
            .unwrap()
            .expires_at,
        s.expires_at
    );

    // Last refreshed two days ago: the expiry moves to now + 7 days.
    let mut aged = s.clone().into_active_model();
    aged.expires_at = Set(s.expires_at - chrono::Duration::days(2));
    aged.updated_at = Set(s.updated_at - chrono::Duration::days(2));
    aged.update(&app.db).await.unwrap();
    let me = app.gql(Some(&u.token), "{ me { id } }", json!({})).await;
    assert_eq!(me["data"]["me"]["id"], u.id.as_str());
    let slid = Session::find().one(&app.db).await.unwrap().unwrap();
    assert!(
        slid.expires_at >= s.expires_at,
        "{} < {}",
        slid.expires_at,
        s.expires_at
    );

    // Expired: refused, and the row is gone.
    let mut expired = slid.into_active_model();
    expired.expires_at = Set(Utc::now().naive_utc() - chrono::Duration::seconds(1));
    expired.update(&app.db).await.unwrap();
    let me = app.gql(Some(&u.token), "{ me { id } }", json!({})).await;
    assert!(me["data"]["me"].is_null(), "{me}");
    assert_eq!(Session::find().count(&app.db).await.unwrap(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn sign_out_deletes_the_session_and_clears_the_cookie() {
    let app = spawn_app().await;
    let u = app.sign_up("ada@example.com").await;
    let other = app.sign_up("bob@example.com").await;
    let res = app
        .http
        .post(app.url("/graphql"))
        .header(
            header::COOKIE,
            format!(
                "better-auth.session_token={}",
                tests::signed_cookie_value(&u.token)
            ),
        )
        .json(&json!({ "query": "mutation { signOut }" }))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&res);
    assert!(cookie.contains("Max-Age=0"), "{cookie}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["data"]["signOut"], true);
    let left: Vec<String> = Session::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.user_id)
        .collect();
    assert_eq!(
        left,
        std::slice::from_ref(&other.id),
        "only the signed-out session is gone"
    );
    assert!(app.gql(Some(&u.token), "{ me { id } }", json!({})).await["data"]["me"].is_null());
    // Signing out when signed out is harmless.
    assert_eq!(
        app.gql(None, "mutation { signOut }", json!({})).await["data"]["signOut"],
        false
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_better_auth_user_without_a_profile_gets_the_default_one() {
    let app = spawn_app().await;
    let u = app.sign_up("ada@example.com").await;
    // As if the user had signed up through a Better Auth app, which writes no profile, and had
    // 42 tokens metered this month. (As the owner: the request role may not delete profiles.)
    let owner = app.direct().await;
    entity::user_profiles::Entity::delete_many()
        .filter(user_profiles::Column::UserId.eq(u.id.as_str()))
        .exec(&owner)
        .await
        .unwrap();
    entity::usage_monthly::ActiveModel {
        user_id: Set(u.id.clone()),
        month: Set(api::time::month_key(Utc::now())),
        calls: Set(1),
        prompt_tokens: Set(30),
        completion_tokens: Set(12),
        cost_microcents: Set(0),
    }
    .insert(&owner)
    .await
    .unwrap();
    // The profile is created by this read; its month's tokens are then read from the rollup,
    // and from the next read on come with the profile.
    for _ in 0..2 {
        let me = app.gql(Some(&u.token), ME, json!({})).await;
        let profile = &me["data"]["me"]["profile"];
        assert_eq!(profile["defaultModel"], "gpt-4o-mini", "{me}");
        assert_eq!(profile["tokensUsedThisMonth"], "42", "{me}");
    }
    assert_eq!(UserProfiles::find().count(&app.db).await.unwrap(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn sign_in_and_sign_up_are_rate_limited_per_ip_and_per_email() {
    let app = spawn_app_with_env(&[
        ("AUTH_RATE_LIMIT_MAX", "3"),
        ("AUTH_RATE_LIMIT_WINDOW_SECS", "60"),
        ("TRUST_PROXY", "true"),
    ])
    .await;
    let attempt = |ip: &'static str, email: &'static str| {
        let app = &app;
        async move {
            let res = app
                .http
                .post(app.url("/graphql"))
                .header("x-forwarded-for", ip)
                .json(&json!({ "query": SIGN_IN, "variables": { "i": { "email": email, "password": "wrong password" } } }))
                .send()
                .await
                .unwrap();
            res.json::<Value>().await.unwrap()
        }
    };
    for _ in 0..3 {
        assert_eq!(
            error_code(&attempt("10.0.0.1", "a@example.com").await),
            Some("INVALID_CREDENTIALS")
        );
    }
    let limited = attempt("10.0.0.1", "b@example.com").await;
    assert_eq!(error_code(&limited), Some("RATE_LIMITED"), "{limited}");
    assert!(
        limited["errors"][0]["extensions"]["retryAfter"]
            .as_u64()
            .unwrap()
            >= 1
    );
    // The email that was hammered is limited from any address; other emails are not.
    assert_eq!(
        error_code(&attempt("10.0.0.2", "a@example.com").await),
        Some("RATE_LIMITED")
    );
    assert_eq!(
        error_code(&attempt("10.0.0.3", "c@example.com").await),
        Some("INVALID_CREDENTIALS")
    );
    // Sign-up shares the limit.
    let body = app
        .http
        .post(app.url("/graphql"))
        .header("x-forwarded-for", "10.0.0.1")
        .json(&json!({ "query": SIGN_UP, "variables": sign_up_vars("new@example.com", "long enough pw", "N") }))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(error_code(&body), Some("RATE_LIMITED"), "{body}");
    assert_eq!(User::find().count(&app.db).await.unwrap(), 0);
    app.shutdown().await;
}

/// The grouped session check (a WebSocket's calls re-check their session together): one
/// answer per token in order, an unknown token `None`, a repeated one answered as the first.
/// For calls, each comes with its user's limit overrides (none without a `user_limits` row).
#[tokio::test]
async fn sessions_resolved_together_answer_each_token_in_order() {
    use api::auth::session::LimitOverrides;
    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let config = api::config::Config::from_vars(tests::base_vars(&app.database)).unwrap();
    api::service::admin::set_limits(&config, &bob.email, Some(3), None)
        .await
        .unwrap();
    let tokens: Vec<String> = [&ada.token, "not-a-session", &bob.token, &ada.token]
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
    for for_calls in [false, true] {
        let resolved = api::auth::session::resolve_many(&app.db, &tokens, for_calls)
            .await
            .expect("resolve");
        let users: Vec<Option<(&str, Option<LimitOverrides>)>> = resolved
            .iter()
            .map(|r| r.as_ref().map(|a| (a.user.email.as_str(), a.limits)))
            .collect();
        let (none, bob_s) = if for_calls {
            (
                Some(LimitOverrides::default()),
                Some(LimitOverrides {
                    max_concurrent_calls: Some(3),
                    calls_per_minute: None,
                }),
            )
        } else {
            (None, None)
        };
        assert_eq!(
            users,
            [
                Some(("ada@example.com", none)),
                None,
                Some(("bob@example.com", bob_s)),
                Some(("ada@example.com", none))
            ]
        );
    }
}

/// A pool of one connection to the test database, so that what it prepared can be read back.
async fn one_connection(app: &TestApp) -> api::db::Db {
    let mut options = sea_orm::ConnectOptions::new(app.database.direct_url().to_owned());
    options.max_connections(1).min_connections(1);
    api::db::Db::orm(sea_orm::Database::connect(options).await.unwrap())
}

/// `columns` of `pg_prepared_statements` for the session lookups that `db`'s one connection
/// prepared (PostgreSQL).
async fn prepared_session_lookups(db: &api::db::Db, columns: &str) -> Vec<sea_orm::QueryResult> {
    db.query_all_raw(sea_orm::Statement::from_string(
        DbBackend::Postgres,
        format!(
            "SELECT {columns} FROM pg_prepared_statements \
             WHERE statement LIKE 'SELECT %FROM \"session\"%' \
             AND statement NOT LIKE '%pg_prepared_statements%'"
        ),
    ))
    .await
    .unwrap()
}

/// A session looked up alone, again and again (one client), is planned once, not on every run:
/// after five custom plans PostgreSQL keeps a generic one for the statement. This is why the
/// grouped lookups keep IN lists (`api::grouped::padded`) rather than `= ANY($1)` with the
/// tokens as one array: one text for every size, but PostgreSQL's generic plan for it assumes
/// ten elements, so it never beats a custom plan for one and the statement is replanned each
/// time (PostgreSQL's CPU per `tokensUsedThisMonth` request doubled; docs/performance.md,
/// fourteenth round).
#[tokio::test]
async fn a_lone_session_lookup_is_planned_once_for_all_its_runs() {
    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.com").await;
    let db = one_connection(&app).await;
    for _ in 0..7 {
        let one = api::auth::session::resolve_many(&db, std::slice::from_ref(&ada.token), false)
            .await
            .expect("resolve");
        assert!(one[0].as_ref().is_some_and(|a| a.user.id == ada.id));
    }
    if db.get_database_backend() == DbBackend::Postgres {
        let plans: Vec<(i64, i64)> = prepared_session_lookups(&db, "generic_plans, custom_plans")
            .await
            .iter()
            .map(|r| {
                (
                    r.try_get_by_index(0).unwrap(),
                    r.try_get_by_index(1).unwrap(),
                )
            })
            .collect();
        // One text, run seven times: five custom plans, then the generic one kept.
        assert_eq!(plans, [(2, 5)], "(generic, custom) plans of the lookup");
    }
    db.close().await;
    app.shutdown().await;
}

/// Sessions resolved in groups of 1 to 9 tokens make five statement texts, not nine: the IN
/// list is padded to a power of two (`api::grouped::padded`), and every repeated token still gets
/// its own answer. On PostgreSQL the texts are counted where the connection prepared them.
#[tokio::test]
async fn grouped_lookups_of_any_size_share_a_few_statements() {
    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.com").await;
    let db = one_connection(&app).await;
    for n in 1..=9 {
        let mut tokens = vec![ada.token.clone(); n];
        tokens[n - 1] = format!("not-a-session-{n}");
        let resolved = api::auth::session::resolve_many(&db, &tokens, false)
            .await
            .expect("resolve");
        assert_eq!(resolved.len(), n);
        assert!(
            resolved[..n - 1]
                .iter()
                .all(|r| r.as_ref().is_some_and(|a| a.user.id == ada.id))
        );
        assert!(resolved[n - 1].is_none());
    }
    if db.get_database_backend() == DbBackend::Postgres {
        let texts = prepared_session_lookups(&db, "statement").await;
        // Lists of 1, 2, 4, 8 and 16 tokens.
        assert_eq!(texts.len(), 5);
    }
    db.close().await;
    app.shutdown().await;
}
