//! `vhost-user-ccw-frontend`: run a channel-program script against a
//! vhost-user-ccw backend and print the JSON report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use vhost_user_ccw_frontend::connection::{ConnectOptions, Connection};
use vhost_user_ccw_frontend::runner;
use vhost_user_ccw_frontend::script::Script;

/// Connect to a vhost-user-ccw backend the way QEMU's device does and run a
/// channel-program script through it (docs/program-format.md).
#[derive(Debug, Parser)]
#[command(name = "vhost-user-ccw-frontend", version, about, long_about = None)]
struct Args {
    /// The backend's UNIX socket.
    #[arg(long, value_name = "PATH")]
    socket_path: PathBuf,

    /// How long to wait for any single answer of the backend, in
    /// milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    timeout_ms: u64,

    /// The script to run.
    script: PathBuf,
}

/// Exit status when an expectation of the script failed.
const EXIT_EXPECTATION_FAILED: u8 = 1;
/// Exit status for unusable input or an unreachable backend.
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let fail = |message: String| {
        eprintln!("vhost-user-ccw-frontend: {message}");
        ExitCode::from(EXIT_ERROR)
    };
    let text = match std::fs::read_to_string(&args.script) {
        Ok(text) => text,
        Err(e) => return fail(format!("{}: {e}", args.script.display())),
    };
    let script = match Script::parse(&text) {
        Ok(script) => script,
        Err(e) => return fail(format!("{}: {e}", args.script.display())),
    };
    let options = ConnectOptions {
        ram_size: script.memory_size,
        timeout: Duration::from_millis(args.timeout_ms),
    };
    let mut connection = match Connection::connect(&args.socket_path, &options) {
        Ok(connection) => connection,
        Err(e) => return fail(format!("{}: {e}", args.socket_path.display())),
    };
    match runner::run(&script, &mut connection) {
        Ok(report) => {
            println!("{}", report.to_json_string());
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_EXPECTATION_FAILED)
            }
        }
        Err(e) => fail(e.to_string()),
    }
}
