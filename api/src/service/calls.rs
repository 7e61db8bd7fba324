//! The database side of a call: admission against the budget, finalisation, and recovery of
//! calls a crash left in flight. Each is one transaction.

use chrono::{DateTime, Utc};
use entity::prompt_logs::{self, CallStatus};
use entity::{call_reservations, prompt_log_usage, token_usage, usage_monthly};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter,
    QuerySelect, Set,
};
use serde_json::Value;
use uuid::Uuid;

use crate::db::Db;
use crate::error::{AppError, AppResult};
use crate::metering::budget::{admits, month_key};

/// Now, at the microsecond precision both databases store.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    now - chrono::Duration::nanoseconds(i64::from(now.timestamp_subsec_nanos() % 1_000))
}

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
    /// The server process that will run the call (its lease holder).
    pub owner: String,
    pub metadata: Value,
}

#[derive(FromQueryResult)]
struct Sum {
    total: Option<i64>,
}

/// Lock the user's rollup row for `month` (creating it), so admissions of one user run one at a
/// time on both databases: the first statement of the transaction is a write to that row.
async fn lock_month(
    db: &impl ConnectionTrait,
    user_id: &str,
    month: &str,
) -> AppResult<usage_monthly::Model> {
    usage_monthly::Entity::insert(usage_monthly::ActiveModel {
        user_id: Set(user_id.to_owned()),
        month: Set(month.to_owned()),
        calls: Set(0),
        prompt_tokens: Set(0),
        completion_tokens: Set(0),
        cost_microcents: Set(0),
    })
    .on_conflict(
        OnConflict::columns([usage_monthly::Column::UserId, usage_monthly::Column::Month])
            .value(
                usage_monthly::Column::Calls,
                Expr::col((usage_monthly::Entity, usage_monthly::Column::Calls)),
            )
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    usage_monthly::Entity::find_by_id((user_id.to_owned(), month.to_owned()))
        .one(db)
        .await?
        .ok_or_else(|| AppError::internal("usage rollup row missing right after its upsert"))
}

/// Admit a call: within the budget, insert its in-flight log and its reservation. Refused calls
/// write nothing.
pub async fn admit(db: &Db, call: NewCall) -> AppResult<prompt_logs::Model> {
    let txn = db.begin().await?;
    let created_at = now();
    // An unlimited budget (0) has nothing to check: no lock on the user's month, so one user's
    // concurrent calls are admitted in parallel.
    if call.budget > 0 {
        let month = lock_month(&txn, &call.user_id, &month_key(created_at)).await?;
        let reserved = call_reservations::Entity::find()
            .select_only()
            // SUM of a bigint is numeric on PostgreSQL: cast back to bigint.
            .column_as(
                call_reservations::Column::Tokens.sum().cast_as("BIGINT"),
                "total",
            )
            .filter(call_reservations::Column::UserId.eq(call.user_id.as_str()))
            .into_model::<Sum>()
            .one(&txn)
            .await?
            .and_then(|s| s.total)
            .unwrap_or(0);
        if !admits(
            call.budget,
            month.prompt_tokens + month.completion_tokens,
            reserved,
        ) {
            return Err(AppError::BudgetExceeded {
                budget: call.budget,
            });
        }
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
    call_reservations::ActiveModel {
        log_id: Set(log.id),
        user_id: Set(call.user_id),
        tokens: Set(std::cmp::max(call.reservation, 0)),
        owner: Set(call.owner),
        heartbeat_at: Set(created_at),
        created_at: Set(created_at),
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    Ok(log)
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
/// log), add it to the month's rollup and release its reservation, all or nothing. A log that is
/// already final is returned as it is, and nothing is written.
pub async fn finalise(
    db: &Db,
    log: &prompt_logs::Model,
    outcome: Outcome,
) -> AppResult<prompt_logs::Model> {
    let txn = db.begin().await?;
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
        let at = now();
        let usage = token_usage::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(log.user_id.clone()),
            model: Set(log.model.clone()),
            prompt_tokens: Set(clamp_i32(outcome.prompt_tokens)),
            completion_tokens: Set(clamp_i32(outcome.completion_tokens)),
            cost_microcents: Set(outcome.cost_microcents),
            created_at: Set(at),
        }
        .insert(&txn)
        .await?;
        prompt_log_usage::ActiveModel {
            log_id: Set(log.id),
            usage_id: Set(usage.id),
        }
        .insert(&txn)
        .await?;
        add_to_month(&txn, &log.user_id, &month_key(at), &usage).await?;
        call_reservations::Entity::delete_by_id(log.id)
            .exec(&txn)
            .await?;
    }
    let log = prompt_logs::Entity::find_by_id(log.id)
        .one(&txn)
        .await?
        .ok_or_else(|| AppError::internal("finalised log vanished"))?;
    txn.commit().await?;
    Ok(log)
}

async fn add_to_month(
    db: &impl ConnectionTrait,
    user_id: &str,
    month: &str,
    usage: &token_usage::Model,
) -> AppResult<()> {
    use usage_monthly::Column as C;
    let (p, c) = (
        i64::from(usage.prompt_tokens),
        i64::from(usage.completion_tokens),
    );
    usage_monthly::Entity::insert(usage_monthly::ActiveModel {
        user_id: Set(user_id.to_owned()),
        month: Set(month.to_owned()),
        calls: Set(1),
        prompt_tokens: Set(p),
        completion_tokens: Set(c),
        cost_microcents: Set(usage.cost_microcents),
    })
    .on_conflict(
        OnConflict::columns([C::UserId, C::Month])
            .value(
                C::Calls,
                Expr::col((usage_monthly::Entity, C::Calls)).add(1),
            )
            .value(
                C::PromptTokens,
                Expr::col((usage_monthly::Entity, C::PromptTokens)).add(p),
            )
            .value(
                C::CompletionTokens,
                Expr::col((usage_monthly::Entity, C::CompletionTokens)).add(c),
            )
            .value(
                C::CostMicrocents,
                Expr::col((usage_monthly::Entity, C::CostMicrocents)).add(usage.cost_microcents),
            )
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Renew the leases of the calls this process is running.
pub async fn renew(db: &Db, log_ids: &[Uuid]) -> AppResult<()> {
    if log_ids.is_empty() {
        return Ok(());
    }
    call_reservations::Entity::update_many()
        .col_expr(call_reservations::Column::HeartbeatAt, Expr::value(now()))
        .filter(call_reservations::Column::LogId.is_in(log_ids.iter().copied()))
        .exec(db)
        .await?;
    Ok(())
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
) -> AppResult<Vec<prompt_logs::Model>> {
    use sea_orm::QueryOrder;
    let in_flight = prompt_logs::Entity::find()
        .filter(prompt_logs::Column::Completion.is_null())
        .order_by_asc(prompt_logs::Column::CreatedAt)
        .all(db)
        .await?;
    if in_flight.is_empty() {
        return Ok(in_flight);
    }
    let leases: std::collections::HashMap<Uuid, call_reservations::Model> =
        call_reservations::Entity::find()
            .filter(call_reservations::Column::LogId.is_in(in_flight.iter().map(|l| l.id)))
            .all(db)
            .await?
            .into_iter()
            .map(|r| (r.log_id, r))
            .collect();
    let lapsed_before = now() - chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
    Ok(in_flight
        .into_iter()
        .filter(|log| !running.contains(&log.id) && log.created_at < cutoff)
        .filter(|log| match leases.get(&log.id) {
            None => true,
            Some(r) => r.owner == owner || r.heartbeat_at < lapsed_before,
        })
        .collect())
}

/// Tokens metered this UTC month for the user, from the rollup (one row, no history scan).
pub async fn tokens_this_month(db: &impl ConnectionTrait, user_id: &str) -> AppResult<i64> {
    Ok(
        usage_monthly::Entity::find_by_id((user_id.to_owned(), month_key(Utc::now())))
            .one(db)
            .await?
            .map_or(0, |m| m.prompt_tokens + m.completion_tokens),
    )
}
