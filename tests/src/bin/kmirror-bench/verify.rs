//! `verify`: the correctness gate. Reads a topic from the source and its mirror
//! from the destination and compares, per partition, the record count and a hash
//! over every record's key, value, headers and timestamp in offset order.
//!
//! Each side is read from its start to the end it had when the read began. Read
//! read_uncommitted, that end is the high watermark and the last record sits at
//! the offset before it. Read read_committed, the end is the last stable offset, and
//! the offset before it is usually a transaction marker, which a consumer never
//! receives: a partition is done once the consumer reports having reached the end
//! of the partition (`enable.partition.eof`) at a position at or past that end (its
//! position moves past markers and aborted records as it skips them), or once it
//! delivers a record at or past the end.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hasher};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message, Timestamp};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::clients::{partition_count, plain_consumer, IsolationLevel};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[arg(long)]
    pub source: String,
    #[arg(long)]
    pub dest: String,
    #[arg(long)]
    pub topic: String,
    /// The destination topic, when its name differs.
    #[arg(long)]
    pub dest_topic: Option<String>,
    #[arg(long, default_value_t = 600.0)]
    pub timeout_s: f64,
    /// How both topics are read: read_committed compares what a read_committed
    /// consumer sees (the records of committed transactions and those outside any),
    /// for mirrors that write the destination in transactions.
    #[arg(long, value_enum, default_value_t)]
    pub isolation_level: IsolationLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartitionDigest {
    count: u64,
    hash: u64,
}

/// Hashes one record. Lengths and presence go in first, so that no two different
/// records feed the hasher the same bytes.
fn hash_record(hasher: &mut DefaultHasher, message: &BorrowedMessage<'_>) {
    let mut field = |bytes: Option<&[u8]>| match bytes {
        Some(bytes) => {
            hasher.write_u8(1);
            hasher.write_usize(bytes.len());
            hasher.write(bytes);
        }
        None => hasher.write_u8(0),
    };
    field(message.key());
    field(message.payload());
    match message.headers() {
        Some(headers) => {
            hasher.write_usize(headers.count());
            for header in headers.iter() {
                hasher.write_usize(header.key.len());
                hasher.write(header.key.as_bytes());
                match header.value {
                    Some(value) => {
                        hasher.write_u8(1);
                        hasher.write_usize(value.len());
                        hasher.write(value);
                    }
                    None => hasher.write_u8(0),
                }
            }
        }
        None => hasher.write_usize(0),
    }
    match message.timestamp() {
        Timestamp::CreateTime(ms) => {
            hasher.write_u8(1);
            hasher.write_i64(ms);
        }
        Timestamp::LogAppendTime(ms) => {
            hasher.write_u8(2);
            hasher.write_i64(ms);
        }
        Timestamp::NotAvailable => hasher.write_u8(0),
    }
}

/// Reads every partition of `topic` from its start to the end offset it had when
/// the read began (see the module documentation for where a partition ends).
fn digest_topic(
    bootstrap: &str,
    topic: &str,
    isolation: IsolationLevel,
    timeout: Duration,
) -> Result<BTreeMap<i32, PartitionDigest>> {
    let reads_committed = isolation == IsolationLevel::ReadCommitted;
    let consumer = plain_consumer(
        bootstrap,
        isolation,
        &[
            ("fetch.max.bytes", "52428800"),
            ("max.partition.fetch.bytes", "10485760"),
            ("queued.max.messages.kbytes", "131072"),
            (
                "enable.partition.eof",
                if reads_committed { "true" } else { "false" },
            ),
        ],
    )?;
    let partitions = partition_count(&consumer, topic, Duration::from_secs(60))?;
    let mut ends = BTreeMap::new();
    let mut list = TopicPartitionList::new();
    let mut digests = BTreeMap::new();
    let mut hashers = BTreeMap::new();
    for partition in 0..partitions {
        // Read_committed, `high` is the last stable offset: the consumer's
        // isolation level goes into the offset request.
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .with_context(|| {
                format!("cannot read the offsets of {topic}/{partition} at {bootstrap}")
            })?;
        digests.insert(partition, PartitionDigest { count: 0, hash: 0 });
        hashers.insert(partition, DefaultHasher::new());
        if high > low {
            ends.insert(partition, high);
            list.add_partition_offset(topic, partition, Offset::Offset(low))?;
        }
    }
    consumer.assign(&list)?;
    let deadline = Instant::now() + timeout;
    while !ends.is_empty() {
        if Instant::now() >= deadline {
            bail!("reading {topic} at {bootstrap} did not finish in {timeout:?}; partitions left: {ends:?}");
        }
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = match result {
            Ok(message) => message,
            // Only read_committed asks for these events.
            Err(KafkaError::PartitionEOF(partition)) => {
                if let Some(&end) = ends.get(&partition) {
                    if position(&consumer, topic, partition)?.is_some_and(|at| at >= end) {
                        ends.remove(&partition);
                    }
                }
                continue;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {topic} at {bootstrap}"))
            }
        };
        let partition = message.partition();
        let Some(&end) = ends.get(&partition) else {
            continue;
        };
        if message.offset() >= end {
            // Read_committed, the marker before the end was skipped: every record
            // below the end has been read.
            if reads_committed {
                ends.remove(&partition);
            }
            continue;
        }
        hash_record(
            hashers.get_mut(&partition).expect("every partition"),
            &message,
        );
        digests.get_mut(&partition).expect("every partition").count += 1;
        if message.offset() + 1 >= end {
            ends.remove(&partition);
        }
    }
    for (partition, hasher) in hashers {
        digests.get_mut(&partition).expect("every partition").hash = hasher.finish();
    }
    Ok(digests)
}

/// The consumer's position in a partition, if it has one: the offset after the last
/// record it delivered or the last marker it skipped.
fn position(consumer: &BaseConsumer, topic: &str, partition: i32) -> Result<Option<i64>> {
    let positions = consumer
        .position()
        .with_context(|| format!("cannot read the position in {topic}/{partition}"))?;
    let element = positions.find_partition(topic, partition);
    Ok(match element.map(|element| element.offset()) {
        Some(Offset::Offset(offset)) => Some(offset),
        _ => None,
    })
}

pub fn run(args: VerifyArgs) -> Result<bool> {
    let timeout = Duration::from_secs_f64(args.timeout_s);
    let dest_topic = args
        .dest_topic
        .clone()
        .unwrap_or_else(|| args.topic.clone());
    let (source, dest) = std::thread::scope(|scope| {
        let source =
            scope.spawn(|| digest_topic(&args.source, &args.topic, args.isolation_level, timeout));
        let dest =
            scope.spawn(|| digest_topic(&args.dest, &dest_topic, args.isolation_level, timeout));
        (
            source.join().expect("the source reader does not panic"),
            dest.join().expect("the destination reader does not panic"),
        )
    });
    let (source, dest) = (source?, dest?);
    let mut mismatches = Vec::new();
    for partition in source
        .keys()
        .chain(dest.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let in_source = source.get(partition);
        let in_dest = dest.get(partition);
        if in_source != in_dest {
            mismatches.push(json!({
                "partition": partition,
                "source_count": in_source.map(|digest| digest.count),
                "dest_count": in_dest.map(|digest| digest.count),
                "same_hash": in_source.map(|digest| digest.hash) == in_dest.map(|digest| digest.hash),
            }));
        }
    }
    let ok = mismatches.is_empty();
    println!(
        "{}",
        json!({
            "ok": ok,
            "topic": args.topic,
            "partitions": source.len(),
            "source_records": source.values().map(|digest| digest.count).sum::<u64>(),
            "dest_records": dest.values().map(|digest| digest.count).sum::<u64>(),
            "mismatches": mismatches,
        })
    );
    Ok(ok)
}
