//! `load`: fills a source topic with a workload's records as fast as the broker
//! takes them, before a contender starts.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kmirror_tests::kafka::send_waiting_for_room;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::json;

use crate::clients::CountingContext;
use crate::records::{payload_bytes, wall_ms, RecordFactory, SEQUENCE_HEADER};

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    #[arg(long)]
    pub bootstrap: String,
    #[arg(long)]
    pub topic: String,
    #[arg(long)]
    pub records: u64,
    #[arg(long)]
    pub value_size: usize,
    /// Compression of the loaded batches (none, lz4, zstd, ...).
    #[arg(long, default_value = "none")]
    pub compression: String,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Producer settings for loading: large batches and queue, leader acks (every
/// topic of the local stack has one replica, so nothing is weaker than acks=all).
fn loader(args: &LoadArgs) -> Result<BaseProducer<CountingContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("acks", "1")
        .set("enable.idempotence", "false")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "100000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", &args.compression)
        .set("partitioner", "murmur2_random")
        .create_with_context(CountingContext::default())
        .with_context(|| format!("cannot create a producer for {}", args.bootstrap))
}

pub fn run(args: LoadArgs) -> Result<()> {
    let producer = loader(&args)?;
    let mut factory = RecordFactory::new(args.value_size, args.seed);
    let started = Instant::now();
    for sequence in 0..args.records {
        let key = factory.next_key();
        let sequence_bytes = sequence.to_be_bytes();
        let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
            key: SEQUENCE_HEADER,
            value: Some(&sequence_bytes),
        });
        let record = BaseRecord::to(&args.topic)
            .key(&key[..])
            .payload(factory.next_value())
            .headers(headers)
            .timestamp(wall_ms());
        send_waiting_for_room(&producer, record)
            .with_context(|| format!("cannot produce to {}", args.topic))?;
        if sequence % 4096 == 0 {
            producer.poll(Duration::ZERO);
            producer.context().check(&args.topic)?;
        }
    }
    producer
        .flush(Duration::from_secs(300))
        .with_context(|| format!("cannot flush the records of {}", args.topic))?;
    producer.context().check(&args.topic)?;
    let seconds = started.elapsed().as_secs_f64();
    let bytes = args.records * payload_bytes(args.value_size, SEQUENCE_HEADER);
    println!(
        "{}",
        json!({
            "topic": args.topic,
            "records": args.records,
            "delivered": producer.context().delivered.load(Ordering::Relaxed),
            "bytes": bytes,
            "seconds": seconds,
            "records_per_s": args.records as f64 / seconds,
        })
    );
    Ok(())
}
