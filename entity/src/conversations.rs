//! `conversations`: a user's multi-turn chat (addition for conversations). Its turns are
//! `prompt_logs` rows, linked in order by `conversation_turns`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "conversations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub user_id: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub title: Option<String>,
    /// The model of the next turn.
    #[sea_orm(column_type = "Text")]
    pub model: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub system_prompt: Option<String>,
    pub archived: bool,
    /// Turns so far; the next turn is number `turn_count + 1`.
    pub turn_count: i32,
    pub created_at: DateTimeUtc,
    /// Last activity: created, changed, or a turn started.
    pub updated_at: DateTimeUtc,
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
    #[sea_orm(has_many = "super::conversation_turns::Entity")]
    ConversationTurns,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl Related<super::conversation_turns::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ConversationTurns.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
