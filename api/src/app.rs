//! The application: router, listener and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::serve::ListenerExt;
use axum::{Extension, Router, middleware};
use tokio::net::TcpListener;
use tower_cookies::CookieManagerLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::auth::Auth;
use crate::calls::Calls;
use crate::config::Config;
use crate::llm::{UpstreamInfo, describe_upstream};
use crate::state::AppState;
use crate::transport::{self, health, ide};
use crate::{db, graphql};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("could not connect to the database: {0}")]
    Database(#[source] sea_orm::DbErr),
    #[error("could not apply migrations: {0}")]
    Migrations(#[source] sea_orm::DbErr),
    #[error("could not start the upstream client: {0}")]
    Upstream(String),
    #[error("could not finalise calls left in flight: {0}")]
    Recovery(String),
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A built application, bound to its port but not yet serving.
pub struct Application {
    listener: TcpListener,
    /// `METRICS_ADDR`'s listener and routes, when set.
    metrics: Option<(TcpListener, Router)>,
    router: Router,
    state: AppState,
    sockets: Arc<transport::websocket::Sockets>,
}

/// What the `api` binary does (and the processes that stand in for it: the benchmark's server,
/// the tests' killable one): configuration from the environment, migrations and recovery, then
/// serving until SIGTERM/SIGINT. `on_listening` learns the bound address once requests are
/// accepted. A bad configuration exits 2, any other failure 1.
pub async fn serve_from_env(on_listening: impl FnOnce(SocketAddr)) -> std::process::ExitCode {
    use std::process::ExitCode;
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if config.auth.secret_is_dev_default {
        tracing::warn!(
            "BETTER_AUTH_SECRET is not set: using a development secret; set one before exposing this server"
        );
    }
    let backend = config.database.backend();
    let pool = config.database.max_connections;
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %app.local_addr(), ?backend, pool, "listening");
    on_listening(app.local_addr());
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}

impl Application {
    /// Connect, migrate (unless turned off), finalise calls a previous run left in flight, and
    /// bind the listener.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        if config.database.run_migrations {
            db::migrate(&config.database)
                .await
                .map_err(StartupError::Migrations)?;
        }
        let db = db::connect(&config.database)
            .await
            .map_err(StartupError::Database)?;
        let statements = db.statement_counter();
        let migrated = match db::pending_migrations(&db).await {
            Ok(p) if p.is_empty() => true,
            Ok(p) => {
                tracing::warn!(pending = ?p, "migrations are pending and RUN_MIGRATIONS=false: /readyz reports not ready");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the migration status");
                false
            }
        };
        let upstream = match &config.upstream.base_url {
            Some(url) => UpstreamInfo {
                base_url: url.to_string(),
                local: false,
            },
            None => {
                let local = upstream::spawn(upstream::UpstreamConfig::default())
                    .await
                    .map_err(|e| StartupError::Upstream(e.to_string()))?;
                UpstreamInfo {
                    base_url: local.base_url(),
                    local: true,
                }
            }
        };
        if upstream.local {
            tracing::warn!(
                "no OPENAI_BASE_URL: completions go to the {}",
                describe_upstream(&upstream)
            );
        } else {
            tracing::info!(upstream = %describe_upstream(&upstream), "completions go to the configured upstream");
        }
        // Build the tokenizer tables now, off the executor, rather than in the first call.
        let _ = tokio::task::spawn_blocking(tokenizer::warm_up).await;
        // Recorded only when someone can scrape them.
        let metrics = Arc::new(crate::metrics::Metrics::new(
            config.server.metrics_addr.is_some(),
        ));
        let calls = Arc::new(
            Calls::new(
                db.clone(),
                config.upstream.clone(),
                config.calls.clone(),
                config.defaults.clone(),
                upstream,
                config.calls.instance_id.clone(),
                metrics.clone(),
            )
            .map_err(|e| StartupError::Upstream(e.to_string()))?,
        );
        if migrated {
            match calls.recover().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    calls = n,
                    "finalised calls a previous run left in flight, as errors"
                ),
                Err(e) => return Err(StartupError::Recovery(format!("{e:?}"))),
            }
            // Renew this process's call leases; finalise calls whose process died.
            tokio::spawn(calls.clone().maintain());
            tokio::spawn(calls.clone().checkpoint_progress());
        }
        let addr = SocketAddr::new(config.server.host, config.server.port);
        let listener =
            transport::listen(addr).map_err(|source| StartupError::Bind { addr, source })?;
        let auth = Arc::new(Auth::new(&config.auth, &db));
        let state = AppState {
            db,
            auth,
            calls,
            config: Arc::new(config),
            statements,
            metrics,
        };
        let sockets = Arc::new(transport::websocket::Sockets::default());
        let router = router(state.clone(), sockets.clone());
        let metrics = match state.config.server.metrics_addr {
            Some(addr) => {
                let listener = transport::listen(addr)
                    .map_err(|source| StartupError::Bind { addr, source })?;
                let routes = transport::metrics::routes(state.clone(), sockets.clone());
                Some((listener, routes))
            }
            None => None,
        };
        Ok(Self {
            listener,
            metrics,
            router,
            state,
            sockets,
        })
    }

    /// The bound address (useful when `PORT=0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// Where `GET /metrics` is served, when `METRICS_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The shared state (tests use its database handle).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until SIGINT or SIGTERM.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serve until `signal` completes; then stop accepting, give running calls
    /// `SHUTDOWN_GRACE_SECS` to finish, stop and finalise the rest, and return once nothing is
    /// left in flight.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use futures_util::FutureExt;
        let Self {
            listener,
            metrics,
            router,
            state,
            sockets,
        } = self;
        let signal = signal.shared();
        if let Some((listener, routes)) = metrics {
            // Scraped until the process stops (it reports the drain too).
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, routes).await {
                    tracing::error!("metrics listener: {e}");
                }
            });
        }
        let listener = sending_at_once(listener);
        let server = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(signal.clone())
        .into_future();
        let calls = state.calls.clone();
        let grace = state.config.server.shutdown_grace;
        let drain = async move {
            signal.await;
            // WebSockets close (1001) once their running operations end; calls get the grace.
            sockets.shut_down();
            calls.shutdown(grace).await;
            // Upgraded connections are not the HTTP server's to wait for: give them a moment
            // to send their last events and their close (1001) before the process exits.
            let closed = async {
                while sockets.held_by(&transport::websocket::Holder::Process) > 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), closed)
                .await
                .is_err()
            {
                tracing::warn!("WebSocket connections still open at exit");
            }
        };
        let (served, ()) = tokio::join!(server, drain);
        tracing::info!("stopped: no call left in flight");
        state.db.close().await;
        served
    }
}

fn router(state: AppState, sockets: Arc<transport::websocket::Sockets>) -> Router {
    let schema = graphql::build_schema(state.clone());
    let limits = graphql::document_limits(&state);
    // Authentication runs once per request, before the GraphQL handler, and only where a caller
    // matters: health checks and the IDE's static files never cost a session lookup.
    let api = transport::http::routes()
        // Bounds every body the handler reads (it reads `Bytes`, which honours the limit).
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.graphql.max_body_bytes,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            transport::authenticate,
        ));
    Router::new()
        .merge(health::routes())
        .merge(ide::routes())
        .merge(api)
        .layer(CookieManagerLayer::new())
        .layer(Extension(schema))
        .layer(Extension(limits))
        .layer(Extension(sockets))
        .layer(cors(&state.config))
        .layer(TraceLayer::new_for_http())
        .layer(middleware::from_fn(transport::request_id))
        .with_state(state)
}

/// Browsers on the trusted origins (a frontend on another port or host) may call the API with
/// credentials; no other origin may.
fn cors(config: &Config) -> CorsLayer {
    let origins: Vec<HeaderValue> = config
        .auth
        .trusted_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-requested-with"),
            HeaderName::from_static(crate::request_id::HEADER),
        ])
        .expose_headers([HeaderName::from_static(crate::request_id::HEADER)])
}

async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received: draining");
}

/// The listener's connections with TCP_NODELAY set: a completion's events are small writes some
/// milliseconds apart, and with Nagle's algorithm (on by default, and axum leaves it on) each
/// one waits for the peer's acknowledgement of the one before, which a delayed ACK holds up to
/// 40 ms, or a round trip on a distant client's link.
fn sending_at_once(
    listener: TcpListener,
) -> axum::serve::TapIo<TcpListener, fn(&mut tokio::net::TcpStream)> {
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on an accepted connection");
        }
    })
}

#[cfg(test)]
mod tests {
    use axum::serve::Listener;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = sending_at_once(listener);
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, peer) = listener.accept().await;
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(accepted.nodelay().unwrap(), "Nagle's algorithm is still on");
    }
}
