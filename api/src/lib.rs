//! The AI-wrapper GraphQL backend as a library: `main` only reads the configuration and runs
//! [`app::Application`], and tests build the same application in one call.

pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod graphql;
pub mod health;
pub mod llm;
pub mod metering;
pub mod service;
pub mod telemetry;
