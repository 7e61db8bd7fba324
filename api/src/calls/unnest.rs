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
//! With every column an array, a group's writes also fit in one statement, with data-modifying
//! CTEs: admission's two inserts ([`admit`]), and finalisation's update, two inserts and delete
//! ([`finalise`], also for one call alone). A statement is atomic on its own, so neither needs
//! a transaction around it: one round trip where there were four (admission) and seven
//! (finalisation).
//!
//! (Arrays are SeaORM's `postgres-array`, which its `sqlx-postgres` feature already brings.)
//!
//! The statements that write many rows of `call_reservations` (a finalisation's delete, the
//! checkpoints, lease renewals) lock those rows in `log_id` order before writing them. They run
//! at once on different connections over overlapping sets of calls (the checkpoint and the
//! renewal cover every running call; a finalisation, the calls that ended). Locking in
//! whatever order its plan visited the rows, each of two could hold a row the other waited for:
//! PostgreSQL found that deadlock after `deadlock_timeout` (1 s) and failed one of them, which
//! held a burst's finalisation group up for a second (docs/performance.md, thirteenth round).
//!
//! SQLite keeps SeaORM's multi-row statements (`store`); each function here is only called on
//! PostgreSQL.

use chrono::{DateTime, Utc};
use entity::prompt_logs;
use sea_orm::sea_query::Value;
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, Statement};
use uuid::Uuid;

use super::store::{Outcome, clamp_i32, status_name};
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

/// Admitted calls' in-flight logs and, for each, its reservation and lease (`reservations`:
/// tokens and owner, in the logs' order; the checkpoint starts empty, the column's default):
/// one statement, so atomic on its own. The foreign key from each reservation to its log is
/// checked at the statement's end, when the logs are in.
pub async fn admit(
    db: &impl ConnectionTrait,
    logs: &[prompt_logs::Model],
    reservations: &[(i64, &str)],
) -> AppResult<()> {
    // An in-flight log has no completion and no latency yet (NULL). An array cannot carry a
    // NULL here, so a log without metadata travels as JSON `null` and is stored as NULL.
    let sql = r#"WITH logs AS (
  INSERT INTO "prompt_logs" ("id", "user_id", "model", "prompt", "prompt_tokens", "completion_tokens", "status", "metadata", "created_at")
  SELECT u.id, u.user_id, u.model, u.prompt, u.prompt_tokens, u.completion_tokens, u.status, NULLIF(u.metadata, 'null'::jsonb), u.created_at
  FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::int4[], $7::text[], $8::jsonb[], $9::timestamptz[])
    AS u(id, user_id, model, prompt, prompt_tokens, completion_tokens, status, metadata, created_at)
)
INSERT INTO "call_reservations" ("log_id", "user_id", "tokens", "owner", "heartbeat_at", "created_at")
SELECT u.log_id, u.user_id, u.tokens, u.owner, u.created_at, u.created_at
FROM UNNEST($1::uuid[], $2::text[], $10::int8[], $11::text[], $9::timestamptz[]) AS u(log_id, user_id, tokens, owner, created_at)"#;
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
        column(reservations, |(tokens, _)| *tokens),
        column(reservations, |(_, owner)| (*owner).to_owned()),
    ];
    db.execute_raw(statement(sql, values)).await?;
    Ok(())
}

/// The conversation turns of a group's admitted calls (`conversation_id`, `seq`, `log_id`,
/// `user_id`), after their logs: one statement text for any number of turns, where SeaORM's
/// multi-row insert was a text per number (up to a write group's 256).
pub async fn turns(db: &impl ConnectionTrait, turns: &[(Uuid, i32, Uuid, &str)]) -> AppResult<()> {
    let sql = r#"INSERT INTO "conversation_turns" ("conversation_id", "seq", "log_id", "user_id")
SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::uuid[], $4::text[])"#;
    let values = vec![
        column(turns, |t| t.0),
        column(turns, |t| t.1),
        column(turns, |t| t.2),
        column(turns, |t| t.3.to_owned()),
    ];
    db.execute_raw(statement(sql, values)).await?;
    Ok(())
}

/// Finalise the group's logs that are still in flight, each with its outcome, in one
/// statement (atomic on its own): complete the log, append its usage row (`usage_ids`, in the
/// calls' order) and the link to it, release its reservation. A log that was final already
/// is left as it is and gets nothing. The logs it finalised, as stored, in no particular order.
/// The reservations are locked in `log_id` order before their delete (module documentation).
pub async fn finalise(
    db: &impl ConnectionTrait,
    calls: &[(&prompt_logs::Model, &Outcome)],
    usage_ids: &[Uuid],
    now: DateTime<Utc>,
) -> AppResult<Vec<prompt_logs::Model>> {
    let sql = r#"WITH u AS (
  SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int4[], $5::int4[], $6::int4[], $7::text[], $8::jsonb[], $9::int8[])
    AS u(id, usage_id, completion, prompt_tokens, completion_tokens, latency_ms, status, metadata, cost_microcents)
), done AS (
  UPDATE "prompt_logs" AS p SET "completion" = u.completion, "prompt_tokens" = u.prompt_tokens, "completion_tokens" = u.completion_tokens, "latency_ms" = u.latency_ms, "status" = u.status, "metadata" = u.metadata
  FROM u WHERE p."id" = u.id AND p."completion" IS NULL
  RETURNING p.*
), usage AS (
  INSERT INTO "token_usage" ("id", "user_id", "model", "prompt_tokens", "completion_tokens", "cost_microcents", "created_at")
  SELECT u.usage_id, done."user_id", done."model", u.prompt_tokens, u.completion_tokens, u.cost_microcents, $10
  FROM done JOIN u ON u.id = done."id"
), link AS (
  INSERT INTO "prompt_log_usage" ("log_id", "usage_id")
  SELECT u.id, u.usage_id FROM done JOIN u ON u.id = done."id"
), held AS MATERIALIZED (
  SELECT r."log_id" FROM "call_reservations" AS r WHERE r."log_id" IN (SELECT "id" FROM done)
  ORDER BY r."log_id" FOR UPDATE
), released AS (
  DELETE FROM "call_reservations" AS r USING held WHERE r."log_id" = held."log_id"
)
SELECT * FROM done"#;
    let values = vec![
        column(calls, |(log, _)| log.id),
        Value::from(usage_ids.to_vec()),
        column(calls, |(_, o)| o.completion.clone()),
        column(calls, |(_, o)| clamp_i32(o.prompt_tokens)),
        column(calls, |(_, o)| clamp_i32(o.completion_tokens)),
        column(calls, |(_, o)| clamp_i32(o.latency_ms)),
        column(calls, |(_, o)| status_name(o.status).to_owned()),
        column(calls, |(_, o)| o.metadata.clone()),
        column(calls, |(_, o)| o.cost_microcents),
        Value::from(now),
    ];
    Ok(prompt_logs::Entity::find()
        .from_raw_sql(statement(sql, values))
        .all(db)
        .await?)
}

/// Renew the leases of running calls (`store::renew`), their rows locked in `log_id` order
/// first (see the module documentation).
pub fn renew(log_ids: &[Uuid], now: DateTime<Utc>) -> Statement {
    let sql = r#"WITH held AS MATERIALIZED (
  SELECT r."log_id" FROM "call_reservations" AS r WHERE r."log_id" = ANY($1::uuid[])
  ORDER BY r."log_id" FOR UPDATE
)
UPDATE "call_reservations" AS r SET "heartbeat_at" = $2 FROM held WHERE r."log_id" = held."log_id""#;
    statement(sql, vec![Value::from(log_ids.to_vec()), Value::from(now)])
}

/// Per user: calls in flight and the tokens they reserve, and, for the users `rated` marks,
/// the start times of their calls since `since`, newest first (for the other users, none).
/// One statement for what `store` reads in two on SQLite. It must come after
/// `rollup::lock_months`, in a statement of its own: a statement sees what was committed when it
/// began, and only a later one sees the calls that the group it waited for admitted.
pub async fn accounts(
    db: &impl ConnectionTrait,
    user_ids: &[&str],
    rated: &[bool],
    since: DateTime<Utc>,
) -> AppResult<Vec<(String, i64, i64, Vec<DateTime<Utc>>)>> {
    let sql = r#"SELECT u.user_id, f.running, f.reserved,
  CASE WHEN u.rated THEN ARRAY(
    SELECT p."created_at" FROM "prompt_logs" AS p
    WHERE p."user_id" = u.user_id AND p."created_at" > $3 ORDER BY p."created_at" DESC
  ) ELSE '{}'::timestamptz[] END AS recent
FROM UNNEST($1::text[], $2::bool[]) AS u(user_id, rated)
CROSS JOIN LATERAL (
  SELECT count(*) AS running, coalesce(sum(r."tokens"), 0)::int8 AS reserved
  FROM "call_reservations" AS r WHERE r."user_id" = u.user_id
) AS f"#;
    let values = vec![
        column(user_ids, |u| (*u).to_owned()),
        Value::from(rated.to_vec()),
        Value::from(since),
    ];
    let rows = db.query_all_raw(statement(sql, values)).await?;
    Ok(rows
        .iter()
        .map(|r| {
            Ok((
                r.try_get_by_index(0)?,
                r.try_get_by_index(1)?,
                r.try_get_by_index(2)?,
                r.try_get_by_index(3)?,
            ))
        })
        .collect::<Result<_, sea_orm::DbErr>>()?)
}

/// The checkpoint update of [`super::store::checkpoint`]: per call, `checkpoint =
/// substr(checkpoint, 1, saved) || text`, and the lease renewed. Its rows are locked in
/// `log_id` order first (see the module documentation).
pub fn checkpoint_update(unsaved: &[(Uuid, usize, &str)], now: DateTime<Utc>) -> Statement {
    let sql = r#"WITH held AS MATERIALIZED (
  SELECT r."log_id" FROM "call_reservations" AS r WHERE r."log_id" = ANY($1::uuid[])
  ORDER BY r."log_id" FOR UPDATE
)
UPDATE "call_reservations" AS r SET "checkpoint" = substr(r."checkpoint", 1, u.saved) || u.delta, "heartbeat_at" = $4
FROM UNNEST($1::uuid[], $2::int4[], $3::text[]) AS u(log_id, saved, delta), held
WHERE r."log_id" = u.log_id AND held."log_id" = r."log_id""#;
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
