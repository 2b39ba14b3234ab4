//! `watch`: follows how many records a destination holds. Every interval it asks
//! the broker for the end offsets of all partitions in one request and prints
//! `MONOTONIC_NS TOTAL` on a line, until the total reaches the target.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use crate::clients::{partition_count, plain_consumer};
use crate::records::monotonic_ns;

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[arg(long)]
    pub bootstrap: String,
    /// Topics whose end offsets are added up (repeatable).
    #[arg(long = "topic", required = true)]
    pub topics: Vec<String>,
    /// Stop once the destination holds this many records.
    #[arg(long)]
    pub target: i64,
    #[arg(long, default_value_t = 50)]
    pub interval_ms: u64,
    #[arg(long, default_value_t = 600.0)]
    pub timeout_s: f64,
}

pub fn run(args: WatchArgs) -> Result<()> {
    let consumer = plain_consumer(&args.bootstrap, &[])?;
    let mut list = TopicPartitionList::new();
    for topic in &args.topics {
        let partitions = partition_count(&consumer, topic, Duration::from_secs(60))?;
        for partition in 0..partitions {
            // For a time query, -1 (`Offset::End`) asks for the latest offset.
            list.add_partition_offset(topic, partition, Offset::End)?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout_s);
    let interval = Duration::from_millis(args.interval_ms);
    let mut stdout = std::io::stdout().lock();
    loop {
        let asked = Instant::now();
        let ends = consumer
            .offsets_for_times(list.clone(), Duration::from_secs(10))
            .with_context(|| format!("cannot read the end offsets of {:?}", args.topics))?;
        let total: i64 = ends
            .elements()
            .iter()
            .map(|element| match element.offset() {
                Offset::Offset(offset) => offset,
                _ => 0,
            })
            .sum();
        writeln!(stdout, "{} {total}", monotonic_ns())?;
        stdout.flush()?;
        if total >= args.target {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the destination holds {total} of {} records after {}s",
                args.target,
                args.timeout_s
            );
        }
        std::thread::sleep(interval.saturating_sub(asked.elapsed()));
    }
}
