//! The `api` binary's `main` as a child process the tests can kill (SIGKILL: a crash), reporting
//! its address on stdout as `LISTENING <addr>`. Configured by the environment, as `api` is.

#![allow(unsafe_code)] // prctl(PR_SET_PDEATHSIG), as the harness does for its own children

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // Dies with the test that started it, even if that test process is killed.
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and has no memory effects.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    let _telemetry = api::telemetry::init("warn");
    api::app::serve_from_env(|addr| {
        #[allow(clippy::print_stdout)] // the protocol with the test that started it
        {
            println!("LISTENING {addr}");
        }
    })
    .await
}
