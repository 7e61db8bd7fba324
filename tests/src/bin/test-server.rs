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
    api::telemetry::init("warn");
    let config = match api::config::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let app = match api::app::Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    #[allow(clippy::print_stdout)] // the protocol with the test that started it
    {
        println!("LISTENING {}", app.local_addr());
    }
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}
