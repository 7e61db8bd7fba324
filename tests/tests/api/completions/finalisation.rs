//! Group commit of finalisations (`calls::store::finalise_many`): a group records each call as
//! it would be recorded alone (its log, exactly one linked usage row, its rollups, its
//! reservation released) in a constant number of statements; and a log finalised meanwhile
//! makes the group fall back to one call at a time without a second usage row.

use std::sync::atomic::Ordering;

use api::calls::store::{CallLimits, NewCall, Outcome, admit_many, finalise, finalise_many};
use api::metrics::{Metrics, Snapshot};
use entity::prelude::*;
use entity::prompt_logs::{self, CallStatus};
use entity::{call_reservations, prompt_log_usage, token_usage, usage_monthly};
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;
use tests::{TestApp, spawn_app};
use uuid::Uuid;

/// An unchecked call of `user_id` (10 prompt tokens, 60 reserved), run by `owner`.
fn new_call(user_id: &str, prompt: String, owner: &str, metadata: serde_json::Value) -> NewCall {
    NewCall {
        id: Uuid::now_v7(),
        user_id: user_id.to_owned(),
        model: "gpt-4o-mini".into(),
        prompt,
        prompt_tokens: 10,
        reservation: 60,
        budget: 0,
        limits: CallLimits {
            max_concurrent: 0,
            per_minute: 0,
        },
        owner: owner.to_owned(),
        metadata,
        turn: None,
    }
}

/// `n` calls admitted for three users, in flight.
async fn in_flight(app: &TestApp, tag: &str, n: usize) -> (Vec<prompt_logs::Model>, Vec<String>) {
    let mut users = Vec::new();
    for who in ["ada", "bo", "cy"] {
        users.push(app.sign_up(&format!("{who}-{tag}@example.com")).await.id);
    }
    let calls: Vec<NewCall> = (0..n)
        .map(|i| {
            new_call(
                &users[i % users.len()],
                format!("call {i}"),
                "finalisation-test",
                json!({ "stream": true }),
            )
        })
        .collect();
    let logs = admit_many(&app.db, calls)
        .await
        .into_iter()
        .map(|r| r.expect("admitted"))
        .collect();
    (logs, users)
}

/// Call `i`'s outcome: its own text, tokens, status and metadata.
fn outcome(i: usize) -> Outcome {
    Outcome {
        completion: format!("answer {i}, with a quote ' and \u{e9}"),
        prompt_tokens: 10 + i as i64,
        completion_tokens: 3 * i as i64,
        latency_ms: 100 + i as i64,
        status: if i % 4 == 3 {
            CallStatus::Error
        } else {
            CallStatus::Ok
        },
        metadata: json!({ "stream": true, "finish_reason": "stop", "i": i }),
        cost_microcents: 1000 + i as i64,
    }
}

/// Each log with its call's outcome (`outcome(i)` for the i-th), ready to finalise.
fn finished(logs: &[prompt_logs::Model]) -> Vec<(prompt_logs::Model, Outcome)> {
    logs.iter()
        .enumerate()
        .map(|(i, log)| (log.clone(), outcome(i)))
        .collect()
}

/// The usage rows linked to each log, in the logs' order.
async fn usage_of(app: &TestApp, logs: &[prompt_logs::Model]) -> Vec<Vec<token_usage::Model>> {
    let mut all = Vec::new();
    for log in logs {
        let links = PromptLogUsage::find()
            .filter(prompt_log_usage::Column::LogId.eq(log.id))
            .all(&app.db)
            .await
            .unwrap();
        let mut rows = Vec::new();
        for link in links {
            rows.push(
                TokenUsage::find_by_id(link.usage_id)
                    .one(&app.db)
                    .await
                    .unwrap()
                    .expect("a linked usage row"),
            );
        }
        all.push(rows);
    }
    all
}

#[tokio::test]
async fn a_group_records_each_call_as_alone_in_a_constant_number_of_statements() {
    let app = spawn_app().await;
    let (logs, users) = in_flight(&app, "g", 10).await;
    let db = app.db.counted_apart();
    let statements = db.statement_counter();
    let metrics = Metrics::new(true);
    let group = finished(&logs);
    let results = finalise_many(&db, &metrics, group).await;
    // begin, the logs' update, the usage rows, their links, the reservations' delete, the
    // logs read back, commit: not a transaction per call.
    let n = statements.load(Ordering::SeqCst);
    // On PostgreSQL all of it is one statement (`calls::unnest::finalise`).
    let most = if app.db.get_database_backend() == DbBackend::Postgres {
        1
    } else {
        7
    };
    assert!(n <= most, "{n} statements for a group of 10");

    for (i, (log, result)) in logs.iter().zip(&results).enumerate() {
        let done = result.as_ref().expect("finalised");
        let want = outcome(i);
        assert_eq!(done.id, log.id);
        assert_eq!(done.completion.as_deref(), Some(want.completion.as_str()));
        assert_eq!(i64::from(done.prompt_tokens), want.prompt_tokens);
        assert_eq!(i64::from(done.completion_tokens), want.completion_tokens);
        assert_eq!(done.latency_ms.map(i64::from), Some(want.latency_ms));
        assert_eq!(done.status, want.status);
        assert_eq!(done.metadata.as_ref(), Some(&want.metadata));
        assert_eq!(done.prompt, log.prompt, "the rest of the log untouched");
    }
    let usage = usage_of(&app, &logs).await;
    for (i, rows) in usage.iter().enumerate() {
        let want = outcome(i);
        assert_eq!(rows.len(), 1, "exactly one usage row for call {i}");
        let u = &rows[0];
        assert_eq!(u.user_id, logs[i].user_id);
        assert_eq!(
            (
                i64::from(u.prompt_tokens),
                i64::from(u.completion_tokens),
                u.cost_microcents
            ),
            (
                want.prompt_tokens,
                want.completion_tokens,
                want.cost_microcents
            )
        );
    }
    let reservations = CallReservations::find()
        .filter(call_reservations::Column::LogId.is_in(logs.iter().map(|l| l.id)))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(reservations, 0, "every reservation released");
    // Each user's month adds up their calls (the rollup trigger saw every row).
    for (u, user) in users.iter().enumerate() {
        let mine: Vec<usize> = (0..logs.len()).filter(|i| i % users.len() == u).collect();
        let month = UsageMonthly::find()
            .filter(usage_monthly::Column::UserId.eq(user.as_str()))
            .one(&app.db)
            .await
            .unwrap()
            .expect("a month row");
        assert_eq!(month.calls, mine.len() as i64);
        assert_eq!(
            month.completion_tokens,
            mine.iter()
                .map(|&i| outcome(i).completion_tokens)
                .sum::<i64>()
        );
        assert_eq!(
            month.cost_microcents,
            mine.iter()
                .map(|&i| outcome(i).cost_microcents)
                .sum::<i64>()
        );
    }
    // The metrics count what was committed, once.
    let text = metrics.render(Snapshot::default());
    let completion: i64 = (0..10).map(|i| outcome(i).completion_tokens).sum();
    let line =
        format!("aiwrapper_tokens_total{{kind=\"completion\",model=\"gpt-4o-mini\"}} {completion}");
    assert!(text.contains(&line), "{line} in\n{text}");
}

#[tokio::test]
async fn a_log_finalised_meanwhile_leaves_it_as_it_was_and_the_others_finalised_alone() {
    let app = spawn_app().await;
    let (logs, _) = in_flight(&app, "m", 4).await;
    let metrics = Metrics::new(true);
    // A lease sweep got to call 2 first.
    let mut swept = outcome(2);
    swept.completion = "recorded by the sweep".into();
    let db = app.db.counted_apart();
    let statements = db.statement_counter();
    finalise(&db, &metrics, &logs[2], swept)
        .await
        .expect("finalised by the sweep");
    let postgres = app.db.get_database_backend() == DbBackend::Postgres;
    if postgres {
        // One call alone is one statement too.
        assert_eq!(statements.swap(0, Ordering::SeqCst), 1);
    }
    // Again: nothing written, the log as stored (on PostgreSQL the statement, then a read).
    let again = finalise(&db, &metrics, &logs[2], outcome(2))
        .await
        .expect("final already");
    assert_eq!(again.completion.as_deref(), Some("recorded by the sweep"));
    if postgres {
        assert_eq!(statements.load(Ordering::SeqCst), 2);
    }
    let group = finished(&logs);
    let results = finalise_many(&app.db, &metrics, group).await;
    let texts: Vec<String> = results
        .iter()
        .map(|r| {
            r.as_ref()
                .expect("finalised")
                .completion
                .clone()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        texts,
        [
            outcome(0).completion,
            outcome(1).completion,
            "recorded by the sweep".to_owned(),
            outcome(3).completion
        ]
    );
    let counts: Vec<usize> = usage_of(&app, &logs).await.iter().map(Vec::len).collect();
    assert_eq!(counts, [1, 1, 1, 1], "one usage row per call, never two");
}

/// Groups of 2 to 6 calls admitted, checkpointed and finalised on one connection: each
/// table's grouped write is right for every call. On PostgreSQL each of the three is one
/// statement (no transaction around it), with one text whatever the group's size (the
/// columns travel as arrays, `calls::unnest`), counted where the connection prepared them. A
/// multi-row VALUES list made a text per size.
#[tokio::test]
async fn grouped_writes_of_any_size_are_one_statement_text_each() {
    use api::calls::store::checkpoint;
    use sea_orm::{ConnectOptions, Database, Statement};
    let app = spawn_app().await;
    let ada = app.sign_up("ada-sizes@example.com").await.id;
    let mut options = ConnectOptions::new(app.database.direct_url().to_owned());
    options.max_connections(1).min_connections(1);
    let db = api::db::Db::orm(Database::connect(options).await.unwrap());
    let postgres = db.get_database_backend() == DbBackend::Postgres;
    let statements = db.statement_counter();
    // Statements `db` ran since the last call.
    let mut seen = 0;
    let mut ran = move || {
        let now = statements.load(Ordering::SeqCst);
        let n = now - seen;
        seen = now;
        n
    };
    let metrics = Metrics::new(true);
    for n in 2..=6usize {
        let calls: Vec<NewCall> = (0..n)
            .map(|i| {
                new_call(
                    &ada,
                    format!("group {n}, call {i}"),
                    "sizes-test",
                    json!({ "n": n, "i": i }),
                )
            })
            .collect();
        let logs: Vec<prompt_logs::Model> = admit_many(&db, calls.clone())
            .await
            .into_iter()
            .map(|r| r.expect("admitted"))
            .collect();
        if postgres {
            assert_eq!(ran(), 1, "one statement admits a group of {n}");
        }
        for (log, call) in logs.iter().zip(&calls) {
            let stored = PromptLogs::find_by_id(call.id)
                .one(&app.db)
                .await
                .unwrap()
                .expect("the in-flight log");
            assert_eq!(&stored, log, "the log as admission returned it");
            assert_eq!(stored.metadata.as_ref(), Some(&call.metadata));
            let lease = CallReservations::find_by_id(call.id)
                .one(&app.db)
                .await
                .unwrap()
                .expect("the reservation");
            assert_eq!((lease.tokens, lease.owner.as_str()), (60, "sizes-test"));
            assert_eq!(lease.created_at, log.created_at);
        }
        // Two checkpoints: the second is written after the first one's saved characters.
        let first: Vec<String> = (0..n).map(|i| format!("é{i}")).collect();
        let batch: Vec<(Uuid, usize, &str)> = logs
            .iter()
            .zip(&first)
            .map(|(l, t)| (l.id, 0, t.as_str()))
            .collect();
        checkpoint(&db, &batch).await.expect("checkpointed");
        let batch: Vec<(Uuid, usize, &str)> = logs.iter().map(|l| (l.id, 2, "'x")).collect();
        checkpoint(&db, &batch).await.expect("checkpointed again");
        if postgres {
            ran();
        }
        for (log, text) in logs.iter().zip(&first) {
            let lease = CallReservations::find_by_id(log.id)
                .one(&app.db)
                .await
                .unwrap()
                .expect("the reservation");
            assert_eq!(lease.checkpoint, format!("{text}'x"));
        }
        let group = finished(&logs);
        let done = finalise_many(&db, &metrics, group).await;
        if postgres {
            assert_eq!(ran(), 1, "one statement finalises a group of {n}");
        }
        for (i, (log, result)) in logs.iter().zip(&done).enumerate() {
            let done = result.as_ref().expect("finalised");
            assert_eq!(done.id, log.id, "in the calls' order");
            assert_eq!(done.completion, Some(outcome(i).completion));
            assert_eq!(done.metadata, Some(outcome(i).metadata));
        }
        let usage = usage_of(&app, &logs).await;
        for (i, rows) in usage.iter().enumerate() {
            assert_eq!(rows.len(), 1, "exactly one usage row for call {i} of {n}");
            assert_eq!(rows[0].cost_microcents, outcome(i).cost_microcents);
        }
        let left = CallReservations::find()
            .filter(call_reservations::Column::LogId.is_in(logs.iter().map(|l| l.id)))
            .count(&app.db)
            .await
            .unwrap();
        assert_eq!(left, 0, "every reservation released");
    }
    if postgres {
        for write in [
            r#"INSERT INTO "prompt_logs""#,
            r#"INSERT INTO "call_reservations""#,
            r#"UPDATE "call_reservations""#,
            r#"UPDATE "prompt_logs""#,
            r#"INSERT INTO "token_usage""#,
            r#"INSERT INTO "prompt_log_usage""#,
            r#"DELETE FROM "call_reservations""#,
        ] {
            let texts = db
                .query_all_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT statement FROM pg_prepared_statements WHERE strpos(statement, $1) > 0",
                    [write.into()],
                ))
                .await
                .unwrap();
            assert_eq!(texts.len(), 1, "{write}: one text for groups of 2 to 6");
        }
    }
    db.close().await;
    app.shutdown().await;
}

/// The largest group the server forms (256 calls, `calls::MAX_WRITE_GROUP`), admitted with a
/// budget and limits to check and then finalised, each as one group: within SQLite's limit on
/// bound values, and on PostgreSQL still five statements to admit (begin, the months locked,
/// the accounts read, the writes, commit) and one to finalise.
#[tokio::test]
async fn the_largest_group_is_admitted_with_its_checks_and_finalised_whole() {
    const N: usize = 256;
    let app = spawn_app().await;
    let mut users = Vec::new();
    for who in ["ada", "bo", "cy"] {
        users.push(app.sign_up(&format!("{who}-largest@example.com")).await.id);
    }
    let calls: Vec<NewCall> = (0..N)
        .map(|i| NewCall {
            budget: 1_000_000,
            limits: CallLimits {
                max_concurrent: 1000,
                per_minute: 1000,
            },
            ..new_call(
                &users[i % users.len()],
                format!("call {i}"),
                "finalisation-test",
                json!({ "stream": true }),
            )
        })
        .collect();
    let db = app.db.counted_apart();
    let statements = db.statement_counter();
    let logs: Vec<prompt_logs::Model> = admit_many(&db, calls)
        .await
        .into_iter()
        .map(|r| r.expect("admitted"))
        .collect();
    let postgres = app.db.get_database_backend() == DbBackend::Postgres;
    if postgres {
        assert_eq!(statements.swap(0, Ordering::SeqCst), 5, "to admit");
    }
    let metrics = Metrics::new(true);
    let group = finished(&logs);
    let done = finalise_many(&db, &metrics, group).await;
    if postgres {
        assert_eq!(statements.load(Ordering::SeqCst), 1, "to finalise");
    }
    for (i, result) in done.iter().enumerate() {
        let log = result.as_ref().expect("finalised");
        assert_eq!(
            log.completion.as_deref(),
            Some(outcome(i).completion.as_str())
        );
    }
    let ids: Vec<Uuid> = logs.iter().map(|l| l.id).collect();
    let linked = PromptLogUsage::find()
        .filter(prompt_log_usage::Column::LogId.is_in(ids.clone()))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(linked, N as u64, "one usage row per call");
    let held = CallReservations::find()
        .filter(call_reservations::Column::LogId.is_in(ids))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(held, 0, "every reservation released");
}

/// Two calls in flight, `a` before `b` in `log_id` order but stored the other way round (`b`
/// admitted first), so that a plan visiting rows in the array's or the table's order meets `b`
/// first.
async fn stored_out_of_order(app: &TestApp) -> (prompt_logs::Model, prompt_logs::Model) {
    let user = app.sign_up("order@example.com").await.id;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let mut logs = Vec::new();
    for id in [b, a] {
        let call = NewCall {
            id,
            ..new_call(&user, format!("call {id}"), "finalisation-test", json!({}))
        };
        logs.extend(
            admit_many(&app.db, vec![call])
                .await
                .into_iter()
                .map(|r| r.expect("admitted")),
        );
    }
    let b_log = logs.remove(0);
    (logs.remove(0), b_log)
}

/// Whether `log_id`'s reservation row is locked by another transaction: a `NOWAIT` lock on it
/// from `txn` fails (and with it `txn`).
async fn locked_elsewhere(txn: &api::db::Tx, log_id: Uuid) -> bool {
    use sea_orm::{Statement, Value};
    txn.query_one_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        r#"SELECT 1 FROM "call_reservations" WHERE "log_id" = $1 FOR UPDATE NOWAIT"#,
        [Value::from(log_id)],
    ))
    .await
    .is_err()
}

/// The statements that write many reservation rows (checkpoints, lease renewals, a group's
/// finalisation) run at once over overlapping calls, so they take the rows' locks in `log_id`
/// order: two of them can then never each hold a row the other waits for (PostgreSQL found
/// such deadlocks in a burst, and failed a finalisation group after a second). Here another
/// transaction holds the later row, `b`; each statement, given `b` first, must already hold
/// `a` while it waits.
#[tokio::test]
async fn writes_of_many_reservations_lock_them_in_log_id_order() {
    use api::calls::store::{checkpoint, renew};
    let app = spawn_app().await;
    if app.db.get_database_backend() != DbBackend::Postgres {
        eprintln!("PostgreSQL only (SQLite has no row locks: one writer at a time)");
        return;
    }
    let (a, b) = stored_out_of_order(&app).await;
    assert!(a.id < b.id);
    for write in ["checkpoint", "renew", "finalise"] {
        let txn = app.db.begin().await.unwrap();
        assert!(
            !locked_elsewhere(&txn, b.id).await,
            "{write}: b free, now held"
        );
        let db = app.db.clone();
        let (a_log, b_log) = (a.clone(), b.clone());
        let running = tokio::spawn(async move {
            match write {
                "checkpoint" => checkpoint(&db, &[(b_log.id, 0, "b"), (a_log.id, 0, "a")])
                    .await
                    .map(|_| ()),
                "renew" => renew(&db, &[b_log.id, a_log.id]).await.map(|_| ()),
                _ => {
                    let group = vec![(b_log, outcome(1)), (a_log, outcome(0))];
                    for done in finalise_many(&db, &Metrics::new(true), group).await {
                        done?;
                    }
                    Ok(())
                }
            }
        });
        app.until_a_session_waits_for_a_lock().await;
        assert!(
            locked_elsewhere(&txn, a.id).await,
            "{write}: waiting for b, it must hold a already"
        );
        drop(txn);
        running.await.unwrap().expect("done once b was released");
    }
    let held = CallReservations::find().count(&app.db).await.unwrap();
    assert_eq!(held, 0, "both finalised at the end");
}

/// The turns of a group's calls in several conversations of two users are written together
/// (on PostgreSQL one statement of arrays, the same text for any number of turns), each with
/// its conversation, number, log and user, and each conversation's count moves to it.
#[tokio::test]
async fn a_groups_turns_in_several_conversations_are_written_together() {
    use api::calls::store::NewTurn;
    use entity::conversation_turns;
    let app = spawn_app().await;
    let ada = app.sign_up("ada-turns@example.com").await;
    let bo = app.sign_up("bo-turns@example.com").await;
    let mut calls = Vec::new();
    for (i, user) in [&ada, &ada, &bo, &ada, &bo].into_iter().enumerate() {
        let body = app
            .gql(
                Some(&user.token),
                "mutation { createConversation(input: {}) { id } }",
                json!({}),
            )
            .await;
        let id = body["data"]["createConversation"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}"));
        calls.push(NewCall {
            turn: Some(NewTurn {
                conversation_id: id.parse().expect("a uuid"),
                seq: 1,
                title: None,
            }),
            ..new_call(&user.id, format!("turn {i}"), "turns-test", json!({}))
        });
    }
    let expected: Vec<(Uuid, i32, Uuid, String)> = calls
        .iter()
        .map(|c| {
            let turn = c.turn.as_ref().expect("a turn");
            (turn.conversation_id, turn.seq, c.id, c.user_id.clone())
        })
        .collect();
    for result in admit_many(&app.db, calls).await {
        result.expect("admitted");
    }
    let mut stored: Vec<(Uuid, i32, Uuid, String)> = ConversationTurns::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|t: conversation_turns::Model| (t.conversation_id, t.seq, t.log_id, t.user_id))
        .collect();
    stored.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(stored, expected_sorted);
    for (conversation, ..) in &expected {
        let row = Conversations::find_by_id(*conversation)
            .one(&app.db)
            .await
            .unwrap()
            .expect("the conversation");
        assert_eq!(row.turn_count, 1);
    }
}
