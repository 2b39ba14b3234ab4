//! Kafka helpers on rdkafka: topics, producing (plain and transactional), reading
//! every record of a topic back, and comparing partitions record by record.
//!
//! librdkafka calls block, so each helper runs on tokio's blocking pool.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, Timestamp, TopicPartitionList};

use crate::stack::stack;

/// How long a single metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading a whole topic or flushing a producer may take.
const BULK_TIMEOUT: Duration = Duration::from_secs(300);

/// One of the two clusters of the local stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cluster {
    Source,
    Dest,
    /// A cluster a test started for itself, by bootstrap address.
    Custom(&'static str),
    /// A cluster a test started for itself that needs client settings
    /// (TLS, SASL) beyond its bootstrap address.
    Secured(&'static SecuredCluster),
}

/// A secured cluster's bootstrap address and the librdkafka settings every
/// test client uses for it (the tools' super user's).
#[derive(Debug, PartialEq, Eq)]
pub struct SecuredCluster {
    pub bootstrap: String,
    pub properties: Vec<(String, String)>,
}

/// A client config for `cluster`: its bootstrap address and, for a secured
/// cluster, its security settings.
fn cluster_config(cluster: Cluster) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", cluster.bootstrap());
    if let Cluster::Secured(secured) = cluster {
        for (key, value) in &secured.properties {
            config.set(key, value);
        }
    }
    config
}

impl fmt::Display for Cluster {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Cluster::Source => "source",
            Cluster::Dest => "destination",
            Cluster::Custom(bootstrap) => bootstrap,
            Cluster::Secured(secured) => &secured.bootstrap,
        })
    }
}

impl Cluster {
    pub fn bootstrap(self) -> &'static str {
        stack().bootstrap(self)
    }
}

/// A record header: a key and a value that may be null.
pub type RecordHeader = (String, Option<Vec<u8>>);

/// A record to produce. `partition: None` lets the producer's partitioner choose.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutRecord {
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<RecordHeader>,
    /// CreateTime in milliseconds; `None` lets the producer stamp it.
    pub timestamp: Option<i64>,
}

/// Where the destination cluster put a produced record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// Timestamp type of a consumed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    NotAvailable,
    CreateTime,
    LogAppendTime,
}

/// A record read back from a topic.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<RecordHeader>,
    /// Milliseconds since the epoch (-1 when not available).
    pub timestamp: i64,
    /// `None` when the reader cannot tell (kcat's format output).
    pub timestamp_type: Option<TimestampType>,
}

impl ConsumedRecord {
    /// The first field in which two records' contents differ (partition and offset
    /// aside, which differ between clusters), or `None` when they are equal.
    pub fn content_difference(&self, other: &ConsumedRecord) -> Option<String> {
        if self.key != other.key {
            return Some(format!(
                "key {} != {}",
                show_bytes(&self.key),
                show_bytes(&other.key)
            ));
        }
        if self.value != other.value {
            return Some(format!(
                "value {} != {}",
                show_bytes(&self.value),
                show_bytes(&other.value)
            ));
        }
        if self.headers != other.headers {
            return Some(format!(
                "headers {} != {}",
                show_headers(&self.headers),
                show_headers(&other.headers)
            ));
        }
        if self.timestamp != other.timestamp {
            return Some(format!(
                "timestamp {} != {}",
                self.timestamp, other.timestamp
            ));
        }
        if let (Some(this_type), Some(other_type)) = (self.timestamp_type, other.timestamp_type) {
            if this_type != other_type {
                return Some(format!("timestamp type {this_type:?} != {other_type:?}"));
            }
        }
        None
    }

    /// Whether this record carries what `produced` was sent with.
    pub fn matches_produced(&self, produced: &OutRecord) -> Option<String> {
        let expected = ConsumedRecord {
            partition: self.partition,
            offset: self.offset,
            key: produced.key.clone(),
            value: produced.value.clone(),
            headers: produced.headers.clone(),
            timestamp: produced.timestamp.unwrap_or(self.timestamp),
            timestamp_type: produced.timestamp.map(|_| TimestampType::CreateTime),
        };
        self.content_difference(&expected)
    }
}

impl fmt::Debug for ConsumedRecord {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "[p{} o{} key={} value={} headers={} ts={} {:?}]",
            self.partition,
            self.offset,
            show_bytes(&self.key),
            show_bytes(&self.value),
            show_headers(&self.headers),
            self.timestamp,
            self.timestamp_type
        )
    }
}

/// Bytes for failure messages: short text as text, long values cut.
pub fn show_bytes(bytes: &Option<Vec<u8>>) -> String {
    const SHOWN: usize = 64;
    match bytes {
        None => "null".to_string(),
        Some(bytes) => {
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN)]);
            if bytes.len() > SHOWN {
                format!("{shown:?}... ({} bytes)", bytes.len())
            } else {
                format!("{shown:?}")
            }
        }
    }
}

fn show_headers(headers: &[RecordHeader]) -> String {
    let shown: Vec<String> = headers
        .iter()
        .map(|(key, value)| format!("{key:?}={}", show_bytes(value)))
        .collect();
    format!("{{{}}}", shown.join(", "))
}

/// Records of a topic, per partition, in offset order.
pub type TopicRecords = BTreeMap<i32, Vec<ConsumedRecord>>;

/// Total number of records over all partitions.
pub fn record_count(records: &TopicRecords) -> usize {
    records.values().map(Vec::len).sum()
}

/// Asserts that every partition of `dest` holds exactly the records of the same
/// partition of `source`, in the same order, with equal key, value, headers and
/// timestamp. Offsets may differ (transaction markers take offsets in the source).
pub fn assert_same_partitions(source: &TopicRecords, dest: &TopicRecords) {
    let source_partitions: Vec<i32> = source.keys().copied().collect();
    let dest_partitions: Vec<i32> = dest.keys().copied().collect();
    assert_eq!(
        source_partitions, dest_partitions,
        "source and destination have different partitions"
    );
    for (partition, source_records) in source {
        let dest_records = &dest[partition];
        for (index, (source_record, dest_record)) in
            source_records.iter().zip(dest_records).enumerate()
        {
            if let Some(difference) = source_record.content_difference(dest_record) {
                panic!(
                    "partition {partition}, record #{index}: {difference}\n  source: {source_record:?}\n  destination: {dest_record:?}"
                );
            }
        }
        assert_eq!(
            source_records.len(),
            dest_records.len(),
            "partition {partition}: the source holds {} records, the destination {} \
             (first extra: {:?})",
            source_records.len(),
            dest_records.len(),
            source_records
                .get(dest_records.len())
                .or_else(|| dest_records.get(source_records.len()))
        );
    }
}

/// Asserts that a partition holds exactly the produced records, in order.
pub fn assert_partition_holds(records: &[ConsumedRecord], produced: &[&OutRecord]) {
    for (index, (record, out)) in records.iter().zip(produced).enumerate() {
        if let Some(difference) = record.matches_produced(out) {
            panic!("record #{index} differs from what was produced: {difference}\n  read: {record:?}\n  produced: {out:?}");
        }
    }
    assert_eq!(
        records.len(),
        produced.len(),
        "read {} records, produced {}",
        records.len(),
        produced.len()
    );
}

// ---------------------------------------------------------------------------
// Topics

fn admin_client(cluster: Cluster) -> Result<AdminClient<DefaultClientContext>> {
    cluster_config(cluster)
        .create()
        .with_context(|| format!("cannot create an admin client for the {cluster} cluster"))
}

/// A consumer used for metadata and watermarks only. It never creates topics:
/// a destination topic must come from the coordinator, not from a test's look-up.
fn metadata_consumer(cluster: Cluster) -> Result<BaseConsumer> {
    cluster_config(cluster)
        .set("allow.auto.create.topics", "false")
        .set("enable.auto.commit", "false")
        .set("group.id", "kmirror-tests-metadata")
        .create()
        .with_context(|| format!("cannot create a metadata client for the {cluster} cluster"))
}

/// Creates a topic with `partitions` partitions and topic `configs`, and waits
/// until its metadata shows every partition with a leader.
pub async fn create_topic(
    cluster: Cluster,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<()> {
    let admin = admin_client(cluster)?;
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        new_topic = new_topic.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let results = admin
        .create_topics([&new_topic], &options)
        .await
        .with_context(|| format!("cannot create topic {topic} in the {cluster} cluster"))?;
    for result in results {
        result.map_err(|(name, code)| {
            anyhow!("cannot create topic {name} in the {cluster} cluster: {code}")
        })?;
    }
    let topic_name = topic.to_string();
    let ready = crate::wait_until(
        Duration::from_secs(30),
        &format!("topic {topic} to have {partitions} partitions with leaders"),
        || {
            let topic_name = topic_name.clone();
            async move {
                match blocking(move || topic_leaders_ready(cluster, &topic_name)).await {
                    Ok(count) if count == partitions => Ok(()),
                    Ok(count) => Err(format!("{count} partitions ready")),
                    Err(error) => Err(format!("{error:#}")),
                }
            }
        },
    )
    .await;
    ready.map_err(|message| anyhow!(message))
}

fn topic_leaders_ready(cluster: Cluster, topic: &str) -> Result<i32> {
    let consumer = metadata_consumer(cluster)?;
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let Some(topic_metadata) = metadata.topics().first() else {
        return Ok(0);
    };
    if topic_metadata.error().is_some() {
        return Ok(0);
    }
    let ready = topic_metadata
        .partitions()
        .iter()
        .filter(|partition| partition.leader() >= 0 && partition.error().is_none())
        .count();
    Ok(i32::try_from(ready)?)
}

/// Sets topic configs (Kafka's non-incremental AlterConfigs: configs not named go
/// back to their defaults, so name every config the topic was created with).
pub async fn alter_topic_configs(
    cluster: Cluster,
    topic: &str,
    configs: &[(&str, &str)],
) -> Result<()> {
    let admin = admin_client(cluster)?;
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (key, value) in configs {
        alter = alter.set(key, value);
    }
    let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
    let results = admin
        .alter_configs([&alter], &options)
        .await
        .with_context(|| {
            format!("cannot alter configs of topic {topic} in the {cluster} cluster")
        })?;
    for result in results {
        result.map_err(|(_, code)| {
            anyhow!("cannot alter configs of topic {topic} in the {cluster} cluster: {code}")
        })?;
    }
    Ok(())
}

/// The value of one config of a topic, as the broker describes it.
pub async fn topic_config(cluster: Cluster, topic: &str, key: &str) -> Result<Option<String>> {
    let admin = admin_client(cluster)?;
    let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await
        .with_context(|| format!("cannot describe topic {topic} in the {cluster} cluster"))?;
    let resource = results
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no description of topic {topic}"))?
        .map_err(|code| {
            anyhow!("cannot describe topic {topic} in the {cluster} cluster: {code}")
        })?;
    Ok(resource.get(key).and_then(|entry| entry.value.clone()))
}

/// The partition count of a topic, `None` when the topic does not exist.
pub async fn partition_count(cluster: Cluster, topic: &str) -> Result<Option<i32>> {
    let topic = topic.to_string();
    blocking(move || {
        let consumer = metadata_consumer(cluster)?;
        partition_count_with(&consumer, &topic)
    })
    .await
}

fn partition_count_with(consumer: &BaseConsumer, topic: &str) -> Result<Option<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .with_context(|| format!("cannot fetch metadata of topic {topic}"))?;
    match metadata.topics().first() {
        Some(topic_metadata) if topic_metadata.error().is_none() => {
            Ok(Some(i32::try_from(topic_metadata.partitions().len())?))
        }
        _ => Ok(None),
    }
}

/// Low and high watermark of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
}

/// Reads watermarks of topics of one cluster with one client, for polling loops.
#[derive(Clone)]
pub struct WatermarkReader {
    cluster: Cluster,
    consumer: Arc<BaseConsumer>,
}

impl WatermarkReader {
    pub fn new(cluster: Cluster) -> Result<Self> {
        Ok(Self {
            cluster,
            consumer: Arc::new(metadata_consumer(cluster)?),
        })
    }

    /// Watermarks of every partition; empty when the topic does not exist.
    pub async fn watermarks(&self, topic: &str) -> Result<Vec<Watermarks>> {
        let consumer = self.consumer.clone();
        let topic = topic.to_string();
        let cluster = self.cluster;
        blocking(move || {
            let Some(partitions) = partition_count_with(&consumer, &topic)? else {
                return Ok(Vec::new());
            };
            (0..partitions)
                .map(|partition| {
                    let (low, high) = consumer
                        .fetch_watermarks(&topic, partition, REQUEST_TIMEOUT)
                        .with_context(|| {
                            format!("cannot fetch watermarks of {topic}/{partition} in the {cluster} cluster")
                        })?;
                    Ok(Watermarks { partition, low, high })
                })
                .collect()
        })
        .await
    }

    /// Offsets held by a topic (sum of high minus low watermarks): the record count
    /// when no transaction markers are in it, as in a destination topic written by
    /// the idempotent writer. 0 when the topic does not exist.
    pub async fn offset_count(&self, topic: &str) -> Result<i64> {
        Ok(self
            .watermarks(topic)
            .await?
            .iter()
            .map(|watermarks| watermarks.high - watermarks.low)
            .sum())
    }
}

// ---------------------------------------------------------------------------
// Producing

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

// ---------------------------------------------------------------------------
// Reading

/// Reads every committed record of a topic (read_committed), from the beginning of
/// each partition to its end at the time of reading, grouped by partition in
/// offset order. Fails if the topic does not exist.
pub async fn read_all(cluster: Cluster, topic: &str) -> Result<TopicRecords> {
    let topic = topic.to_string();
    blocking(move || read_all_blocking(cluster, &topic)).await
}

fn read_all_blocking(cluster: Cluster, topic: &str) -> Result<TopicRecords> {
    let consumer: BaseConsumer = cluster_config(cluster)
        .set("group.id", crate::unique_name("kmirror-tests-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("allow.auto.create.topics", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .create()
        .with_context(|| format!("cannot create a consumer for the {cluster} cluster"))?;
    let partitions = partition_count_with(&consumer, topic)?
        .ok_or_else(|| anyhow!("topic {topic} does not exist in the {cluster} cluster"))?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;

    let mut records: TopicRecords = (0..partitions)
        .map(|partition| (partition, Vec::new()))
        .collect();
    let mut at_end: HashSet<i32> = HashSet::new();
    let deadline = Instant::now() + BULK_TIMEOUT;
    // Each partition reports end-of-partition when the consumer reaches its end
    // (the last stable offset in read_committed), empty partitions included.
    while at_end.len() < records.len() {
        if Instant::now() > deadline {
            bail!(
                "reading {topic} from the {cluster} cluster did not reach the end of partitions {:?} within {BULK_TIMEOUT:?}",
                (0..partitions).filter(|partition| !at_end.contains(partition)).collect::<Vec<_>>()
            );
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(error)) => bail!("cannot read {topic} from the {cluster} cluster: {error}"),
            Some(Ok(message)) => {
                let record = consumed_record(&message);
                records.entry(record.partition).or_default().push(record);
            }
        }
    }
    Ok(records)
}

fn consumed_record(message: &rdkafka::message::BorrowedMessage<'_>) -> ConsumedRecord {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| (header.key.to_string(), header.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    let (timestamp, timestamp_type) = match message.timestamp() {
        Timestamp::NotAvailable => (-1, TimestampType::NotAvailable),
        Timestamp::CreateTime(millis) => (millis, TimestampType::CreateTime),
        Timestamp::LogAppendTime(millis) => (millis, TimestampType::LogAppendTime),
    };
    ConsumedRecord {
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
        timestamp,
        timestamp_type: Some(timestamp_type),
    }
}

/// Runs blocking librdkafka work off the async threads.
async fn blocking<T, Work>(work: Work) -> Result<T>
where
    T: Send + 'static,
    Work: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .context("blocking Kafka task panicked")?
}

/// Grows a topic to `total` partitions.
pub async fn add_partitions(cluster: Cluster, topic: &str, total: usize) -> Result<()> {
    let admin = admin_client(cluster)?;
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let results = admin
        .create_partitions(
            [&rdkafka::admin::NewPartitions::new(topic, total)],
            &options,
        )
        .await
        .with_context(|| format!("cannot add partitions to {topic} in the {cluster} cluster"))?;
    for result in results {
        result.map_err(|(name, code)| {
            anyhow!("cannot add partitions to {name} in the {cluster} cluster: {code}")
        })?;
    }
    Ok(())
}

/// Deletes a topic.
pub async fn delete_topic(cluster: Cluster, topic: &str) -> Result<()> {
    let admin = admin_client(cluster)?;
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let results = admin
        .delete_topics(&[topic], &options)
        .await
        .with_context(|| format!("cannot delete {topic} in the {cluster} cluster"))?;
    for result in results {
        result.map_err(|(name, code)| {
            anyhow!("cannot delete {name} in the {cluster} cluster: {code}")
        })?;
    }
    Ok(())
}
