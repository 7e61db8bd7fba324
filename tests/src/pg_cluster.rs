//! A throwaway PostgreSQL cluster for the test process, started from the server binaries that are
//! installed (`/usr/lib/postgresql/<version>/bin`, or `PG_BIN`).
//!
//! * `initdb` refuses to run as root, so as root the cluster runs as the `postgres` system user
//!   (or `nobody`), in a private temporary directory owned by that user.
//! * The server is a child of a dedicated thread that lives as long as the test process, and it
//!   is told to stop when that thread goes away (`PR_SET_PDEATHSIG`), so a crashed or killed test
//!   run leaves no server behind; a normal exit stops it and removes its directory.
//! * Readiness is the server's own "ready to accept connections" line, not a timed wait.
//! * A directory left behind by a run that was interrupted (so its exit handler never ran) is
//!   removed by the next run: each run holds a lock on its directory while it lives.
//! * Durability is off (`fsync`, `synchronous_commit`, `full_page_writes`): the data is thrown away.
#![allow(unsafe_code)] // pre_exec (prctl) and atexit, both documented where used

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};

/// A running throwaway cluster.
#[derive(Debug)]
pub struct PgCluster {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub admin_url: String,
    pub version: String,
}

/// The server's log lines so far (multi-line entries joined), each `database|application|...`.
static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The log entries of `database` so far, without the database prefix: `application|LOG: ...`.
/// Only the harness's own cluster has one; with `TEST_DATABASE_URL` this panics.
pub fn server_log(database: &str) -> Vec<String> {
    assert!(
        CLEANUP.lock().unwrap_or_else(|p| p.into_inner()).is_some(),
        "the server log is only available from the harness's own cluster (unset TEST_DATABASE_URL)"
    );
    let prefix = format!("{database}|");
    LOG.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

/// What the exit handler needs to stop the server and remove its files.
static CLEANUP: Mutex<Option<(i32, PathBuf)>> = Mutex::new(None);

/// Start the cluster once per process and return it.
pub fn start() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("pg-cluster".into())
            .spawn(move || run(&tx))
            .expect("spawn the pg-cluster thread");
        match rx.recv() {
            Ok(Ok(cluster)) => cluster,
            Ok(Err(message)) => panic!("could not start a throwaway PostgreSQL cluster: {message}"),
            Err(_) => panic!("could not start a throwaway PostgreSQL cluster: its thread died"),
        }
    })
}

fn run(ready: &mpsc::Sender<Result<PgCluster, String>>) {
    let started = (|| -> Result<(std::process::Child, PgCluster), String> {
        let bin = find_bin_dir()?;
        let version = bin
            .parent()
            .and_then(|p| p.file_name())
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (uid, gid) = unprivileged_user()?;
        remove_abandoned(DIR_PREFIX);
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?
            .keep();
        hold_owner_lock(&dir)?;
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
        let data = dir.join("data");

        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_user(&mut initdb, uid, gid);
        let out = initdb.output().map_err(|e| format!("run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }

        let port = free_port()?;
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(&dir)
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=128MB",
                // Every test's CREATE DATABASE writes its 8 MB template to the WAL: keep the WAL
                // from growing to the default 1 GB beside the databases themselves.
                "-c",
                "max_wal_size=256MB",
                "-c",
                "min_wal_size=64MB",
                "-c",
                "timezone=UTC",
                "-c",
                "logging_collector=off",
                // Database and application on every line, for `server_log`.
                "-c",
                "log_line_prefix=%d|%a|",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_user(&mut postgres, uid, gid);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of ours.
        // It runs after the uid change (std applies uid/gid before pre_exec hooks), so the
        // setting survives; the "parent" is this thread, which lives until the process exits.
        unsafe {
            postgres.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = postgres
            .spawn()
            .map_err(|e| format!("start postgres: {e}"))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut log = String::new();
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    let is_ready = line.contains("database system is ready to accept connections");
                    log.push_str(&line);
                    log.push('\n');
                    if is_ready {
                        break;
                    }
                }
                _ => {
                    let _ = child.wait();
                    return Err(format!("postgres exited before it was ready:\n{log}"));
                }
            }
        }
        *CLEANUP.lock().unwrap_or_else(|p| p.into_inner()) = Some((child.id() as i32, dir));
        // SAFETY: registering a plain extern "C" function; it only signals, waits and removes files.
        unsafe {
            libc::atexit(stop_at_exit);
        }
        // Keep draining the log so the server never blocks on a full pipe, and keep it for
        // `server_log`.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut log = LOG.lock().unwrap_or_else(|p| p.into_inner());
                match log.last_mut() {
                    // A multi-line statement goes on over lines that start with a tab.
                    Some(last) if line.starts_with('\t') => {
                        last.push('\n');
                        last.push_str(&line);
                    }
                    _ => log.push(line),
                }
            }
        });
        Ok((
            child,
            PgCluster {
                admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                version,
            },
        ))
    })();
    match started {
        Ok((mut child, cluster)) => {
            let _ = ready.send(Ok(cluster));
            // This thread is the server's parent for PR_SET_PDEATHSIG: stay alive with it.
            let _ = child.wait();
        }
        Err(message) => {
            let _ = ready.send(Err(message));
        }
    }
}

/// The cluster directories' name prefix in the temporary directory.
const DIR_PREFIX: &str = "aiwrapper-pg-";
/// The lock file a cluster's test process holds for as long as it lives.
const OWNER_LOCK: &str = "owner.lock";

/// Take an advisory lock on `dir/owner.lock` for the rest of this process's life (the file is
/// never closed; the kernel drops the lock when the process goes, however it goes). The file is
/// locked under another name first and then renamed, so no other process can ever see it
/// unlocked while this one is alive.
pub(crate) fn hold_owner_lock(dir: &Path) -> Result<(), String> {
    use std::os::fd::IntoRawFd;
    let staging = dir.join(format!("{OWNER_LOCK}.new"));
    let file = std::fs::File::create(&staging)
        .map_err(|e| format!("create {}: {e}", staging.display()))?;
    let fd = file.into_raw_fd();
    // SAFETY: flock on a descriptor we own and deliberately never close.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "lock {}: {}",
            staging.display(),
            std::io::Error::last_os_error()
        ));
    }
    std::fs::rename(&staging, dir.join(OWNER_LOCK))
        .map_err(|e| format!("rename {}: {e}", staging.display()))
}

/// Remove the temporary directories named `prefix…` whose test process is gone: a cluster's
/// whose process died without running its exit handler (interrupted with Ctrl-C, killed; its
/// server stopped with it, `PR_SET_PDEATHSIG`), whose files are a gigabyte or two after a full
/// suite, so a few interrupted runs fill a disk; and every PgBouncer's, which has no exit
/// handler. A directory whose owner lock can be taken belongs to no living process. One without
/// a lock file is being set up (or predates the lock) and is left alone.
pub(crate) fn remove_abandoned(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let dir = entry.path();
        let Ok(lock) = std::fs::File::open(dir.join(OWNER_LOCK)) else {
            continue;
        };
        // SAFETY: flock on a descriptor `lock` owns; it is closed (and the lock dropped) below.
        let free = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&lock),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } == 0;
        if free {
            // Removed while locked (a concurrent sweeper finds it locked or gone), everything
            // but the lock file first, so a sweep cut short leaves a directory the next one
            // still recognises.
            for inner in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if inner.file_name() != OWNER_LOCK {
                    let path = inner.path();
                    let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        drop(lock);
    }
}

extern "C" fn stop_at_exit() {
    let taken = CLEANUP.lock().ok().and_then(|mut c| c.take());
    if let Some((pid, dir)) = taken {
        // SAFETY: signalling and reaping our own child process.
        unsafe {
            libc::kill(pid, libc::SIGQUIT);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn find_bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no PostgreSQL server binaries under /usr/lib/postgresql ({e}); install postgresql or set PG_BIN or TEST_DATABASE_URL"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    candidates.sort();
    candidates
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin; install postgresql or set PG_BIN or TEST_DATABASE_URL".into())
}

/// The user to run the cluster as: ourselves when not root, else `postgres` (or `nobody`).
pub(crate) fn unprivileged_user() -> Result<(u32, u32), String> {
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if uid != 0 {
        return Ok((uid, gid));
    }
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(|e| format!("read /etc/passwd: {e}"))?;
    for wanted in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() > 3
                && fields[0] == wanted
                && let (Ok(u), Ok(g)) = (fields[2].parse(), fields[3].parse())
            {
                return Ok((u, g));
            }
        }
    }
    Err("running as root and no postgres or nobody user to run initdb as".into())
}

pub(crate) fn as_user(cmd: &mut Command, uid: u32, gid: u32) {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } == 0 {
        cmd.uid(uid).gid(gid);
        // A directory the unprivileged user may not read must not be the working directory.
        cmd.current_dir(Path::new("/"));
    }
}

pub(crate) fn free_port() -> Result<u16, String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("find a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("find a free port: {e}"))
}
