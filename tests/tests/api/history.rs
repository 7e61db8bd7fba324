//! The read side: the history feed (keyset pagination, isolation, cursors, filters), a log
//! visible to its owner only, and the batching of nested fields.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Duration, TimeZone, Utc};
use entity::prompt_logs::{self, CallStatus};
use sea_orm::{ActiveModelTrait, Set};
use serde_json::{Value, json};
use tests::{TestApp, TestUser, error_code, spawn_app};
use uuid::Uuid;

use crate::completions::COMPLETE;

const PAGE: &str =
    "query($first: Int, $after: String, $last: Int, $before: String, $filter: HistoryFilter) {
  history(first: $first, after: $after, last: $last, before: $before, filter: $filter) {
    edges { cursor node { id model status } }
    nodes { id }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}";

/// A final log at `at`, inserted directly (as the pipeline would have left it).
async fn log_at(
    app: &TestApp,
    user_id: &str,
    at: DateTime<Utc>,
    model: &str,
    status: CallStatus,
) -> prompt_logs::Model {
    prompt_logs::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id.to_owned()),
        model: Set(model.to_owned()),
        prompt: Set("p".into()),
        completion: Set(Some("c".into())),
        prompt_tokens: Set(1),
        completion_tokens: Set(1),
        latency_ms: Set(Some(1)),
        status: Set(status),
        metadata: Set(None),
        created_at: Set(at),
    }
    .insert(&app.db)
    .await
    .unwrap()
}

/// 25 logs on 5 timestamps (5 ties each); returns their ids newest first, ties by id descending.
async fn seed_feed(app: &TestApp, user_id: &str) -> Vec<String> {
    let base = Utc.with_ymd_and_hms(2026, 11, 2, 12, 0, 0).unwrap();
    let mut logs = Vec::new();
    for i in 0..25 {
        let at = base + Duration::milliseconds(i64::from(i / 5) * 1500);
        let (model, status) = if i % 3 == 0 {
            ("gpt-4o", CallStatus::Error)
        } else {
            ("gpt-4o-mini", CallStatus::Ok)
        };
        logs.push(log_at(app, user_id, at, model, status).await);
    }
    logs.sort_by_key(|l| std::cmp::Reverse((l.created_at, l.id)));
    logs.iter().map(|l| l.id.to_string()).collect()
}

async fn page(app: &TestApp, user: &TestUser, vars: Value) -> Value {
    app.gql(Some(&user.token), PAGE, vars).await
}

fn ids(body: &Value) -> Vec<String> {
    body["data"]["history"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn pages_are_exact_in_both_directions_with_tied_timestamps() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let expected = seed_feed(&app, &user.id).await;

    // Forward, 7 at a time: every log once, in order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let body = page(&app, &user, json!({ "first": 7, "after": after })).await;
        let info = &body["data"]["history"]["pageInfo"];
        assert_eq!(info["hasPreviousPage"], pages > 0, "page {pages}: {info}");
        let got = ids(&body);
        let nodes: Vec<&str> = body["data"]["history"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            nodes,
            got.iter().map(String::as_str).collect::<Vec<_>>(),
            "nodes mirror edges"
        );
        seen.extend(got);
        pages += 1;
        if info["hasNextPage"] == false {
            break;
        }
        after = Some(info["endCursor"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, 4);

    // Backward from the end, 7 at a time: the same logs, in the same order.
    let mut back: Vec<String> = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let body = page(&app, &user, json!({ "last": 7, "before": before })).await;
        let info = &body["data"]["history"]["pageInfo"];
        let mut got = ids(&body);
        got.extend(back);
        back = got;
        if info["hasPreviousPage"] == false {
            break;
        }
        assert_eq!(info["hasNextPage"], before.is_some());
        before = Some(info["startCursor"].as_str().unwrap().to_owned());
    }
    assert_eq!(back, expected);

    // Boundaries: a page that ends exactly at the last log, an empty page, the default size.
    let body = page(&app, &user, json!({ "first": 25 })).await;
    assert_eq!(ids(&body), expected);
    assert_eq!(body["data"]["history"]["pageInfo"]["hasNextPage"], false);
    let body = page(&app, &user, json!({ "first": 0 })).await;
    assert!(ids(&body).is_empty());
    let body = page(&app, &user, json!({})).await;
    assert_eq!(ids(&body), expected[..20]);
    // After the 5th log (inside a group of ties), the next page starts exactly at the 6th.
    let fifth =
        page(&app, &user, json!({ "first": 5 })).await["data"]["history"]["pageInfo"]["endCursor"]
            .clone();
    let body = page(&app, &user, json!({ "first": 3, "after": fifth })).await;
    assert_eq!(ids(&body), expected[5..8]);
    app.shutdown().await;
}

#[tokio::test]
async fn filters_narrow_the_feed() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    seed_feed(&app, &user.id).await;
    let body = page(
        &app,
        &user,
        json!({ "first": 100, "filter": { "model": "gpt-4o" } }),
    )
    .await;
    let edges = body["data"]["history"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 9);
    assert!(
        edges
            .iter()
            .all(|e| e["node"]["model"] == "gpt-4o" && e["node"]["status"] == "ERROR")
    );
    let body = page(
        &app,
        &user,
        json!({ "first": 100, "filter": { "status": "OK" } }),
    )
    .await;
    assert_eq!(ids(&body).len(), 16);
    let body = page(
        &app,
        &user,
        json!({ "first": 100, "filter": { "model": "gpt-4o", "status": "OK" } }),
    )
    .await;
    assert!(ids(&body).is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn users_see_only_their_own_logs_and_cursors() {
    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let ada_ids = seed_feed(&app, &ada.id).await;
    let bob_log = log_at(&app, &bob.id, Utc::now(), "gpt-4o-mini", CallStatus::Ok).await;

    let body = page(&app, &bob, json!({ "first": 100 })).await;
    assert_eq!(ids(&body), [bob_log.id.to_string()]);
    let body = page(&app, &ada, json!({ "first": 100 })).await;
    assert_eq!(ids(&body), ada_ids);

    // Ada's cursor is not Bob's to use; forged cursors are refused as cleanly.
    let ada_cursor =
        page(&app, &ada, json!({ "first": 1 })).await["data"]["history"]["pageInfo"]["endCursor"]
            .clone();
    for cursor in [ada_cursor, json!("not-a-cursor"), json!("eyJ4Ijox.AAAA")] {
        let body = page(&app, &bob, json!({ "first": 5, "after": cursor })).await;
        assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{body}");
        assert!(body["data"].is_null());
    }
    // Signed out: UNAUTHENTICATED.
    let body = app.gql(None, PAGE, json!({ "first": 1 })).await;
    assert_eq!(error_code(&body), Some("UNAUTHENTICATED"));
    app.shutdown().await;
}

#[tokio::test]
async fn page_sizes_are_capped() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    for vars in [
        json!({ "first": 101 }),
        json!({ "last": 101 }),
        json!({ "first": -1 }),
        json!({ "first": 1, "last": 1 }),
        json!({ "first": 1, "before": "x" }),
        json!({ "last": 1, "after": "x" }),
    ] {
        let body = page(&app, &user, vars.clone()).await;
        assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{vars}: {body}");
    }
    assert!(page(&app, &user, json!({ "first": 100 })).await["errors"].is_null());
    app.shutdown().await;
}

#[tokio::test]
async fn a_log_is_visible_to_its_owner_only() {
    let app = spawn_app().await;
    let ada = app.sign_up("ada@example.com").await;
    let bob = app.sign_up("bob@example.com").await;
    let body = app
        .gql(
            Some(&ada.token),
            COMPLETE,
            json!({ "i": { "prompt": "mine @@tokens=2" } }),
        )
        .await;
    let id = body["data"]["complete"]["id"].as_str().unwrap();
    let q = "query($id: ID!) { promptLog(id: $id) { id user { email } } }";
    let own = app.gql(Some(&ada.token), q, json!({ "id": id })).await;
    assert_eq!(own["data"]["promptLog"]["user"]["email"], "ada@example.com");
    let other = app.gql(Some(&bob.token), q, json!({ "id": id })).await;
    assert!(
        other["data"]["promptLog"].is_null() && other["errors"].is_null(),
        "{other}"
    );
    let missing = app
        .gql(
            Some(&bob.token),
            q,
            json!({ "id": uuid::Uuid::new_v4().to_string() }),
        )
        .await;
    assert!(missing["data"]["promptLog"].is_null());
    app.shutdown().await;
}

#[tokio::test]
async fn nested_fields_are_batched_a_constant_number_of_statements() {
    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    for _ in 0..100 {
        log_at(&app, &user.id, Utc::now(), "gpt-4o-mini", CallStatus::Ok).await;
    }
    let q = "query($n: Int) { history(first: $n) { edges { node { id costMicrocents user { email profile { defaultModel tokensUsedThisMonth } } } } } }";
    let statements = app.statements();
    let mut counts = Vec::new();
    for n in [1, 10, 100] {
        let before = statements.load(Ordering::SeqCst);
        let body = app.gql(Some(&user.token), q, json!({ "n": n })).await;
        assert_eq!(
            body["data"]["history"]["edges"].as_array().map(Vec::len),
            Some(n as usize),
            "{body}"
        );
        counts.push(statements.load(Ordering::SeqCst) - before);
    }
    // The session lookup (which brings the signed-in user, their profile and their month's
    // tokens: every log here is theirs), the page and the costs, whatever the page's size.
    assert_eq!(counts, [3, 3, 3]);
    // A usage meter: the session lookup alone.
    let before = statements.load(Ordering::SeqCst);
    let body = app
        .gql(
            Some(&user.token),
            "{ me { profile { monthlyTokenBudget tokensUsedThisMonth } } }",
            json!({}),
        )
        .await;
    assert!(
        body["data"]["me"]["profile"]["tokensUsedThisMonth"].is_string(),
        "{body}"
    );
    assert_eq!(statements.load(Ordering::SeqCst) - before, 1);
    app.shutdown().await;
}

/// A page deep in a long feed learns whether a page lies beyond it from one row read off the
/// index, on either side, not from every row on that side (it once counted them all: SeaORM's
/// `count` drops a query's limit; 16 ms of PostgreSQL's CPU for a page 5,000 rows deep). The
/// plan is checked as PostgreSQL runs it for the server: generic, from a prepared statement.
#[tokio::test]
async fn a_deep_page_reads_one_row_to_know_what_lies_beyond() {
    use api::service::history::{self, Filter};
    use api::service::keyset::{Side, nearest_beyond};
    use sea_orm::sea_query::QueryBuilder;
    use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, QueryTrait, Statement};

    let app = spawn_app().await;
    let user = app.sign_up("deep@example.com").await;
    let other = app.sign_up("other@example.com").await;
    let base = Utc.with_ymd_and_hms(2026, 11, 2, 12, 0, 0).unwrap();
    let row = |user_id: &str, i: i64| prompt_logs::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id.to_owned()),
        model: Set("gpt-4o-mini".into()),
        prompt: Set("p".into()),
        completion: Set(Some("c".into())),
        prompt_tokens: Set(1),
        completion_tokens: Set(1),
        latency_ms: Set(Some(1)),
        status: Set(CallStatus::Ok),
        metadata: Set(None),
        created_at: Set(base + Duration::seconds(i)),
    };
    // 3,000 logs of the user's, one a second, and as many of another user's around them.
    let mut rows: Vec<_> = (0..3000).map(|i| row(&user.id, i)).collect();
    rows.extend((0..3000).map(|i| row(&other.id, i)));
    for chunk in rows.chunks(500) {
        prompt_logs::Entity::insert_many(chunk.to_vec())
            .exec(&app.db)
            .await
            .unwrap();
    }
    let backend = app.db_backend();
    app.exec(match backend {
        DbBackend::Postgres => "ANALYZE prompt_logs",
        _ => "ANALYZE",
    })
    .await
    .unwrap();
    let mine = history::page(
        &app.db,
        &user.id,
        &Filter::default(),
        history::Window::Forward {
            first: 3000,
            after: None,
        },
        history::Texts::ALL,
    )
    .await
    .unwrap()
    .items;
    assert_eq!(mine.len(), 3000);
    // Newest first: 1,000 rows are newer than the key, 1,999 older.
    let key = (mine[1000].created_at, mine[1000].id);

    for (side, nearest) in [(Side::Newer, &mine[999]), (Side::Older, &mine[1001])] {
        let query = nearest_beyond(
            history::feed(&user.id, &Filter::default()),
            &history::ORDER,
            key,
            side,
        );
        let found: Option<Uuid> = query.clone().into_tuple().one(&app.db).await.unwrap();
        assert_eq!(found, Some(nearest.id), "{side:?}");
        let statement = query.build(backend);
        let explain = |prefix: &str| {
            Statement::from_sql_and_values(
                backend,
                format!("{prefix} {}", statement.sql),
                statement.values.clone().expect("the query has values").0,
            )
        };
        match backend {
            DbBackend::Postgres => {
                // As the server runs it: a prepared statement, whose plan PostgreSQL makes
                // generic (blind to the values) after five runs; forced here from the first.
                // In one transaction, so that a transaction-mode pooler keeps it on one
                // server connection.
                let values = statement.values.clone().expect("the query has values").0;
                // The values as literals: EXECUTE's arguments cannot be bound parameters.
                let literals: Vec<String> = values
                    .iter()
                    .map(|v| sea_orm::sea_query::PostgresQueryBuilder.value_to_string(v))
                    .collect();
                let tx = app.db.begin().await.unwrap();
                for sql in [
                    "SET LOCAL plan_cache_mode = force_generic_plan".to_owned(),
                    // Each parameter's type inferred from where it is used.
                    format!(
                        "PREPARE beyond ({}) AS {}",
                        vec!["unknown"; values.len()].join(", "),
                        statement.sql
                    ),
                ] {
                    tx.execute_unprepared(&sql).await.unwrap();
                }
                let plan: serde_json::Value = tx
                    .query_one_raw(Statement::from_string(
                        backend,
                        format!(
                            "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE beyond({})",
                            literals.join(", ")
                        ),
                    ))
                    .await
                    .unwrap()
                    .unwrap()
                    .try_get("", "QUERY PLAN")
                    .unwrap();
                tx.execute_unprepared("DEALLOCATE beyond").await.unwrap();
                tx.commit().await.unwrap();
                // Every node of the plan, with the rows it produced.
                let mut nodes = Vec::new();
                let mut stack = vec![&plan[0]["Plan"]];
                while let Some(node) = stack.pop() {
                    nodes.push((
                        node["Node Type"].as_str().unwrap_or("?").to_owned(),
                        node["Actual Rows"].as_f64().unwrap_or(f64::NAN),
                    ));
                    stack.extend(node["Plans"].as_array().into_iter().flatten());
                }
                assert!(
                    nodes
                        .iter()
                        .all(|(ty, rows)| *rows <= 1.0 && !ty.starts_with("Bitmap")),
                    "{side:?}: {nodes:?}"
                );
            }
            _ => {
                let details: Vec<String> = app
                    .db
                    .query_all_raw(explain("EXPLAIN QUERY PLAN"))
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.try_get::<String>("", "detail").unwrap())
                    .collect();
                assert!(
                    details.iter().any(|d| d.starts_with("SEARCH")
                        && d.contains("idx_log_user_time_id")
                        && d.contains("created_at"))
                        && !details.iter().any(|d| d.contains("TEMP B-TREE")),
                    "{side:?}: {details:?}"
                );
            }
        }
    }
}

/// A page reads a log's prompt, completion and metadata only when the query shows them: left
/// out, they come back as stand-ins (which keep a log in flight or final as it is), and the
/// feed shows every text it is asked for, through aliases, fragments and either of `nodes` and
/// `edges { node }`.
#[tokio::test]
async fn a_page_reads_the_texts_the_query_shows_and_only_those() {
    use api::service::history::{self, Filter, Texts, Window};

    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let base = Utc.with_ymd_and_hms(2026, 11, 2, 12, 0, 0).unwrap();
    let log =
        |prompt: &str, completion: Option<&str>, metadata: Value, at| prompt_logs::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user.id.clone()),
            model: Set("gpt-4o".into()),
            prompt: Set(prompt.into()),
            completion: Set(completion.map(Into::into)),
            prompt_tokens: Set(3),
            completion_tokens: Set(if completion.is_some() { 2 } else { 0 }),
            latency_ms: Set(completion.map(|_| 1)),
            status: Set(CallStatus::Ok),
            metadata: Set(Some(metadata)),
            created_at: Set(at),
        };
    let done = log(
        "the prompt",
        Some("the completion"),
        json!({ "finish_reason": "stop" }),
        base,
    )
    .insert(&app.db)
    .await
    .unwrap();
    let running = log(
        "still running",
        None,
        json!({ "stream": true }),
        base + Duration::seconds(1),
    )
    .insert(&app.db)
    .await
    .unwrap();

    // The service, without the texts: stand-ins, with the in-flight log still in flight.
    let window = Window::Forward {
        first: 10,
        after: None,
    };
    let none = Texts {
        prompt: false,
        completion: false,
        metadata: false,
    };
    let bare = history::page(&app.db, &user.id, &Filter::default(), window, none)
        .await
        .unwrap()
        .items;
    assert_eq!(bare.len(), 2);
    assert_eq!((bare[0].id, bare[1].id), (running.id, done.id));
    assert!(bare[0].in_flight() && !bare[1].in_flight());
    assert_eq!((bare[0].prompt.as_str(), bare[1].prompt.as_str()), ("", ""));
    assert_eq!(bare[1].completion.as_deref(), Some(""));
    assert!(bare[0].metadata.is_none() && bare[1].metadata.is_none());
    assert_eq!(
        (bare[1].model.as_str(), bare[1].prompt_tokens),
        ("gpt-4o", 3)
    );
    // With them all: the rows as stored.
    let full = history::page(&app.db, &user.id, &Filter::default(), window, Texts::ALL)
        .await
        .unwrap()
        .items;
    assert_eq!(full, [running.clone(), done.clone()]);

    // Over GraphQL, a page that shows no text still tells in flight from final.
    let q = "{ history { nodes { id inFlight status latencyMs } } }";
    let body = app.gql(Some(&user.token), q, json!({})).await;
    assert_eq!(
        body["data"]["history"]["nodes"],
        json!([
            { "id": running.id.to_string(), "inFlight": true, "status": "OK", "latencyMs": null },
            { "id": done.id.to_string(), "inFlight": false, "status": "OK", "latencyMs": 1 },
        ]),
        "{body}"
    );
    // Each text shown, however it is asked for.
    let expected = json!([
        { "p": "still running", "completion": null, "metadata": { "stream": true } },
        { "p": "the prompt", "completion": "the completion", "metadata": { "finish_reason": "stop" } },
    ]);
    for q in [
        "{ history { edges { node { ...Texts } } } } fragment Texts on PromptLog { p: prompt completion metadata }",
        "{ history { nodes { ... on PromptLog { p: prompt } completion metadata } } }",
    ] {
        let body = app.gql(Some(&user.token), q, json!({})).await;
        let h = &body["data"]["history"];
        let nodes = if h["nodes"].is_array() {
            h["nodes"].clone()
        } else {
            Value::Array(
                h["edges"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{body}"))
                    .iter()
                    .map(|e| e["node"].clone())
                    .collect(),
            )
        };
        assert_eq!(nodes, expected, "{q}: {body}");
    }
    // One text under `nodes` and the others under `edges { node }`: all three are read.
    let q = "{ history { nodes { prompt } edges { node { completion metadata } } } }";
    let body = app.gql(Some(&user.token), q, json!({})).await;
    let h = &body["data"]["history"];
    assert_eq!(h["nodes"][1]["prompt"], "the prompt", "{body}");
    assert_eq!(
        h["edges"][1]["node"]["completion"], "the completion",
        "{body}"
    );
    assert_eq!(
        h["edges"][0]["node"]["metadata"],
        json!({ "stream": true }),
        "{body}"
    );
    app.shutdown().await;
}

/// On PostgreSQL the history page is planned five times per connection and then reused: its
/// LIMIT is in the statement's text (`api::db::limit`). Bound as a parameter, whether PostgreSQL
/// kept a plan hung on its estimates, and on the bench's data it never did: page 1 was planned
/// on every request, a third of PostgreSQL's CPU.
#[tokio::test]
async fn a_page_s_statement_keeps_its_plan() {
    use api::service::history::{self, Filter, Texts, Window};
    use sea_orm::{ConnectOptions, ConnectionTrait, Database, DbBackend, Statement};

    let app = spawn_app().await;
    let user = app.sign_up("ada@example.com").await;
    let base = Utc.with_ymd_and_hms(2026, 11, 2, 12, 0, 0).unwrap();
    for i in 0..30 {
        log_at(
            &app,
            &user.id,
            base + Duration::seconds(i),
            "gpt-4o",
            CallStatus::Ok,
        )
        .await;
    }
    // One connection, so that the statements it prepared can be read back on it.
    let mut options = ConnectOptions::new(app.database.direct_url().to_owned());
    options.max_connections(1).min_connections(1);
    let db = api::db::Db::orm(Database::connect(options).await.unwrap());
    let window = Window::Forward {
        first: 20,
        after: None,
    };
    for _ in 0..8 {
        let page = history::page(&db, &user.id, &Filter::default(), window, Texts::ALL)
            .await
            .unwrap();
        assert_eq!(page.items.len(), 20);
        assert!(page.has_next_page);
    }
    if db.get_database_backend() == DbBackend::Postgres {
        let plans: Vec<(String, i64, i64)> = db
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements \
                 WHERE statement LIKE 'SELECT %FROM \"prompt_logs\"%ORDER BY%' \
                 AND statement NOT LIKE '%pg_prepared_statements%'",
            ))
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.try_get("", "statement").unwrap(),
                    r.try_get("", "generic_plans").unwrap(),
                    r.try_get("", "custom_plans").unwrap(),
                )
            })
            .collect();
        assert_eq!(plans.len(), 1, "{plans:?}");
        let (statement, generic, custom) = &plans[0];
        // Five plans for the values, then the one kept: three runs of it.
        assert_eq!((*generic, *custom), (3, 5), "{statement}");
        assert!(statement.ends_with("LIMIT 21"), "{statement}");
    }
    db.close().await;
    app.shutdown().await;
}
