//! `kmirror-bench`: the Kafka-side tools of the benchmark harness (`bench/run`):
//! topics, the load generator, the open-loop latency generator and its consumer,
//! the delivery watcher and the correctness gate.

#![forbid(unsafe_code)]

mod clients;
#[cfg(test)]
mod isolation_tests;
mod latency;
mod load;
mod records;
mod topics;
mod verify;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "kmirror-bench",
    about = "Kafka-side tools of the kmirror benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates or deletes topics.
    #[command(subcommand)]
    Topic(topics::TopicCommand),
    /// Fills a topic with a workload's records, as fast as the broker takes them.
    Load(load::LoadArgs),
    /// Sends records on a fixed schedule, stamped with their intended send time.
    OpenLoop(latency::OpenLoopArgs),
    /// Reads the open-loop records of a topic and reports their latency.
    Latency(latency::LatencyArgs),
    /// Prints the records a topic holds, over time, until a target.
    Watch(watch::WatchArgs),
    /// Compares a source topic with its mirror, partition by partition.
    Verify(verify::VerifyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Topic(command) => topics::run(command),
        Command::Load(args) => load::run(args),
        Command::OpenLoop(args) => latency::open_loop(args),
        Command::Latency(args) => latency::latency(args),
        Command::Watch(args) => watch::run(args),
        Command::Verify(args) => match verify::run(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(error) => Err(error),
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
