//! A PgBouncer in transaction mode in front of the test PostgreSQL server, when
//! `TEST_PGBOUNCER` names its binary: started once per test process, as an unprivileged user
//! (it refuses root), stopped with the process (see `pg_cluster` for the same arrangement, and
//! for the sweep that removes the directories of processes gone).
#![allow(unsafe_code)] // pre_exec (prctl), as in pg_cluster

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{OnceLock, mpsc};

/// `postgres://postgres@127.0.0.1:PORT/postgres` of the running PgBouncer, if one was asked for.
pub fn url() -> Option<String> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(|| {
        let binary = std::env::var("TEST_PGBOUNCER")
            .ok()
            .filter(|b| !b.is_empty())?;
        let server = url::Url::parse(&crate::postgres_admin_url()).expect("the server URL");
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("pgbouncer".into())
            .spawn(move || run(&binary, &server, &tx))
            .expect("spawn the pgbouncer thread");
        match rx.recv() {
            Ok(Ok(url)) => Some(url),
            Ok(Err(message)) => panic!("could not start PgBouncer: {message}"),
            Err(_) => panic!("could not start PgBouncer: its thread died"),
        }
    })
    .clone()
}

/// The directories' name prefix in the temporary directory.
const DIR_PREFIX: &str = "aiwrapper-pgbouncer-";

fn run(binary: &str, server: &url::Url, ready: &mpsc::Sender<Result<String, String>>) {
    let started = (|| -> Result<(std::process::Child, String), String> {
        let (uid, gid) = crate::pg_cluster::unprivileged_user()?;
        // Kept past the process (its PgBouncer may still be writing its log as the process
        // exits), and removed by the next run's sweep once this process is gone.
        crate::pg_cluster::remove_abandoned(DIR_PREFIX);
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?
            .keep();
        crate::pg_cluster::hold_owner_lock(&dir)?;
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| format!("chown: {e}"))?;
        let port = crate::pg_cluster::free_port()?;
        let user = server.username();
        let prepared =
            std::env::var("TEST_PGBOUNCER_PREPARED_STATEMENTS").unwrap_or_else(|_| "0".into());
        let prepared_line = if prepared == "0" {
            String::new()
        } else {
            format!("max_prepared_statements = {prepared}\n")
        };
        // Every test has a database of its own, and none is dropped: PgBouncer's server
        // connections to a finished test's database stay idle for `server_idle_timeout` (600 s by
        // default), and 137 tests' worth of them filled the cluster's 300 connection slots
        // (`remaining connection slots are reserved`, then the next tests' pools timed out). Idle
        // server connections close after 5 s instead.
        let ini = format!(
            "[databases]\n* = host={host} port={pg_port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir =\nauth_type = trust\nauth_file = {dir}/userlist.txt\npool_mode = transaction\n\
             max_client_conn = 2000\ndefault_pool_size = 10\nmax_db_connections = 0\n\
             server_idle_timeout = 5\n\
             ignore_startup_parameters = extra_float_digits,options\n{prepared_line}\
             server_reset_query =\nlogfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
            host = server.host_str().unwrap_or("127.0.0.1"),
            pg_port = server.port().unwrap_or(5432),
            dir = dir.display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini)
            .map_err(|e| format!("write pgbouncer.ini: {e}"))?;
        std::fs::write(
            dir.join("userlist.txt"),
            format!(
                "\"{user}\" \"\"\n\"{runtime}\" \"\"\n",
                runtime = crate::database::RUNTIME_LOGIN
            ),
        )
        .map_err(|e| format!("write userlist: {e}"))?;
        for f in ["pgbouncer.ini", "userlist.txt"] {
            std::os::unix::fs::chown(dir.join(f), Some(uid), Some(gid))
                .map_err(|e| format!("chown: {e}"))?;
        }
        let mut cmd = Command::new(binary);
        // It logs to its logfile (and to stderr, which must not be a pipe nobody drains: a
        // full pipe would stop its event loop).
        cmd.arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        crate::pg_cluster::as_user(&mut cmd, uid, gid);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("start {binary}: {e}"))?;
        // PgBouncer logs to its logfile; it is up once it accepts a connection.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let file = std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default();
                return Err(format!("pgbouncer exited ({status}):\n{file}"));
            }
            if std::time::Instant::now() > deadline {
                return Err("pgbouncer did not start listening within 20 s".into());
            }
            std::thread::yield_now();
            std::thread::park_timeout(std::time::Duration::from_millis(20));
        }
        let url = format!("postgres://{user}@127.0.0.1:{port}/postgres");
        Ok((child, url))
    })();
    match started {
        Ok((mut child, url)) => {
            let _ = ready.send(Ok(url));
            let _ = child.wait();
        }
        Err(message) => {
            let _ = ready.send(Err(message));
        }
    }
}
