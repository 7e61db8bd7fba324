//! `call_reservations`: tokens an in-flight call may still use (addition for budgets).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "call_reservations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub log_id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub user_id: String,
    pub tokens: i64,
    /// The server process running the call.
    #[sea_orm(column_type = "Text")]
    pub owner: String,
    /// Renewed by the owner while the call runs; a lapsed lease means its process died.
    pub heartbeat_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    /// What the call had relayed at its last checkpoint (crash recovery bills and logs it).
    #[sea_orm(column_type = "Text")]
    pub checkpoint: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::prompt_logs::Entity",
        from = "Column::LogId",
        to = "super::prompt_logs::Column::Id",
        on_update = "NoAction",
        on_delete = "Cascade"
    )]
    PromptLogs,
}

impl Related<super::prompt_logs::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::PromptLogs.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
