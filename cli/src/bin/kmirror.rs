//! `kmirror`: mirror like Kafka's MirrorMaker, in one process.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use kmirror_cli::mirror::{KmirrorCli, KmirrorCommand, MirrorError};

/// The writer's allocator (see `kmirror-writer`): this process produces too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Usage errors exit with 2 inside `parse`.
    let cli = KmirrorCli::parse();
    // Logs go above the progress bar; a closed stderr is ignored, never a panic.
    let console = kmirror_cli::console::console();
    let telemetry = kmirror_common::telemetry::init_with_log_writer(
        "kmirror",
        console.log_writer(),
        console.is_terminal(),
    );
    let shutdown = kmirror_common::shutdown::on_signal();
    let KmirrorCommand::Mirror(args) = cli.command;
    let outcome = kmirror_cli::mirror::run(args, shutdown).await;
    telemetry.shutdown().await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            console.line(&format!("error: {error}"));
            match error {
                MirrorError::Config(_) => ExitCode::from(2),
                MirrorError::Failed(_) => ExitCode::from(1),
            }
        }
    }
}
