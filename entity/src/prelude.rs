pub use super::account::Entity as Account;
pub use super::prompt_logs::{CallStatus, Entity as PromptLogs};
pub use super::session::Entity as Session;
pub use super::token_usage::Entity as TokenUsage;
pub use super::user::Entity as User;
pub use super::user_profiles::Entity as UserProfiles;
pub use super::verification::Entity as Verification;
