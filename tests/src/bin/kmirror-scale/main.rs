//! `kmirror-scale`: the scale run. A fleet of real processes (coordinators,
//! fetchers, writers) on the local stack mirrors thousands of partitions under a
//! steady load; the run measures etcd's load in steady state, the leader's round
//! time, each member's memory, the time until the partitions of killed members
//! run again, and checks that nothing was lost. It prints a markdown page of the
//! figures and writes it under `bench/results/`.
//!
//! It runs on the servers of the local stack (`KMIRROR_E2E_SKIP_STACK_UP=1`: the
//! ones already running) and the binaries of `cargo build --workspace --bins`;
//! `bench/scale` does both. docs/multi-host.md (scenario 7) has the figures.

#![forbid(unsafe_code)]

mod etcd_load;
mod load;
mod memory;
mod positions;
mod report;
mod scenario;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// The scale run's settings (defaults: the 50-member run).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kmirror-scale",
    about = "Scale run of a kmirror fleet on the local stack"
)]
pub struct Args {
    #[arg(long, default_value_t = 2)]
    pub coordinators: usize,
    #[arg(long, default_value_t = 25)]
    pub fetchers: usize,
    #[arg(long, default_value_t = 25)]
    pub writers: usize,
    /// Source topics to mirror.
    #[arg(long, default_value_t = 20)]
    pub topics: usize,
    #[arg(long, default_value_t = 100)]
    pub partitions_per_topic: i32,
    /// Records per second over all partitions, spread evenly.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Records the load sends to a partition at a time (each partition gets them
    /// every `burst * partitions / rate` seconds): librdkafka sends one produce
    /// request per partition, so a burst of 4 takes the source a quarter of the
    /// requests.
    #[arg(long, default_value_t = 4)]
    pub load_burst: u64,
    /// Producers of the load (default: one per 250 partitions). librdkafka sends
    /// one produce request per partition, at most five in flight per producer:
    /// too few producers deliver some partitions' records late.
    #[arg(long)]
    pub load_producers: Option<usize>,
    /// Records per partition in the source before the flow starts: a backlog the
    /// fleet catches up on at full speed (buffers full), before the steady load.
    #[arg(long, default_value_t = 0)]
    pub backlog: u64,
    /// The steady window over which etcd's load, round times and memory are measured.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// etcd's load without the fleet is measured over this long, before the fleet
    /// starts and after it stopped (other clients of the etcd).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub background: Duration,
    /// Assignments unchanged this long count as settled (the steady state).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Fetchers, then writers, killed with SIGKILL after the window (0 and 0: no kill).
    #[arg(long, default_value_t = 3)]
    pub kill_fetchers: usize,
    #[arg(long, default_value_t = 2)]
    pub kill_writers: usize,
    #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Duration,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub refresh_interval: Duration,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub retry_backoff: Duration,
    /// Librdkafka property of the source cluster (its consumers), KEY=VALUE (repeatable).
    #[arg(long = "source-property", value_parser = parse_key_value)]
    pub source_properties: Vec<(String, String)>,
    /// Librdkafka property of the writers' producers, KEY=VALUE (repeatable).
    #[arg(long = "producer-property", value_parser = parse_key_value)]
    pub producer_properties: Vec<(String, String)>,
    /// Environment variable of every fetcher, NAME=VALUE (`KMIRROR_MAX_IN_FLIGHT_MIB=8`).
    #[arg(long = "fetcher-env", value_parser = parse_key_value)]
    pub fetcher_env: Vec<(String, String)>,
    /// Environment variable of every writer, NAME=VALUE.
    #[arg(long = "writer-env", value_parser = parse_key_value)]
    pub writer_env: Vec<(String, String)>,
    /// Environment variable of every member, NAME=VALUE.
    #[arg(long = "env", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Run every member with `--insecure` (default: mutual TLS, as deployed).
    #[arg(long)]
    pub insecure: bool,
    /// Where to write the markdown page (default:
    /// `bench/results/scale-<fetchers>f<writers>w-<partitions>p.md`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep the topics when a check failed (records missing), for inspection.
    #[arg(long)]
    pub keep_failed: bool,
    /// A line under the title saying what this run is for.
    #[arg(long, default_value = "")]
    pub note: String,
}

impl Args {
    pub fn partitions(&self) -> usize {
        self.topics * usize::try_from(self.partitions_per_topic).unwrap_or_default()
    }
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got '{text}'"))?;
    if key.is_empty() {
        return Err(format!("expected KEY=VALUE, got '{text}'"));
    }
    Ok((key.to_string(), value.to_string()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start a runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(scenario::run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
