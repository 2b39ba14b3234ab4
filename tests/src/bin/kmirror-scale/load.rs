//! The steady load: records at a fixed rate spread evenly over every source
//! partition (round robin, so each partition gets `rate / partitions` records a
//! second), from one idempotent producer on a thread of its own, until stopped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use kmirror_tests::kafka::send_waiting_for_room;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

use crate::positions::Partition;

/// How often the load sends its share of records.
const TICK: Duration = Duration::from_millis(20);

/// Counts deliveries and keeps the first failure.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                let mut first = self.first_failure.lock().expect("not poisoned");
                first.get_or_insert_with(|| error.to_string());
            }
        }
    }
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
        if let Some(failure) = producer
            .context()
            .first_failure
            .lock()
            .expect("not poisoned")
            .clone()
        {
            bail!("a record of the backlog was not delivered: {failure}");
        }
        Ok(producer.context().delivered.load(Ordering::Relaxed))
    })
    .await
    .map_err(|error| anyhow!("the backlog's task failed: {error}"))?
}

/// A running load; [`SteadyLoad::stop`] ends it and returns the records delivered.
pub struct SteadyLoad {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<u64>>,
}

impl SteadyLoad {
    pub fn start(
        bootstrap: &str,
        partitions: Vec<Partition>,
        records_per_second: u64,
        value_size: usize,
    ) -> Result<Self> {
        if partitions.is_empty() || records_per_second == 0 {
            bail!("the load needs partitions and a rate");
        }
        let producer: BaseProducer<Deliveries> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create_with_context(Deliveries::default())
            .with_context(|| format!("cannot create a producer for {bootstrap}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("steady-load".to_string())
            .spawn(move || {
                produce_until_stopped(
                    &producer,
                    &partitions,
                    records_per_second,
                    value_size,
                    &stop_flag,
                )
            })
            .context("cannot start the load's thread")?;
        Ok(Self { stop, handle })
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

fn produce_until_stopped(
    producer: &BaseProducer<Deliveries>,
    partitions: &[Partition],
    records_per_second: u64,
    value_size: usize,
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
            let key = format!("{partition}-{sent}");
            let record = BaseRecord::to(topic)
                .partition(*partition)
                .key(key.as_bytes())
                .payload(&value[..]);
            send_waiting_for_room(producer, record)
                .with_context(|| format!("cannot produce to {topic}/{partition}"))?;
            sent += 1;
            next = (next + 1) % partitions.len();
        }
        producer.poll(Duration::ZERO);
        if let Some(failure) = producer
            .context()
            .first_failure
            .lock()
            .expect("not poisoned")
            .clone()
        {
            bail!("a record of the load was not delivered: {failure}");
        }
        std::thread::sleep(TICK);
    }
    producer
        .flush(Duration::from_secs(60))
        .context("cannot flush the load's last records")?;
    if let Some(failure) = producer
        .context()
        .first_failure
        .lock()
        .expect("not poisoned")
        .clone()
    {
        bail!("a record of the load was not delivered: {failure}");
    }
    Ok(producer.context().delivered.load(Ordering::Relaxed))
}
