//! Exactly-once partitions: each source partition of an exactly-once flow is
//! written through a transactional producer of its own, whose transactional id
//! is the partition's (the same on every writer), one Kafka transaction per batch
//! holding the batch's records and its offset map entry.
//!
//! A partition opens when its first batch reaches a session, and again on every
//! restart, in this order:
//! 1. **Fence**: initialising the transactions of the partition's id bumps its
//!    producer epoch, so whichever producer held the id before (a writer that
//!    stalled, was cut off or died, or this writer's previous stream) can no
//!    longer commit, and the broker aborts its open transaction.
//! 2. **Read the resume position from the committed map**: the last committed
//!    entry of the partition, read once every transaction that was open in its
//!    map partition at the fence has ended (see [`committed_position`]).
//! 3. **Resume there**: the fetcher reads from its checkpoint, which is never past
//!    the map (a batch is acknowledged only once its transaction committed);
//!    records before the map's position are in the destination already and are
//!    dropped, not produced again.
//!
//! A batch's outcome is known only once its transaction ends, so a partition's
//! batches go one transaction at a time, each on the partition's own task: the
//! session's other partitions never wait for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kmirror_common::kafka::{
    client_config, is_group_authorization_error, ReadToEndConsumer, ReadToEndContext, RoleSettings,
};
use kmirror_common::offset_map::{map_partition, MapEntry, MapKey};
use kmirror_common::schema::ClusterSpec;
use kmirror_common::PartitionKey;
use kmirror_proto::v1::{Batch, BatchAck, ErrorKind, WriteError};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::partitioner::PartitionMapping;
use crate::producer::{
    batch_size_for, classify, BatchTracker, Completion, DestinationProducer, FailureClass,
};
use crate::send::{error_kind, produce_map_entry, produce_records, write_error, Target};
use crate::telemetry::BatchTelemetry;
use crate::WriterShared;

/// How long a transaction may stay open before the broker aborts it. It bounds
/// how long a stalled writer's open transaction holds back the destination's
/// read_committed consumers when no new owner fences it first.
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// How long fencing, committing or aborting may take.
const TRANSACTION_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The first map window read back from the end when looking for a partition's
/// last entry; each further window is four times larger.
const FIRST_MAP_WINDOW: i64 = 2_000;

/// A batch of an exactly-once partition, handed to its task.
pub struct TxnBatch {
    pub token: u64,
    pub batch: Batch,
    pub cluster: ClusterSpec,
    pub limit: Option<i64>,
    pub telemetry: BatchTelemetry,
}

/// The outcome of a batch, back to the session.
pub struct TxnOutcome {
    pub token: u64,
    pub partition: PartitionKey,
    pub ack: BatchAck,
    /// The partition wrote nothing more after this batch: it halts until the
    /// fetcher restarts it.
    pub halted: bool,
}

/// The transactional id of a source partition, the same on every writer so that
/// the next owner fences the previous one. Topic names cannot hold '/', so the
/// parts cannot run into each other.
pub fn transactional_id(fleet: &str, partition: &PartitionKey) -> String {
    format!(
        "kmirror/{fleet}/{}/{}/{}",
        partition.flow, partition.topic, partition.partition
    )
}

/// Starts the task of one exactly-once partition; batches sent to the returned
/// channel are written in order, their outcomes sent to `outcome_tx`. The task
/// ends when the channel closes, after the batches already in it.
pub fn spawn(
    shared: Arc<WriterShared>,
    partition: PartitionKey,
    outcome_tx: mpsc::UnboundedSender<TxnOutcome>,
) -> mpsc::UnboundedSender<TxnBatch> {
    let (batch_tx, batch_rx) = mpsc::unbounded_channel();
    tokio::spawn(run(shared, partition, batch_rx, outcome_tx));
    batch_tx
}

/// The partition's open transactional producer.
struct Opened {
    producer: Arc<DestinationProducer>,
    /// Source offsets below this are in the destination already.
    committed_until: i64,
}

async fn run(
    shared: Arc<WriterShared>,
    partition: PartitionKey,
    mut batch_rx: mpsc::UnboundedReceiver<TxnBatch>,
    outcome_tx: mpsc::UnboundedSender<TxnOutcome>,
) {
    let mut opened_opt: Option<Opened> = None;
    let mut halted_by: Option<String> = None;
    while let Some(item) = batch_rx.recv().await {
        let token = item.token;
        let (ack, halted) = match &halted_by {
            Some(reason) => {
                let message = format!(
                    "partition {partition} is halted after an earlier failure ({reason}); restart it from its checkpoint"
                );
                let error = write_error(ErrorKind::PartitionHalted, message, -1);
                (failed_ack(item, &partition, error), true)
            }
            None => match write(&shared, &partition, &mut opened_opt, item).await {
                Ok(ack) => {
                    let halted = ack.error.is_some();
                    (ack, halted)
                }
                Err((ack, error)) => {
                    halted_by = Some(error.message.clone());
                    if let Some(opened) = opened_opt.take() {
                        close(opened.producer, true);
                    }
                    (ack, true)
                }
            },
        };
        if halted && halted_by.is_none() {
            halted_by = ack.error.as_ref().map(|error| error.message.clone());
        }
        let outcome = TxnOutcome {
            token,
            partition: partition.clone(),
            ack,
            halted,
        };
        if outcome_tx.send(outcome).is_err() {
            break;
        }
    }
    if let Some(opened) = opened_opt {
        close(opened.producer, false);
    }
}

/// Writes one batch in one transaction. On failure, the transaction is aborted
/// and the error returned with the ack that carries it.
async fn write(
    shared: &WriterShared,
    partition: &PartitionKey,
    opened_opt: &mut Option<Opened>,
    item: TxnBatch,
) -> Result<BatchAck, (BatchAck, WriteError)> {
    let mapping = PartitionMapping::new(
        partition.partition,
        item.batch.source_partition_count,
        item.batch.dest_partition_count,
    );
    if !matches!(mapping, PartitionMapping::Identity(_)) {
        let message = format!(
            "exactly-once mode needs the destination topic {} to have as many partitions as source topic {} ({}, not {}): records re-partitioned by key have no offset map entry to resume from",
            item.batch.dest_topic,
            partition.topic,
            item.batch.source_partition_count,
            item.batch.dest_partition_count
        );
        return Err(fail(
            item,
            partition,
            write_error(ErrorKind::Rejected, message, -1),
        ));
    }
    if opened_opt.is_none() {
        let batch_size = batch_size_for(item.limit);
        match open(shared, &item.cluster, batch_size, partition).await {
            Ok(opened) => *opened_opt = Some(opened),
            Err(error) => return Err(fail(item, partition, error)),
        }
    }
    let opened = opened_opt.as_mut().expect("opened above");
    let producer = opened.producer.clone();
    if item.batch.next_offset <= opened.committed_until {
        // Every record of it committed before the restart.
        debug!(%partition, seq = item.batch.seq, "batch already in the destination, dropped");
        return Ok(success(item, partition, None, -1, -1));
    }
    if let Err(error) = producer.begin_transaction() {
        let message = format!("cannot begin a transaction for {partition}: {error}");
        return Err(fail(
            item,
            partition,
            write_error(ErrorKind::DeliveryFailed, message, -1),
        ));
    }
    let (completion_tx, mut completion_rx) = mpsc::unbounded_channel();
    let tracker = BatchTracker::new(item.token, completion_tx.clone());
    let target = Target {
        producer: &producer,
        cluster: &item.cluster.name,
        limit: item.limit,
        skip_below: opened.committed_until,
    };
    let mut map_runs = Vec::new();
    let (produced, cut_short) = produce_records(
        shared,
        &target,
        &item.batch,
        partition,
        &tracker,
        &mut map_runs,
    )
    .await;
    let completion = reported(tracker, &mut completion_rx).await;
    if let Some(failure) = completion.failure {
        shared.deliverability.failed(&item.cluster.name, &failure);
        let message = format!(
            "delivery to {} failed for {partition}: {failure}",
            item.batch.dest_topic
        );
        abort(&producer).await;
        let error = write_error(error_kind(classify(&failure)), message, -1);
        return Err(fail(item, partition, error));
    }
    let committed_offset = cut_short
        .as_ref()
        .map(|error| error.offset)
        .unwrap_or(item.batch.next_offset);
    if produced > 0 && completion.dest_partition >= 0 {
        let consecutive = completion.dest_offset - completion.dest_first_offset + 1
            == completion.delivered as i64;
        let read_from = item
            .batch
            .read_from
            .map(|read_from| read_from.max(opened.committed_until));
        let entry_opt = MapEntry::from_runs(
            map_runs,
            committed_offset,
            &item.batch.dest_topic,
            completion.dest_partition,
            completion.dest_first_offset,
            consecutive,
        )
        .map(|entry| entry.read_from(read_from));
        if let Some(entry) = entry_opt {
            let key = MapKey {
                flow: partition.flow.as_str().to_string(),
                topic: partition.topic.clone(),
                partition: partition.partition,
                first_offset: entry.first_offset(),
            };
            if let Err(failure) = send_entry(
                shared,
                &producer,
                &key,
                &entry,
                &completion_tx,
                &mut completion_rx,
            )
            .await
            {
                let message = format!(
                    "the offset map entry of a batch of {partition} could not be written to {}: {failure}",
                    shared.offset_map_topic
                );
                abort(&producer).await;
                let error = write_error(error_kind(classify(&failure)), message, -1);
                return Err(fail(item, partition, error));
            }
        }
    }
    if !shared.lease_is_live() {
        abort(&producer).await;
        let message = "the writer lost its etcd lease and commits nothing until it registers again"
            .to_string();
        return Err(fail(
            item,
            partition,
            write_error(ErrorKind::DeliveryFailed, message, -1),
        ));
    }
    let committing = producer.clone();
    let committed = blocking(move || committing.commit_transaction(TRANSACTION_CALL_TIMEOUT)).await;
    if let Err(failure) = committed {
        warn!(%partition, error = %failure, "transaction not committed, partition halted");
        let message =
            format!("the transaction of a batch of {partition} did not commit: {failure}");
        // Fenced by the partition's next owner, or failed: either way the batch
        // is not written, and the fetcher restarts the partition from its
        // checkpoint if it still owns it.
        abort(&producer).await;
        return Err(fail(
            item,
            partition,
            write_error(ErrorKind::DeliveryFailed, message, -1),
        ));
    }
    shared.deliverability.delivered(&item.cluster.name);
    count_transaction("committed");
    opened.committed_until = opened.committed_until.max(committed_offset);
    Ok(success(
        item,
        partition,
        cut_short,
        completion.dest_partition,
        completion.dest_offset,
    ))
}

/// Fences the partition's previous producer and reads where its committed
/// batches end.
async fn open(
    shared: &WriterShared,
    cluster: &ClusterSpec,
    batch_size: i64,
    partition: &PartitionKey,
) -> Result<Opened, WriteError> {
    let started = Instant::now();
    let id = transactional_id(&shared.fleet, partition);
    let producer = shared
        .create_transactional_producer(cluster, batch_size, &id)
        .map_err(|error| {
            let message = format!(
                "cannot create the transactional producer {id} for cluster {}: {error}",
                cluster.name
            );
            write_error(ErrorKind::DeliveryFailed, message, -1)
        })?;
    let producer = Arc::new(producer);
    let fencing = producer.clone();
    if let Err(error) = blocking(move || fencing.init_transactions(TRANSACTION_CALL_TIMEOUT)).await
    {
        close(producer, true);
        let message = format!(
            "cannot initialise transactional id {id} in cluster {} (fencing its previous producer): {error}",
            cluster.name
        );
        let kind = match classify(&error) {
            FailureClass::Rejected => ErrorKind::Rejected,
            _ => ErrorKind::DeliveryFailed,
        };
        return Err(write_error(kind, message, -1));
    }
    let (cluster_spec, map_topic, key) = (
        cluster.clone(),
        shared.offset_map_topic.clone(),
        partition.clone(),
    );
    let position = blocking(move || committed_position(&cluster_spec, &map_topic, &key)).await;
    let committed_until = match position {
        Ok(position_opt) => position_opt.unwrap_or(i64::MIN),
        Err(error) => {
            close(producer, true);
            let message = format!(
                "cannot read the committed position of {partition} from {} in cluster {}: {error}",
                shared.offset_map_topic, cluster.name
            );
            return Err(write_error(ErrorKind::DeliveryFailed, message, -1));
        }
    };
    kmirror_common::metrics::metrics().transactional_opens.inc();
    info!(
        %partition,
        transactional_id = %id,
        committed_until = (committed_until != i64::MIN).then_some(committed_until),
        took_ms = started.elapsed().as_millis() as u64,
        "exactly-once partition opened: previous producer fenced, resume position read from the offset map"
    );
    Ok(Opened {
        producer,
        committed_until,
    })
}

/// Produces the batch's map entry in its transaction and waits for its delivery.
async fn send_entry(
    shared: &WriterShared,
    producer: &DestinationProducer,
    key: &MapKey,
    entry: &MapEntry,
    completion_tx: &mpsc::UnboundedSender<Completion>,
    completion_rx: &mut mpsc::UnboundedReceiver<Completion>,
) -> Result<(), KafkaError> {
    let tracker = BatchTracker::new(0, completion_tx.clone());
    produce_map_entry(shared, producer, key, entry, &tracker).await?;
    match reported(tracker, completion_rx).await.failure {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

/// Releases the sender's hold on `tracker` and waits for its report.
async fn reported(
    tracker: Arc<BatchTracker>,
    completion_rx: &mut mpsc::UnboundedReceiver<Completion>,
) -> Completion {
    tracker.finish_sending();
    drop(tracker);
    completion_rx
        .recv()
        .await
        .expect("the tracker reports once")
}

/// The source offset after the partition's last committed batch, from the map;
/// `None` when the map holds no entry of it.
///
/// Entries become visible to a read_committed reader only up to the map
/// partition's last stable offset, which any open transaction there holds back,
/// other partitions' included. Every transaction open at the fence ends soon
/// (committed, aborted, or timed out), so the read waits until the last stable
/// offset passes the high watermark seen after the fence: from then on, every
/// entry committed before the fence is readable.
pub fn committed_position(
    cluster: &ClusterSpec,
    map_topic: &str,
    partition: &PartitionKey,
) -> Result<Option<i64>, KafkaError> {
    let flow = partition.flow.as_str();
    let map_partition = map_partition(flow, &partition.topic, partition.partition);
    let timeout = Duration::from_secs(10);
    let deadline = Instant::now() + TRANSACTION_TIMEOUT + Duration::from_secs(10);
    let (_, high) = map_consumer(cluster, "read_uncommitted")?.fetch_watermarks(
        map_topic,
        map_partition,
        timeout,
    )?;
    let consumer = map_consumer(cluster, "read_committed")?;
    let (low, stable) = loop {
        let (low, stable) = consumer.fetch_watermarks(map_topic, map_partition, timeout)?;
        if stable >= high {
            break (low, stable);
        }
        if Instant::now() > deadline {
            return Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut end = stable;
    let mut window = FIRST_MAP_WINDOW;
    while end > low {
        let start = end.saturating_sub(window).max(low);
        let found = last_entry_in(
            &consumer,
            map_topic,
            map_partition,
            start,
            end,
            partition,
            deadline,
        )?;
        if found.is_some() {
            return Ok(found);
        }
        end = start;
        window = window.saturating_mul(4);
    }
    Ok(None)
}

/// The `next_offset` of the partition's last entry among map offsets
/// `start..end`.
fn last_entry_in(
    consumer: &ReadToEndConsumer,
    map_topic: &str,
    map_partition: i32,
    start: i64,
    end: i64,
    partition: &PartitionKey,
    deadline: Instant,
) -> Result<Option<i64>, KafkaError> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(map_topic, map_partition, Offset::Offset(start))?;
    consumer.assign(&assignment)?;
    let mut found = None;
    loop {
        if Instant::now() > deadline {
            return Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        let message = match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            // An end told late, of the window read before, is passed over: the
            // consumer's position says whether this window's end is reached.
            Some(Err(KafkaError::PartitionEOF(_))) => {
                if position_at_least(consumer, map_topic, map_partition, end)? {
                    break;
                }
                continue;
            }
            Some(Err(error)) if is_group_authorization_error(&error) => continue,
            Some(message) => message?,
        };
        if message.offset() >= end {
            break;
        }
        if let (Some(key), Some(value)) = (message.key(), message.payload()) {
            if let (Ok(key), Ok(entry)) = (MapKey::decode(key), MapEntry::decode(value)) {
                if key.flow == partition.flow.as_str()
                    && key.topic == partition.topic
                    && key.partition == partition.partition
                {
                    found = Some(entry.next_offset);
                }
            }
        }
        if message.offset() + 1 >= end {
            break;
        }
    }
    consumer.unassign()?;
    Ok(found)
}

/// Whether the consumer's position in the map partition is at `end` or past it.
fn position_at_least(
    consumer: &ReadToEndConsumer,
    map_topic: &str,
    map_partition: i32,
    end: i64,
) -> Result<bool, KafkaError> {
    let position = consumer.position()?;
    Ok(position
        .find_partition(map_topic, map_partition)
        .is_some_and(|element| matches!(element.offset(), Offset::Offset(offset) if offset >= end)))
}

/// A consumer of the map topic; it commits nothing and needs no ACL on any group.
fn map_consumer(
    cluster: &ClusterSpec,
    isolation: &'static str,
) -> Result<ReadToEndConsumer, KafkaError> {
    let required = [
        ("client.id", "kmirror-writer-map"),
        // librdkafka assigns partitions only to a consumer with a group id; this
        // one joins no group, and a refusal of the group is skipped.
        ("group.id", "kmirror-writer-map"),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("enable.partition.eof", "true"),
        ("isolation.level", isolation),
        ("fetch.wait.max.ms", "100"),
    ];
    let role = RoleSettings {
        required: &required,
        defaults: &[],
    };
    client_config(cluster, &role, &[])
        .map_err(|error| KafkaError::ClientCreation(error.to_string()))?
        .create_with_context(ReadToEndContext)
}

async fn abort(producer: &Arc<DestinationProducer>) {
    count_transaction("aborted");
    let aborting = producer.clone();
    if let Err(error) = blocking(move || aborting.abort_transaction(TRANSACTION_CALL_TIMEOUT)).await
    {
        debug!(%error, "abort of a failed transaction failed; the next owner fences it");
    }
}

fn count_transaction(outcome: &'static str) {
    kmirror_common::metrics::metrics()
        .transactions
        .get_or_create(&vec![("outcome", outcome.to_string())])
        .inc();
}

/// Drops a producer off the async threads; `failed` ones are not flushed.
fn close(producer: Arc<DestinationProducer>, failed: bool) {
    tokio::task::spawn_blocking(move || {
        if !failed {
            let _ = producer.flush(TRANSACTION_CALL_TIMEOUT);
        }
        drop(producer);
    });
}

async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    tokio::task::spawn_blocking(call)
        .await
        .unwrap_or(Err(KafkaError::Canceled))
}

fn success(
    item: TxnBatch,
    partition: &PartitionKey,
    cut_short: Option<WriteError>,
    dest_partition: i32,
    dest_offset: i64,
) -> BatchAck {
    let mut telemetry = item.telemetry;
    if let Some(error) = &cut_short {
        telemetry.cut_at(&item.batch, error.offset);
    }
    let committed_offset = cut_short
        .as_ref()
        .map(|error| error.offset)
        .unwrap_or(item.batch.next_offset);
    let trace_context = telemetry.finish(
        partition,
        committed_offset,
        cut_short.as_ref(),
        dest_partition,
        dest_offset,
    );
    BatchAck {
        source: item.batch.source,
        epoch: item.batch.epoch,
        seq: item.batch.seq,
        committed_offset,
        dest_partition,
        dest_offset,
        error: cut_short,
        trace_context,
    }
}

fn failed_ack(item: TxnBatch, partition: &PartitionKey, error: WriteError) -> BatchAck {
    let trace_context = item.telemetry.finish(partition, -1, Some(&error), -1, -1);
    BatchAck {
        source: item.batch.source,
        epoch: item.batch.epoch,
        seq: item.batch.seq,
        committed_offset: -1,
        dest_partition: -1,
        dest_offset: -1,
        error: Some(error),
        trace_context,
    }
}

fn fail(item: TxnBatch, partition: &PartitionKey, error: WriteError) -> (BatchAck, WriteError) {
    (failed_ack(item, partition, error.clone()), error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmirror_common::FlowName;

    #[test]
    fn a_partitions_transactional_id_names_fleet_flow_topic_and_partition() {
        let partition = PartitionKey {
            flow: FlowName::new("dr").unwrap(),
            topic: "orders.eu".to_string(),
            partition: 7,
        };
        assert_eq!(
            transactional_id("prod", &partition),
            "kmirror/prod/dr/orders.eu/7"
        );
    }
}
