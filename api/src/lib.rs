//! The AI-wrapper GraphQL backend as a library: `main` only reads the configuration and runs
//! [`app::Application`], and tests build the same application in one call.
//!
//! Layers, from the top: [`app`] (router, listener, shutdown) → [`transport`] (HTTP, WebSocket,
//! IDE, health, authentication per request) → [`graphql`] (the schema, by domain) → [`calls`]
//! (the call pipeline) and [`service`] (database work by domain) → [`auth`], [`metering`],
//! [`llm`] (the upstream client), [`db`], [`config`], [`time`], [`error`]. [`state`] is the one
//! shared state; nothing below `app` imports `app`, and no two modules import each other
//! (the `layering` test).

pub mod app;
pub mod auth;
pub mod calls;
pub mod config;
pub mod db;
pub mod error;
pub mod graphql;
pub mod grouped;
pub mod llm;
pub mod metering;
pub mod metrics;
pub mod request_id;
pub mod service;
pub mod state;
pub mod telemetry;
pub mod time;
pub mod transport;

#[cfg(test)]
mod layering;
