//! `prompt_logs`: the auditable history, one row per upstream LLM call. A row is in flight while
//! `completion` is NULL; the database refuses any change once it is final, and any delete.

use sea_orm::entity::prelude::*;

/// Outcome of a call, stored as text and guarded by `prompt_logs_status_check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum CallStatus {
    /// The upstream finished normally.
    #[sea_orm(string_value = "ok")]
    Ok,
    /// The call failed or was interrupted; the reason is in `metadata`.
    #[sea_orm(string_value = "error")]
    Error,
    /// The upstream stopped with `finish_reason = content_filter`.
    #[sea_orm(string_value = "filtered")]
    Filtered,
}

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "prompt_logs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub user_id: String,
    #[sea_orm(column_type = "Text")]
    pub model: String,
    #[sea_orm(column_type = "Text")]
    pub prompt: String,
    /// NULL while the call is in flight.
    #[sea_orm(column_type = "Text", nullable)]
    pub completion: Option<String>,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub latency_ms: Option<i32>,
    pub status: CallStatus,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub metadata: Option<Json>,
    pub created_at: DateTimeUtc,
}

impl Model {
    /// Whether the call is still running (its completion not yet recorded).
    pub fn in_flight(&self) -> bool {
        self.completion.is_none()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id",
        on_update = "NoAction",
        on_delete = "Cascade"
    )]
    User,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
