//! Password hashing: Argon2id for new hashes; Better Auth's scrypt format accepted on sign-in.
//!
//! Hashing is deliberately slow, so it never runs on the async executor: callers go through
//! [`Hasher`], which runs it on threads of its own, one fewer than the cores, at a lower
//! scheduling priority (nice 10). A burst of sign-ins queues instead of taking every core, and
//! while hashes run, request handling still comes first (the sign-in storm benchmark: `me` p99
//! with 20 sign-in loops going on; see docs/performance.md).

use std::sync::{Arc, LazyLock};

use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use argon2::{Algorithm, Argon2, Params, Version};
use subtle::ConstantTimeEq;
use unicode_normalization::UnicodeNormalization;

use crate::error::{AppError, AppResult};

/// OWASP's minimum for Argon2id: 19 MiB, 2 iterations, 1 lane.
const ARGON2_M_KIB: u32 = 19 * 1024;
const ARGON2_T: u32 = 2;
const ARGON2_P: u32 = 1;

fn argon2() -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None).expect("valid Argon2 parameters"),
    )
}

/// Hash a password as an Argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .expect("Argon2 hashing with valid parameters cannot fail")
        .to_string()
}

/// Check a password against a stored hash: an Argon2 PHC string, or Better Auth's scrypt
/// format `<32 hex salt>:<128 hex key>`. An unrecognised hash never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    if stored.starts_with("$argon2") {
        return PasswordHash::new(stored).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        });
    }
    verify_better_auth_scrypt(password, stored)
}

/// Better Auth's default: scrypt(N=16384, r=16, p=1, dkLen=64) of the NFKC-normalised password,
/// salted with the *hex string* of the salt (its bytes as text, not decoded).
fn verify_better_auth_scrypt(password: &str, stored: &str) -> bool {
    let Some((salt, key_hex)) = stored.split_once(':') else {
        return false;
    };
    let Ok(expected) = hex::decode(key_hex) else {
        return false;
    };
    if expected.len() != 64 || salt.is_empty() {
        return false;
    }
    let Ok(params) = scrypt::Params::new(14, 16, 1, 64) else {
        return false;
    };
    let normalized: String = password.nfkc().collect();
    let mut derived = [0u8; 64];
    if scrypt::scrypt(
        normalized.as_bytes(),
        salt.as_bytes(),
        &params,
        &mut derived,
    )
    .is_err()
    {
        return false;
    }
    derived.ct_eq(&expected).into()
}

/// A hash of a random password, verified against when the email is unknown so that the answer
/// takes as long as for a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| hash(&uuid::Uuid::new_v4().to_string()));

type Job = Box<dyn FnOnce() + Send>;

/// Runs hashing on its own low-priority threads, behind a bounded queue: when `queue` jobs are
/// already waiting, a new one is refused (`RATE_LIMITED`) instead of queueing behind a flood.
#[derive(Clone)]
pub struct Hasher {
    jobs: std::sync::mpsc::SyncSender<Job>,
    /// Jobs accepted and not yet started (a metric).
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

impl Hasher {
    /// `threads` hashing threads, at most `queue` jobs waiting.
    pub fn new(threads: usize, queue: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(queue);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("password-hash-{n}"))
                .spawn(move || {
                    lower_this_threads_priority();
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // every Hasher is gone
                        }
                    }
                })
                .expect("spawn a password hashing thread");
        }
        Self {
            jobs,
            waiting: Arc::default(),
        }
    }

    /// Hashes waiting for a thread now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One fewer than the cores (at least one), leaving a core for request handling.
    pub fn for_this_machine(queue: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(cores.saturating_sub(1).max(1), queue)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> AppResult<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiting = self.waiting.clone();
        let job: Job = Box::new(move || {
            waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            // A request that went away while its job waited needs no hash.
            if tx.is_closed() {
                return;
            }
            // A panic must not take the hashing thread with it: the caller gets an error.
            if let Ok(result) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
                let _ = tx.send(result);
            }
        });
        // Counted before it can start (a thread may take it at once).
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                self.waiting
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                return Err(AppError::RateLimited {
                    retry_after_secs: 1,
                });
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                self.waiting
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                return Err(AppError::internal("the password hashing threads are gone"));
            }
        }
        rx.await
            .map_err(|_| AppError::internal("a password hashing job was dropped"))
    }

    pub async fn hash(&self, password: String) -> AppResult<String> {
        self.run(move || hash(&password)).await
    }

    /// Verify against `stored`, or against a dummy hash when there is none (same cost).
    pub async fn verify(&self, password: String, stored: Option<String>) -> AppResult<bool> {
        self.run(move || match stored {
            Some(stored) => verify(&password, &stored),
            None => {
                let _ = verify(&password, &DUMMY_HASH);
                false
            }
        })
        .await
    }
}

/// Nice 10 for the calling thread (Linux keeps the nice value per thread). Best effort: if the
/// system refuses, hashing runs at normal priority, still off the executor.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // setpriority on our own thread id
fn lower_this_threads_priority() {
    // SAFETY: gettid has no preconditions; setpriority with a valid id only changes the
    // scheduling priority of this thread.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// Elsewhere the nice value is per process: hashing keeps the normal priority.
#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_runs_off_the_executor_on_low_priority_threads() {
        let hasher = Hasher::new(1, 8);
        let (name, nice) = hasher
            .run(|| {
                #[allow(unsafe_code)]
                // SAFETY: getpriority of this thread; no memory involved.
                let nice =
                    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
                (std::thread::current().name().map(str::to_owned), nice)
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("password-hash-0"));
        assert_eq!(nice, 10);
        // A job that panics is an error for its caller, and the thread lives on.
        assert!(hasher.run(|| panic!("boom")).await.is_err());
        assert!(hasher.hash("pw".into()).await.is_ok());
    }

    #[test]
    fn argon2id_with_owasp_parameters_round_trips() {
        let h = hash("correct horse battery staple");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse battery staple", &h));
        assert!(!verify("correct horse battery stapler", &h));
    }

    /// Known answers: hashes written by the real package (`hashPassword` from
    /// `better-auth/crypto` 1.7.25, run with Node.js in tests/interop).
    #[test]
    fn better_auth_scrypt_hashes_verify() {
        let stored = "92b4033577ed804230fe6fdac1829e73:344abed3d995f963e541c0310a63f90c7e04553610517adae268fd27fd210d1fa4f292c0f504fb837249c94111e8bab29f4760a39e7e2fa8d20751fffcf10b44";
        assert!(verify("password123", stored));
        assert!(!verify("password124", stored));
    }

    #[test]
    fn scrypt_passwords_are_nfkc_normalised() {
        // hashPassword("\u{FB01}ne"): Better Auth normalises to "fine" before hashing.
        let stored = "36b8b6d5849192d1c480e14cb0edd4fd:98c9d1a1787ce6fb83c38fd8fdd4619ac39f78da3ba430aaa0b1475c7657ebf9a32d77eda100d5a874c5c80d0d65cfa840bc397ff074104d0ce471e47e9fdb64";
        assert!(verify("\u{FB01}ne", stored));
        assert!(verify("fine", stored));
        assert!(!verify("fin", stored));
    }

    #[test]
    fn malformed_hashes_never_match() {
        for stored in [
            "",
            "abc",
            "salt:",
            ":00",
            "$argon2id$garbage",
            "zz:zz",
            &format!("s:{}", "0".repeat(127)),
        ] {
            assert!(!verify("x", stored), "{stored}");
        }
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_waiting() {
        let hasher = Hasher::new(1, 1);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        // One job holds the only thread...
        let busy = {
            let hasher = hasher.clone();
            tokio::spawn(async move {
                hasher
                    .run(move || {
                        let _ = started_tx.send(());
                        let _ = wait.recv();
                    })
                    .await
            })
        };
        started.await.unwrap();
        // ...one waits in the queue's only slot...
        let (filler_ran, filler_done) = tokio::sync::oneshot::channel::<()>();
        assert!(
            hasher
                .jobs
                .try_send(Box::new(move || {
                    let _ = filler_ran.send(());
                }))
                .is_ok()
        );
        // ...so the next is refused at once.
        let refused = hasher.run(|| 2).await.unwrap_err();
        assert_eq!(refused.code(), "RATE_LIMITED");
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        filler_done.await.unwrap();
        // Once the queue drains, hashing is accepted again.
        assert_eq!(hasher.run(|| 3).await.unwrap(), 3);
    }
}
