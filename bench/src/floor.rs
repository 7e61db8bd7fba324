//! `bench floor`: the least a server can do for a streamed completion, to measure the burst
//! scenario's floor on this machine beside the real server (`bench --floor plain|grouped`).
//!
//! The issue that set the burst target defines the floor as "one loopback hop plus one insert":
//! per `subscribe` this server parses the message, writes one row (on a pool of the server's
//! default size: alone, or grouped with the rows arriving together), sends the request upstream and relays each SSE delta as a
//! graphql-transport-ws `next` in the shape the real server sends, then a final event and
//! `complete`. It has no GraphQL, no sessions, no budget, no limits, no usage rows, no
//! checkpoints and no crash safety: whatever the real server adds over it is the price of
//! those. It uses the same libraries (axum's WebSocket, sea-orm over sqlx, reqwest) with the
//! same settings where they matter (TCP_NODELAY, the read buffer, the pool size).

use std::net::SocketAddr;
use std::process::ExitCode;

use api::grouped::Grouped;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement, Value};
use serde_json::json;
use tokio::sync::mpsc;

/// The table the floor writes one row per call into (created by [`serve`]).
pub const TABLE: &str = "bench_floor_calls";

#[derive(Clone)]
struct Floor {
    db: DatabaseConnection,
    /// With `FLOOR_GROUPED=1`: the rows of calls that arrive together are written in one
    /// statement, through the server's own group queue (two groups at a time, 64 rows each),
    /// instead of one autocommit statement per call.
    grouped: Option<Grouped<(uuid::Uuid, String), Result<(), String>>>,
    http: reqwest::Client,
    url: String,
}

/// `bench floor`: serve on `HOST`:`PORT`, writing to `DATABASE_URL` and calling
/// `OPENAI_BASE_URL`; prints `LISTENING <addr>` as `bench serve` does.
pub fn serve() -> ExitCode {
    crate::proc_stats::raise_fd_limit();
    // As the server does: reqwest has no built-in TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let env = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
    let mut options = ConnectOptions::new(env("DATABASE_URL")?);
    options.max_connections(10).sqlx_logging(false);
    let db = Database::connect(options)
        .await
        .map_err(|e| e.to_string())?;
    db.execute_unprepared(&format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (id uuid PRIMARY KEY, prompt text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
    ))
    .await
    .map_err(|e| e.to_string())?;
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!(
        "{}/chat/completions",
        env("OPENAI_BASE_URL")?.trim_end_matches('/')
    );
    let grouped = (std::env::var("FLOOR_GROUPED").as_deref() == Ok("1")).then(|| {
        let db = db.clone();
        Grouped::start(2, 64, move |rows: Vec<(uuid::Uuid, String)>| {
            let db = db.clone();
            async move {
                let n = rows.len();
                let placeholders: Vec<String> = (0..n)
                    .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
                    .collect();
                let values = rows
                    .into_iter()
                    .flat_map(|(id, prompt)| [Value::from(id), Value::from(prompt)]);
                let result = db
                    .execute_raw(Statement::from_sql_and_values(
                        db.get_database_backend(),
                        format!(
                            "INSERT INTO {TABLE} (id, prompt) VALUES {}",
                            placeholders.join(", ")
                        ),
                        values,
                    ))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                vec![result; n]
            }
        })
    });
    let app = Router::new()
        .route("/graphql", get(upgrade))
        .with_state(Floor {
            db,
            grouped,
            http,
            url,
        });
    let addr: SocketAddr = format!("{}:{}", env("HOST")?, env("PORT")?)
        .parse()
        .map_err(|e| format!("HOST:PORT: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "LISTENING {}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await.map_err(|e| e.to_string())
}

async fn upgrade(State(floor): State<Floor>, ws: WebSocketUpgrade) -> Response {
    ws.protocols(["graphql-transport-ws"])
        .read_buffer_size(1024)
        .on_upgrade(move |socket| connection(floor, socket))
}

/// One socket: `connection_init` is acknowledged whatever it carries; each `subscribe` is a
/// call in a task of its own, whose messages reach the socket through one writer.
async fn connection(floor: Floor, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::Text(text.into())).await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(m) = serde_json::from_str::<serde_json::Value>(&text) else {
            break;
        };
        match m["type"].as_str() {
            Some("connection_init") => {
                let _ = tx.send(json!({ "type": "connection_ack" }).to_string());
            }
            Some("ping") => {
                let _ = tx.send(json!({ "type": "pong" }).to_string());
            }
            Some("subscribe") => {
                let id = m["id"].as_str().unwrap_or_default().to_owned();
                let input = &m["payload"]["variables"]["i"];
                let prompt = input["prompt"].as_str().unwrap_or_default().to_owned();
                let max_tokens = input["maxTokens"].as_u64().unwrap_or(256);
                tokio::spawn(call(floor.clone(), tx.clone(), id, prompt, max_tokens));
            }
            _ => {}
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// One call: its row, its upstream request, its deltas relayed as they arrive, its end.
async fn call(
    floor: Floor,
    tx: mpsc::UnboundedSender<String>,
    id: String,
    prompt: String,
    max_tokens: u64,
) {
    let result = async {
        let row = uuid::Uuid::now_v7();
        match &floor.grouped {
            Some(grouped) => grouped
                .call((row, prompt.clone()))
                .await
                .ok_or("the group queue is gone")??,
            None => {
                floor
                    .db
                    .execute_raw(Statement::from_sql_and_values(
                        floor.db.get_database_backend(),
                        format!("INSERT INTO {TABLE} (id, prompt) VALUES ($1, $2)"),
                        [Value::from(row), Value::from(prompt.clone())],
                    ))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let mut response = floor
            .http
            .post(&floor.url)
            .json(&json!({
                "model": "gpt-4o-mini",
                "messages": [{ "role": "user", "content": prompt }],
                "stream": true,
                "max_tokens": max_tokens,
                "stream_options": { "include_usage": true },
            }))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .error_for_status()
            .map_err(|e| e.to_string())?;
        let mut buffer = Vec::new();
        let mut completion = String::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = buffer.drain(..end + 2).collect();
                let Some(data) = std::str::from_utf8(&event)
                    .ok()
                    .and_then(|e| e.trim().strip_prefix("data:"))
                    .map(str::trim)
                else {
                    continue;
                };
                if data == "[DONE]" {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
                if let Some(delta) = v["choices"][0]["delta"]["content"].as_str()
                    && !delta.is_empty()
                {
                    completion.push_str(delta);
                    let event = json!({ "delta": delta, "done": false, "log": null });
                    let _ = tx.send(next(&id, &event));
                }
            }
        }
        Ok::<_, String>((row, completion))
    }
    .await;
    match result {
        Ok((row, completion)) => {
            let log = json!({ "id": row, "status": "OK", "completion": completion, "completionTokens": null });
            let _ = tx.send(next(&id, &json!({ "delta": "", "done": true, "log": log })));
            let _ = tx.send(json!({ "id": id, "type": "complete" }).to_string());
        }
        Err(e) => {
            let error = json!({ "id": id, "type": "error", "payload": [{ "message": e }] });
            let _ = tx.send(error.to_string());
        }
    }
}

fn next(id: &str, event: &serde_json::Value) -> String {
    json!({ "id": id, "type": "next", "payload": { "data": { "completionStream": event } } })
        .to_string()
}
