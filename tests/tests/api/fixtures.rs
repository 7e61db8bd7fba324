//! Rows written straight to the database, for tests of the data layer itself.

use api::db::Db;
use chrono::Utc;
use entity::{account, call_reservations, prompt_logs, session, token_usage, user, user_profiles};
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};
use uuid::Uuid;

pub async fn user(db: &Db, email: &str) -> user::Model {
    let now = Utc::now().naive_utc();
    user::ActiveModel {
        id: Set(Uuid::new_v4().simple().to_string()),
        name: Set("Test User".into()),
        email: Set(email.into()),
        email_verified: Set(false),
        image: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(db)
    .await
    .expect("insert user")
}

pub async fn profile(db: &Db, user_id: &str) -> user_profiles::Model {
    user_profiles::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id.into()),
        display_name: Set(Some("Tester".into())),
        default_model: Set("gpt-4o-mini".into()),
        monthly_token_budget: Set(5_000_000_000),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await
    .expect("insert profile")
}

pub async fn session(db: &Db, user_id: &str) -> session::Model {
    let now = Utc::now().naive_utc();
    session::ActiveModel {
        id: Set(Uuid::new_v4().simple().to_string()),
        expires_at: Set(now + chrono::Duration::days(7)),
        token: Set(Uuid::new_v4().simple().to_string()),
        created_at: Set(now),
        updated_at: Set(now),
        ip_address: Set(Some("127.0.0.1".into())),
        user_agent: Set(Some("tests".into())),
        user_id: Set(user_id.into()),
    }
    .insert(db)
    .await
    .expect("insert session")
}

pub async fn account(db: &Db, user_id: &str) -> account::Model {
    let now = Utc::now().naive_utc();
    account::ActiveModel {
        id: Set(Uuid::new_v4().simple().to_string()),
        account_id: Set(user_id.into()),
        provider_id: Set("credential".into()),
        user_id: Set(user_id.into()),
        access_token: Set(None),
        refresh_token: Set(None),
        id_token: Set(None),
        access_token_expires_at: Set(None),
        refresh_token_expires_at: Set(None),
        scope: Set(None),
        password: Set(Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into())),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(db)
    .await
    .expect("insert account")
}

pub async fn usage(db: &Db, user_id: &str) -> token_usage::Model {
    token_usage::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id.into()),
        model: Set("gpt-4o-mini".into()),
        prompt_tokens: Set(12),
        completion_tokens: Set(34),
        cost_microcents: Set(3_000_000_000),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await
    .expect("insert token_usage")
}

/// A log still in flight (completion NULL), written by `db` (a connection or a transaction).
pub async fn log_in_flight(db: &impl ConnectionTrait, user_id: &str) -> prompt_logs::Model {
    prompt_logs::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id.into()),
        model: Set("gpt-4o-mini".into()),
        prompt: Set("Say hi".into()),
        completion: Set(None),
        prompt_tokens: Set(3),
        completion_tokens: Set(0),
        latency_ms: Set(None),
        status: Set(prompt_logs::CallStatus::Ok),
        metadata: Set(Some(serde_json::json!({ "stream": true }))),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await
    .expect("insert prompt_logs")
}

/// The reservation and lease of `log`, a call in flight run by `owner`, last renewed `age` ago.
pub async fn lease(
    db: &impl ConnectionTrait,
    log: &prompt_logs::Model,
    owner: &str,
    age: chrono::Duration,
) -> call_reservations::Model {
    call_reservations::ActiveModel {
        log_id: Set(log.id),
        user_id: Set(log.user_id.clone()),
        tokens: Set(100),
        owner: Set(owner.into()),
        heartbeat_at: Set(Utc::now() - age),
        created_at: Set(log.created_at),
        ..Default::default()
    }
    .insert(db)
    .await
    .expect("insert call_reservations")
}
