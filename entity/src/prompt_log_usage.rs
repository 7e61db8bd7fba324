//! `prompt_log_usage`: which `token_usage` row meters which call, one each (addition).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "prompt_log_usage")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub log_id: Uuid,
    #[sea_orm(unique)]
    pub usage_id: Uuid,
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
    #[sea_orm(
        belongs_to = "super::token_usage::Entity",
        from = "Column::UsageId",
        to = "super::token_usage::Column::Id",
        on_update = "NoAction",
        on_delete = "Cascade"
    )]
    TokenUsage,
}

impl Related<super::token_usage::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::TokenUsage.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
