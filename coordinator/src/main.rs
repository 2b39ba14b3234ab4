//! `kmirror-coordinator`: parse flags, build, run until SIGINT/SIGTERM.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use kmirror_coordinator::{Config, Coordinator, CoordinatorArgs};
use tracing::error;

#[tokio::main]
async fn main() -> ExitCode {
    let raw_args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let environment = |name: &str| std::env::var(name).ok();
    let args = match kmirror_common::config_file::merge_config_file(
        &CoordinatorArgs::command(),
        raw_args,
        &environment,
    ) {
        Ok(args) => CoordinatorArgs::parse_from(args),
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let telemetry = kmirror_common::telemetry::init("kmirror-coordinator");
    let shutdown = kmirror_common::shutdown::on_signal();
    let result = async {
        let config = Config::from_args(&args)?;
        Coordinator::build(config).await?.run(shutdown).await
    }
    .await;
    let exit_code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!(%error, "coordinator failed");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown().await;
    exit_code
}
