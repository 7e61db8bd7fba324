//! Integration tests against a spawned server and a fresh database per test.
//! `TEST_BACKEND=sqlite|postgres` picks the database (see the `tests` crate docs).

mod abuse;
mod append_only;
mod auth;
mod completions;
mod conversations;
mod cross_site;
mod fixtures;
mod health;
mod history;
mod migrations;
mod operations;
mod pooling;
mod rollups;
mod schema;
mod sdl;
mod transport;
mod usage;
mod websocket;
mod ws_protocol;
