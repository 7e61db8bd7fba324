//! PostgreSQL: the grouped writes of calls with one statement text whatever the group's size.
//!
//! A multi-row `VALUES` list, or a `CASE` with a branch per row, is a statement text of its own
//! for each number of rows. On the direct path sqlx prepares each text it has not seen on a
//! connection (a round trip of its own, and PostgreSQL parses and analyses it), keeps at most
//! 100 per connection, and the plan is made afresh for each: a burst's groups of 1 to 64 calls
//! made as many texts per table, for admissions, finalisations and checkpoints alike. Here each
//! column travels as one array and the server unnests them (`UNNEST($1::uuid[], $2::text[],
//! …)`), so each statement is prepared once per connection. Behind a transaction-mode pooler
//! the same statements are sent with the arrays as literals (`db::inline`).
//!
//! (Arrays are SeaORM's `postgres-array`, which its `sqlx-postgres` feature already brings.)
//!
//! SQLite keeps SeaORM's multi-row statements (`store`); each function here is only called on
//! PostgreSQL.

use chrono::{DateTime, Utc};
use entity::prompt_logs;
use sea_orm::sea_query::Value;
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, Statement};
use uuid::Uuid;

use super::store::{Finish, clamp_i32, status_name};
use crate::error::AppResult;

fn statement(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// One column's values as an array.
fn column<T, V>(rows: &[T], value: impl Fn(&T) -> V) -> Value
where
    Value: From<Vec<V>>,
{
    Value::from(rows.iter().map(value).collect::<Vec<V>>())
}

/// Admitted calls' in-flight logs.
pub async fn insert_logs(db: &impl ConnectionTrait, logs: &[prompt_logs::Model]) -> AppResult<()> {
    // An in-flight log has no completion and no latency yet (NULL). An array cannot carry a
    // NULL here, so a log without metadata travels as JSON `null` and is stored as NULL.
    let sql = r#"INSERT INTO "prompt_logs" ("id", "user_id", "model", "prompt", "prompt_tokens", "completion_tokens", "status", "metadata", "created_at")
SELECT u.id, u.user_id, u.model, u.prompt, u.prompt_tokens, u.completion_tokens, u.status, NULLIF(u.metadata, 'null'::jsonb), u.created_at
FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::int4[], $7::text[], $8::jsonb[], $9::timestamptz[])
  AS u(id, user_id, model, prompt, prompt_tokens, completion_tokens, status, metadata, created_at)"#;
    let values = vec![
        column(logs, |l| l.id),
        column(logs, |l| l.user_id.clone()),
        column(logs, |l| l.model.clone()),
        column(logs, |l| l.prompt.clone()),
        column(logs, |l| l.prompt_tokens),
        column(logs, |l| l.completion_tokens),
        column(logs, |l| status_name(l.status).to_owned()),
        column(logs, |l| {
            l.metadata.clone().unwrap_or(serde_json::Value::Null)
        }),
        column(logs, |l| l.created_at),
    ];
    db.execute_raw(statement(sql, values)).await?;
    Ok(())
}

/// A call's reservation and lease, as admission writes it.
pub struct Reservation<'a> {
    pub log_id: Uuid,
    pub user_id: &'a str,
    pub tokens: i64,
    pub owner: &'a str,
}

/// Admitted calls' reservations and leases (their checkpoint starts empty: the column's default).
pub async fn insert_reservations(
    db: &impl ConnectionTrait,
    rows: &[Reservation<'_>],
    now: DateTime<Utc>,
) -> AppResult<()> {
    let sql = r#"INSERT INTO "call_reservations" ("log_id", "user_id", "tokens", "owner", "heartbeat_at", "created_at")
SELECT u.*, $5, $5 FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::text[]) AS u"#;
    let values = vec![
        column(rows, |r| r.log_id),
        column(rows, |r| r.user_id.to_owned()),
        column(rows, |r| r.tokens),
        column(rows, |r| r.owner.to_owned()),
        Value::from(now),
    ];
    db.execute_raw(statement(sql, values)).await?;
    Ok(())
}

/// Complete the group's logs that are still in flight, each with its outcome, and return them
/// as stored (in no particular order). A log that was final already is not among them.
pub async fn complete_logs(
    db: &impl ConnectionTrait,
    calls: &[Finish],
) -> AppResult<Vec<prompt_logs::Model>> {
    let sql = r#"UPDATE "prompt_logs" AS p SET "completion" = u.completion, "prompt_tokens" = u.prompt_tokens, "completion_tokens" = u.completion_tokens, "latency_ms" = u.latency_ms, "status" = u.status, "metadata" = u.metadata
FROM UNNEST($1::uuid[], $2::text[], $3::int4[], $4::int4[], $5::int4[], $6::text[], $7::jsonb[]) AS u(id, completion, prompt_tokens, completion_tokens, latency_ms, status, metadata)
WHERE p."id" = u.id AND p."completion" IS NULL
RETURNING p.*"#;
    let values = vec![
        column(calls, |(log, _)| log.id),
        column(calls, |(_, o)| o.completion.clone()),
        column(calls, |(_, o)| clamp_i32(o.prompt_tokens)),
        column(calls, |(_, o)| clamp_i32(o.completion_tokens)),
        column(calls, |(_, o)| clamp_i32(o.latency_ms)),
        column(calls, |(_, o)| status_name(o.status).to_owned()),
        column(calls, |(_, o)| o.metadata.clone()),
    ];
    Ok(prompt_logs::Entity::find()
        .from_raw_sql(statement(sql, values))
        .all(db)
        .await?)
}

/// The group's usage rows (`id`s chosen by the caller, in the calls' order), the links from
/// each log to its usage row, and the release of the calls' reservations.
pub async fn meter(
    db: &impl ConnectionTrait,
    calls: &[Finish],
    usage_ids: &[Uuid],
    now: DateTime<Utc>,
) -> AppResult<()> {
    let usage = r#"INSERT INTO "token_usage" ("id", "user_id", "model", "prompt_tokens", "completion_tokens", "cost_microcents", "created_at")
SELECT u.*, $7 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int4[], $5::int4[], $6::int8[]) AS u"#;
    let values = vec![
        Value::from(usage_ids.to_vec()),
        column(calls, |(log, _)| log.user_id.clone()),
        column(calls, |(log, _)| log.model.clone()),
        column(calls, |(_, o)| clamp_i32(o.prompt_tokens)),
        column(calls, |(_, o)| clamp_i32(o.completion_tokens)),
        column(calls, |(_, o)| o.cost_microcents),
        Value::from(now),
    ];
    db.execute_raw(statement(usage, values)).await?;
    let links = r#"INSERT INTO "prompt_log_usage" ("log_id", "usage_id") SELECT * FROM UNNEST($1::uuid[], $2::uuid[])"#;
    let log_ids = column(calls, |(log, _)| log.id);
    db.execute_raw(statement(
        links,
        vec![log_ids.clone(), Value::from(usage_ids.to_vec())],
    ))
    .await?;
    let release = r#"DELETE FROM "call_reservations" WHERE "log_id" = ANY($1::uuid[])"#;
    db.execute_raw(statement(release, vec![log_ids])).await?;
    Ok(())
}

/// The checkpoint update of [`super::store::checkpoint`]: per call, `checkpoint =
/// substr(checkpoint, 1, saved) || text`, and the lease renewed.
pub fn checkpoint_update(unsaved: &[(Uuid, usize, &str)], now: DateTime<Utc>) -> Statement {
    let sql = r#"UPDATE "call_reservations" AS r SET "checkpoint" = substr(r."checkpoint", 1, u.saved) || u.delta, "heartbeat_at" = $4
FROM UNNEST($1::uuid[], $2::int4[], $3::text[]) AS u(log_id, saved, delta)
WHERE r."log_id" = u.log_id"#;
    statement(
        sql,
        vec![
            column(unsaved, |(id, _, _)| *id),
            column(unsaved, |(_, saved, _)| {
                i32::try_from(*saved).unwrap_or(i32::MAX)
            }),
            column(unsaved, |(_, _, text)| (*text).to_owned()),
            Value::from(now),
        ],
    )
}
