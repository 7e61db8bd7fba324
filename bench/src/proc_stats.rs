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
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may contain spaces: fields are counted after its ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is index 0, so utime (field 14) is index 11 and stime index 12.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
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

/// CPU time used by the whole machine so far (all CPUs, busy time only), from `/proc/stat`.
pub fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return Duration::ZERO;
    };
    // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let busy: u64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .take(8)
        .map(|(_, x)| *x)
        .sum();
    from_ticks(busy)
}

/// Where CPU time went during a measurement: the server, this harness (load generator and
/// upstream), and everything else (PostgreSQL, mostly).
pub struct CpuSplit {
    server_pid: u32,
    start: (Duration, Duration, Duration),
}

impl CpuSplit {
    pub fn start(server_pid: u32) -> CpuSplit {
        CpuSplit {
            server_pid,
            start: (
                cpu_time(server_pid),
                cpu_time(std::process::id()),
                machine_busy(),
            ),
        }
    }

    /// (server, harness, other) CPU seconds since `start`.
    pub fn finish(&self) -> (f64, f64, f64) {
        let server = cpu_time(self.server_pid).saturating_sub(self.start.0);
        let harness = cpu_time(std::process::id()).saturating_sub(self.start.1);
        let total = machine_busy().saturating_sub(self.start.2);
        let other = total.saturating_sub(server + harness);
        (
            server.as_secs_f64(),
            harness.as_secs_f64(),
            other.as_secs_f64(),
        )
    }
}
