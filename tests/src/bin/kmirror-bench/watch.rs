//! `watch`: follows how many records a destination holds. Every interval it asks
//! the broker for the end offsets of all partitions in one request and prints
//! `MONOTONIC_NS TOTAL` on a line, until the destination is complete: the total
//! reaches `--target`, or, with `--source`, every partition holds at least as many
//! records as the same partition of the source (a total alone can be reached by
//! duplicates in one partition while another still lags).

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
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
    #[arg(long, required_unless_present = "source")]
    pub target: Option<i64>,
    /// Stop once every partition holds what this cluster's same partition held
    /// when the watch began.
    #[arg(long)]
    pub source: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub interval_ms: u64,
    #[arg(long, default_value_t = 600.0)]
    pub timeout_s: f64,
}

type Ends = HashMap<(String, i32), i64>;

/// End offsets of every partition in `list`, in one request per broker.
fn end_offsets(consumer: &BaseConsumer, list: &TopicPartitionList) -> Result<Ends> {
    // For a time query, -1 (`Offset::End`) asks for the latest offset.
    let ends = consumer
        .offsets_for_times(list.clone(), Duration::from_secs(10))
        .context("cannot read end offsets")?;
    Ok(ends
        .elements()
        .iter()
        .map(|element| {
            let end = match element.offset() {
                Offset::Offset(offset) => offset,
                _ => 0,
            };
            ((element.topic().to_string(), element.partition()), end)
        })
        .collect())
}

fn partition_list(consumer: &BaseConsumer, topics: &[String]) -> Result<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    for topic in topics {
        let partitions = partition_count(consumer, topic, Duration::from_secs(60))?;
        for partition in 0..partitions {
            list.add_partition_offset(topic, partition, Offset::End)?;
        }
    }
    Ok(list)
}

pub fn run(args: WatchArgs) -> Result<()> {
    let consumer = plain_consumer(&args.bootstrap, &[])?;
    let list = partition_list(&consumer, &args.topics)?;
    let source_ends = match &args.source {
        Some(source) => {
            let source_consumer = plain_consumer(source, &[])?;
            let source_list = partition_list(&source_consumer, &args.topics)?;
            Some(end_offsets(&source_consumer, &source_list)?)
        }
        None => None,
    };
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout_s);
    let interval = Duration::from_millis(args.interval_ms);
    let mut stdout = std::io::stdout().lock();
    loop {
        let asked = Instant::now();
        let ends = end_offsets(&consumer, &list)
            .with_context(|| format!("watching {:?} at {}", args.topics, args.bootstrap))?;
        let total: i64 = ends.values().sum();
        writeln!(stdout, "{} {total}", monotonic_ns())?;
        stdout.flush()?;
        let complete = match &source_ends {
            Some(source_ends) => source_ends
                .iter()
                .all(|(partition, end)| ends.get(partition).copied().unwrap_or(0) >= *end),
            None => true,
        } && args.target.is_none_or(|target| total >= target);
        if complete {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the destination holds {total} records after {}s and is not complete (target {:?}, per source partition: {})",
                args.timeout_s,
                args.target,
                source_ends.is_some()
            );
        }
        std::thread::sleep(interval.saturating_sub(asked.elapsed()));
    }
}
