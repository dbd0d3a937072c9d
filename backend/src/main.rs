//! The `vhost-user-ccw` daemon.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use vhost_user_ccw::args::{Args, Command};
use vhost_user_ccw::config::Config;

fn fail(e: impl std::fmt::Display) -> ExitCode {
    log::error!("{e}");
    eprintln!("vhost-user-ccw: {e}");
    ExitCode::FAILURE
}

/// Parse the command line, with the `--config` file's settings before it.
fn parse_args() -> Result<Args, ExitCode> {
    let argv: Vec<String> = std::env::args().collect();
    let args = Args::try_parse_from(&argv).unwrap_or_else(|e| e.exit());
    let Some(file) = args.config.clone() else {
        return Ok(args);
    };
    let argv = vhost_user_ccw::instance::expand(argv, Some(&file)).map_err(|e| {
        eprintln!("vhost-user-ccw: {e}");
        ExitCode::FAILURE
    })?;
    Ok(Args::try_parse_from(argv).unwrap_or_else(|e| e.exit()))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(&args.log_level))
        .init();
    match args.command {
        Some(Command::Image { cmd }) => {
            return match vhost_user_ccw::image_tool::run(cmd) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vhost-user-ccw image: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Man) => {
            let man = clap_mangen::Man::new(Args::command());
            return match man.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            };
        }
        None => {}
    }
    if args.print_capabilities {
        println!("{}", vhost_user_ccw::capabilities_json());
        return ExitCode::SUCCESS;
    }
    match Config::from_args(&args, |key| std::env::var(key).ok())
        .map_err(vhost_user_ccw::Error::from)
        .and_then(|config| vhost_user_ccw::run(&config))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
