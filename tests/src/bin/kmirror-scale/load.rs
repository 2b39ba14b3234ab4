//! The steady load: records at a fixed rate spread evenly over every source
//! partition (round robin, so each partition gets `rate / partitions` records a
//! second), from idempotent producers driven by a thread of its own, until
//! stopped.
//!
//! librdkafka sends one produce request per partition, and an idempotent
//! producer keeps at most five in flight per broker: one producer sending one
//! record at a time to 2 000 partitions of one broker fell behind once the
//! broker slowed, and records reached the source up to three minutes after they
//! were produced. Each partition therefore gets its records in bursts (a few at
//! once, as often as the rate allows), which divides the produce requests by the
//! burst, and the partitions are spread over several producers. On a machine
//! the fleet saturates the records still reach the source seconds late: every
//! record's delivery latency is kept, so a run shows how late, and failover is
//! measured with probe records of their own (see [`probe`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use kmirror_tests::kafka::send_waiting_for_room;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message as _};

use crate::positions::Partition;

/// How often the load sends its share of records.
const TICK: Duration = Duration::from_millis(20);

/// Most partitions one producer of the steady load serves, unless told how many
/// producers to use.
const PARTITIONS_PER_PRODUCER: usize = 250;

/// Counts deliveries, keeps the first failure and, for the steady load, when
/// each record was delivered and how long after it was produced; for probes,
/// where each landed and when (measured from the given instant).
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    first_failure: Mutex<Option<String>>,
    latencies_opt: Option<Arc<Latencies>>,
    landed_opt: Option<(Instant, Mutex<Landed>)>,
}

/// Where each probe landed (its offset), and when its delivery was reported.
type Landed = BTreeMap<Partition, (i64, Duration)>;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        match result {
            Ok(message) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                if let (Some(latencies), Some(produced_ms)) =
                    (&self.latencies_opt, message.timestamp().to_millis())
                {
                    latencies.add(produced_ms);
                }
                if let Some((since, landed)) = &self.landed_opt {
                    let partition = (message.topic().to_string(), message.partition());
                    landed
                        .lock()
                        .expect("not poisoned")
                        .insert(partition, (message.offset(), since.elapsed()));
                }
            }
            Err((error, _)) => {
                let mut first = self.first_failure.lock().expect("not poisoned");
                first.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// Every delivered record's delivery time (since the load started) and latency
/// (since its producer was given it: librdkafka stamps the record then).
struct Latencies {
    started: Instant,
    deliveries: Mutex<Vec<(Duration, Duration)>>,
}

impl Latencies {
    fn add(&self, produced_ms: i64) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |now| i64::try_from(now.as_millis()).unwrap_or(i64::MAX));
        let latency = Duration::from_millis(u64::try_from(now_ms - produced_ms).unwrap_or(0));
        let delivered_at = self.started.elapsed();
        self.deliveries
            .lock()
            .expect("not poisoned")
            .push((delivered_at, latency));
    }

    /// The latencies of the records delivered since `since`.
    fn since(&self, since: Instant) -> LatencySummary {
        let from = since.saturating_duration_since(self.started);
        let mut latencies: Vec<Duration> = self
            .deliveries
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|(delivered_at, _)| *delivered_at >= from)
            .map(|(_, latency)| *latency)
            .collect();
        latencies.sort_unstable();
        let at = |fraction: f64| {
            let index = ((latencies.len() as f64 * fraction) as usize)
                .min(latencies.len().saturating_sub(1));
            latencies.get(index).copied().unwrap_or_default()
        };
        LatencySummary {
            records: latencies.len(),
            median: at(0.5),
            p99: at(0.99),
            max: latencies.last().copied().unwrap_or_default(),
        }
    }
}

/// Most probes one producer writes: librdkafka sends one request per partition,
/// five in flight, so a few producers write them in a couple of round trips.
const PROBES_PER_PRODUCER: usize = 20;

/// Writes one record to each of `partitions` through producers of their own
/// (their own connections: the load's queued records do not hold them back) and
/// returns where each landed, and when its delivery was reported, measured from
/// `since`.
pub fn probe(
    bootstrap: &str,
    partitions: &BTreeSet<Partition>,
    value_size: usize,
    since: Instant,
) -> Result<Landed> {
    let partitions: Vec<&Partition> = partitions.iter().collect();
    let producers = partitions
        .chunks(PROBES_PER_PRODUCER)
        .map(|_| {
            ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .create_with_context(Deliveries {
                    landed_opt: Some((since, Mutex::default())),
                    ..Deliveries::default()
                })
                .with_context(|| format!("cannot create a producer for {bootstrap}"))
        })
        .collect::<Result<Vec<BaseProducer<Deliveries>>>>()?;
    let value = vec![b'p'; value_size];
    for (chunk, producer) in partitions.chunks(PROBES_PER_PRODUCER).zip(&producers) {
        for (topic, partition) in chunk {
            let record = BaseRecord::to(topic)
                .partition(*partition)
                .key("probe")
                .payload(&value[..]);
            send_waiting_for_room(producer, record)
                .with_context(|| format!("cannot produce a probe to {topic}/{partition}"))?;
        }
    }
    let mut landed = BTreeMap::new();
    for producer in &producers {
        producer
            .flush(Duration::from_secs(120))
            .context("cannot flush the probes")?;
        check_delivered(producer, "the probes")?;
        if let Some((_, landed_here)) = &producer.context().landed_opt {
            landed.append(&mut landed_here.lock().expect("not poisoned"));
        }
    }
    if landed.len() != partitions.len() {
        bail!("{} of {} probes delivered", landed.len(), partitions.len());
    }
    Ok(landed)
}

/// How long the load's records took to reach the source.
#[derive(Debug, Clone, Copy, Default)]
pub struct LatencySummary {
    pub records: usize,
    pub median: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// Fills every partition with `per_partition` records as fast as the broker
/// takes them (a backlog for the fleet to catch up on); returns the count.
pub async fn preload(
    bootstrap: &str,
    partitions: Vec<Partition>,
    per_partition: u64,
    value_size: usize,
) -> Result<u64> {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "262144")
        .create_with_context(Deliveries::default())
        .with_context(|| format!("cannot create a producer for {bootstrap}"))?;
    tokio::task::spawn_blocking(move || {
        let value = vec![b'v'; value_size];
        for round in 0..per_partition {
            for (topic, partition) in &partitions {
                let key = format!("{partition}-{round}");
                let record = BaseRecord::to(topic)
                    .partition(*partition)
                    .key(key.as_bytes())
                    .payload(&value[..]);
                send_waiting_for_room(&producer, record)
                    .with_context(|| format!("cannot produce to {topic}/{partition}"))?;
            }
            producer.poll(Duration::ZERO);
        }
        producer
            .flush(Duration::from_secs(300))
            .context("cannot flush the backlog")?;
        check_delivered(&producer, "the backlog")?;
        Ok(producer.context().delivered.load(Ordering::Relaxed))
    })
    .await
    .map_err(|error| anyhow!("the backlog's task failed: {error}"))?
}

/// A running load; [`SteadyLoad::stop`] ends it and returns the records delivered.
pub struct SteadyLoad {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<u64>>,
    latencies: Arc<Latencies>,
    pub producers: usize,
}

impl SteadyLoad {
    pub fn start(
        bootstrap: &str,
        partitions: Vec<Partition>,
        records_per_second: u64,
        value_size: usize,
        burst: u64,
        producers_opt: Option<usize>,
    ) -> Result<Self> {
        if partitions.is_empty() || records_per_second == 0 {
            bail!("the load needs partitions and a rate");
        }
        let latencies = Arc::new(Latencies {
            started: Instant::now(),
            deliveries: Mutex::new(Vec::new()),
        });
        let count = producers_opt
            .unwrap_or_else(|| partitions.len().div_ceil(PARTITIONS_PER_PRODUCER))
            .clamp(1, partitions.len());
        let producers = (0..count)
            .map(|_| {
                ClientConfig::new()
                    .set("bootstrap.servers", bootstrap)
                    .set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set("linger.ms", "5")
                    .create_with_context(Deliveries {
                        latencies_opt: Some(latencies.clone()),
                        ..Deliveries::default()
                    })
                    .with_context(|| format!("cannot create a producer for {bootstrap}"))
            })
            .collect::<Result<Vec<BaseProducer<Deliveries>>>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("steady-load".to_string())
            .spawn(move || {
                produce_until_stopped(
                    &producers,
                    &partitions,
                    records_per_second,
                    value_size,
                    burst.max(1),
                    &stop_flag,
                )
            })
            .context("cannot start the load's thread")?;
        Ok(Self {
            stop,
            handle,
            latencies,
            producers: count,
        })
    }

    /// The delivery latencies of the records delivered since `since`.
    pub fn latencies_since(&self, since: Instant) -> LatencySummary {
        self.latencies.since(since)
    }

    /// Stops producing, waits for every record's delivery and returns how many
    /// were delivered.
    pub fn stop(self) -> Result<u64> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .join()
            .map_err(|_| anyhow!("the load's thread panicked"))?
    }
}

/// Produces on schedule until stopped, `burst` records to a partition at a
/// time; partition `i` of `partitions` goes through producer
/// `i % producers.len()`. Returns the records delivered.
fn produce_until_stopped(
    producers: &[BaseProducer<Deliveries>],
    partitions: &[Partition],
    records_per_second: u64,
    value_size: usize,
    burst: u64,
    stop: &AtomicBool,
) -> Result<u64> {
    let value = vec![b'v'; value_size];
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut next = 0usize;
    while !stop.load(Ordering::SeqCst) {
        // Catch up to the schedule: as many records as the time since the start
        // allows, so a slow tick does not lower the rate.
        let due = (started.elapsed().as_secs_f64() * records_per_second as f64) as u64;
        while sent < due {
            let (topic, partition) = &partitions[next];
            for _ in 0..burst {
                let key = format!("{partition}-{sent}");
                let record = BaseRecord::to(topic)
                    .partition(*partition)
                    .key(key.as_bytes())
                    .payload(&value[..]);
                send_waiting_for_room(&producers[next % producers.len()], record)
                    .with_context(|| format!("cannot produce to {topic}/{partition}"))?;
                sent += 1;
            }
            next = (next + 1) % partitions.len();
        }
        for producer in producers {
            producer.poll(Duration::ZERO);
            check_delivered(producer, "the load")?;
        }
        std::thread::sleep(TICK);
    }
    let mut delivered = 0;
    for producer in producers {
        producer
            .flush(Duration::from_secs(60))
            .context("cannot flush the load's last records")?;
        check_delivered(producer, "the load")?;
        delivered += producer.context().delivered.load(Ordering::Relaxed);
    }
    Ok(delivered)
}

/// Fails with the first record the producer could not deliver, if any.
fn check_delivered(producer: &BaseProducer<Deliveries>, what: &str) -> Result<()> {
    if let Some(failure) = producer
        .context()
        .first_failure
        .lock()
        .expect("not poisoned")
        .clone()
    {
        bail!("a record of {what} was not delivered: {failure}");
    }
    Ok(())
}
