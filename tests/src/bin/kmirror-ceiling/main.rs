//! `kmirror-ceiling`: the benchmark's ceiling. One process, one loop: consume
//! every partition of a source topic and produce each record, with its key,
//! headers and timestamp, to the same partition of the destination topic. The
//! librdkafka settings are kmirror's own (the fetcher's consumer defaults and the
//! writer's producer defaults), and so is the way librdkafka is driven: records
//! taken from the consumer a thousand at a time through the fetcher's batch queue,
//! delivery reports served on a thread of their own, a full producer queue waited
//! out 1 ms at a time.
//! There is no gRPC hop, no checkpoint, no coordination. It is the most any
//! client-side mirror can move on this machine.
//!
//! It runs until it is killed; the harness watches the destination.

#![forbid(unsafe_code)]

mod settings;

use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use kmirror_fetcher::batch_poll::BatchConsumer;
use kmirror_fetcher::consumer::{CONSUMER_DEFAULTS, MAX_POLL_BATCH};
use kmirror_writer::producer::{LARGE_BATCH_BYTES, PRODUCER_DEFAULTS, PRODUCER_REQUIRED};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::settings::FailFast;

/// The writer's allocator (see `kmirror-writer`), so that the ceiling's producer
/// pays what kmirror's does per record.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "kmirror-ceiling",
    about = "Single-process consume-then-produce loop"
)]
struct Args {
    #[arg(long)]
    source: String,
    #[arg(long)]
    dest: String,
    /// Source topics (repeatable); each is written to the destination topic of
    /// the same name.
    #[arg(long = "topic", required = true)]
    topics: Vec<String>,
    /// librdkafka producer overrides, `key=value` (repeatable), as the writer's
    /// `--producer-property`.
    #[arg(long = "producer-property", value_parser = parse_key_value)]
    producer_properties: Vec<(String, String)>,
    /// librdkafka consumer overrides, `key=value` (repeatable), for trying settings.
    #[arg(long = "consumer-property", value_parser = parse_key_value)]
    consumer_properties: Vec<(String, String)>,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got '{text}'"))?;
    Ok((key.to_string(), value.to_string()))
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let mut consumer_config = ClientConfig::new();
    consumer_config.set("bootstrap.servers", &args.source);
    for (key, value) in CONSUMER_DEFAULTS {
        consumer_config.set(*key, *value);
    }
    consumer_config.set("group.id", "kmirror-ceiling");
    for (key, value) in &args.consumer_properties {
        consumer_config.set(key, value);
    }
    let consumer = BatchConsumer::new(consumer_config.create::<BaseConsumer>()?);
    let mut producer_config = ClientConfig::new();
    producer_config.set("bootstrap.servers", &args.dest);
    for (key, value) in PRODUCER_DEFAULTS {
        producer_config.set(*key, *value);
    }
    // What a writer picks for a destination topic with Kafka's default limit.
    producer_config.set("batch.size", LARGE_BATCH_BYTES.to_string());
    for (key, value) in &args.producer_properties {
        producer_config.set(key, value);
    }
    for (key, value) in PRODUCER_REQUIRED {
        producer_config.set(*key, *value);
    }
    let producer: ThreadedProducer<FailFast> =
        producer_config.create_with_context(Default::default())?;

    let mut list = TopicPartitionList::new();
    for topic in &args.topics {
        let metadata = consumer
            .consumer()
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .with_context(|| format!("cannot read the metadata of {topic}"))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|entry| entry.name() == topic)
            .map(|entry| entry.partitions().len())
            .unwrap_or(0);
        if partitions == 0 {
            bail!("topic {topic} has no partitions at {}", args.source);
        }
        for partition in 0..i32::try_from(partitions)? {
            // As the fetcher does: routed to the batch queue before assigned.
            if !consumer.route(topic, partition) {
                bail!("cannot route {topic}/{partition} to the batch queue");
            }
            list.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
    }
    consumer.consumer().assign(&list)?;

    let mut since_check = 0u32;
    loop {
        // Statistics and errors; records all come through the batch queue.
        while let Some(result) = consumer.consumer().poll(Duration::ZERO) {
            match result {
                Ok(message) => bail!(
                    "a record of {}/{} bypassed the batch queue",
                    message.topic(),
                    message.partition()
                ),
                Err(KafkaError::PartitionEOF(_)) => {}
                Err(error) => eprintln!("warning: source consumer error: {error}"),
            }
        }
        let batch = consumer.poll_batch(Duration::from_millis(100), MAX_POLL_BATCH);
        if batch.is_empty() {
            producer.context().check()?;
            continue;
        }
        for message in batch.iter() {
            match message.error() {
                None => {}
                Some(RDKafkaErrorCode::PartitionEOF) => continue,
                Some(error) => {
                    eprintln!("warning: source consumer error: {error:?}");
                    continue;
                }
            }
            let topic = message.topic();
            let mut record = BaseRecord::to(topic).partition(message.partition());
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            // As the writer does: librdkafka's header list built header by header.
            let mut headers_opt: Option<OwnedHeaders> = None;
            for (key, value) in message.headers() {
                let key = std::str::from_utf8(key)
                    .with_context(|| format!("a header key of {topic} is not UTF-8"))?;
                headers_opt = Some(
                    headers_opt
                        .unwrap_or_default()
                        .insert(Header { key, value }),
                );
            }
            if let Some(headers) = headers_opt {
                record = record.headers(headers);
            }
            if let Some(timestamp) = message.timestamp_ms() {
                record = record.timestamp(timestamp);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    // As the writer does: the delivery thread makes room meanwhile.
                    // (Not `poll(1 ms)`, which rust-rdkafka ends by polling without
                    // blocking until the millisecond is over: a spinning core.)
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        record = returned;
                        thread::sleep(Duration::from_millis(1));
                    }
                    Err((error, _)) => {
                        return Err(error).with_context(|| format!("cannot produce to {topic}"))
                    }
                }
            }
            since_check += 1;
            if since_check >= 1024 {
                since_check = 0;
                producer.context().check()?;
            }
        }
    }
}
