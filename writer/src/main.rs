use std::process::ExitCode;

use clap::Parser;
use kmirror_writer::{Writer, WriterArgs, WriterConfig};

/// mimalloc, built to replace `malloc` for librdkafka too: the producer allocates
/// every record on the session's thread and frees it on the delivery thread, a
/// pattern that costs glibc's allocator a lock and a cache miss per record (the
/// writer spent about a fifth of its CPU there on 100-byte records).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// kmirror writer: produces the batches fetchers send it into the destination
/// cluster (idempotent, acks=all) and acknowledges each once Kafka has it.
#[derive(Debug, Parser)]
#[command(
    name = "kmirror-writer",
    version,
    after_help = "Example:\n  kmirror-writer --etcd http://10.0.0.5:2379 --fleet prod --listen 0.0.0.0:7081 --advertise http://writer-1.internal:7081 --producer-property linger.ms=10"
)]
struct Cli {
    /// YAML config file whose settings are these flags by name (`kind: Writer`).
    /// Precedence: flags, then KMIRROR_* environment variables, then the file,
    /// then the defaults.
    #[arg(long = "config", env = "KMIRROR_CONFIG", value_name = "FILE")]
    config_file: Option<std::path::PathBuf>,

    #[command(flatten)]
    flags: WriterArgs,
}

fn main() -> ExitCode {
    let (cli, config): (Cli, WriterConfig) = kmirror_common::config_file::parse_service_args();
    // A secret on the command line is readable by every user of the machine.
    if let Some((key, _)) = cli
        .flags
        .producer_properties
        .iter()
        .find(|(key, _)| kmirror_common::kafka::is_secret_property(key))
    {
        eprintln!(
            "error: {}",
            kmirror_common::secrets::command_line_refusal("--producer-property", key)
        );
        return ExitCode::from(2);
    }
    let member = config.member.clone();
    member.run("kmirror-writer", serve(config))
}

async fn serve(config: WriterConfig) -> ExitCode {
    let shutdown = kmirror_common::shutdown::on_signal();
    let writer = match Writer::build(config).await {
        Ok(writer) => writer,
        Err(error) => {
            tracing::error!(error = %error, "writer failed to start");
            return ExitCode::FAILURE;
        }
    };
    match writer.run(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "writer stopped on an error");
            ExitCode::FAILURE
        }
    }
}
