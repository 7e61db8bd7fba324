//! The AI-wrapper GraphQL backend as a library: `main` only reads the configuration and runs
//! [`app::Application`], and tests build the same application in one call.

pub mod app;
pub mod config;
pub mod db;
pub mod health;
pub mod telemetry;
