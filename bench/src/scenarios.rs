//! The benchmark scenarios, each checking correctness while it measures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::client::{Http, Ws};
use crate::proc_stats::{CpuSplit, CpuUse, RssSampler, lazy_free, rss};
use crate::stats::Samples;
use tests::ws::GqlWs;

/// What to run.
const SCENARIOS: [&str; 6] = [
    "streaming",
    "conversation",
    "history",
    "usage",
    "signin",
    "idle",
];

pub struct Options {
    scenarios: Vec<String>,
    streams: Vec<usize>,
    tokens: usize,
    pace_ms: u64,
    ramp: Duration,
    users: usize,
    rows_per_user: usize,
    heavy_rows: usize,
    /// Bytes of random text added to each bulk log's prompt and to its completion.
    text_bytes: usize,
    idle: usize,
    duration: Duration,
    checkpoint_ms: u64,
    /// Whether the server records Prometheus metrics (`METRICS_ADDR` set).
    metrics: bool,
    /// Runs of each scenario: the report gives each figure's median, minimum and maximum.
    repeat: usize,
    out: std::path::PathBuf,
    /// Where to write each relayed token's send time, relay delay and stream (a streaming
    /// run's time series; each run overwrites it).
    relay_trace: Option<std::path::PathBuf>,
    /// Whether each streaming run is followed by the same run against `bench floor` (the
    /// least a server can do per stream; see `floor.rs`), and whether it groups its inserts.
    floor: Option<FloorKind>,
    /// Whether the server enforces budgets and per-user call limits (set far above what the
    /// bench uses, so nothing is refused): each admission then takes its checked path.
    limits: bool,
}

impl Options {
    pub const USAGE: &'static str =
        "usage: bench [--scenarios streaming,conversation,history,usage,signin,idle] [--streams 100,500,1000]
             [--tokens 200] [--pace-ms 20] [--ramp-ms 1000] [--users 1000] [--rows-per-user 2000]
             [--heavy-rows 200000] [--text-bytes 0] [--idle 10000] [--seconds 10] [--checkpoint-ms 1000]
             [--metrics on|off] [--repeat 3] [--out bench-results/latest.json]
             [--relay-trace FILE] [--floor off|plain|grouped] [--limits off|on]
       --ramp-ms 0 subscribes all streams at once (a burst); --repeat runs each scenario that
       many times and reports every figure as its median [min..max]; --relay-trace writes,
       per relayed token, microseconds from the streams' start to its send, its relay delay
       and its stream; --floor follows each streaming run with the same run against
       `bench floor` (one insert and the upstream hop per stream: the machine's floor; its
       inserts one statement each, or grouped as the server groups its admissions);
       --text-bytes makes the history's prompts and completions that much longer (random hex:
       chat logs run to kilobytes, and a feed that does not show them should not pay for them);
       --limits on enforces a monthly budget and the per-user call limits, set too high to
       refuse anything, so admissions pay for their checks as in a deployment (off: none set)";

    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            scenarios: SCENARIOS.map(str::to_owned).to_vec(),
            streams: vec![100, 500, 1000],
            tokens: 200,
            pace_ms: 20,
            ramp: Duration::from_millis(1000),
            users: 1000,
            rows_per_user: 2000,
            heavy_rows: 200_000,
            text_bytes: 0,
            idle: 10000,
            checkpoint_ms: 1000,
            metrics: true,
            repeat: 3,
            duration: Duration::from_secs(10),
            out: "bench-results/latest.json".into(),
            relay_trace: None,
            floor: None,
            limits: false,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let n = || {
                value
                    .parse::<usize>()
                    .map_err(|_| format!("{flag}: not a number: {value}"))
            };
            match flag.as_str() {
                "--scenarios" => o.scenarios = value.split(',').map(str::to_owned).collect(),
                "--streams" => {
                    o.streams = value
                        .split(',')
                        .map(|v| v.parse().map_err(|_| format!("--streams: {v}")))
                        .collect::<Result<_, _>>()?;
                }
                "--tokens" => o.tokens = n()?,
                "--pace-ms" => o.pace_ms = n()? as u64,
                "--ramp-ms" => o.ramp = Duration::from_millis(n()? as u64),
                "--users" => o.users = n()?,
                "--rows-per-user" => o.rows_per_user = n()?,
                "--heavy-rows" => o.heavy_rows = n()?,
                "--text-bytes" => o.text_bytes = n()?,
                "--idle" => o.idle = n()?,
                "--checkpoint-ms" => o.checkpoint_ms = n()? as u64,
                "--metrics" => o.metrics = on_off(flag, value)?,
                "--limits" => o.limits = on_off(flag, value)?,
                "--floor" => {
                    o.floor = match value.as_str() {
                        "off" => None,
                        "plain" => Some(FloorKind::Plain),
                        "grouped" => Some(FloorKind::Grouped),
                        _ => return Err(format!("--floor: off, plain or grouped, not {value}")),
                    }
                }
                "--repeat" => {
                    o.repeat = n()?;
                    if o.repeat == 0 {
                        return Err("--repeat: at least 1".into());
                    }
                }
                "--seconds" => o.duration = Duration::from_secs(n()? as u64),
                "--out" => o.out = value.into(),
                "--relay-trace" => o.relay_trace = Some(value.into()),
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        for s in &o.scenarios {
            if !SCENARIOS.contains(&s.as_str()) {
                return Err(format!("unknown scenario {s}"));
            }
        }
        Ok(o)
    }

    fn wants(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

/// How `bench floor` writes its rows.
#[derive(Clone, Copy)]
enum FloorKind {
    Plain,
    Grouped,
}

fn on_off(flag: &str, value: &str) -> Result<bool, String> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{flag}: on or off, not {value}")),
    }
}

/// The server under test and what the harness needs around it.
struct Stack {
    server: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
    http: Http,
    upstream: Arc<upstream::Stats>,
    db: DatabaseConnection,
    /// `bench floor`, with `--floor plain` or `--floor grouped`.
    floor: Option<Child>,
    /// The server's request pool: its size, and whether `DATABASE_MAX_CONNECTIONS` gave it.
    pool: (u32, bool),
    /// Whether PostgreSQL's CPU figures are its processes' (else the machine's busy time not
    /// used by the server or the harness).
    postgres_cpu_exact: bool,
}

/// A child process serving on `addr`.
struct Child {
    process: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
}

/// What a streaming run is measured against.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    Server,
    Floor,
}

const PASSWORD: &str = "correct horse battery staple";

async fn start(options: &Options) -> Result<Stack, String> {
    let database = tests::TestDatabase::create_postgres().await;

    let listener = upstream::listen(([127, 0, 0, 1], 0).into()).map_err(|e| e.to_string())?;
    let upstream_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let upstream = Arc::new(upstream::Stats::default());
    let serving = upstream.clone();
    let config = upstream::UpstreamConfig {
        pace: Duration::from_millis(options.pace_ms),
        default_tokens: options.tokens,
    };
    tokio::spawn(async move {
        let _ = upstream::serve(listener, config, serving, std::future::pending()).await;
    });

    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut server = tokio::process::Command::new(exe);
    if let Some(direct) = &database.direct {
        // Migrations as the owner, requests as the runtime role, as a deployment would.
        server.env("DATABASE_URL_DIRECT", direct);
    }
    if database.pooled {
        // Behind the test harness's PgBouncer (TEST_PGBOUNCER), as a deployment would be.
        server.env("DATABASE_POOL_MODE", "transaction");
    }
    if options.metrics {
        // Metrics are recorded only when they can be scraped (a listener of their own).
        server.env("METRICS_ADDR", "127.0.0.1:0");
    }
    let server = server
        .arg("serve")
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("DATABASE_URL", &database.url)
        .env(
            "BETTER_AUTH_SECRET",
            "bench-secret-bench-secret-bench-secret-0123",
        )
        .env("OPENAI_BASE_URL", format!("http://{upstream_addr}/v1"))
        .env("AUTH_RATE_LIMIT_MAX", "1000000000")
        // A handful of users drive hundreds of streams: the per-user limits and the default
        // budget in front of a real upstream would refuse them (they are measured by the tests).
        // With `--limits on` all three are enforced, at values no run reaches.
        .env(
            "DEFAULT_MONTHLY_TOKEN_BUDGET",
            if options.limits { "1000000000000" } else { "0" },
        )
        .env(
            "USER_MAX_CONCURRENT_CALLS",
            if options.limits { "1000000" } else { "0" },
        )
        .env(
            "USER_CALLS_PER_MINUTE",
            if options.limits { "1000000" } else { "0" },
        )
        // Thousands of sockets from one address and a few users, and no cap in all: the idle
        // scenario holds 10,000 (the server's default maximum), and the un-initialised one opens
        // its 10,000 while those are closing, all before the first is closed by the timeout.
        .env("WS_MAX_SOCKETS", "0")
        .env("WS_MAX_SOCKETS_PER_USER", "0")
        .env("WS_MAX_SOCKETS_PER_IP", "0")
        .env("WS_INIT_TIMEOUT_MS", "10000")
        // Running calls' progress saved beside their leases (the server's default is 1000);
        // a very large value turns checkpoints off for a comparison.
        .env("CALL_CHECKPOINT_MS", options.checkpoint_ms.to_string())
        .env("INSTANCE_ID", "bench")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start the server: {e}"))?;
    let Child {
        process: server,
        pid,
        addr,
    } = listening(server).await?;
    let floor = if let Some(kind) = options.floor {
        let floor =
            tokio::process::Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
                .arg("floor")
                .env(
                    "FLOOR_GROUPED",
                    if matches!(kind, FloorKind::Grouped) {
                        "1"
                    } else {
                        "0"
                    },
                )
                .env("HOST", "127.0.0.1")
                .env("PORT", "0")
                // As the owner: it creates its table.
                .env("DATABASE_URL", database.direct_url())
                .env("OPENAI_BASE_URL", format!("http://{upstream_addr}/v1"))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("start the floor server: {e}"))?;
        Some(listening(floor).await?)
    } else {
        None
    };
    let db = Database::connect(database.direct_url())
        .await
        .map_err(|e| e.to_string())?;
    // PostgreSQL's CPU counted from its processes when it runs on this machine.
    let backend = scalar(&db, "SELECT pg_backend_pid()::bigint").await?;
    let postgres_cpu_exact = u32::try_from(backend).is_ok_and(crate::proc_stats::watch_postgres);
    Ok(Stack {
        server,
        pid,
        addr,
        http: Http::new(addr),
        upstream,
        db,
        floor,
        pool: request_pool(&database.url, database.pooled),
        postgres_cpu_exact,
    })
}

/// The child once it printed `LISTENING <addr>`; the rest of its output is drained, its
/// errors shown (a failed stream's reason).
async fn listening(mut process: tokio::process::Child) -> Result<Child, String> {
    let pid = process.id().ok_or("the child exited at once")?;
    let stdout = process.stdout.take().ok_or("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let addr: SocketAddr = loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                if let Some(a) = line.strip_prefix("LISTENING ") {
                    break a.parse().map_err(|e| format!("address {a}: {e}"))?;
                }
            }
            _ => return Err("the child exited before listening".into()),
        }
    };
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("ERROR") {
                eprintln!("server: {line}");
            }
        }
    });
    Ok(Child { process, pid, addr })
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> Result<i64, String> {
    db.query_one_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .map_err(|e| format!("{sql}: {e}"))?
    .ok_or("no row")?
    .try_get_by_index::<i64>(0)
    .map_err(|e| format!("{sql}: {e}"))
}

/// Sign up `n` users named `{prefix}{i}@bench.example` (a few at a time: hashing is the cost).
async fn sign_up_many(
    http: &Http,
    prefix: &str,
    n: usize,
) -> Result<Vec<(String, String)>, String> {
    let results: Vec<Result<(String, String), String>> = stream::iter(0..n)
        .map(|i| {
            let http = http.clone();
            let email = format!("{prefix}{i}@bench.example");
            async move { http.sign_up(&email, PASSWORD).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    results.into_iter().collect()
}

/// One table row of the report.
struct Row {
    scenario: String,
    figures: Vec<(String, Value)>,
}

/// The request pool of the server under test: `DATABASE_MAX_CONNECTIONS` as it inherits it, if
/// set, else the server's default for its database (`api::config::default_pool`); and whether
/// it was set.
fn request_pool(url: &str, pooled: bool) -> (u32, bool) {
    match std::env::var("DATABASE_MAX_CONNECTIONS")
        .ok()
        .and_then(|n| n.trim().parse().ok())
    {
        Some(n) => (n, true),
        None => {
            let mode = if pooled {
                api::config::PoolMode::Transaction
            } else {
                api::config::PoolMode::Direct
            };
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (api::config::default_pool(url, mode, cores), false)
        }
    }
}

pub async fn run(options: Options) -> Result<(), String> {
    let started = Instant::now();
    let stack = start(&options).await?;
    println!(
        "server pid {} on {}, PostgreSQL {}, {} CPUs, request pool of {} {}",
        stack.pid,
        stack.addr,
        tests::postgres_admin_url(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        stack.pool.0,
        if stack.pool.1 {
            "(DATABASE_MAX_CONNECTIONS)"
        } else {
            "(the server's default for this database)"
        }
    );
    let mut rows = Vec::new();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    // Idle connections first, on a fresh server: after the streaming runs the allocator holds
    // freed memory that new connections would reuse unseen. (Once: a repeat would not be on a
    // fresh server.)
    if options.wants("idle") {
        rows.push(idle_connections(&stack, options.idle).await?);
        print_row(rows.last().expect("a row"));
        // After the authenticated ones (whose per-connection figure needs a fresh server): its
        // "after close" against its "before" shows whether a flood leaves anything behind.
        rows.push(uninitialised_connections(&stack, options.idle).await?);
        print_row(rows.last().expect("a row"));
    }
    // Every other scenario `repeat` times, one run after the other (each run of each scenario
    // printed as it ends), the figures summarised at the end.
    let seeded = if options.wants("history") || options.wants("usage") {
        Some(seed(&stack, &options).await?)
    } else {
        None
    };
    if options.wants("streaming") {
        warm_up(&stack, stack.addr).await?;
        if let Some(floor) = &stack.floor {
            warm_up(&stack, floor.addr).await?;
        }
    }
    for k in 0..options.repeat {
        if options.repeat > 1 {
            println!("-- run {} of {}", k + 1, options.repeat);
        }
        let run = format!("{run_id}r{k}");
        let mut ran = Vec::new();
        if options.wants("streaming") {
            for &n in &options.streams {
                ran.push(streaming(&stack, &options, n, &run, Target::Server).await?);
                print_row(ran.last().expect("a row"));
                if stack.floor.is_some() {
                    ran.push(streaming(&stack, &options, n, &run, Target::Floor).await?);
                    print_row(ran.last().expect("a row"));
                }
            }
        }
        if options.wants("conversation") {
            for row in conversation(&stack, &run).await? {
                print_row(&row);
                ran.push(row);
            }
        }
        if options.wants("signin") {
            for row in signin_storm(&stack, &options, &run).await? {
                print_row(&row);
                ran.push(row);
            }
        }
        if let Some(data) = &seeded {
            if options.wants("history") {
                for row in history(&stack, &options, data).await? {
                    print_row(&row);
                    ran.push(row);
                }
            }
            if options.wants("usage") {
                for row in usage(&stack, &options, data).await? {
                    print_row(&row);
                    ran.push(row);
                }
            }
        }
        rows.extend(ran);
    }
    let summary = summarise(&rows);
    if options.repeat > 1 {
        println!("\nmedian [min..max] of {} runs", options.repeat);
        for (scenario, figures) in &summary {
            let text: Vec<String> = figures
                .iter()
                .map(|(k, v)| match (&v["median"], &v["min"], &v["max"]) {
                    (Value::Number(m), Value::Number(lo), Value::Number(hi)) => format!(
                        "{k}={:.2} [{:.2}..{:.2}]",
                        m.as_f64().unwrap_or_default(),
                        lo.as_f64().unwrap_or_default(),
                        hi.as_f64().unwrap_or_default()
                    ),
                    _ => format!("{k}={v}"),
                })
                .collect();
            println!("{scenario:<28} {}", text.join("  "));
        }
    }
    let report = json!({
        "machine": machine(),
        "metrics": options.metrics,
        // The server's request pool: DATABASE_MAX_CONNECTIONS as it inherits it, else its
        // default for this database (twice the cores for PostgreSQL on this machine).
        "database_max_connections": stack.pool.0,
        "database_max_connections_given": stack.pool.1,
        "postgres_cpu_exact": stack.postgres_cpu_exact,
        "limits": options.limits,
        "started_at": chrono::Utc::now().to_rfc3339(),
        "seconds": started.elapsed().as_secs_f64(),
        "repeat": options.repeat,
        "text_bytes": options.text_bytes,
        "summary": summary.iter().map(|(scenario, figures)| {
            let mut o = serde_json::Map::new();
            o.insert("scenario".into(), json!(scenario));
            for (k, v) in figures { o.insert(k.clone(), v.clone()); }
            Value::Object(o)
        }).collect::<Vec<_>>(),
        "results": rows.iter().map(|r| {
            let mut o = serde_json::Map::new();
            o.insert("scenario".into(), json!(r.scenario));
            for (k, v) in &r.figures { o.insert(k.clone(), v.clone()); }
            Value::Object(o)
        }).collect::<Vec<_>>(),
    });
    if let Some(dir) = options.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::write(
        &options.out,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    println!(
        "\nwrote {} ({:.0} s in all)",
        options.out.display(),
        started.elapsed().as_secs_f64()
    );
    let mut server = stack.server;
    server.start_kill().ok();
    server.wait().await.ok();
    if let Some(mut floor) = stack.floor {
        floor.process.start_kill().ok();
        floor.process.wait().await.ok();
    }
    Ok(())
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")
                .map(|v| v.trim().trim_end_matches(" kB").parse::<u64>().unwrap_or(0))
        })
        .unwrap_or(0);
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "memory_gib": (mem_kb as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
    })
}

/// Each scenario's figures over its runs, in the order the scenarios first ran: a figure that
/// is a number in every run becomes `{median, min, max}`, any other the first run's value.
fn summarise(rows: &[Row]) -> Vec<(String, Vec<(String, Value)>)> {
    let mut scenarios: Vec<(&str, Vec<&Row>)> = Vec::new();
    for row in rows {
        match scenarios.iter_mut().find(|(s, _)| *s == row.scenario) {
            Some((_, runs)) => runs.push(row),
            None => scenarios.push((&row.scenario, vec![row])),
        }
    }
    scenarios
        .into_iter()
        .map(|(scenario, runs)| {
            let figures = runs[0]
                .figures
                .iter()
                .map(|(key, first)| {
                    let mut values: Vec<f64> = runs
                        .iter()
                        .filter_map(|r| r.figures.iter().find(|(k, _)| k == key))
                        .filter_map(|(_, v)| v.as_f64())
                        .collect();
                    if values.len() != runs.len() {
                        return (key.clone(), first.clone());
                    }
                    values.sort_by(f64::total_cmp);
                    let mid = values.len() / 2;
                    let median = if values.len() % 2 == 1 {
                        values[mid]
                    } else {
                        (values[mid - 1] + values[mid]) / 2.0
                    };
                    let summary = json!({
                        "median": f(median),
                        "min": f(values[0]),
                        "max": f(values[values.len() - 1]),
                    });
                    (key.clone(), summary)
                })
                .collect();
            (scenario.to_owned(), figures)
        })
        .collect()
}

fn print_row(row: &Row) {
    let figures: Vec<String> = row
        .figures
        .iter()
        .map(|(k, v)| match v {
            Value::Number(n) if n.is_f64() => format!("{k}={:.2}", n.as_f64().unwrap_or_default()),
            other => format!("{k}={other}"),
        })
        .collect();
    println!("{:<28} {}", row.scenario, figures.join("  "));
}

fn f(v: f64) -> Value {
    json!((v * 1000.0).round() / 1000.0)
}

/// A few short streams first, so that one-time work (the tokenizer's tables, the first
/// database and upstream connections) is not counted as per-stream latency.
async fn warm_up(stack: &Stack, addr: SocketAddr) -> Result<(), String> {
    let users = sign_up_many(&stack.http, &format!("warmup{}-", addr.port()), 4).await?;
    let results = futures_util::future::join_all((0..16).map(|i| {
        let token = users[i % users.len()].0.clone();
        async move {
            let mut ws = Ws::connect(addr, &token).await?;
            let r = ws
                .stream(json!({ "prompt": format!("warm up {i} @@tokens=5 @@pace_ms=1") }))
                .await?;
            ws.close().await;
            match r.error {
                None => Ok(()),
                Some(e) => Err(format!("warm-up stream: {e}")),
            }
        }
    }))
    .await;
    results.into_iter().collect()
}

/// Scenario 1: `n` concurrent `completionStream` subscriptions of `tokens` tokens each, the
/// upstream pacing them `pace_ms` apart.
async fn streaming(
    stack: &Stack,
    options: &Options,
    n: usize,
    run_id: &str,
    target: Target,
) -> Result<Row, String> {
    let (addr, pid, run_id) = match target {
        Target::Server => (stack.addr, stack.pid, run_id.to_owned()),
        Target::Floor => {
            let floor = stack.floor.as_ref().ok_or("no floor server was started")?;
            (floor.addr, floor.pid, format!("{run_id}floor"))
        }
    };
    let users = sign_up_many(&stack.http, &format!("stream{n}-{run_id}-"), n.min(100)).await?;
    let sockets: Vec<Result<Ws, String>> = stream::iter(0..n)
        .map(|i| {
            let token = users[i % users.len()].0.clone();
            async move { Ws::connect(addr, &token).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let sockets: Vec<Ws> = sockets.into_iter().collect::<Result<_, _>>()?;
    let tag = format!("bench-{run_id}-{n}");
    let tokens = options.tokens;
    // (A line to attach a profiler at: `perf record -p <server pid>` from here on.)
    println!("measuring streaming {n}");
    let db0 = db_activity(&stack.db).await?;
    let split = CpuSplit::start(pid);
    let sampler = RssSampler::start(pid);
    let t0 = Instant::now();
    // Each stream is a task of its own, as each client is its own browser: the harness's
    // reads, JSON and clocks spread over its runtime's threads instead of queueing behind one
    // another in one task (docs/performance.md, "The load generator ran in one task").
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            let prompt = format!("{tag} stream {i} @@tokens={tokens} @@trace={tag}-{i}");
            // Starts spread evenly over the ramp, so that all n run at once for most of their
            // length without every subscription arriving in the same millisecond.
            let start = t0 + options.ramp.mul_f64(i as f64 / n as f64);
            tokio::spawn(async move {
                tokio::time::sleep_until(start.into()).await;
                let subscribed = Instant::now();
                let received = ws
                    .stream(json!({ "prompt": prompt, "maxTokens": tokens }))
                    .await;
                ws.close().await;
                (i, prompt, subscribed, received)
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for task in tasks {
        results.push(task.await.map_err(|e| format!("a stream's task: {e}"))?);
    }
    let wall = t0.elapsed();
    let cpu = split.finish();
    let db1 = db_activity(&stack.db).await?;
    let peak_rss = sampler.peak();
    drop(sampler);

    let mut added_ttft = Samples::default();
    // Its first part: from subscribing to the request's arrival upstream (the server's work
    // before the call goes out: the operation, admission, the upstream connection).
    let mut to_upstream = Samples::default();
    let mut relay = Samples::default();
    // (send time from t0, relay delay, stream) per token, for `--relay-trace`.
    let mut trace_rows = options
        .relay_trace
        .as_ref()
        .map(|_| Vec::<(u128, i64, usize)>::with_capacity(n * tokens));
    // Events that carried text: fewer than tokens when deltas waiting together were joined.
    let mut delta_events = 0usize;
    let mut problems = Vec::new();
    for (i, prompt, subscribed, received) in results {
        let received = match received {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("stream {i}: {e}"));
                continue;
            }
        };
        let expected = upstream::answer(&prompt, tokens);
        let text: String = received.deltas.iter().map(|(_, d)| d.as_str()).collect();
        let log = received.last.as_ref().map(|l| &l["log"]);
        if received.error.is_some()
            || text != expected
            || log.is_none_or(|l| l["status"] != "OK" || l["completion"] != expected.as_str())
        {
            problems.push(format!(
                "stream {i}: error {:?}, {} of {} chars, last {:?}",
                received.error,
                text.len(),
                expected.len(),
                received.last
            ));
            continue;
        }
        let trace = match added_by_server(stack, &format!("{tag}-{i}"), subscribed, &received) {
            Ok((added, trace)) => {
                added_ttft.push_micros(added);
                if let Some(arrived) = trace.received {
                    to_upstream.push(arrived.saturating_duration_since(subscribed));
                }
                trace
            }
            Err(e) => {
                problems.push(format!("stream {i}: {e}"));
                continue;
            }
        };
        // Token k is complete in the client once the deltas' cumulative length reaches the
        // length of the first k+1 tokens of the answer.
        let mut ends = Vec::with_capacity(tokens);
        let mut len = 0;
        for k in 0..tokens {
            len += upstream::answer(&prompt, k + 1).len() - upstream::answer(&prompt, k).len();
            ends.push(len);
        }
        let mut seen = 0;
        let mut k = 0;
        delta_events += received
            .deltas
            .iter()
            .filter(|(_, d)| !d.is_empty())
            .count();
        for (at, delta) in &received.deltas {
            seen += delta.len();
            while k < tokens && ends[k] <= seen {
                if let Some(sent) = trace.tokens.get(k) {
                    let d = if *at >= *sent {
                        at.duration_since(*sent).as_micros() as i64
                    } else {
                        -(sent.duration_since(*at).as_micros() as i64)
                    };
                    relay.push_micros(d);
                    if let Some(v) = trace_rows.as_mut() {
                        v.push((sent.duration_since(t0).as_micros(), d, i));
                    }
                }
                k += 1;
            }
        }
    }
    if let (Some(rows), Some(path), Target::Server) = (trace_rows, &options.relay_trace, target) {
        let mut text = format!("# streaming {n}: sent_us relay_us stream\n");
        text.extend(rows.iter().map(|(t, d, i)| format!("{t} {d} {i}\n")));
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    failed_if(&problems, &format!("of {n} streams were wrong or lost"))?;
    match target {
        // The floor's one row per stream.
        Target::Floor => {
            let rows = scalar(
                &stack.db,
                &format!(
                    "SELECT count(*) FROM {} WHERE prompt LIKE '{tag} stream %'",
                    crate::floor::TABLE
                ),
            )
            .await?;
            if rows != n as i64 {
                return Err(format!("{n} streams on the floor server but {rows} rows"));
            }
        }
        // Exactly one final log and one linked usage row per stream.
        Target::Server => {
            let logs = scalar(
                &stack.db,
                &format!("SELECT count(*) FROM prompt_logs WHERE prompt LIKE '{tag} stream %' AND completion IS NOT NULL AND status = 'ok'"),
            )
            .await?;
            let usage = scalar(
                &stack.db,
                &format!("SELECT count(*) FROM prompt_logs l JOIN prompt_log_usage p ON p.log_id = l.id JOIN token_usage u ON u.id = p.usage_id WHERE l.prompt LIKE '{tag} stream %' AND u.completion_tokens = {tokens}"),
            )
            .await?;
            if logs != n as i64 || usage != n as i64 {
                return Err(format!(
                    "{n} streams but {logs} final logs and {usage} usage rows"
                ));
            }
        }
    }
    let relayed = (n * tokens) as f64;
    Ok(Row {
        scenario: match target {
            Target::Server => format!("streaming {n}"),
            Target::Floor => format!("floor streaming {n}"),
        },
        figures: vec![
            ("streams_ok".into(), json!(n)),
            ("ramp_ms".into(), json!(options.ramp.as_millis() as u64)),
            (
                "added_ttft_p50_ms".into(),
                f(added_ttft.percentile_ms(50.0)),
            ),
            (
                "added_ttft_p99_ms".into(),
                f(added_ttft.percentile_ms(99.0)),
            ),
            // How soon the first of a burst's calls go out (the pipeline's depth before any
            // call reaches the upstream).
            (
                "to_upstream_p10_ms".into(),
                f(to_upstream.percentile_ms(10.0)),
            ),
            (
                "to_upstream_p50_ms".into(),
                f(to_upstream.percentile_ms(50.0)),
            ),
            (
                "to_upstream_p99_ms".into(),
                f(to_upstream.percentile_ms(99.0)),
            ),
            ("relay_p50_ms".into(), f(relay.percentile_ms(50.0))),
            ("relay_p99_ms".into(), f(relay.percentile_ms(99.0))),
            ("relay_samples".into(), json!(relay.len())),
            (
                "delta_events_per_token".into(),
                f(delta_events as f64 / relayed),
            ),
            (
                "cpu_s_per_1000_tokens".into(),
                f(cpu.server / relayed * 1000.0),
            ),
            ("server_rss_peak_mib".into(), f(peak_rss as f64 / 1048576.0)),
            // What the load generator and the upstream (this process) used meanwhile, on the
            // same two cores.
            ("server_cpu_s".into(), f(cpu.server)),
            ("harness_cpu_s".into(), f(cpu.harness)),
            // The database's load meanwhile (checkpoints, leases, admissions, finalisations):
            // its transactions and row updates per second, and PostgreSQL's CPU (see
            // `CpuSplit`: exact when it runs on this machine).
            (
                "db_commits_per_s".into(),
                f((db1.0 - db0.0) as f64 / wall.as_secs_f64()),
            ),
            (
                "db_rows_updated_per_s".into(),
                f((db1.1 - db0.1) as f64 / wall.as_secs_f64()),
            ),
            ("postgres_cpu_s".into(), f(cpu.postgres)),
            // The machine's other busy time (interrupts, other processes), and the CPU time
            // the hypervisor took meanwhile: a run with much of it ran slower.
            ("other_cpu_s".into(), f(cpu.other)),
            ("steal_s".into(), f(cpu.steal)),
            ("checkpoint_ms".into(), json!(options.checkpoint_ms)),
            ("wall_s".into(), f(wall.as_secs_f64())),
        ],
    })
}

/// An error naming how many `problems` there were (`what` says of what) and the first ten,
/// if there were any.
fn failed_if(problems: &[String], what: &str) -> Result<(), String> {
    if problems.is_empty() {
        return Ok(());
    }
    let first: Vec<&str> = problems.iter().take(10).map(String::as_str).collect();
    Err(format!("{} {what}:\n{}", problems.len(), first.join("\n")))
}

/// What the server added to a stream's time to first token, in µs: the client's time from
/// subscribing to the first delta less the upstream's own from receiving the request to its
/// first token (recorded for `@@trace=id`); and the upstream's trace.
fn added_by_server(
    stack: &Stack,
    id: &str,
    subscribed: Instant,
    received: &crate::client::Received,
) -> Result<(i64, upstream::StreamTrace), String> {
    let trace = stack
        .upstream
        .take_trace(id)
        .ok_or("the upstream recorded no trace")?;
    let (Some(up_received), Some(&up_first)) = (trace.received, trace.tokens.first()) else {
        return Err("empty trace".into());
    };
    let first_delta = received.deltas.first().ok_or("no delta")?.0;
    let server_ttft = first_delta.duration_since(subscribed).as_micros() as i64;
    let upstream_ttft = up_first.duration_since(up_received).as_micros() as i64;
    Ok((server_ttft - upstream_ttft, trace))
}

/// Scenario 1b: time-to-first-token of a turn that continues a conversation with
/// `EARLIER` earlier turns (its context read, trimmed and counted, its turn taken), against a
/// call without context, `CONVERSATIONS` streams at a time (one per conversation: a
/// conversation runs one turn at a time), `ROUNDS` times; the figure is what the server adds to
/// the upstream's own time to first token, as in the streaming scenario.
async fn conversation(stack: &Stack, run_id: &str) -> Result<Vec<Row>, String> {
    const CONVERSATIONS: usize = 20;
    const EARLIER: usize = 50;
    const ROUNDS: usize = 10;
    const CREATE: &str = "mutation { createConversation(input: {}) { id } }";
    const COMPLETE: &str = "mutation($i: CompletionInput!) { complete(input: $i) { id status } }";
    // A chat-sized exchange: a question of some 30 tokens, an answer of 60.
    let question = |t: usize| {
        format!(
            "Question {t}: could you explain, step by step and with an example, how the previous answer applies to a small team shipping a chat app? @@tokens=60 @@pace_ms=0"
        )
    };
    let users = sign_up_many(&stack.http, &format!("conv-{run_id}-"), CONVERSATIONS).await?;
    println!("seeding {CONVERSATIONS} conversations of {EARLIER} turns");
    let seeded: Vec<Result<String, String>> =
        futures_util::future::join_all(users.iter().map(|(token, _)| async move {
            let body = stack.http.gql(Some(token), CREATE, json!({})).await?;
            let id = body["data"]["createConversation"]["id"]
                .as_str()
                .ok_or("no conversation id")?
                .to_owned();
            for t in 0..EARLIER {
                let input = json!({ "i": { "prompt": question(t), "conversationId": id, "maxTokens": 60 } });
                let body = stack.http.gql(Some(token), COMPLETE, input).await?;
                if body["data"]["complete"]["status"] != "OK" {
                    return Err(format!("seeding turn {t}: {body}"));
                }
            }
            Ok(id)
        }))
        .await;
    let ids: Vec<String> = seeded.into_iter().collect::<Result<_, _>>()?;
    let mut sockets = Vec::new();
    for (token, _) in &users {
        sockets.push(Ws::connect(stack.addr, token).await?);
    }
    println!("measuring conversation");
    let mut rows = Vec::new();
    let mut round = 0;
    for concurrent in [1, CONVERSATIONS] {
        for with_context in [false, true] {
            let mut added_ttft = Samples::default();
            let mut problems = Vec::new();
            let tag = format!("conv-{run_id}-{concurrent}-{with_context}");
            let split = CpuSplit::start(stack.pid);
            for _ in 0..ROUNDS * CONVERSATIONS / concurrent {
                round += 1;
                let results = futures_util::future::join_all(
                    sockets
                        .iter_mut()
                        .take(concurrent)
                        .enumerate()
                        .map(|(i, ws)| {
                            let trace = format!("{tag}-{round}-{i}");
                            let prompt =
                                format!("{} @@tokens=5 @@trace={trace}", question(EARLIER + round));
                            let mut input = json!({ "prompt": prompt, "maxTokens": 60 });
                            if with_context {
                                input["conversationId"] = json!(ids[i]);
                            }
                            async move {
                                let subscribed = Instant::now();
                                (trace, subscribed, ws.stream(input).await)
                            }
                        }),
                )
                .await;
                for (trace_id, subscribed, received) in results {
                    let received = match received {
                        Ok(r) if r.error.is_none() && !r.deltas.is_empty() => r,
                        Ok(r) => {
                            problems.push(format!("{trace_id}: {:?}", r.error));
                            continue;
                        }
                        Err(e) => {
                            problems.push(format!("{trace_id}: {e}"));
                            continue;
                        }
                    };
                    match added_by_server(stack, &trace_id, subscribed, &received) {
                        Ok((added, _)) => added_ttft.push_micros(added),
                        Err(e) => problems.push(format!("{trace_id}: {e}")),
                    }
                }
            }
            let cpu = split.finish();
            failed_if(&problems, "conversation streams failed")?;
            let calls = added_ttft.len().max(1);
            // The context the measured turns carried, as their logs record it.
            let context_turns = scalar(
                &stack.db,
                &format!("SELECT coalesce(min((metadata->>'context_turns')::bigint), 0) FROM prompt_logs WHERE prompt LIKE '%@@trace={tag}-%'"),
            )
            .await?;
            rows.push(Row {
                scenario: format!(
                    "conversation x{concurrent}, {}",
                    if with_context {
                        "50+ earlier turns"
                    } else {
                        "no context"
                    }
                ),
                figures: vec![
                    ("streams_ok".into(), json!(added_ttft.len())),
                    ("concurrent".into(), json!(concurrent)),
                    ("context_turns_min".into(), json!(context_turns)),
                    (
                        "added_ttft_p50_ms".into(),
                        f(added_ttft.percentile_ms(50.0)),
                    ),
                    (
                        "added_ttft_p99_ms".into(),
                        f(added_ttft.percentile_ms(99.0)),
                    ),
                    // CPU per call on the two shared cores: the server; the harness (whose
                    // local upstream parses and tokenizes every context it is sent);
                    // PostgreSQL.
                    (
                        "server_cpu_ms_per_call".into(),
                        f(cpu.server * 1000.0 / calls as f64),
                    ),
                    (
                        "harness_cpu_ms_per_call".into(),
                        f(cpu.harness * 1000.0 / calls as f64),
                    ),
                    (
                        "postgres_cpu_ms_per_call".into(),
                        f(cpu.postgres * 1000.0 / calls as f64),
                    ),
                    ("steal_s".into(), f(cpu.steal)),
                ],
            });
        }
    }
    for ws in sockets {
        ws.close().await;
    }
    Ok(rows)
}

/// (transactions committed, rows updated) in this database so far, as PostgreSQL counts them
/// (its statistics are flushed about once a second; the runs here last longer).
async fn db_activity(db: &DatabaseConnection) -> Result<(i64, i64), String> {
    let row = db
        .query_one_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT pg_stat_force_next_flush(), xact_commit, tup_updated FROM pg_stat_database WHERE datname = current_database()",
        ))
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no pg_stat_database row")?;
    Ok((
        row.try_get_by_index::<i64>(1).map_err(|e| e.to_string())?,
        row.try_get_by_index::<i64>(2).map_err(|e| e.to_string())?,
    ))
}

/// A closed-loop measurement's figures: rate, latency percentiles, the CPU per request of the
/// server, of PostgreSQL and of the harness, and the machine's steal time.
fn loop_figures(
    clients: usize,
    duration: Duration,
    samples: &mut Samples,
    count: u64,
    cpu: CpuUse,
) -> Vec<(String, Value)> {
    let per_req = |s: f64| f(s * 1000.0 / count.max(1) as f64);
    vec![
        ("clients".into(), json!(clients)),
        ("requests".into(), json!(count)),
        (
            "requests_per_s".into(),
            f(count as f64 / duration.as_secs_f64()),
        ),
        ("p50_ms".into(), f(samples.percentile_ms(50.0))),
        ("p99_ms".into(), f(samples.percentile_ms(99.0))),
        ("server_cpu_ms_per_req".into(), per_req(cpu.server)),
        ("postgres_cpu_ms_per_req".into(), per_req(cpu.postgres)),
        ("harness_cpu_ms_per_req".into(), per_req(cpu.harness)),
        ("steal_s".into(), f(cpu.steal)),
    ]
}

/// Run `clients` loops of `op` for `duration`; latency samples and the count. Any error fails.
/// Each client is a task of its own (a client's parsing and clock do not wait for the others').
async fn closed_loop<F, Fut>(
    clients: usize,
    duration: Duration,
    op: F,
) -> Result<(Samples, u64), String>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let op = Arc::new(op);
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut samples = Samples::default();
                let mut count = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    op(c).await?;
                    samples.push(t.elapsed());
                    count += 1;
                }
                Ok::<_, String>((samples, count))
            })
        })
        .collect();
    let mut all = Samples::default();
    let mut total = 0;
    let mut failed = None;
    for task in tasks {
        if failed.is_some() {
            // The run has failed: the other clients stop now, not at the deadline.
            task.abort();
            continue;
        }
        match task.await.map_err(|e| format!("a client's task: {e}")) {
            Ok(Ok((s, c))) => {
                all.extend(s);
                total += c;
            }
            Ok(Err(e)) | Err(e) => failed = Some(e),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok((all, total)),
    }
}

/// Scenario 4: 20 sign-in loops while 32 clients query `me`.
/// Accounts are the run's own (`run_id` in their emails), so `--repeat` runs it again.
async fn signin_storm(stack: &Stack, options: &Options, run_id: &str) -> Result<Vec<Row>, String> {
    let signer = format!("signer-{run_id}-");
    let _signers = sign_up_many(&stack.http, &signer, 20).await?;
    let readers = sign_up_many(&stack.http, &format!("reader-{run_id}-"), 32).await?;
    let readers: Arc<Vec<String>> = Arc::new(readers.into_iter().map(|(t, _)| t).collect());
    let me_loop = || {
        let (http, readers) = (stack.http.clone(), readers.clone());
        closed_loop(32, options.duration, move |c| {
            let (http, token) = (http.clone(), readers[c].clone());
            async move {
                let body = http
                    .gql(
                        Some(&token),
                        "{ me { id email profile { tokensUsedThisMonth } } }",
                        json!({}),
                    )
                    .await?;
                if body["data"]["me"]["id"].is_string() {
                    Ok(())
                } else {
                    Err(format!("me: {body}"))
                }
            }
        })
    };
    // The same 32 clients alone first: what the storm changes is the difference.
    let cpu = CpuSplit::start(stack.pid);
    let (mut alone, n_alone) = me_loop().await?;
    let cpu_alone = cpu.finish();
    let stop = AtomicBool::new(false);
    let sign_ins = AtomicU64::new(0);
    let storm = futures_util::future::join_all((0..20).map(|i| {
        let http = &stack.http;
        let (stop, sign_ins, signer) = (&stop, &sign_ins, &signer);
        async move {
            let email = format!("{signer}{i}@bench.example");
            while !stop.load(Ordering::Relaxed) {
                http.gql(
                    None,
                    "mutation($i: SignInInput!) { signIn(input: $i) { token } }",
                    json!({ "i": { "email": email, "password": PASSWORD } }),
                )
                .await?;
                sign_ins.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), String>(())
        }
    }));
    let cpu = CpuSplit::start(stack.pid);
    let me = async {
        let r = me_loop().await;
        stop.store(true, Ordering::Relaxed);
        r
    };
    let (storm, me) = tokio::join!(storm, me);
    let cpu_storm = cpu.finish();
    for r in storm {
        r?;
    }
    let (mut during, n_during) = me?;
    let mut storm_figures = loop_figures(32, options.duration, &mut during, n_during, cpu_storm);
    storm_figures.push((
        "sign_ins_per_s".into(),
        f(sign_ins.load(Ordering::Relaxed) as f64 / options.duration.as_secs_f64()),
    ));
    Ok(vec![
        Row {
            scenario: "me, 32 clients, alone".into(),
            figures: loop_figures(32, options.duration, &mut alone, n_alone, cpu_alone),
        },
        Row {
            scenario: "me, 32 clients + 20 signIn".into(),
            figures: storm_figures,
        },
    ])
}

/// Scenario 5: memory per idle authenticated WebSocket.
///
/// Opened in two halves, and the figure is the second half's: a fresh server's allocator holds
/// memory freed at start (the tokenizers' tables are built from larger temporaries), already
/// resident, which the first few thousand connections reuse without growing RSS. (Measured on
/// 2026-12-01: 2,500 connections grew RSS by nothing, the next 2,500 by 4.0 KiB each, the
/// 2,500 after those by 8.1 and 9.1; so the whole-run figure of 5,000, 2.0 KiB on 2026-11-26,
/// said little.)
async fn idle_connections(stack: &Stack, n: usize) -> Result<Row, String> {
    let users = sign_up_many(&stack.http, "idle", 10).await?;
    // Settle: one connection first, so lazily built state is not counted per connection.
    Ws::connect(stack.addr, &users[0].0).await?.close().await;
    let open = |from: usize, to: usize| {
        let users = &users;
        stream::iter(from..to)
            .map(move |i| {
                let token = users[i % users.len()].0.clone();
                async move { Ws::connect(stack.addr, &token).await }
            })
            .buffer_unordered(128)
            .collect::<Vec<Result<Ws, String>>>()
    };
    let before = settled_rss(stack.pid).await;
    let first: Vec<Ws> = open(0, n / 2).await.into_iter().collect::<Result<_, _>>()?;
    let middle = settled_rss(stack.pid).await;
    let second: Vec<Ws> = open(n / 2, n).await.into_iter().collect::<Result<_, _>>()?;
    let after = settled_rss(stack.pid).await;
    // The server still answers while holding them.
    stack
        .http
        .gql(Some(&users[0].0), "{ me { id } }", json!({}))
        .await?;
    let halves = (first.len(), second.len());
    futures_util::future::join_all(first.into_iter().chain(second).map(Ws::close)).await;
    let per = |from: u64, to: u64, count: usize| {
        f(to.saturating_sub(from) as f64 / 1024.0 / count.max(1) as f64)
    };
    Ok(Row {
        scenario: format!("idle websockets {n}"),
        figures: vec![
            ("connections".into(), json!(halves.0 + halves.1)),
            ("server_rss_before_mib".into(), f(before as f64 / 1048576.0)),
            ("server_rss_middle_mib".into(), f(middle as f64 / 1048576.0)),
            ("server_rss_after_mib".into(), f(after as f64 / 1048576.0)),
            // The second half's growth per connection: the cost of one more.
            ("kib_per_connection".into(), per(middle, after, halves.1)),
            (
                "kib_per_connection_first_half".into(),
                per(before, middle, halves.0),
            ),
        ],
    })
}

/// The server's RSS once it stopped moving (two reads 100 ms apart agree to a page, or 3 s
/// passed): the allocator returns freed memory to the kernel a little after the frees.
async fn settled_rss(pid: u32) -> u64 {
    let mut last = rss(pid);
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rss(pid);
        if now.abs_diff(last) <= 4096 {
            return now;
        }
        last = now;
    }
    last
}

/// Scenario 5b: sockets that never send `connection_init` (a raw-socket flood): each is closed
/// by the initialisation timeout (4408), and the server's memory goes back down.
async fn uninitialised_connections(stack: &Stack, n: usize) -> Result<Row, String> {
    let before = rss(stack.pid);
    let opened = Instant::now();
    let sockets: Vec<GqlWs> = stream::iter(0..n)
        .map(|_| GqlWs::open(stack.addr))
        .buffer_unordered(128)
        .collect()
        .await;
    let open_secs = opened.elapsed().as_secs_f64();
    let peak = rss(stack.pid);
    let closes: Vec<Option<(u16, String)>> = stream::iter(sockets)
        .map(|mut ws| async move { ws.closed().await })
        .buffer_unordered(n.max(1))
        .collect()
        .await;
    let by_timeout = closes
        .iter()
        .filter(|c| matches!(c, Some((4408, _))))
        .count();
    if by_timeout != n {
        return Err(format!(
            "{by_timeout} of {n} un-initialised sockets were closed 4408: {:?}",
            closes.iter().find(|c| !matches!(c, Some((4408, _))))
        ));
    }
    // The server still answers.
    stack.http.gql(None, "{ __typename }", json!({})).await?;
    let after = rss(stack.pid);
    let freed = lazy_free(stack.pid);
    Ok(Row {
        scenario: format!("un-initialised websockets {n}"),
        figures: vec![
            ("connections".into(), json!(n)),
            ("closed_4408".into(), json!(by_timeout)),
            ("seconds_to_open".into(), f(open_secs)),
            ("server_rss_before_mib".into(), f(before as f64 / 1048576.0)),
            ("server_rss_peak_mib".into(), f(peak as f64 / 1048576.0)),
            (
                "server_rss_after_close_mib".into(),
                f(after as f64 / 1048576.0),
            ),
            // Freed by the allocator and reclaimable at once, though still counted in RSS.
            ("of_which_lazy_free_mib".into(), f(freed as f64 / 1048576.0)),
        ],
    })
}

/// The bulk data the history and usage scenarios read.
struct Seeded {
    client_tokens: Vec<String>,
    heavy_token: String,
}

/// Users and prompt logs in bulk: `users` users with `rows_per_user` logs each (64 of them
/// signed up through the API, the rest inserted), and one heavy user with `heavy_rows` finished
/// calls this month (logs, usage rows, links and the monthly rollup).
async fn seed(stack: &Stack, options: &Options) -> Result<Seeded, String> {
    let t = Instant::now();
    let clients = sign_up_many(&stack.http, "hist", 64.min(options.users)).await?;
    let (heavy_token, heavy_id) = stack.http.sign_up("heavy@bench.example", PASSWORD).await?;
    let db = &stack.db;
    let exec = |sql: String| async move {
        db.execute_unprepared(&sql)
            .await
            .map(|_| ())
            .map_err(|e| format!("{e}: {}", &sql[..sql.len().min(200)]))
    };
    let others = options.users.saturating_sub(clients.len());
    exec(format!(
        "INSERT INTO \"user\" (id, name, email) SELECT 'bulk-' || g, 'Bulk ' || g, 'bulk' || g || '@bench.example' FROM generate_series(1, {others}) g"
    ))
    .await?;
    exec(
        "INSERT INTO user_profiles (user_id) SELECT id FROM \"user\" WHERE id LIKE 'bulk-%'".into(),
    )
    .await?;
    // Spread over the current month, newest now; every user's rows interleave in time. With
    // --text-bytes, each text ends in the same random hex (one string per statement: a random
    // text does not compress, whether or not it repeats across rows).
    let text = |what: &str| match options.text_bytes {
        0 => format!("'{what} ' || g"),
        n => format!(
            "'{what} ' || g || ' ' || (SELECT left(string_agg(md5(random()::text), ''), {n}) FROM generate_series(1, {}))",
            n.div_ceil(32)
        ),
    };
    exec(format!(
        "INSERT INTO prompt_logs (user_id, model, prompt, completion, prompt_tokens, completion_tokens, latency_ms, status, metadata, created_at)
         SELECT u.id, 'gpt-4o-mini', {}, {}, 12, 40, 250, 'ok', '{{}}'::jsonb,
                now() - (g * interval '1 second') - (random() * interval '1 second')
         FROM \"user\" u CROSS JOIN generate_series(1, {}) g
         WHERE u.email LIKE 'bulk%' OR u.email LIKE 'hist%'",
        text("bulk prompt"),
        text("bulk completion"),
        options.rows_per_user
    ))
    .await?;
    // The heavy user: finished calls this month, each with its usage row and link (one
    // statement: the foreign keys are checked at its end), then the monthly rollup.
    exec(format!(
        "WITH calls AS (
           SELECT gen_random_uuid() AS log_id, gen_random_uuid() AS usage_id, g,
                  greatest(date_trunc('month', now()), now() - (g * interval '5 seconds')) AS at,
                  (ARRAY['gpt-4o-mini','gpt-4o','gpt-4.1-mini'])[1 + g % 3] AS model
           FROM generate_series(1, {heavy}) g),
         logs AS (
           INSERT INTO prompt_logs (id, user_id, model, prompt, completion, prompt_tokens, completion_tokens, latency_ms, status, metadata, created_at)
           SELECT log_id, '{heavy_id}', model, 'heavy prompt ' || g, 'heavy completion ' || g, 12, 40, 250, 'ok', '{{}}'::jsonb, at FROM calls),
         usage AS (
           INSERT INTO token_usage (id, user_id, model, prompt_tokens, completion_tokens, cost_microcents, created_at)
           SELECT usage_id, '{heavy_id}', model, 12, 40, 1000, at FROM calls)
         INSERT INTO prompt_log_usage (log_id, usage_id) SELECT log_id, usage_id FROM calls",
        heavy = options.heavy_rows
    ))
    .await?;
    exec(format!(
        "INSERT INTO usage_monthly (user_id, month, calls, prompt_tokens, completion_tokens, cost_microcents)
         SELECT user_id, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM'), count(*), sum(prompt_tokens), sum(completion_tokens), sum(cost_microcents)
         FROM token_usage WHERE user_id = '{heavy_id}' GROUP BY user_id
         ON CONFLICT (user_id, month) DO UPDATE SET calls = EXCLUDED.calls, prompt_tokens = EXCLUDED.prompt_tokens,
           completion_tokens = EXCLUDED.completion_tokens, cost_microcents = EXCLUDED.cost_microcents"
    ))
    .await?;
    exec("VACUUM ANALYZE".into()).await?;
    let total = scalar(db, "SELECT count(*) FROM prompt_logs").await?;
    println!(
        "seeded {total} prompt logs ({} users x {} + {} for the heavy user; {} bytes of text added to each bulk prompt and completion) in {:.0} s",
        options.users,
        options.rows_per_user,
        options.heavy_rows,
        options.text_bytes,
        t.elapsed().as_secs_f64()
    );
    Ok(Seeded {
        client_tokens: clients.into_iter().map(|(t, _)| t).collect(),
        heavy_token,
    })
}

const HISTORY: &str = "query($after: String) { history(first: 20, after: $after) { nodes { id model status createdAt user { id email profile { defaultModel tokensUsedThisMonth } } } pageInfo { hasNextPage endCursor } } }";

/// What the history scenario checks of a page: 20 nodes, each with its user's profile's default
/// model, and a next page. Read into these types, the rest of the response is skipped without being built.
#[derive(serde::Deserialize)]
struct HistoryData {
    history: HistoryPage,
}

#[derive(serde::Deserialize)]
struct HistoryPage {
    nodes: Vec<HistoryNode>,
    #[serde(rename = "pageInfo")]
    page_info: PageInfo,
}

#[derive(serde::Deserialize)]
struct HistoryNode {
    user: NodeUser,
}

#[derive(serde::Deserialize)]
struct NodeUser {
    profile: NodeProfile,
}

#[derive(serde::Deserialize)]
struct NodeProfile {
    #[serde(rename = "defaultModel")]
    default_model: String,
}

#[derive(serde::Deserialize)]
struct PageInfo {
    #[serde(rename = "hasNextPage")]
    has_next_page: bool,
}

/// Scenario 2: 64 clients paging `history(first: 20)` with nested `user { profile }`: page 1
/// of their own feed, then the heavy user's page 5,000 rows deep.
async fn history(stack: &Stack, options: &Options, data: &Seeded) -> Result<Vec<Row>, String> {
    let check = |page: HistoryData| -> Result<(), String> {
        let h = page.history;
        if h.nodes.len() == 20
            && h.page_info.has_next_page
            && h.nodes
                .iter()
                .all(|n| !n.user.profile.default_model.is_empty())
        {
            Ok(())
        } else {
            Err(format!(
                "a history page with {} nodes (next page: {}), or a node without its user's default model",
                h.nodes.len(),
                h.page_info.has_next_page
            ))
        }
    };
    let clients = data.client_tokens.len();
    let cpu = CpuSplit::start(stack.pid);
    let (http, tokens) = (stack.http.clone(), Arc::new(data.client_tokens.clone()));
    let (mut first, n1) = closed_loop(clients, options.duration, move |c| {
        let (http, token) = (http.clone(), tokens[c].clone());
        async move { check(http.gql_data(Some(&token), HISTORY, &json!({})).await?) }
    })
    .await?;
    let cpu1 = cpu.finish();
    // The heavy user's cursor 5,000 rows deep, by paging to it.
    let mut after = Value::Null;
    let mut depth = 0;
    while depth < 5000 {
        let body = stack
            .http
            .gql(
                Some(&data.heavy_token),
                "query($after: String) { history(first: 100, after: $after) { nodes { id } pageInfo { endCursor } } }",
                json!({ "after": after }),
            )
            .await?;
        depth += body["data"]["history"]["nodes"]
            .as_array()
            .map_or(0, Vec::len);
        after = body["data"]["history"]["pageInfo"]["endCursor"].clone();
        if !after.is_string() {
            return Err(format!("no cursor at depth {depth}"));
        }
    }
    let cpu = CpuSplit::start(stack.pid);
    let (http, heavy) = (stack.http.clone(), data.heavy_token.clone());
    let variables = json!({ "after": after });
    let (mut deep, n2) = closed_loop(clients, options.duration, move |_| {
        let (http, heavy, variables) = (http.clone(), heavy.clone(), variables.clone());
        async move { check(http.gql_data(Some(&heavy), HISTORY, &variables).await?) }
    })
    .await?;
    let cpu2 = cpu.finish();
    Ok(vec![
        Row {
            scenario: "history page 1".into(),
            figures: loop_figures(clients, options.duration, &mut first, n1, cpu1),
        },
        Row {
            scenario: "history 5,000 rows deep".into(),
            figures: loop_figures(clients, options.duration, &mut deep, n2, cpu2),
        },
    ])
}

/// Scenario 3: `usage` and `me { profile { tokensUsedThisMonth } }` for the heavy user, by one
/// client (latency without queueing) and by eight at once.
async fn usage(stack: &Stack, options: &Options, data: &Seeded) -> Result<Vec<Row>, String> {
    let calls = options.heavy_rows as u64;
    let used = (calls * 52).to_string();
    let mut rows = Vec::new();
    for clients in [1, 8] {
        let cpu = CpuSplit::start(stack.pid);
        let (http, heavy) = (stack.http.clone(), data.heavy_token.clone());
        const USAGE: &str = "{ usage { calls promptTokens completionTokens costMicrocents byModel { model calls } byDay { day calls } } }";
        let (mut summary, n) = closed_loop(clients, options.duration, move |_| {
            let (http, heavy) = (http.clone(), heavy.clone());
            async move {
                let body = http.gql(Some(&heavy), USAGE, json!({})).await?;
                if body["data"]["usage"]["calls"].as_u64() == Some(calls) {
                    Ok(())
                } else {
                    Err(format!("usage: {body}"))
                }
            }
        })
        .await?;
        rows.push(Row {
            scenario: format!("usage, heavy user, {clients} client(s)"),
            figures: loop_figures(clients, options.duration, &mut summary, n, cpu.finish()),
        });
        let cpu = CpuSplit::start(stack.pid);
        let (http, heavy, used) = (stack.http.clone(), data.heavy_token.clone(), used.clone());
        let (mut month, n) = closed_loop(clients, options.duration, move |_| {
            let (http, heavy, used) = (http.clone(), heavy.clone(), used.clone());
            async move {
                let body = http
                    .gql(
                        Some(&heavy),
                        "{ me { profile { tokensUsedThisMonth } } }",
                        json!({}),
                    )
                    .await?;
                if body["data"]["me"]["profile"]["tokensUsedThisMonth"] == used.as_str() {
                    Ok(())
                } else {
                    Err(format!("me: {body}"))
                }
            }
        })
        .await?;
        rows.push(Row {
            scenario: format!("tokensUsedThisMonth, heavy, {clients} client(s)"),
            figures: loop_figures(clients, options.duration, &mut month, n, cpu.finish()),
        });
    }
    Ok(rows)
}
