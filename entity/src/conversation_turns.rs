//! `conversation_turns`: the append-only link from a conversation to its turns (`prompt_logs`
//! rows), in order (addition for conversations). The database refuses updates, and deletes other
//! than the cascade from deleting the user.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "conversation_turns")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub conversation_id: Uuid,
    /// 1 for the first turn.
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i32,
    #[sea_orm(unique)]
    pub log_id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub user_id: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::conversations::Entity",
        from = "Column::ConversationId",
        to = "super::conversations::Column::Id",
        on_update = "NoAction",
        on_delete = "Cascade"
    )]
    Conversations,
    #[sea_orm(
        belongs_to = "super::prompt_logs::Entity",
        from = "Column::LogId",
        to = "super::prompt_logs::Column::Id",
        on_update = "NoAction",
        on_delete = "Cascade"
    )]
    PromptLogs,
}

impl Related<super::conversations::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Conversations.def()
    }
}

impl Related<super::prompt_logs::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::PromptLogs.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
