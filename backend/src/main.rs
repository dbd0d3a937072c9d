//! The `vhost-user-ccw` daemon.

use std::process::ExitCode;

use clap::Parser;
use vhost_user_ccw::args::{Args, Command};
use vhost_user_ccw::config::Config;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    if let Some(Command::Image { cmd }) = args.command {
        return match vhost_user_ccw::image_tool::run(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vhost-user-ccw image: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.print_capabilities {
        println!("{}", vhost_user_ccw::capabilities_json());
        return ExitCode::SUCCESS;
    }
    let result = Config::from_args(&args, |key| std::env::var(key).ok())
        .map_err(vhost_user_ccw::Error::from)
        .and_then(|config| vhost_user_ccw::run(&config));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("vhost-user-ccw: {e}");
            ExitCode::FAILURE
        }
    }
}
