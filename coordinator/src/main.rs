//! `kmirror-coordinator`: parse flags, build, run until SIGINT/SIGTERM.

use std::process::ExitCode;

use kmirror_coordinator::{Config, Coordinator, CoordinatorArgs, CoordinatorConfig};
use tracing::error;

fn main() -> ExitCode {
    let (_, config): (CoordinatorArgs, CoordinatorConfig) =
        kmirror_common::config_file::parse_service_args();
    config.member.run("kmirror-coordinator", run(&config))
}

async fn run(config: &CoordinatorConfig) -> ExitCode {
    let shutdown = kmirror_common::shutdown::on_signal();
    let result = async {
        let config = Config::from_config(config)?;
        Coordinator::build(config).await?.run(shutdown).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!(%error, "coordinator failed");
            ExitCode::FAILURE
        }
    }
}
