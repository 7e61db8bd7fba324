//! CPU time and memory of a process, from `/proc`.

use std::time::Duration;

/// Raise this process's open-file limit to its hard limit (thousands of sockets).
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit);
        }
    }
}

/// User plus system CPU time the process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    from_ticks(stat_sum(&stat_fields(pid), &[UTIME, STIME]))
}

// Indexes in `stat_fields`: after the command name's ')', state is index 0 (field 3), so the
// parent's pid (field 4) is 1, utime (field 14) 11, stime 12, and the times of the children it
// reaped, cutime and cstime, 13 and 14.
const PPID: usize = 1;
const UTIME: usize = 11;
const STIME: usize = 12;
const CUTIME: usize = 13;
const CSTIME: usize = 14;

/// `/proc/PID/stat`'s fields after the command name (which may contain spaces), if it exists.
fn stat_fields(pid: u32) -> Vec<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    // The state (index 0) is a letter: kept as 0 so the indexes stay those of the fields.
    after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect()
}

fn stat_sum(fields: &[u64], at: &[usize]) -> u64 {
    at.iter().filter_map(|&i| fields.get(i)).sum()
}

/// PostgreSQL's postmaster, once `watch_postgres` found it.
static POSTMASTER: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Count PostgreSQL's CPU exactly from now on, given one of its backends' pids (from
/// `pg_backend_pid()`): every backend is a child of the postmaster. False if that process is
/// not on this machine (then the CPU of everything but the server and the harness stands in).
pub fn watch_postgres(backend: u32) -> bool {
    let parent = stat_fields(backend).get(PPID).copied().unwrap_or(0);
    let is_postgres = |pid: u64| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
    };
    if parent == 0 || !is_postgres(u64::from(backend)) || !is_postgres(parent) {
        return false;
    }
    u32::try_from(parent).is_ok_and(|p| POSTMASTER.set(p).is_ok() || POSTMASTER.get() == Some(&p))
}

/// CPU time PostgreSQL has used so far: the postmaster, the backends it has reaped, and those
/// still running (its children). A backend that exits in between moves from the last term to
/// the second when the postmaster reaps it, at once.
fn postgres_cpu(postmaster: u32) -> Duration {
    let mut ticks = stat_sum(&stat_fields(postmaster), &[UTIME, STIME, CUTIME, CSTIME]);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let fields = stat_fields(pid);
        if fields.get(PPID) == Some(&u64::from(postmaster)) {
            ticks += stat_sum(&fields, &[UTIME, STIME]);
        }
    }
    from_ticks(ticks)
}

/// Clock ticks (the unit of `/proc` CPU times) as a duration.
fn from_ticks(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// Resident memory now, in bytes.
pub fn rss(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:") * 1024
}

/// Resident memory the process freed with `MADV_FREE` (mimalloc does): still counted in RSS
/// until the kernel needs the pages, which it then takes back without a write.
pub fn lazy_free(pid: u32) -> u64 {
    proc_kb(pid, "smaps_rollup", "LazyFree:") * 1024
}

fn status_kb(pid: u32, key: &str) -> u64 {
    proc_kb(pid, "status", key)
}

fn proc_kb(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Samples a process's resident memory every 50 ms until dropped; `peak` is the highest seen.
pub struct RssSampler {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss(pid)));
        let seen = peak.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                seen.fetch_max(rss(pid), std::sync::atomic::Ordering::Relaxed);
            }
        });
        RssSampler { peak, task }
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// CPU time of the whole machine so far (all CPUs), from `/proc/stat`: (busy, steal). Busy is
/// user, nice, system, irq and softirq. Steal, time the hypervisor gave this VM's CPUs to
/// others, is counted apart (a run that met much of it ran on a slower machine).
fn machine_cpu() -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (Duration::ZERO, Duration::ZERO);
    };
    // user nice system idle iowait irq softirq steal
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // (guest and guest_nice, which follow, are counted in user and nice already)
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| v.get(i)).sum();
    (from_ticks(busy), from_ticks(v.get(7).copied().unwrap_or(0)))
}

/// CPU seconds used during a measurement.
#[derive(Clone, Copy)]
pub struct CpuUse {
    pub server: f64,
    pub harness: f64,
    /// Exact once `watch_postgres` found PostgreSQL; else the machine's busy time not used by
    /// the server or the harness.
    pub postgres: f64,
    /// Time the hypervisor took from this machine's CPUs (`/proc/stat`'s steal).
    pub steal: f64,
    /// The machine's busy time used by none of the three (interrupts, other processes); with
    /// PostgreSQL not found, 0 (it is in `postgres`).
    pub other: f64,
}

/// Where CPU time went during a measurement: the server, this harness (load generator and
/// upstream), PostgreSQL, the rest of the machine, and the hypervisor's steal.
pub struct CpuSplit {
    server_pid: u32,
    server: Duration,
    harness: Duration,
    postgres: Option<Duration>,
    machine: (Duration, Duration),
}

impl CpuSplit {
    pub fn start(server_pid: u32) -> CpuSplit {
        profiler("enable");
        CpuSplit {
            server_pid,
            server: cpu_time(server_pid),
            harness: cpu_time(std::process::id()),
            postgres: POSTMASTER.get().map(|&p| postgres_cpu(p)),
            machine: machine_cpu(),
        }
    }

    pub fn finish(&self) -> CpuUse {
        profiler("disable");
        let server = cpu_time(self.server_pid).saturating_sub(self.server);
        let harness = cpu_time(std::process::id()).saturating_sub(self.harness);
        let (busy, steal) = machine_cpu();
        let rest = busy
            .saturating_sub(self.machine.0)
            .saturating_sub(server + harness);
        let postgres = match (POSTMASTER.get(), self.postgres) {
            (Some(&p), Some(start)) => postgres_cpu(p).saturating_sub(start),
            _ => rest,
        };
        CpuUse {
            server: server.as_secs_f64(),
            harness: harness.as_secs_f64(),
            postgres: postgres.as_secs_f64(),
            steal: steal.saturating_sub(self.machine.1).as_secs_f64(),
            other: rest.saturating_sub(postgres).as_secs_f64(),
        }
    }
}

/// With `BENCH_PERF_CONTROL` set to `perf record --control fifo:CTL,ACK`'s two fifos
/// (`CTL,ACK`), measured spans turn perf's recording on and off, so that a profile taken with
/// `-D -1` holds the measured runs and not the set-up around them (see the README).
fn profiler(command: &str) {
    use std::io::{Read, Write};
    let Ok(fifos) = std::env::var("BENCH_PERF_CONTROL") else {
        return;
    };
    let Some((control, ack)) = fifos.split_once(',') else {
        panic!("BENCH_PERF_CONTROL is CTL,ACK: the two fifos given to perf record --control");
    };
    let sent = std::fs::OpenOptions::new()
        .write(true)
        .open(control)
        .and_then(|mut c| c.write_all(format!("{command}\n").as_bytes()));
    // perf answers "ack" once it has acted: wait for it, so the span starts recorded.
    let acked = std::fs::File::open(ack).and_then(|mut a| a.read(&mut [0; 8]));
    if let Err(e) = sent.and(acked) {
        panic!("BENCH_PERF_CONTROL ({fifos}): {e}");
    }
}
