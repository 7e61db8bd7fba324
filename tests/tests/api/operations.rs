//! Operating the server: Prometheus metrics on their own listener that agree exactly with the
//! meter (and pass `promtool check metrics` when `TEST_PROMTOOL` names it, as CI does), request
//! ids on responses, in the logs of the request and its call, and on the upstream request, and
//! JSON log lines without secrets.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;

use entity::prelude::*;
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use tests::ws::GqlWs;
use tests::{TestDatabase, base_vars, error_code, spawn_app_with_env};

use crate::completions::{COMPLETE, STREAM, set_budget};

/// The samples of an exposition: (name, sorted labels) → value.
fn samples(text: &str) -> HashMap<(String, BTreeMap<String, String>), f64> {
    let mut out = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let labels = rest
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').expect("label=value");
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        out.insert((name, labels), value.parse().expect("a number"));
    }
    out
}

fn get(
    s: &HashMap<(String, BTreeMap<String, String>), f64>,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let key = (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    s.get(&key).copied().unwrap_or(0.0)
}

async fn scrape(app: &tests::TestApp) -> (String, String) {
    let addr = app.metrics_addr.expect("METRICS_ADDR is set");
    let res = app
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    (content_type, res.text().await.unwrap())
}

/// `promtool check metrics` on the exposition, when `TEST_PROMTOOL` names the binary (CI sets
/// it; a missing binary then fails the test rather than skipping the check).
async fn promtool_check(text: &str) {
    let Ok(promtool) = std::env::var("TEST_PROMTOOL") else {
        eprintln!("TEST_PROMTOOL unset: the exposition is not checked with promtool here");
        return;
    };
    let mut child = tokio::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {promtool}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, text.as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_token_and_cost_counters_equal_token_usage() {
    let app = spawn_app_with_env(&[("METRICS_ADDR", "127.0.0.1:0")]).await;
    let ada = app.sign_up("ada@example.com").await;
    for (prompt, model) in [
        ("one @@tokens=3", "gpt-4o-mini"),
        ("two @@tokens=5", "gpt-4o-mini"),
        ("three @@tokens=7", "gpt-4o"),
        ("cut short @@tokens=9 @@cut_after=2", "gpt-4o-mini"),
        ("refused upstream @@fail=500", "gpt-4o"),
    ] {
        app.gql(
            Some(&ada.token),
            COMPLETE,
            json!({ "i": { "prompt": prompt, "model": model } }),
        )
        .await;
    }
    let mut ws = GqlWs::connect(&app, Some(&ada.token)).await;
    ws.subscribe(
        "1",
        STREAM,
        json!({ "i": { "prompt": "streamed @@tokens=4" } }),
    )
    .await;
    ws.collect("1").await;
    // Refusals: out of range, then over the budget.
    let body = app
        .gql(
            Some(&ada.token),
            COMPLETE,
            json!({ "i": { "prompt": "x", "maxTokens": 0 } }),
        )
        .await;
    assert_eq!(error_code(&body), Some("BAD_USER_INPUT"));
    set_budget(&app, &ada.email, 1).await;
    let body = app
        .gql(
            Some(&ada.token),
            COMPLETE,
            json!({ "i": { "prompt": "x" } }),
        )
        .await;
    assert_eq!(error_code(&body), Some("BUDGET_EXCEEDED"));

    let (content_type, text) = scrape(&app).await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let s = samples(&text);
    // Exactly the sums of token_usage, by model.
    let rows = TokenUsage::find().all(&app.db).await.unwrap();
    assert_eq!(rows.len(), 6);
    let mut by_model: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for r in &rows {
        let e = by_model.entry(r.model.clone()).or_default();
        e.0 += i64::from(r.prompt_tokens);
        e.1 += i64::from(r.completion_tokens);
        e.2 += r.cost_microcents;
    }
    for (model, (prompt, completion, cost)) in &by_model {
        let m = model.as_str();
        assert_eq!(
            get(
                &s,
                "aiwrapper_tokens_total",
                &[("kind", "prompt"), ("model", m)]
            ),
            *prompt as f64,
            "{text}"
        );
        assert_eq!(
            get(
                &s,
                "aiwrapper_tokens_total",
                &[("kind", "completion"), ("model", m)]
            ),
            *completion as f64
        );
        assert_eq!(
            get(&s, "aiwrapper_cost_microcents_total", &[("model", m)]),
            *cost as f64
        );
    }
    // Calls by model and status, as the logs say.
    let logs = PromptLogs::find().all(&app.db).await.unwrap();
    let mut calls: BTreeMap<(String, &str), f64> = BTreeMap::new();
    for l in &logs {
        let status = match l.status {
            entity::prompt_logs::CallStatus::Ok => "ok",
            entity::prompt_logs::CallStatus::Error => "error",
            entity::prompt_logs::CallStatus::Filtered => "filtered",
        };
        *calls.entry((l.model.clone(), status)).or_default() += 1.0;
    }
    for ((model, status), n) in &calls {
        assert_eq!(
            get(
                &s,
                "aiwrapper_upstream_calls_total",
                &[("model", model), ("status", status)]
            ),
            *n
        );
    }
    assert_eq!(
        get(
            &s,
            "aiwrapper_upstream_calls_total",
            &[("model", "gpt-4o"), ("status", "error")]
        ),
        1.0
    );
    assert_eq!(
        get(
            &s,
            "aiwrapper_call_refusals_total",
            &[("reason", "validation")]
        ),
        1.0
    );
    assert_eq!(
        get(&s, "aiwrapper_call_refusals_total", &[("reason", "budget")]),
        1.0
    );
    assert_eq!(
        get(
            &s,
            "aiwrapper_graphql_requests_total",
            &[("code", "UPSTREAM_ERROR"), ("operation", "mutation")]
        ),
        2.0,
        "the cut stream and the refused request"
    );
    assert_eq!(
        get(
            &s,
            "aiwrapper_graphql_requests_total",
            &[("code", "OK"), ("operation", "subscription")]
        ),
        1.0,
        "the WebSocket stream is counted when it ends"
    );
    // One time-to-first-token per call that had a first token, as its log records.
    for model in ["gpt-4o-mini", "gpt-4o"] {
        let with_first_token = logs
            .iter()
            .filter(|l| l.model == model)
            .filter(|l| {
                l.metadata
                    .as_ref()
                    .is_some_and(|m| m.get("ttft_ms").is_some())
            })
            .count();
        assert!(with_first_token > 0);
        assert_eq!(
            get(
                &s,
                "aiwrapper_upstream_time_to_first_token_seconds_count",
                &[("model", model)]
            ),
            with_first_token as f64
        );
        let calls = logs.iter().filter(|l| l.model == model).count();
        assert_eq!(
            get(
                &s,
                "aiwrapper_upstream_call_duration_seconds_count",
                &[("model", model)]
            ),
            calls as f64
        );
    }
    assert_eq!(get(&s, "aiwrapper_calls_in_flight", &[]), 0.0);
    promtool_check(&text).await;

    // Not on the public listener.
    let res = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    app.shutdown().await;
}

#[tokio::test]
async fn request_ids_come_back_and_go_upstream() {
    // With the upstream's credentials, which go with every call.
    let app = spawn_app_with_env(&[
        ("OPENAI_API_KEY", "sk-test-123"),
        ("OPENAI_ORG_ID", "org-abc"),
        ("OPENAI_PROJECT_ID", "proj_def"),
    ])
    .await;
    let ada = app.sign_up("ada@example.com").await;
    let post = |id: Option<&str>, prompt: &str| {
        let mut req = app
            .http
            .post(app.url("/graphql"))
            .bearer_auth(&ada.token)
            .json(&json!({ "query": COMPLETE, "variables": { "i": { "prompt": prompt } } }));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        req.send()
    };
    let res = post(Some("trace-abc.123:x_y"), "hello @@tokens=2 @@record=given")
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-abc.123:x_y");
    let body: Value = res.json().await.unwrap();
    assert!(body["errors"].is_null(), "{body}");
    let sent = app.upstream.stats.take_received("given").unwrap();
    assert_eq!(sent.request_id.as_deref(), Some("trace-abc.123:x_y"));
    assert_eq!(sent.authorization.as_deref(), Some("Bearer sk-test-123"));
    assert_eq!(sent.organization.as_deref(), Some("org-abc"));
    assert_eq!(sent.project.as_deref(), Some("proj_def"));
    assert_eq!(sent.target, "/v1/chat/completions");

    // None given, or one that is not plain: a fresh one, the same on both sides.
    for given in [None, Some("has space"), Some(&*"x".repeat(65))] {
        let res = post(given, "again @@tokens=1 @@record=fresh")
            .await
            .unwrap();
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        res.bytes().await.unwrap();
        let sent = app.upstream.stats.take_received("fresh").unwrap();
        assert_eq!(sent.request_id.as_deref(), Some(id.as_str()));
    }
    // Every response carries one, errors and health checks included.
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert!(res.headers().contains_key("x-request-id"));
    app.shutdown().await;
}

/// The server as a child process, its own upstream, on a fresh database, with `extra` in its
/// environment.
async fn server_process(
    extra: &[(&str, &str)],
) -> (
    tokio::process::Child,
    std::net::SocketAddr,
    Vec<String>,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    upstream::LocalUpstream,
    TestDatabase,
) {
    let database = TestDatabase::create().await;
    let upstream = upstream::spawn(upstream::UpstreamConfig {
        pace: std::time::Duration::ZERO,
        default_tokens: 4,
    })
    .await
    .unwrap();
    let mut vars = base_vars(&database);
    vars.insert("OPENAI_BASE_URL".into(), upstream.base_url());
    for (k, v) in extra {
        vars.insert((*k).into(), (*v).into());
    }
    let (child, addr, early, logs) =
        tests::start_server_process(env!("CARGO_BIN_EXE_test-server"), vars).await;
    // reqwest is built without a default TLS provider (servers install ring; none runs here).
    let _ = rustls::crypto::ring::default_provider().install_default();
    (child, addr, early, logs, upstream, database)
}

/// One `complete` on a server process under the request id `id`; it must succeed.
async fn complete_as(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    token: &str,
    id: &str,
    prompt: &str,
) {
    let body: Value = http
        .post(format!("http://{addr}/graphql"))
        .bearer_auth(token)
        .header("x-request-id", id)
        .json(&json!({ "query": COMPLETE, "variables": { "i": { "prompt": prompt } } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body["errors"].is_null(), "{body}");
}

const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

#[tokio::test]
async fn json_logs_carry_the_request_id_into_the_call_and_no_secrets() {
    let (mut child, addr, mut seen, mut rx, _upstream, _db) =
        server_process(&[("LOG_FORMAT", "json"), ("RUST_LOG", "info")]).await;
    // Start-up (migrations, recovery, the listening line) logged JSON too.
    assert!(!seen.is_empty());
    let http = reqwest::Client::new();
    let user = tests::sign_up_at(&http, &format!("http://{addr}"), "logs@example.com").await;
    let prompt = "a very private prompt @@tokens=3";
    complete_as(&http, addr, &user.token, "logged-req-7", prompt).await;
    let finalised = tokio::time::timeout(PATIENCE, async {
        loop {
            let line = rx.recv().await.expect("the server logged the call");
            let is_it = line.contains("call finalised");
            seen.push(line.clone());
            if is_it {
                break line;
            }
        }
    })
    .await
    .expect("the call's log line");
    child.start_kill().unwrap();
    let _ = child.wait().await;

    // One JSON object per line, with the stable fields.
    for line in &seen {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(v.get(field).is_some(), "{field} missing: {line}");
        }
        // Nothing user-written or secret.
        for secret in ["very private", &user.password, &user.token] {
            assert!(!line.contains(secret), "{secret:?} logged: {line}");
        }
    }
    // The call's own task logged under the request's id.
    let v: Value = serde_json::from_str(&finalised).unwrap();
    let spans = v["spans"].as_array().expect("spans");
    assert!(
        spans
            .iter()
            .any(|s| s["name"] == "request" && s["request_id"] == "logged-req-7"),
        "{finalised}"
    );
    assert!(spans.iter().any(|s| s["name"] == "llm_call"), "{finalised}");
}

/// A small OTLP/HTTP receiver (JSON encoding): the spans of every export it was sent.
async fn otlp_receiver() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Value>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let export: Value = serde_json::from_slice(&body).expect("an OTLP/JSON export");
                for rs in export["resourceSpans"].as_array().into_iter().flatten() {
                    let service = rs["resource"]["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|a| a["key"] == "service.name")
                        .map(|a| a["value"]["stringValue"].clone());
                    for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                        for span in ss["spans"].as_array().into_iter().flatten() {
                            let mut span = span.clone();
                            span["service"] = service.clone().unwrap_or(Value::Null);
                            let _ = tx.send(span);
                        }
                    }
                }
                ([("content-type", "application/json")], "{}")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

#[tokio::test]
async fn traces_reach_an_otlp_receiver_from_request_to_upstream_call() {
    let (receiver, mut spans) = otlp_receiver().await;
    let endpoint = format!("http://{receiver}");
    let (mut child, addr, _, _logs, _upstream, _db) = server_process(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("RUST_LOG", "info"),
    ])
    .await;
    let http = reqwest::Client::new();
    let user = tests::sign_up_at(&http, &format!("http://{addr}"), "traces@example.com").await;
    complete_as(
        &http,
        addr,
        &user.token,
        "traced-req-9",
        "trace me @@tokens=2",
    )
    .await;
    // Spans arrive in batches; the request's trace is complete once its upstream request and
    // its root have both arrived.
    let mut all: Vec<Value> = Vec::new();
    let trace = tokio::time::timeout(PATIENCE, async {
        loop {
            all.push(spans.recv().await.expect("the receiver runs"));
            let Some(root) = all.iter().find(|s| {
                s["name"] == "request"
                    && attribute(s, "request_id")
                        .is_some_and(|v| v["stringValue"] == "traced-req-9")
            }) else {
                continue;
            };
            let trace = root["traceId"].as_str().unwrap().to_owned();
            if all
                .iter()
                .any(|s| s["traceId"] == trace.as_str() && s["name"] == "upstream.request")
            {
                break trace;
            }
        }
    })
    .await
    .expect("the request's trace reached the receiver");
    child.start_kill().unwrap();
    let _ = child.wait().await;

    let in_trace: Vec<&Value> = all
        .iter()
        .filter(|s| s["traceId"] == trace.as_str())
        .collect();
    let by_id: HashMap<&str, &Value> = in_trace
        .iter()
        .map(|s| (s["spanId"].as_str().unwrap(), *s))
        .collect();
    let named = |name: &str| in_trace.iter().find(|s| s["name"] == name).copied();
    // Each span's chain of parents ends at the request.
    let chain = |span: &Value| -> Vec<String> {
        let mut names = vec![span["name"].as_str().unwrap().to_owned()];
        let mut parent = span["parentSpanId"].as_str().unwrap_or("");
        while let Some(p) = by_id.get(parent) {
            names.push(p["name"].as_str().unwrap().to_owned());
            parent = p["parentSpanId"].as_str().unwrap_or("");
        }
        names
    };
    let upstream_call = named("upstream.request").unwrap();
    let names = chain(upstream_call);
    assert_eq!(names.first().map(String::as_str), Some("upstream.request"));
    assert!(names.contains(&"llm_call".to_owned()), "{names:?}");
    assert_eq!(
        names.last().map(String::as_str),
        Some("request"),
        "{names:?}"
    );
    let resolve = in_trace
        .iter()
        .find(|s| {
            s["name"] == "graphql.resolve"
                && attribute(s, "graphql.field").is_some_and(|v| v["stringValue"] == "complete")
        })
        .expect("the complete field's span");
    assert!(chain(resolve).contains(&"graphql.execute".to_owned()));
    let statement = in_trace
        .iter()
        .find(|s| s["name"] == "db" && chain(s).contains(&"graphql.resolve".to_owned()))
        .expect("a statement under the resolver");
    assert!(attribute(statement, "db.operation").is_some());
    assert_eq!(chain(statement).last().map(String::as_str), Some("request"));
    assert!(in_trace.iter().all(|s| s["service"] == "aiwrapper"));
    // No span carries the prompt.
    for s in &all {
        assert!(!s.to_string().contains("trace me"), "{s}");
    }
}
