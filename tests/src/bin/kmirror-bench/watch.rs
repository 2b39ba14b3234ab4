//! `watch`: follows how many records a destination holds. Every interval it prints
//! `MONOTONIC_NS TOTAL` on a line, until the destination is complete: the total
//! reaches `--target`, or, with `--source`, every partition holds at least as many
//! records as the same partition of the source (a total alone can be reached by
//! duplicates in one partition while another still lags).
//!
//! Read_uncommitted (the default), the total is the sum of the end offsets of all
//! partitions, asked of the broker in one request each interval. Read_committed, it
//! is the count of committed records, read (see [`CommittedRecords`] for why).
//!
//! The source's partitions are measured by their end offsets either way, so the
//! source must hold no transactions (as `load` writes it): a source marker would
//! count as a record the destination can never match, and the watch would time out
//! rather than end early.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::clients::{partition_count, plain_consumer, IsolationLevel};
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
    /// How the destination's records are counted: read_committed counts only what
    /// a read_committed consumer receives (records of committed transactions and
    /// those outside any), by reading every record, for mirrors that write the
    /// destination in transactions.
    #[arg(long, value_enum, default_value_t)]
    pub isolation_level: IsolationLevel,
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

/// The committed records of every partition, counted by reading them.
///
/// Read_committed, a partition's end offset is no record count: every transaction
/// leaves a commit or abort marker at an offset of its own, and an aborted
/// transaction's records keep theirs, so the end offsets run ahead of the committed
/// records and would call the destination complete while records are missing. The
/// last stable offset does not help: it says where the committed data ends, not how
/// many records lie below it, and the broker keeps no such count. So the watch reads
/// the destination read_committed from the start and counts what the consumer hands
/// over, as it goes. That is the cheapest exact count: it reads each record once,
/// while the mirror works, and does nothing with it but count, so the watch keeps up
/// and sees completion within an interval. Counting only once the offsets say
/// complete would read the whole destination after the mirror finished and add that
/// read to its catch-up time. Unlike the read_uncommitted watch (one offset request
/// per interval), the reading takes CPU from the box the mirror runs on; the
/// exactly-once figures carry that, the at-least-once figures do not.
struct CommittedRecords {
    consumer: BaseConsumer,
    /// Per topic, per partition.
    counts: Vec<(String, Vec<PartitionCount>)>,
}

#[derive(Debug, Clone, Copy, Default)]
struct PartitionCount {
    records: i64,
    /// The offset after the last record counted: a record the consumer hands over
    /// again (after a reset of its position) is not counted twice.
    next_offset: i64,
}

impl CommittedRecords {
    fn start(bootstrap: &str, topics: &[String]) -> Result<Self> {
        let consumer = plain_consumer(
            bootstrap,
            IsolationLevel::ReadCommitted,
            &[
                ("fetch.max.bytes", "52428800"),
                ("max.partition.fetch.bytes", "10485760"),
                ("queued.max.messages.kbytes", "131072"),
            ],
        )?;
        let mut assignment = TopicPartitionList::new();
        let mut counts = Vec::new();
        for topic in topics {
            let partitions = partition_count(&consumer, topic, Duration::from_secs(60))?;
            for partition in 0..partitions {
                assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
            }
            let partitions = usize::try_from(partitions)?;
            counts.push((topic.clone(), vec![PartitionCount::default(); partitions]));
        }
        consumer.assign(&assignment)?;
        Ok(Self { consumer, counts })
    }

    /// Counts what arrives until `until`, then returns the counts so far.
    fn count_until(&mut self, until: Instant) -> Result<Ends> {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let Some(result) = self.consumer.poll(left) else {
                continue;
            };
            let message = result.context("cannot read the destination read_committed")?;
            let Some((_, partitions)) = self
                .counts
                .iter_mut()
                .find(|(topic, _)| topic == message.topic())
            else {
                continue;
            };
            let Some(count) = usize::try_from(message.partition())
                .ok()
                .and_then(|partition| partitions.get_mut(partition))
            else {
                continue;
            };
            if message.offset() >= count.next_offset {
                count.records += 1;
                count.next_offset = message.offset() + 1;
            }
        }
        Ok(self
            .counts
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions.iter().enumerate().map(|(partition, count)| {
                    let partition = i32::try_from(partition).expect("partition ids fit i32");
                    ((topic.clone(), partition), count.records)
                })
            })
            .collect())
    }
}

/// How the watch counts the destination's records.
enum Counter {
    EndOffsets {
        consumer: BaseConsumer,
        list: TopicPartitionList,
    },
    CommittedRecords(CommittedRecords),
}

impl Counter {
    /// The records of every partition. End offsets are asked at once; committed
    /// records are counted until `next_tick`.
    fn records(&mut self, next_tick: Instant) -> Result<Ends> {
        match self {
            Self::EndOffsets { consumer, list } => end_offsets(consumer, list),
            Self::CommittedRecords(committed) => committed.count_until(next_tick),
        }
    }
}

pub fn run(args: WatchArgs) -> Result<()> {
    let mut counter = match args.isolation_level {
        IsolationLevel::ReadUncommitted => {
            let consumer = plain_consumer(&args.bootstrap, IsolationLevel::ReadUncommitted, &[])?;
            let list = partition_list(&consumer, &args.topics)?;
            Counter::EndOffsets { consumer, list }
        }
        IsolationLevel::ReadCommitted => {
            Counter::CommittedRecords(CommittedRecords::start(&args.bootstrap, &args.topics)?)
        }
    };
    let source_ends = match &args.source {
        Some(source) => {
            let source_consumer = plain_consumer(source, args.isolation_level, &[])?;
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
        let ends = counter
            .records(asked + interval)
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
