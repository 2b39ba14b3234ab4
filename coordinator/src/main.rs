//! `kmirror-coordinator`: parse flags, build, run until SIGINT/SIGTERM.

use std::process::ExitCode;

use kmirror_coordinator::{Config, Coordinator, CoordinatorArgs};
use tracing::error;

fn main() -> ExitCode {
    let args: CoordinatorArgs = kmirror_common::config_file::parse_service_args();
    args.member.run("kmirror-coordinator", run(&args))
}

async fn run(args: &CoordinatorArgs) -> ExitCode {
    let shutdown = kmirror_common::shutdown::on_signal();
    let result = async {
        let config = Config::from_args(args)?;
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
