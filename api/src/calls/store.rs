//! The database side of a call: admission against the budget, finalisation, lease renewal and
//! the search for stranded calls. Admission and finalisation are all or nothing each: a
//! transaction, or on PostgreSQL where one suffices a single statement (`super::unnest`).

use chrono::{DateTime, Utc};
use entity::prompt_logs::{self, CallStatus};
use entity::{
    call_reservations, conversation_turns, conversations, prompt_log_usage, token_usage,
    user_limits,
};
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult,
    QueryFilter, QuerySelect, Set,
};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

use crate::auth::session::LimitOverrides;
use crate::db::{Db, Tx};
use crate::error::{AppError, AppResult, CallLimitKind};
use crate::grouped::padded;
use crate::metering::{budget, rollup};
use crate::metrics::{FinishedCall, Metrics};
use crate::time::{month_key, now_micros};

use super::unnest;

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

/// Admit a call: within the budget and the limits, insert its in-flight log, its turn and its
/// reservation. A refused call writes nothing.
pub async fn admit(db: &Db, call: NewCall) -> AppResult<prompt_logs::Model> {
    let mut result = [None];
    admit_together(db, std::slice::from_ref(&call), &mut result).await?;
    result[0]
        .take()
        .unwrap_or_else(|| Err(AppError::internal("an admission without an outcome")))
}

/// Admit calls together (group commit): one transaction for all of them, with one statement
/// per table rather than per call, and one commit. On PostgreSQL the logs and reservations are
/// one statement, and a group with no budget, limits or conversation turn to check is that
/// statement alone, without a transaction around it. Each call is decided as [`admit`] would
/// decide it alone, in the given order: a call counts the ones admitted before it in the
/// group. Outcomes are in the calls' order.
///
/// If the group fails as a whole (a database error: a user deleted meanwhile, a deadlock, a
/// lost connection), nothing of it was written; its refusals stand, and every other call is
/// admitted on its own, so one call cannot fail the others.
pub async fn admit_many(db: &Db, calls: Vec<NewCall>) -> Vec<AppResult<prompt_logs::Model>> {
    let mut results: Vec<Option<AppResult<prompt_logs::Model>>> =
        calls.iter().map(|_| None).collect();
    if let Err(e) = admit_together(db, &calls, &mut results).await {
        if calls.len() == 1 {
            return vec![Err(e)];
        }
        tracing::warn!(error = ?e, calls = calls.len(), "a group admission failed: admitting its calls one at a time");
        let alone = calls
            .into_iter()
            .zip(results)
            .map(|(call, decided)| async move {
                match decided {
                    Some(Err(refused)) => Err(refused),
                    _ => admit(db, call).await,
                }
            });
        return futures_util::future::join_all(alone).await;
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(AppError::internal("an admission without an outcome"))))
        .collect()
}

/// What a user's checked calls are decided against, in one group.
struct Account {
    /// Tokens metered this month.
    used: i64,
    /// Calls in flight, and the tokens they reserve.
    running: i64,
    reserved: i64,
    /// Start times of the calls of the last minute, newest first (only for a per-minute limit).
    recent: Vec<DateTime<Utc>>,
}

impl NewCall {
    /// Whether admission checks a budget or limits (which lock the user's month).
    fn checked(&self) -> bool {
        self.budget > 0 || !self.limits.unlimited()
    }
}

/// The group's transaction. Refusals are written into `results` as they are decided; the
/// admitted calls' logs only once the transaction committed. An error means nothing was
/// written.
async fn admit_together(
    db: &Db,
    calls: &[NewCall],
    results: &mut [Option<AppResult<prompt_logs::Model>>],
) -> AppResult<()> {
    if db.get_database_backend() == DbBackend::Postgres
        && calls.iter().all(|c| !c.checked() && c.turn.is_none())
    {
        // Nothing to decide and nothing to lock: every call is admitted, and on PostgreSQL
        // its writes are one statement (`unnest::admit`), atomic without a transaction.
        let admitted: Vec<usize> = (0..calls.len()).collect();
        let logs = write_admitted(db, calls, &admitted, now_micros()).await?;
        for (result, log) in results.iter_mut().zip(logs) {
            *result = Some(Ok(log));
        }
        return Ok(());
    }
    let txn = db.begin().await?;
    let created_at = now_micros();
    // The users whose calls are checked, locked in one order (their rollup rows, by user id),
    // so that concurrent groups cannot deadlock on them. With no budget and no limits there is
    // nothing to check and no lock: one user's calls are admitted in parallel.
    let checked = users_of(calls, NewCall::checked);
    let mut accounts = if checked.is_empty() {
        HashMap::new()
    } else {
        let rated = users_of(calls, |c| c.checked() && c.limits.per_minute > 0);
        lock_accounts(&txn, checked, &rated, created_at).await?
    };
    let mut admitted = Vec::with_capacity(calls.len());
    for (i, call) in calls.iter().enumerate() {
        let account = accounts.get_mut(call.user_id.as_str());
        if call.checked()
            && let Some(a) = &account
        {
            let refusal =
                limit_refusal(call.limits, a.running, &a.recent, created_at).or_else(|| {
                    (call.budget > 0 && !budget::admits(call.budget, a.used, a.reserved)).then(
                        || AppError::BudgetExceeded {
                            budget: call.budget,
                        },
                    )
                });
            if let Some(refusal) = refusal {
                results[i] = Some(Err(refusal));
                continue;
            }
        }
        if let Some(turn) = &call.turn {
            match take_turn(&txn, &call.user_id, turn, created_at).await {
                Ok(()) => {}
                Err(AppError::ConversationBusy) => {
                    results[i] = Some(Err(AppError::ConversationBusy));
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(a) = account {
            a.running += 1;
            a.reserved = a
                .reserved
                .saturating_add(std::cmp::max(call.reservation, 0));
            a.recent.insert(0, created_at);
        }
        admitted.push(i);
    }
    if !admitted.is_empty() {
        let logs = write_admitted(&txn, calls, &admitted, created_at).await?;
        txn.commit().await?;
        for (&i, log) in admitted.iter().zip(logs) {
            results[i] = Some(Ok(log));
        }
    }
    // With every call refused, the transaction rolls back (dropped): nothing at all is
    // written, not even the rollup rows' upsert.
    Ok(())
}

/// Lock the `checked` users' months (sorted and distinct) and read what their calls are
/// decided against; `rated` (a subset, also sorted) have a per-minute limit, whose window is
/// read too. On PostgreSQL two statements (`rollup::lock_months`, `unnest::accounts`), on
/// SQLite four.
async fn lock_accounts<'a>(
    txn: &Tx,
    checked: Vec<&'a str>,
    rated: &[&str],
    now: DateTime<Utc>,
) -> AppResult<HashMap<&'a str, Account>> {
    let month = month_key(now);
    let used = rollup::lock_months(txn, &checked, &month).await?;
    let (mut flight, mut recent) = if txn.get_database_backend() == DbBackend::Postgres {
        let is_rated: Vec<bool> = checked
            .iter()
            .map(|u| rated.binary_search(u).is_ok())
            .collect();
        let (mut flight, mut recent) = (HashMap::new(), HashMap::new());
        for (user, running, reserved, times) in
            unnest::accounts(txn, &checked, &is_rated, now - RATE_WINDOW).await?
        {
            flight.insert(user.clone(), (running, reserved));
            recent.insert(user, times);
        }
        (flight, recent)
    } else {
        (
            in_flight(txn, &checked).await?,
            recent_calls(txn, rated, now).await?,
        )
    };
    let mut accounts = HashMap::with_capacity(checked.len());
    for user in checked {
        let (running, reserved) = flight.remove(user).unwrap_or((0, 0));
        accounts.insert(
            user,
            Account {
                used: used.get(user).copied().unwrap_or(0),
                running,
                reserved,
                recent: recent.remove(user).unwrap_or_default(),
            },
        );
    }
    Ok(accounts)
}

/// Write the admitted calls' in-flight logs, reservations and turns; their logs, in order.
async fn write_admitted(
    db: &impl ConnectionTrait,
    calls: &[NewCall],
    admitted: &[usize],
    created_at: DateTime<Utc>,
) -> AppResult<Vec<prompt_logs::Model>> {
    let logs: Vec<prompt_logs::Model> = admitted
        .iter()
        .map(|&i| in_flight_log(&calls[i], created_at))
        .collect();
    if db.get_database_backend() == DbBackend::Postgres {
        let reservations: Vec<(i64, &str)> = admitted
            .iter()
            .map(|&i| {
                (
                    std::cmp::max(calls[i].reservation, 0),
                    calls[i].owner.as_str(),
                )
            })
            .collect();
        unnest::admit(db, &logs, &reservations).await?;
    } else {
        prompt_logs::Entity::insert_many(
            logs.iter()
                .map(|l| prompt_logs::ActiveModel::from(l.clone())),
        )
        .exec_without_returning(db)
        .await?;
        call_reservations::Entity::insert_many(admitted.iter().map(|&i| {
            let call = &calls[i];
            call_reservations::ActiveModel {
                log_id: Set(call.id),
                user_id: Set(call.user_id.clone()),
                tokens: Set(std::cmp::max(call.reservation, 0)),
                owner: Set(call.owner.clone()),
                heartbeat_at: Set(created_at),
                created_at: Set(created_at),
                ..Default::default()
            }
        }))
        .exec_without_returning(db)
        .await?;
    }
    let turns: Vec<(Uuid, i32, Uuid, &str)> = admitted
        .iter()
        .filter_map(|&i| {
            let call = &calls[i];
            let turn = call.turn.as_ref()?;
            Some((
                turn.conversation_id,
                turn.seq,
                call.id,
                call.user_id.as_str(),
            ))
        })
        .collect();
    if turns.is_empty() {
        return Ok(logs);
    }
    if db.get_database_backend() == DbBackend::Postgres {
        unnest::turns(db, &turns).await?;
    } else {
        conversation_turns::Entity::insert_many(turns.iter().map(
            |&(conversation_id, seq, log_id, user_id)| conversation_turns::ActiveModel {
                conversation_id: Set(conversation_id),
                seq: Set(seq),
                log_id: Set(log_id),
                user_id: Set(user_id.to_owned()),
            },
        ))
        .exec_without_returning(db)
        .await?;
    }
    Ok(logs)
}

/// The users of the calls that `pick` picks, sorted and distinct.
fn users_of(calls: &[NewCall], pick: impl Fn(&NewCall) -> bool) -> Vec<&str> {
    let mut users: Vec<&str> = calls
        .iter()
        .filter(|c| pick(c))
        .map(|c| c.user_id.as_str())
        .collect();
    users.sort_unstable();
    users.dedup();
    users
}

/// The log an admitted call starts with: in flight (no completion yet).
fn in_flight_log(call: &NewCall, created_at: DateTime<Utc>) -> prompt_logs::Model {
    prompt_logs::Model {
        id: call.id,
        user_id: call.user_id.clone(),
        model: call.model.clone(),
        prompt: call.prompt.clone(),
        completion: None,
        prompt_tokens: clamp_i32(call.prompt_tokens),
        completion_tokens: 0,
        latency_ms: None,
        status: CallStatus::Ok,
        metadata: Some(call.metadata.clone()),
        created_at,
    }
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

    /// These defaults under a user's overrides (`user_limits`: `None` keeps the default, a
    /// negative value, which the operator's API never writes, counts as unlimited).
    pub fn overridden(self, overrides: LimitOverrides) -> CallLimits {
        let pick =
            |v: Option<i32>, default: u32| v.map_or(default, |n| u32::try_from(n).unwrap_or(0));
        CallLimits {
            max_concurrent: pick(overrides.max_concurrent_calls, self.max_concurrent),
            per_minute: pick(overrides.calls_per_minute, self.per_minute),
        }
    }
}

/// Each user's limits: the operator's overrides (`user_limits`) over the server's defaults,
/// in one query.
pub async fn limits_for(
    db: &impl ConnectionTrait,
    user_ids: &[String],
    defaults: CallLimits,
) -> AppResult<HashMap<String, CallLimits>> {
    let rows = user_limits::Entity::find()
        .filter(user_limits::Column::UserId.is_in(padded(user_ids.iter().cloned())))
        .all(db)
        .await?;
    let mut limits: HashMap<String, CallLimits> =
        user_ids.iter().map(|u| (u.clone(), defaults)).collect();
    for row in rows {
        let overrides = LimitOverrides {
            max_concurrent_calls: row.max_concurrent_calls,
            calls_per_minute: row.calls_per_minute,
        };
        limits.insert(row.user_id, defaults.overridden(overrides));
    }
    Ok(limits)
}

#[derive(FromQueryResult)]
struct InFlightSum {
    user_id: String,
    calls: i64,
    total: Option<i64>,
}

/// Each user's calls in flight, and what they may still use (users without any are absent).
async fn in_flight(
    db: &impl ConnectionTrait,
    user_ids: &[&str],
) -> AppResult<HashMap<String, (i64, i64)>> {
    use call_reservations::Column as R;
    let sums = call_reservations::Entity::find()
        .select_only()
        .column(R::UserId)
        .column_as(R::LogId.count(), "calls")
        // SUM of a bigint is numeric on PostgreSQL: cast back to bigint.
        .column_as(R::Tokens.sum().cast_as("BIGINT"), "total")
        .filter(R::UserId.is_in(padded(user_ids.iter().copied())))
        .group_by(R::UserId)
        .into_model::<InFlightSum>()
        .all(db)
        .await?;
    Ok(sums
        .into_iter()
        .map(|s| (s.user_id, (s.calls, s.total.unwrap_or(0))))
        .collect())
}

/// Start times of each user's calls of the last minute, newest first.
async fn recent_calls(
    db: &impl ConnectionTrait,
    user_ids: &[&str],
    now: DateTime<Utc>,
) -> AppResult<HashMap<String, Vec<DateTime<Utc>>>> {
    use sea_orm::QueryOrder;
    let mut recent: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
    if user_ids.is_empty() {
        return Ok(recent);
    }
    let rows: Vec<(String, DateTime<Utc>)> = prompt_logs::Entity::find()
        .select_only()
        .column(prompt_logs::Column::UserId)
        .column(prompt_logs::Column::CreatedAt)
        .filter(prompt_logs::Column::UserId.is_in(padded(user_ids.iter().copied())))
        .filter(prompt_logs::Column::CreatedAt.gt(now - RATE_WINDOW))
        .order_by_desc(prompt_logs::Column::CreatedAt)
        .into_tuple()
        .all(db)
        .await?;
    for (user, at) in rows {
        recent.entry(user).or_default().push(at);
    }
    Ok(recent)
}

/// The window of the per-minute limit.
const RATE_WINDOW: chrono::Duration = chrono::Duration::seconds(60);

/// Why a call over the user's concurrency or rate limit is refused, given the calls `running`
/// and the start times of the last minute's calls, newest first. Decided under the user's
/// month lock, so that the counts cannot change between the check and the insert, on any
/// replica.
fn limit_refusal(
    limits: CallLimits,
    running: i64,
    recent: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Option<AppError> {
    if limits.max_concurrent > 0 && running >= i64::from(limits.max_concurrent) {
        return Some(AppError::CallLimit {
            limit: CallLimitKind::Concurrency,
            message: format!(
                "at most {} calls may run at once: wait for one to finish",
                limits.max_concurrent
            ),
            retry_after_secs: 1,
        });
    }
    if limits.per_minute > 0
        && let Some(oldest) = recent.get(limits.per_minute as usize - 1)
    {
        // The oldest of the last `per_minute` calls leaves the window then.
        let wait = u64::try_from((*oldest + RATE_WINDOW - now).num_milliseconds()).unwrap_or(0);
        return Some(AppError::CallLimit {
            limit: CallLimitKind::Rate,
            message: format!("at most {} calls per minute", limits.per_minute),
            retry_after_secs: std::cmp::max(wait.div_ceil(1000), 1),
        });
    }
    None
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

pub(super) fn clamp_i32(n: i64) -> i32 {
    i32::try_from(std::cmp::max(n, 0)).unwrap_or(i32::MAX)
}

/// Finalise an in-flight call: complete its log, append its one `token_usage` row (linked to the
/// log; the database's trigger adds it to the rollups) and release its reservation, all or
/// nothing. A log that is already final is returned as it is, and nothing is written.
///
/// What it commits is added to `metrics` (so the token and cost counters agree with
/// `token_usage` exactly).
///
/// On PostgreSQL this is one statement (`unnest::finalise`), and a read of the log only if it
/// was final already; elsewhere a transaction of five statements.
pub async fn finalise(
    db: &Db,
    metrics: &Metrics,
    log: &prompt_logs::Model,
    outcome: Outcome,
) -> AppResult<prompt_logs::Model> {
    if db.get_database_backend() == DbBackend::Postgres {
        let done =
            unnest::finalise(db, &[(log, &outcome)], &[Uuid::now_v7()], now_micros()).await?;
        if let Some(stored) = done.into_iter().next() {
            metrics.call_finished(finished_call(log, &outcome));
            return Ok(stored);
        }
        return stored_log(db, log.id).await;
    }
    let finished = finished_call(log, &outcome);
    let usage = usage_row(log, &outcome, Uuid::now_v7(), now_micros());
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
        let usage = usage.insert(&txn).await?;
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
        metrics.call_finished(finished);
    }
    Ok(done)
}

/// A log as stored (one that was final already when a finalisation found it).
async fn stored_log(db: &Db, id: Uuid) -> AppResult<prompt_logs::Model> {
    prompt_logs::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| AppError::internal("finalised log vanished"))
}

/// A call's end to record: its in-flight log and how it ended.
pub type Finish = (prompt_logs::Model, Outcome);

/// Finalise calls together (group commit), each as [`finalise`] would alone: one statement
/// per table rather than per call (on PostgreSQL one statement in all), and one commit. A
/// burst of streams ends as it started, together, and one call at a time each finalisation
/// was a transaction of six statements queued on the pool. Results are in the calls' order.
///
/// A group of one is [`finalise`] itself. A log finalised meanwhile (by a lease sweep) is left
/// as it was: on PostgreSQL the others are finalised together and that one is returned as
/// [`finalise`] returns it; on SQLite the group writes nothing and every call is finalised on
/// its own. If the group fails as a whole (a value the database refuses, a lost connection),
/// nothing of it was written and every call is finalised on its own, so one call cannot fail
/// the others.
pub async fn finalise_many(
    db: &Db,
    metrics: &Metrics,
    mut calls: Vec<Finish>,
) -> Vec<AppResult<prompt_logs::Model>> {
    if calls.len() == 1
        && let Some((log, outcome)) = calls.pop()
    {
        return vec![finalise(db, metrics, &log, outcome).await];
    }
    match finalise_together(db, &calls).await {
        Ok(done) => {
            let each = calls
                .into_iter()
                .zip(done)
                .map(|((log, outcome), done)| async move {
                    match done {
                        Some(stored) => {
                            metrics.call_finished(finished_call(&log, &outcome));
                            Ok(stored)
                        }
                        // Final already: as stored, nothing written (nor metered).
                        None => stored_log(db, log.id).await,
                    }
                });
            futures_util::future::join_all(each).await
        }
        Err(e) => {
            tracing::warn!(error = ?e, calls = calls.len(), "a group finalisation failed: finalising its calls one at a time");
            let alone = calls
                .into_iter()
                .map(|(log, outcome)| async move { finalise(db, metrics, &log, outcome).await });
            futures_util::future::join_all(alone).await
        }
    }
}

/// The group's writes, all or nothing. The logs this finalised, as stored, in the calls'
/// order; `None` for a log that was final already (PostgreSQL; on SQLite, such a log makes
/// the whole group an error and nothing is written).
async fn finalise_together(
    db: &Db,
    calls: &[Finish],
) -> AppResult<Vec<Option<prompt_logs::Model>>> {
    if db.get_database_backend() == DbBackend::Postgres {
        let usage_ids: Vec<Uuid> = calls.iter().map(|_| Uuid::now_v7()).collect();
        let each: Vec<(&prompt_logs::Model, &Outcome)> =
            calls.iter().map(|(log, outcome)| (log, outcome)).collect();
        let mut stored: HashMap<Uuid, prompt_logs::Model> =
            unnest::finalise(db, &each, &usage_ids, now_micros())
                .await?
                .into_iter()
                .map(|log| (log.id, log))
                .collect();
        return Ok(calls
            .iter()
            .map(|(log, _)| stored.remove(&log.id))
            .collect());
    }
    let txn = db.begin().await?;
    let done = finalise_with_cases(&txn, calls).await?;
    txn.commit().await?;
    Ok(done.into_iter().map(Some).collect())
}

/// [`finalise_together`]'s statements on SQLite: each column set by a `CASE` over the logs'
/// ids, multi-row inserts, and the logs read back.
async fn finalise_with_cases(txn: &Tx, calls: &[Finish]) -> AppResult<Vec<prompt_logs::Model>> {
    use prompt_logs::Column as C;
    use sea_orm::sea_query::{CaseStatement, SimpleExpr};
    let ids: Vec<Uuid> = calls.iter().map(|(log, _)| log.id).collect();
    // Each column set by a CASE over the logs' ids.
    let case = |column: C, value: &dyn Fn(&Outcome) -> SimpleExpr| -> SimpleExpr {
        let mut case = CaseStatement::new();
        for (log, outcome) in calls {
            case = case.case(Expr::col(C::Id).eq(log.id), value(outcome));
        }
        case.finally(Expr::col(column)).into()
    };
    let updated = prompt_logs::Entity::update_many()
        .col_expr(
            C::Completion,
            case(C::Completion, &|o| Expr::value(o.completion.clone())),
        )
        .col_expr(
            C::PromptTokens,
            case(C::PromptTokens, &|o| {
                Expr::value(clamp_i32(o.prompt_tokens))
            }),
        )
        .col_expr(
            C::CompletionTokens,
            case(C::CompletionTokens, &|o| {
                Expr::value(clamp_i32(o.completion_tokens))
            }),
        )
        .col_expr(
            C::LatencyMs,
            case(C::LatencyMs, &|o| Expr::value(clamp_i32(o.latency_ms))),
        )
        .col_expr(C::Status, case(C::Status, &|o| Expr::value(o.status)))
        .col_expr(
            C::Metadata,
            case(C::Metadata, &|o| Expr::value(o.metadata.clone())),
        )
        .filter(C::Id.is_in(ids.iter().copied()))
        .filter(C::Completion.is_null())
        .exec(txn)
        .await?;
    if updated.rows_affected != calls.len() as u64 {
        // One was final already: dropping the transaction writes nothing.
        return Err(AppError::internal(
            "a log of the group was finalised meanwhile",
        ));
    }
    let created_at = now_micros();
    let usage_ids: Vec<Uuid> = calls.iter().map(|_| Uuid::now_v7()).collect();
    token_usage::Entity::insert_many(
        calls
            .iter()
            .zip(&usage_ids)
            .map(|((log, outcome), id)| usage_row(log, outcome, *id, created_at)),
    )
    .exec_without_returning(txn)
    .await?;
    prompt_log_usage::Entity::insert_many(calls.iter().zip(&usage_ids).map(|((log, _), id)| {
        prompt_log_usage::ActiveModel {
            log_id: Set(log.id),
            usage_id: Set(*id),
        }
    }))
    .exec_without_returning(txn)
    .await?;
    call_reservations::Entity::delete_many()
        .filter(call_reservations::Column::LogId.is_in(padded(ids.iter().copied())))
        .exec(txn)
        .await?;
    let mut stored: HashMap<Uuid, prompt_logs::Model> = prompt_logs::Entity::find()
        .filter(C::Id.is_in(padded(ids.iter().copied())))
        .all(txn)
        .await?
        .into_iter()
        .map(|log| (log.id, log))
        .collect();
    let done = ids
        .iter()
        .map(|id| stored.remove(id))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| AppError::internal("finalised log vanished"))?;
    Ok(done)
}

/// The usage row of a call finalised with `outcome`.
fn usage_row(
    log: &prompt_logs::Model,
    outcome: &Outcome,
    id: Uuid,
    created_at: DateTime<Utc>,
) -> token_usage::ActiveModel {
    token_usage::ActiveModel {
        id: Set(id),
        user_id: Set(log.user_id.clone()),
        model: Set(log.model.clone()),
        prompt_tokens: Set(clamp_i32(outcome.prompt_tokens)),
        completion_tokens: Set(clamp_i32(outcome.completion_tokens)),
        cost_microcents: Set(outcome.cost_microcents),
        created_at: Set(created_at),
    }
}

/// What the metrics record of a call finalised with `outcome`.
fn finished_call<'a>(log: &'a prompt_logs::Model, outcome: &Outcome) -> FinishedCall<'a> {
    let ttft = outcome
        .metadata
        .get("ttft_ms")
        .and_then(Value::as_u64)
        .map(Duration::from_millis);
    // A call recovered from a checkpoint was not timed by this process.
    let timed = outcome.metadata.get("usage_source").and_then(Value::as_str) != Some("checkpoint");
    FinishedCall {
        model: &log.model,
        status: status_name(outcome.status),
        prompt_tokens: i64::from(clamp_i32(outcome.prompt_tokens)),
        completion_tokens: i64::from(clamp_i32(outcome.completion_tokens)),
        cost_microcents: outcome.cost_microcents,
        ttft: ttft.filter(|_| timed),
        duration: timed
            .then(|| Duration::from_millis(u64::try_from(outcome.latency_ms).unwrap_or(0))),
    }
}

/// A status as stored (and as the metrics label it).
pub(super) fn status_name(status: CallStatus) -> &'static str {
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
    if db.get_database_backend() == DbBackend::Postgres {
        db.execute_raw(unnest::renew(log_ids, now_micros())).await?;
        return Ok(());
    }
    call_reservations::Entity::update_many()
        .col_expr(
            call_reservations::Column::HeartbeatAt,
            Expr::value(now_micros()),
        )
        .filter(call_reservations::Column::LogId.is_in(padded(log_ids.iter().copied())))
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
    if db.get_database_backend() == DbBackend::Postgres {
        db.execute_raw(unnest::checkpoint_update(unsaved, now_micros()))
            .await?;
    } else {
        db.execute(&checkpoint_update(unsaved)).await?;
    }
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
    use sea_orm::{JoinType, QueryOrder, RelationTrait};
    // Every call in flight with its lease, but not the rows themselves: a sweep runs every
    // third of a lease while this and other replicas' calls run, and almost none of those are
    // stranded. (It read every in-flight row, prompt and metadata included, on each sweep.)
    // Each is (call, created at, its lease's owner and heartbeat if it has one).
    type InFlight = (Uuid, DateTime<Utc>, Option<String>, Option<DateTime<Utc>>);
    let in_flight: Vec<InFlight> = prompt_logs::Entity::find()
        .select_only()
        .column(prompt_logs::Column::Id)
        .column(prompt_logs::Column::CreatedAt)
        .column(call_reservations::Column::Owner)
        .column(call_reservations::Column::HeartbeatAt)
        .join(
            JoinType::LeftJoin,
            call_reservations::Relation::PromptLogs.def().rev(),
        )
        .filter(prompt_logs::Column::Completion.is_null())
        .into_tuple()
        .all(db)
        .await?;
    let lapsed_before =
        now_micros() - chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
    let stranded_ids: Vec<Uuid> = in_flight
        .into_iter()
        .filter(|(id, created_at, _, _)| !running.contains(id) && *created_at < cutoff)
        .filter(
            |(_, _, lease_owner, heartbeat)| match (lease_owner, heartbeat) {
                (Some(lease_owner), Some(heartbeat)) => {
                    lease_owner == owner || *heartbeat < lapsed_before
                }
                _ => true,
            },
        )
        .map(|(id, _, _, _)| id)
        .collect();
    if stranded_ids.is_empty() {
        return Ok(Vec::new());
    }
    // Still in flight: one may have been finalised since.
    let stranded = prompt_logs::Entity::find()
        .filter(prompt_logs::Column::Id.is_in(stranded_ids))
        .filter(prompt_logs::Column::Completion.is_null())
        .order_by_asc(prompt_logs::Column::CreatedAt)
        .all(db)
        .await?;
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
