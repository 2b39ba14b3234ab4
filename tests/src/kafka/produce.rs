//! Producing records, plain and in transactions, with each record's delivery
//! report.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::message::{DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext, ThreadedProducer};

use super::cluster::{blocking, cluster_config, Cluster, BULK_TIMEOUT, REQUEST_TIMEOUT};
use super::records::{Delivered, OutRecord};

/// Collects delivery reports: record index -> where it landed or why it failed.
#[derive(Default)]
struct DeliveryReports {
    reports: Mutex<HashMap<usize, Result<Delivered, String>>>,
}

impl ClientContext for DeliveryReports {}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, record_index: usize) {
        let report = match result {
            Ok(message) => Ok(Delivered {
                partition: message.partition(),
                offset: message.offset(),
            }),
            Err((error, _)) => Err(error.to_string()),
        };
        self.reports
            .lock()
            .expect("delivery reports lock")
            .insert(record_index, report);
    }
}

impl DeliveryReports {
    /// Takes the reports of the records `indexes`, in order, failing on the first
    /// failed delivery. A flush returns once librdkafka's queues are empty; the
    /// producer's polling thread may still be running the last callbacks, hence the
    /// short wait.
    fn take(&self, indexes: Range<usize>, topic: &str) -> Result<Vec<Delivered>> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            {
                let mut reports = self.reports.lock().expect("delivery reports lock");
                if indexes.clone().all(|index| reports.contains_key(&index)) {
                    return indexes
                        .map(|index| match reports.remove(&index) {
                            Some(Ok(delivered)) => Ok(delivered),
                            Some(Err(error)) => {
                                bail!("record #{index} was not delivered to {topic}: {error}")
                            }
                            None => unreachable!("checked above"),
                        })
                        .collect();
                }
                if Instant::now() > deadline {
                    let missing = indexes.filter(|index| !reports.contains_key(index)).count();
                    bail!("{missing} records produced to {topic} got no delivery report");
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn discard(&self, indexes: Range<usize>) {
        let mut reports = self.reports.lock().expect("delivery reports lock");
        for index in indexes {
            reports.remove(&index);
        }
    }
}

fn producer_config(cluster: Cluster) -> ClientConfig {
    let mut config = cluster_config(cluster);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.max.bytes", "4000000")
        .set("message.timeout.ms", "120000");
    config
}

/// Enqueues one record, waiting while librdkafka's queue is full (backpressure,
/// not synchronisation: the background thread drains it).
fn enqueue(
    producer: &ThreadedProducer<DeliveryReports>,
    topic: &str,
    record: &OutRecord,
    record_index: usize,
) -> Result<()> {
    let mut base_record: BaseRecord<'_, [u8], [u8], usize> =
        BaseRecord::with_opaque_to(topic, record_index);
    if let Some(partition) = record.partition {
        base_record = base_record.partition(partition);
    }
    if let Some(key) = &record.key {
        base_record = base_record.key(key.as_slice());
    }
    if let Some(value) = &record.value {
        base_record = base_record.payload(value.as_slice());
    }
    if let Some(timestamp) = record.timestamp {
        base_record = base_record.timestamp(timestamp);
    }
    if !record.headers.is_empty() {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        base_record = base_record.headers(headers);
    }
    loop {
        match producer.send(base_record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                base_record = returned;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((error, _)) => bail!("cannot produce record #{record_index} to {topic}: {error}"),
        }
    }
}

/// Hands `record` to a `BaseProducer`, serving its delivery reports while its queue
/// is full, so a fast loader waits for room instead of failing.
pub fn send_waiting_for_room<K, P, C>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'_, K, P, C::DeliveryOpaque>,
) -> Result<(), KafkaError>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
    C: ProducerContext,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                producer.poll(Duration::from_millis(1));
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// Produces `records` in order with an idempotent producer and returns where each
/// landed (same order as `records`). Fails if any record is not acknowledged.
pub async fn produce(
    cluster: Cluster,
    topic: &str,
    records: Vec<OutRecord>,
) -> Result<Vec<Delivered>> {
    let topic = topic.to_string();
    blocking(move || produce_blocking(cluster, &topic, &records)).await
}

fn produce_blocking(
    cluster: Cluster,
    topic: &str,
    records: &[OutRecord],
) -> Result<Vec<Delivered>> {
    let producer: ThreadedProducer<DeliveryReports> = producer_config(cluster)
        .create_with_context(DeliveryReports::default())
        .with_context(|| format!("cannot create a producer for the {cluster} cluster"))?;
    for (index, record) in records.iter().enumerate() {
        enqueue(&producer, topic, record, index)?;
    }
    producer
        .flush(BULK_TIMEOUT)
        .with_context(|| format!("cannot flush records to {topic}"))?;
    producer.context().take(0..records.len(), topic)
}

/// One transaction of a transactional producer.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub records: Vec<OutRecord>,
    pub commit: bool,
}

/// Produces each transaction with one transactional producer, committing or
/// aborting it as asked. Returns where each committed record landed, per
/// transaction (empty for aborted ones).
pub async fn produce_transactions(
    cluster: Cluster,
    topic: &str,
    transactions: Vec<Transaction>,
) -> Result<Vec<Vec<Delivered>>> {
    let topic = topic.to_string();
    blocking(move || produce_transactions_blocking(cluster, &topic, &transactions)).await
}

fn produce_transactions_blocking(
    cluster: Cluster,
    topic: &str,
    transactions: &[Transaction],
) -> Result<Vec<Vec<Delivered>>> {
    let transactional_id = crate::unique_name(&format!("kmirror-tests-{topic}"));
    let producer: ThreadedProducer<DeliveryReports> = producer_config(cluster)
        .set("transactional.id", &transactional_id)
        .set("transaction.timeout.ms", "120000")
        .create_with_context(DeliveryReports::default())
        .with_context(|| {
            format!("cannot create a transactional producer for the {cluster} cluster")
        })?;
    producer
        .init_transactions(REQUEST_TIMEOUT * 3)
        .context("cannot initialise transactions")?;
    let mut results = Vec::with_capacity(transactions.len());
    let mut next_index = 0;
    for (transaction_number, transaction) in transactions.iter().enumerate() {
        producer
            .begin_transaction()
            .with_context(|| format!("cannot begin transaction #{transaction_number}"))?;
        let first_index = next_index;
        for record in &transaction.records {
            enqueue(&producer, topic, record, next_index)?;
            next_index += 1;
        }
        if transaction.commit {
            producer
                .commit_transaction(REQUEST_TIMEOUT * 3)
                .with_context(|| format!("cannot commit transaction #{transaction_number}"))?;
            // Committing flushes: every record of the transaction has its report.
            results.push(producer.context().take(first_index..next_index, topic)?);
        } else {
            // Flush first so that the aborted records really reach the log and
            // leave an offset gap behind, as a real aborted transaction does.
            producer
                .flush(BULK_TIMEOUT)
                .with_context(|| format!("cannot flush transaction #{transaction_number}"))?;
            producer
                .abort_transaction(REQUEST_TIMEOUT * 3)
                .with_context(|| format!("cannot abort transaction #{transaction_number}"))?;
            producer.context().discard(first_index..next_index);
            results.push(Vec::new());
        }
    }
    Ok(results)
}
