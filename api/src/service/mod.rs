//! Database work, one module per domain. Functions take what they use (a connection or
//! transaction, configuration parts), never the whole application state.

pub mod accounts;
pub mod admin;
pub mod conversations;
pub mod history;
pub mod keyset;
pub mod profiles;
pub mod usage;
