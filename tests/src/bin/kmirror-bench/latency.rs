//! W4, end-to-end latency: `open-loop` sends records on a fixed schedule and
//! stamps each with its *intended* send time (as CreateTime, and as CLOCK_MONOTONIC
//! nanoseconds in a header), so a late send shows as latency instead of hiding it;
//! `latency` reads a topic and records, per record, now minus the intended time in
//! an HdrHistogram.
//!
//! Both take the same schedule: it starts at `--start-at-ns` (CLOCK_MONOTONIC), runs
//! a warm-up, then the measured window. Only records intended inside the window are
//! measured.
//!
//! `latency --isolation-level read_committed` reads as a read_committed consumer: a
//! record arrives when its transaction commits, and records of aborted transactions
//! are neither counted nor measured.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use kmirror_tests::kafka::send_waiting_for_room;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;

use crate::clients::{partition_count, plain_consumer, CountingContext, IsolationLevel};
use crate::records::{monotonic_ns, wall_ms, RecordFactory, INTENDED_HEADER};

/// Shortest sleep of the generator between sends (see `open_loop`).
const MIN_SLEEP_NS: u64 = 1_000_000;

#[derive(Debug, Clone, clap::Args)]
pub struct Schedule {
    /// Records per second.
    #[arg(long)]
    pub rate: f64,
    /// CLOCK_MONOTONIC nanoseconds of the first intended send.
    #[arg(long)]
    pub start_at_ns: u64,
    #[arg(long)]
    pub warmup_s: f64,
    #[arg(long)]
    pub measure_s: f64,
}

impl Schedule {
    fn total(&self) -> u64 {
        (self.rate * (self.warmup_s + self.measure_s)).floor() as u64
    }

    fn intended_ns(&self, index: u64) -> u64 {
        self.start_at_ns + (index as f64 * 1e9 / self.rate) as u64
    }

    fn window(&self) -> (u64, u64) {
        let start = self.start_at_ns + (self.warmup_s * 1e9) as u64;
        (start, start + (self.measure_s * 1e9) as u64)
    }
}

#[derive(Debug, clap::Args)]
pub struct OpenLoopArgs {
    #[arg(long)]
    pub bootstrap: String,
    #[arg(long)]
    pub topic: String,
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// The generator producer's `linger.ms`.
    #[arg(long, default_value = "5")]
    pub linger_ms: String,
    #[command(flatten)]
    pub schedule: Schedule,
}

#[derive(Debug, clap::Args)]
pub struct LatencyArgs {
    #[arg(long)]
    pub bootstrap: String,
    #[arg(long)]
    pub topic: String,
    #[command(flatten)]
    pub schedule: Schedule,
    /// Seconds to wait for stragglers after the schedule's end.
    #[arg(long, default_value_t = 30.0)]
    pub drain_s: f64,
    /// How the topic is read: read_committed measures only records of committed
    /// transactions (and those outside any), from when their transaction commits,
    /// for mirrors that write the destination in transactions.
    #[arg(long, value_enum, default_value_t)]
    pub isolation_level: IsolationLevel,
}

pub fn open_loop(args: OpenLoopArgs) -> Result<()> {
    let producer: BaseProducer<CountingContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("linger.ms", &args.linger_ms)
        .set("partitioner", "murmur2_random")
        .create_with_context(CountingContext::default())
        .with_context(|| format!("cannot create a producer for {}", args.bootstrap))?;
    let schedule = &args.schedule;
    let total = schedule.total();
    let (window_start, window_end) = schedule.window();
    // Wall-clock time of the schedule's start, for CreateTime.
    let wall_at_start_ms =
        wall_ms() as f64 - (monotonic_ns() as f64 - schedule.start_at_ns as f64) / 1e6;
    let mut factory = RecordFactory::new(args.value_size, 4);
    let mut sent_in_window = 0u64;
    let mut latest_send_lag_ns = 0u64;
    let mut index = 0u64;
    while index < total {
        let now = monotonic_ns();
        while index < total && schedule.intended_ns(index) <= now {
            let intended = schedule.intended_ns(index);
            let intended_bytes = intended.to_be_bytes();
            let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
                key: INTENDED_HEADER,
                value: Some(&intended_bytes[..]),
            });
            let key = factory.next_key();
            let timestamp =
                (wall_at_start_ms + (intended - schedule.start_at_ns) as f64 / 1e6) as i64;
            let record = BaseRecord::to(&args.topic)
                .key(&key[..])
                .payload(factory.next_value())
                .headers(headers)
                .timestamp(timestamp);
            send_waiting_for_room(&producer, record)
                .with_context(|| format!("cannot produce to {}", args.topic))?;
            let sent_at = monotonic_ns();
            if (window_start..window_end).contains(&sent_at) {
                sent_in_window += 1;
            }
            latest_send_lag_ns = latest_send_lag_ns.max(sent_at.saturating_sub(intended));
            index += 1;
        }
        producer.poll(Duration::ZERO);
        if index < total {
            // Sleep at least a millisecond and send what fell due meanwhile: waking
            // (or spinning) once per record would take a core of a small box away
            // from the contenders. Latency counts from the intended time, so the
            // up to 1 ms a record waits here is in every contender's figures alike,
            // and in the floor's.
            let wait = schedule.intended_ns(index).saturating_sub(monotonic_ns());
            if wait > 0 {
                std::thread::sleep(Duration::from_nanos(wait.max(MIN_SLEEP_NS)));
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;
    producer.context().check(&args.topic)?;
    println!(
        "{}",
        json!({
            "target_rate": schedule.rate,
            "achieved_rate": sent_in_window as f64 / schedule.measure_s,
            "sent": total,
            "max_send_lag_ms": latest_send_lag_ns as f64 / 1e6,
        })
    );
    Ok(())
}

pub fn latency(args: LatencyArgs) -> Result<()> {
    let consumer = reader_at_ends(&args)?;
    // The harness starts the generator once this line is out.
    println!("ready");
    std::io::stdout().flush()?;
    measure(&args, &consumer)
}

/// A consumer of the topic assigned at its current ends, so that it reads only the
/// generator's records.
fn reader_at_ends(args: &LatencyArgs) -> Result<BaseConsumer> {
    let consumer = plain_consumer(
        &args.bootstrap,
        args.isolation_level,
        &[("fetch.wait.max.ms", "100")],
    )?;
    // Start at the high watermarks, also read_committed: a read_committed
    // consumer's offset queries answer the last stable offset, and a transaction
    // still open there holds records written before the generator began.
    let ends_consumer_opt = match args.isolation_level {
        IsolationLevel::ReadUncommitted => None,
        IsolationLevel::ReadCommitted => Some(plain_consumer(
            &args.bootstrap,
            IsolationLevel::ReadUncommitted,
            &[],
        )?),
    };
    let ends_consumer = ends_consumer_opt.as_ref().unwrap_or(&consumer);
    let partitions = partition_count(&consumer, &args.topic, Duration::from_secs(60))?;
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        let (_, high) =
            ends_consumer.fetch_watermarks(&args.topic, partition, Duration::from_secs(10))?;
        list.add_partition_offset(&args.topic, partition, Offset::Offset(high))?;
    }
    consumer.assign(&list)?;
    Ok(consumer)
}

/// Reads the generator's records until all arrived or the drain time is over, and
/// prints the figures.
fn measure(args: &LatencyArgs, consumer: &BaseConsumer) -> Result<()> {
    let schedule = &args.schedule;
    let total = schedule.total();
    let (window_start, window_end) = schedule.window();
    let deadline = Instant::now()
        + Duration::from_nanos(schedule.intended_ns(total).saturating_sub(monotonic_ns()))
        + Duration::from_secs_f64(args.drain_s);
    // Microseconds, from 1 µs to an hour, three significant digits.
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut seen = 0u64;
    while seen < total {
        if Instant::now() >= deadline {
            break;
        }
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = result.with_context(|| format!("cannot read {}", args.topic))?;
        let now = monotonic_ns();
        seen += 1;
        let intended = message
            .headers()
            .and_then(|headers| headers.iter().find(|header| header.key == INTENDED_HEADER))
            .and_then(|header| header.value)
            .and_then(|value| <[u8; 8]>::try_from(value).ok())
            .map(u64::from_be_bytes);
        let Some(intended) = intended else {
            bail!(
                "a record of {} lacks the {INTENDED_HEADER} header",
                args.topic
            );
        };
        if (window_start..window_end).contains(&intended) {
            histogram.saturating_record(now.saturating_sub(intended) / 1_000);
        }
    }
    let to_ms = |micros: u64| micros as f64 / 1_000.0;
    println!(
        "{}",
        json!({
            "seen": seen,
            "expected": total,
            "measured": histogram.len(),
            "p50_ms": to_ms(histogram.value_at_quantile(0.50)),
            "p99_ms": to_ms(histogram.value_at_quantile(0.99)),
            "p999_ms": to_ms(histogram.value_at_quantile(0.999)),
            "max_ms": to_ms(histogram.max()),
        })
    );
    if seen < total {
        bail!(
            "only {seen} of {total} records reached {} in time",
            args.topic
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rdkafka::producer::Producer;

    use super::*;
    use crate::isolation_tests::{
        abort_after_flush, send, transactional_producer, TestRecord, TestTopics,
    };

    const PARTITIONS: i32 = 2;
    const RECORDS_PER_TRANSACTION: u64 = 10;
    const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

    /// A record without the intended-time header: `latency` fails on reading one.
    fn headerless(partition: i32, index: i32) -> TestRecord {
        TestRecord {
            header: ("seq", vec![0; 8]),
            ..TestRecord::numbered(partition, index)
        }
    }

    /// The generator's records go in transactions, with an aborted transaction of
    /// headerless records among them; before the reader starts, a transaction of
    /// headerless records is open, and it commits once the reader is assigned. The
    /// reader must read neither: it starts at the high watermark, not at the last
    /// stable offset, and skips aborted records.
    #[test]
    fn read_committed_latency_reads_only_the_generators_committed_records() -> Result<()> {
        let topics = TestTopics::create(&["latency"], PARTITIONS)?;
        let topic = &topics.names[0];
        let earlier = transactional_producer(&topics.dest)?;
        earlier.begin_transaction()?;
        for partition in 0..PARTITIONS {
            send(&earlier, topic, &headerless(partition, 0))?;
        }
        earlier.flush(TRANSACTION_TIMEOUT)?;

        let args = LatencyArgs {
            bootstrap: topics.dest.clone(),
            topic: topic.clone(),
            schedule: Schedule {
                rate: 100.0,
                start_at_ns: monotonic_ns() + 500_000_000,
                warmup_s: 0.2,
                measure_s: 1.0,
            },
            drain_s: 15.0,
            isolation_level: IsolationLevel::ReadCommitted,
        };
        let consumer = reader_at_ends(&args)?;
        earlier.commit_transaction(TRANSACTION_TIMEOUT)?;

        let generator = transactional_producer(&topics.dest)?;
        let schedule = args.schedule.clone();
        std::thread::scope(|scope| {
            let generated = scope.spawn(|| -> Result<()> {
                for index in 0..schedule.total() {
                    if index % RECORDS_PER_TRANSACTION == 0 {
                        if index == 3 * RECORDS_PER_TRANSACTION {
                            generator.begin_transaction()?;
                            for partition in 0..PARTITIONS {
                                send(&generator, topic, &headerless(partition, 1))?;
                            }
                            abort_after_flush(&generator)?;
                        }
                        generator.begin_transaction()?;
                    }
                    let intended = schedule.intended_ns(index);
                    std::thread::sleep(Duration::from_nanos(
                        intended.saturating_sub(monotonic_ns()),
                    ));
                    let record = TestRecord {
                        header: (INTENDED_HEADER, intended.to_be_bytes().to_vec()),
                        timestamp_ms: wall_ms(),
                        ..TestRecord::numbered(i32::try_from(index % 2)?, i32::try_from(index)?)
                    };
                    send(&generator, topic, &record)?;
                    if (index + 1) % RECORDS_PER_TRANSACTION == 0 || index + 1 == schedule.total() {
                        generator.commit_transaction(TRANSACTION_TIMEOUT)?;
                    }
                }
                Ok(())
            });
            // Fails on a headerless record, or when fewer records than the
            // schedule's arrive.
            let measured = measure(&args, &consumer);
            generated.join().expect("the generator does not panic")?;
            measured
        })
    }
}
