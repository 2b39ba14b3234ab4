use std::process::ExitCode;

use clap::Parser;
use kmirror_fetcher::{Fetcher, FetcherArgs, FetcherConfig};

/// kmirror fetcher: reads the source partitions the coordinator assigns it and
/// streams them to writers, checkpointing acknowledged progress in etcd.
#[derive(Debug, Parser)]
#[command(
    name = "kmirror-fetcher",
    version,
    after_help = "Example:\n  kmirror-fetcher --etcd http://10.0.0.5:2379 --fleet prod --id fetcher-a --listen 0.0.0.0:7091 --advertise http://fetcher-a.internal:7091"
)]
struct Cli {
    /// YAML config file whose settings are these flags by name (`kind: Fetcher`).
    /// Precedence: flags, then KMIRROR_* environment variables, then the file,
    /// then the defaults.
    #[arg(long = "config", env = "KMIRROR_CONFIG", value_name = "FILE")]
    config_file: Option<std::path::PathBuf>,

    #[command(flatten)]
    _flags: FetcherArgs,
}

fn main() -> ExitCode {
    let (_, config): (Cli, FetcherConfig) = kmirror_common::config_file::parse_service_args();
    let member = config.member.clone();
    member.run("kmirror-fetcher", serve(config))
}

async fn serve(config: FetcherConfig) -> ExitCode {
    let shutdown = kmirror_common::shutdown::on_signal();
    let fetcher = match Fetcher::build(config).await {
        Ok(fetcher) => fetcher,
        Err(error) => {
            tracing::error!(error = %error, "fetcher failed to start");
            return ExitCode::FAILURE;
        }
    };
    match fetcher.run(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "fetcher stopped on an error");
            ExitCode::FAILURE
        }
    }
}
