//! The database side of a call: admission against the budget, finalisation, lease renewal and
//! the search for stranded calls. Admission and finalisation are one transaction each.

use chrono::{DateTime, Utc};
use entity::prompt_logs::{self, CallStatus};
use entity::{
    call_reservations, conversation_turns, conversations, prompt_log_usage, token_usage,
    user_limits,
};
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter,
    QuerySelect, Set,
};
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

use crate::db::Db;
use crate::error::{AppError, AppResult, CallLimitKind};
use crate::metering::{budget, rollup};
use crate::metrics::{FinishedCall, Metrics};
use crate::time::{month_key, now_micros};

/// A call to admit.
#[derive(Clone, Debug)]
pub struct NewCall {
    /// The log's id, chosen before admission so that the caller can register the call as
    /// running before its row exists (see [`stranded`]).
    pub id: Uuid,
    pub user_id: String,
    pub model: String,
    pub prompt: String,
    /// Prompt tokens counted locally (replaced by the upstream's count when it reports one).
    pub prompt_tokens: i64,
    /// The most the call may use: prompt tokens + maxTokens.
    pub reservation: i64,
    /// The user's monthly budget (0 = unlimited).
    pub budget: i64,
    /// The user's call limits.
    pub limits: CallLimits,
    /// The server process that will run the call (its lease holder).
    pub owner: String,
    pub metadata: Value,
    /// The turn of a conversation this call is, if any.
    pub turn: Option<NewTurn>,
}

/// A call's place in its conversation.
#[derive(Clone, Debug)]
pub struct NewTurn {
    pub conversation_id: Uuid,
    /// The turn's number: the conversation's `turn_count` when its context was read, plus one.
    /// Admission takes it only if no other turn took it meanwhile (else `CONVERSATION_BUSY`).
    pub seq: i32,
    /// The title to give a conversation that has none (on its first turn).
    pub title: Option<String>,
}

/// Admit a call: within the budget, insert its in-flight log and its reservation. Refused calls
/// write nothing.
pub async fn admit(db: &Db, call: NewCall) -> AppResult<prompt_logs::Model> {
    let txn = db.begin().await?;
    let created_at = now_micros();
    // With no budget and no limits there is nothing to check: no lock on the user's month, so
    // one user's concurrent calls are admitted in parallel.
    if call.budget > 0 || !call.limits.unlimited() {
        let used = rollup::lock_month(&txn, &call.user_id, &month_key(created_at)).await?;
        let (running, reserved) = in_flight(&txn, &call.user_id).await?;
        check_limits(&txn, &call.user_id, call.limits, running, created_at).await?;
        if call.budget > 0 && !budget::admits(call.budget, used, reserved) {
            return Err(AppError::BudgetExceeded {
                budget: call.budget,
            });
        }
    }
    if let Some(turn) = &call.turn {
        take_turn(&txn, &call.user_id, turn, created_at).await?;
    }
    let log = prompt_logs::ActiveModel {
        id: Set(call.id),
        user_id: Set(call.user_id.clone()),
        model: Set(call.model),
        prompt: Set(call.prompt),
        completion: Set(None),
        prompt_tokens: Set(clamp_i32(call.prompt_tokens)),
        completion_tokens: Set(0),
        latency_ms: Set(None),
        status: Set(CallStatus::Ok),
        metadata: Set(Some(call.metadata)),
        created_at: Set(created_at),
    }
    .insert(&txn)
    .await?;
    if let Some(turn) = &call.turn {
        conversation_turns::ActiveModel {
            conversation_id: Set(turn.conversation_id),
            seq: Set(turn.seq),
            log_id: Set(log.id),
            user_id: Set(call.user_id.clone()),
        }
        .insert(&txn)
        .await?;
    }
    call_reservations::ActiveModel {
        log_id: Set(log.id),
        user_id: Set(call.user_id),
        tokens: Set(std::cmp::max(call.reservation, 0)),
        owner: Set(call.owner),
        heartbeat_at: Set(created_at),
        created_at: Set(created_at),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    Ok(log)
}

/// Move the conversation's turn count from `seq - 1` to `seq`: the row lock (PostgreSQL) or
/// write lock (SQLite) this takes orders concurrent turns, and a turn that finds the count
/// moved since its context was read was overtaken by another turn: `CONVERSATION_BUSY`. Also
/// the conversation's last activity, and its title if it has none yet.
async fn take_turn(
    db: &impl ConnectionTrait,
    user_id: &str,
    turn: &NewTurn,
    now: DateTime<Utc>,
) -> AppResult<()> {
    use conversations::Column as C;
    let mut q = conversations::Entity::update_many()
        .col_expr(C::TurnCount, Expr::value(turn.seq))
        .col_expr(C::UpdatedAt, Expr::value(now))
        .filter(C::Id.eq(turn.conversation_id))
        .filter(C::UserId.eq(user_id))
        .filter(C::TurnCount.eq(turn.seq - 1));
    if let Some(title) = &turn.title {
        // A title set meanwhile (updateConversation) is kept.
        q = q.col_expr(
            C::Title,
            Func::coalesce([Expr::col(C::Title), Expr::value(title.as_str())]).into(),
        );
    }
    if q.exec(db).await?.rows_affected == 0 {
        return Err(AppError::ConversationBusy);
    }
    Ok(())
}

/// How many calls a user may run at once and start per minute (0 = unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallLimits {
    pub max_concurrent: u32,
    pub per_minute: u32,
}

impl CallLimits {
    fn unlimited(&self) -> bool {
        self.max_concurrent == 0 && self.per_minute == 0
    }
}

/// The user's limits: the operator's overrides (`user_limits`) over the server's defaults.
pub async fn limits_for(
    db: &impl ConnectionTrait,
    user_id: &str,
    defaults: CallLimits,
) -> AppResult<CallLimits> {
    let Some(row) = user_limits::Entity::find_by_id(user_id.to_owned())
        .one(db)
        .await?
    else {
        return Ok(defaults);
    };
    let pick = |v: Option<i32>, default: u32| v.map_or(default, |n| u32::try_from(n).unwrap_or(0));
    Ok(CallLimits {
        max_concurrent: pick(row.max_concurrent_calls, defaults.max_concurrent),
        per_minute: pick(row.calls_per_minute, defaults.per_minute),
    })
}

#[derive(FromQueryResult)]
struct InFlightSum {
    calls: i64,
    total: Option<i64>,
}

/// The user's calls in flight, and what they may still use.
async fn in_flight(db: &impl ConnectionTrait, user_id: &str) -> AppResult<(i64, i64)> {
    let sum = call_reservations::Entity::find()
        .select_only()
        .column_as(call_reservations::Column::LogId.count(), "calls")
        // SUM of a bigint is numeric on PostgreSQL: cast back to bigint.
        .column_as(
            call_reservations::Column::Tokens.sum().cast_as("BIGINT"),
            "total",
        )
        .filter(call_reservations::Column::UserId.eq(user_id))
        .into_model::<InFlightSum>()
        .one(db)
        .await?;
    Ok(sum.map_or((0, 0), |s| (s.calls, s.total.unwrap_or(0))))
}

/// Refuse a call over the user's concurrency or rate limit; run under the user's month lock,
/// so that the count cannot change between the check and the insert, on any replica.
async fn check_limits(
    db: &impl ConnectionTrait,
    user_id: &str,
    limits: CallLimits,
    running: i64,
    now: DateTime<Utc>,
) -> AppResult<()> {
    if limits.max_concurrent > 0 && running >= i64::from(limits.max_concurrent) {
        return Err(AppError::CallLimit {
            limit: CallLimitKind::Concurrency,
            message: format!(
                "at most {} calls may run at once: wait for one to finish",
                limits.max_concurrent
            ),
            retry_after_secs: 1,
        });
    }
    if limits.per_minute > 0 {
        use sea_orm::QueryOrder;
        let window = chrono::Duration::seconds(60);
        let recent: Vec<DateTime<Utc>> = prompt_logs::Entity::find()
            .select_only()
            .column(prompt_logs::Column::CreatedAt)
            .filter(prompt_logs::Column::UserId.eq(user_id))
            .filter(prompt_logs::Column::CreatedAt.gt(now - window))
            .order_by_desc(prompt_logs::Column::CreatedAt)
            .limit(u64::from(limits.per_minute))
            .into_tuple()
            .all(db)
            .await?;
        if recent.len() >= limits.per_minute as usize
            && let Some(oldest) = recent.last()
        {
            // The oldest of the last `per_minute` calls leaves the window then.
            let wait = u64::try_from((*oldest + window - now).num_milliseconds()).unwrap_or(0);
            return Err(AppError::CallLimit {
                limit: CallLimitKind::Rate,
                message: format!("at most {} calls per minute", limits.per_minute),
                retry_after_secs: std::cmp::max(wait.div_ceil(1000), 1),
            });
        }
    }
    Ok(())
}

/// How a call ended, ready to record.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub completion: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub latency_ms: i64,
    pub status: CallStatus,
    pub metadata: Value,
    pub cost_microcents: i64,
}

fn clamp_i32(n: i64) -> i32 {
    i32::try_from(std::cmp::max(n, 0)).unwrap_or(i32::MAX)
}

/// Finalise an in-flight call: complete its log, append its one `token_usage` row (linked to the
/// log; the database's trigger adds it to the rollups) and release its reservation, all or
/// nothing. A log that is already final is returned as it is, and nothing is written.
///
/// What it commits is added to `metrics` (so the token and cost counters agree with
/// `token_usage` exactly).
pub async fn finalise(
    db: &Db,
    metrics: &Metrics,
    log: &prompt_logs::Model,
    outcome: Outcome,
) -> AppResult<prompt_logs::Model> {
    let txn = db.begin().await?;
    let ttft = outcome
        .metadata
        .get("ttft_ms")
        .and_then(Value::as_u64)
        .map(Duration::from_millis);
    // A call recovered from a checkpoint was not timed by this process.
    let timed = outcome.metadata.get("usage_source").and_then(Value::as_str) != Some("checkpoint");
    let (status, prompt_tokens, completion_tokens, cost, latency_ms) = (
        outcome.status,
        clamp_i32(outcome.prompt_tokens),
        clamp_i32(outcome.completion_tokens),
        outcome.cost_microcents,
        outcome.latency_ms,
    );
    let updated = prompt_logs::Entity::update_many()
        .col_expr(
            prompt_logs::Column::Completion,
            Expr::value(outcome.completion),
        )
        .col_expr(
            prompt_logs::Column::PromptTokens,
            Expr::value(clamp_i32(outcome.prompt_tokens)),
        )
        .col_expr(
            prompt_logs::Column::CompletionTokens,
            Expr::value(clamp_i32(outcome.completion_tokens)),
        )
        .col_expr(
            prompt_logs::Column::LatencyMs,
            Expr::value(clamp_i32(outcome.latency_ms)),
        )
        .col_expr(prompt_logs::Column::Status, Expr::value(outcome.status))
        .col_expr(prompt_logs::Column::Metadata, Expr::value(outcome.metadata))
        .filter(prompt_logs::Column::Id.eq(log.id))
        .filter(prompt_logs::Column::Completion.is_null())
        .exec(&txn)
        .await?;
    if updated.rows_affected == 1 {
        let usage = token_usage::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(log.user_id.clone()),
            model: Set(log.model.clone()),
            prompt_tokens: Set(clamp_i32(outcome.prompt_tokens)),
            completion_tokens: Set(clamp_i32(outcome.completion_tokens)),
            cost_microcents: Set(outcome.cost_microcents),
            created_at: Set(now_micros()),
        }
        .insert(&txn)
        .await?;
        prompt_log_usage::ActiveModel {
            log_id: Set(log.id),
            usage_id: Set(usage.id),
        }
        .insert(&txn)
        .await?;
        call_reservations::Entity::delete_by_id(log.id)
            .exec(&txn)
            .await?;
    }
    let done = prompt_logs::Entity::find_by_id(log.id)
        .one(&txn)
        .await?
        .ok_or_else(|| AppError::internal("finalised log vanished"))?;
    txn.commit().await?;
    if updated.rows_affected == 1 {
        metrics.call_finished(FinishedCall {
            model: &log.model,
            status: status_name(status),
            prompt_tokens: i64::from(prompt_tokens),
            completion_tokens: i64::from(completion_tokens),
            cost_microcents: cost,
            ttft: ttft.filter(|_| timed),
            duration: timed.then(|| Duration::from_millis(u64::try_from(latency_ms).unwrap_or(0))),
        });
    }
    Ok(done)
}

/// A status as stored (and as the metrics label it).
fn status_name(status: CallStatus) -> &'static str {
    match status {
        CallStatus::Ok => "ok",
        CallStatus::Error => "error",
        CallStatus::Filtered => "filtered",
    }
}

/// Renew the leases of the calls this process is running.
pub async fn renew(db: &Db, log_ids: &[Uuid]) -> AppResult<()> {
    if log_ids.is_empty() {
        return Ok(());
    }
    call_reservations::Entity::update_many()
        .col_expr(
            call_reservations::Column::HeartbeatAt,
            Expr::value(now_micros()),
        )
        .filter(call_reservations::Column::LogId.is_in(log_ids.iter().copied()))
        .exec(db)
        .await?;
    Ok(())
}

/// Calls whose checkpoints one statement writes (bounded: each call takes three bound values).
pub const CHECKPOINTS_PER_STATEMENT: usize = 500;

/// Save running calls' progress beside their leases, up to [`CHECKPOINTS_PER_STATEMENT`] calls
/// in one statement: each entry is (call, characters already saved, text relayed since), and
/// becomes `checkpoint = substr(checkpoint, 1, saved) || text`, so a statement that committed
/// but reported an error, when sent again, writes the same (never the text twice). The lease's
/// heartbeat is renewed with it. A call finalised meanwhile has no row left and is skipped.
pub async fn checkpoint(db: &Db, unsaved: &[(Uuid, usize, &str)]) -> AppResult<()> {
    if unsaved.is_empty() {
        return Ok(());
    }
    db.execute(&checkpoint_update(unsaved)).await?;
    Ok(())
}

fn checkpoint_update(unsaved: &[(Uuid, usize, &str)]) -> sea_orm::sea_query::UpdateStatement {
    use sea_orm::QueryTrait;
    use sea_orm::sea_query::{BinOper, CaseStatement, ExprTrait, Func};
    let mut case = CaseStatement::new();
    for (id, saved, text) in unsaved {
        case = case.case(
            Expr::col(call_reservations::Column::LogId).eq(*id),
            Expr::expr(
                Func::cust("substr")
                    .arg(Expr::col(call_reservations::Column::Checkpoint))
                    .arg(1)
                    .arg(i32::try_from(*saved).unwrap_or(i32::MAX)),
            )
            .binary(BinOper::Custom("||"), Expr::value((*text).to_owned())),
        );
    }
    let case = case.finally(Expr::col(call_reservations::Column::Checkpoint));
    call_reservations::Entity::update_many()
        .col_expr(call_reservations::Column::Checkpoint, case.into())
        .col_expr(
            call_reservations::Column::HeartbeatAt,
            Expr::value(now_micros()),
        )
        .filter(call_reservations::Column::LogId.is_in(unsaved.iter().map(|(id, _, _)| *id)))
        .into_query()
}

/// Calls in flight that nobody is running any more: no lease, a lease that lapsed (its process
/// died), or a lease of `owner` (this process's earlier life) that `running` does not hold.
/// Live calls of other processes are never returned.
///
/// `running` is a snapshot of this process's calls taken at or after `cutoff`, and a call is
/// registered as running before its row is written (its `created_at` is later than its
/// registration): so only calls created before `cutoff` are judged, and a call admitted while
/// the sweep runs is never mistaken for a stranded one. (Both times come from this process's
/// wall clock; a clock stepping back by more than an admission takes could defeat that.)
pub async fn stranded(
    db: &Db,
    owner: &str,
    lease: std::time::Duration,
    running: &std::collections::HashSet<Uuid>,
    cutoff: DateTime<Utc>,
) -> AppResult<Vec<(prompt_logs::Model, String)>> {
    use sea_orm::QueryOrder;
    let in_flight = prompt_logs::Entity::find()
        .filter(prompt_logs::Column::Completion.is_null())
        .order_by_asc(prompt_logs::Column::CreatedAt)
        .all(db)
        .await?;
    if in_flight.is_empty() {
        return Ok(Vec::new());
    }
    // Leases without their checkpoints: only stranded calls' checkpoints are read.
    let leases: std::collections::HashMap<Uuid, (String, DateTime<Utc>)> =
        call_reservations::Entity::find()
            .select_only()
            .column(call_reservations::Column::LogId)
            .column(call_reservations::Column::Owner)
            .column(call_reservations::Column::HeartbeatAt)
            .filter(call_reservations::Column::LogId.is_in(in_flight.iter().map(|l| l.id)))
            .into_tuple::<(Uuid, String, DateTime<Utc>)>()
            .all(db)
            .await?
            .into_iter()
            .map(|(id, owner, heartbeat)| (id, (owner, heartbeat)))
            .collect();
    let lapsed_before =
        now_micros() - chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
    let stranded: Vec<prompt_logs::Model> = in_flight
        .into_iter()
        .filter(|log| !running.contains(&log.id) && log.created_at < cutoff)
        .filter(|log| match leases.get(&log.id) {
            None => true,
            Some((lease_owner, heartbeat)) => lease_owner == owner || *heartbeat < lapsed_before,
        })
        .collect();
    if stranded.is_empty() {
        return Ok(Vec::new());
    }
    let mut checkpoints: std::collections::HashMap<Uuid, String> =
        call_reservations::Entity::find()
            .select_only()
            .column(call_reservations::Column::LogId)
            .column(call_reservations::Column::Checkpoint)
            .filter(call_reservations::Column::LogId.is_in(stranded.iter().map(|l| l.id)))
            .into_tuple::<(Uuid, String)>()
            .all(db)
            .await?
            .into_iter()
            .collect();
    Ok(stranded
        .into_iter()
        .map(|log| {
            let checkpoint = checkpoints.remove(&log.id).unwrap_or_default();
            (log, checkpoint)
        })
        .collect())
}

#[cfg(test)]
mod checkpoint_sql {
    use sea_orm::Statement;

    use super::checkpoint_update;

    /// The checkpoint statement as each backend gets it: every value bound, none left behind.
    #[test]
    fn the_checkpoint_statement_binds_every_value() {
        let id = uuid::Uuid::nil();
        let stmt = |b: sea_orm::DbBackend| -> Statement {
            let q = checkpoint_update(&[(id, 3, "héllo")]);
            b.build(&q)
        };
        let pg = stmt(sea_orm::DbBackend::Postgres);
        assert!(
            pg.sql.contains("substr(\"checkpoint\", $2, $3) || $4"),
            "{}",
            pg.sql
        );
        let lite = stmt(sea_orm::DbBackend::Sqlite);
        assert!(
            lite.sql.contains("substr(\"checkpoint\", ?, ?) || ?"),
            "{}",
            lite.sql
        );
        assert_eq!(lite.values.unwrap().0.len(), 6);
    }
}
