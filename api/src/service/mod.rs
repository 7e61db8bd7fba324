//! Database work, one module per domain. Functions take any connection or transaction.

pub mod accounts;
pub mod admin;
pub mod calls;
pub mod history;
pub mod profiles;
pub mod usage;
