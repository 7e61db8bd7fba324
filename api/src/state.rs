//! The one state every handler and resolver shares. A leaf: nothing it imports imports it back
//! (the layering test in `lib.rs` keeps that true).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::auth::Auth;
use crate::calls::Calls;
use crate::config::Config;
use crate::db::Db;
use crate::metrics::Metrics;

/// What every handler and resolver shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub auth: Arc<Auth>,
    pub calls: Arc<Calls>,
    /// SQL statements run through the request pool since start (a metric; tests count with it).
    pub statements: Arc<AtomicU64>,
    /// The Prometheus metrics (`GET /metrics`).
    pub metrics: Arc<Metrics>,
}
