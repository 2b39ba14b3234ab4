//! The source consumer of one flow, run on a dedicated thread: librdkafka's poll
//! loop is blocking, so it is bridged to the async core by channels.
//!
//! Partitions are assigned explicitly with the offsets the core supplies (no
//! consumer group, no rebalancing). Each poll drains what librdkafka already holds
//! and sends it to the core as one batch per partition, so batches go out when a
//! poll returns rather than when a size fills. Every batch carries the
//! partition's assignment generation: batches fetched before a restart are dropped
//! by the core.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use kmirror_common::cluster_access::cluster_access;
use kmirror_common::kafka::{client_config, RoleSettings};
use kmirror_common::schema::ClusterSpec;
use kmirror_common::{ClusterName, FlowName, PartitionKey};
use kmirror_proto::packed::{PackedBatch, PackedBuilder, PushError};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::batch_poll::{BatchConsumer, MessageBatch, RawMessage};
use crate::budget::{InFlightBudget, Reservation};
use crate::telemetry::SourceEnds;
use record::SourceRecord;

mod record;

mod refusals;

pub use refusals::Refusal;

/// Most bytes of record data one poll round hands to the core.
const MAX_ROUND_BYTES: usize = 8 * 1024 * 1024;
/// How often the routed partitions are routed again (see `Poller::route_again`).
const ROUTE_INTERVAL: Duration = Duration::from_millis(500);
/// Most records in one batch.
const MAX_BATCH_RECORDS: usize = 5_000;
/// How long the consumer thread waits for a partition's log start and end
/// offsets after the source refused its position.
const WATERMARKS_TIMEOUT: Duration = Duration::from_secs(5);
/// Most records taken from librdkafka in one call.
pub const MAX_POLL_BATCH: usize = 1_000;
/// Most bytes of packed records in one batch (the gRPC message stays a few MiB).
const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Least room a batch's buffer starts with. Each run of records is announced
/// before it is packed (`PartitionGathering::expect`), so a buffer starts sized
/// for what comes and doubles only when headers take it past that. Every
/// partition with a batch in flight pays this floor: at 2 000 partitions a
/// 64 KiB floor held 80 MiB for batches of a few hundred bytes.
const MIN_BATCH_BYTES: usize = 1024;
/// Room beyond `MAX_BATCH_BYTES` a batch's buffer may be given: a batch is full
/// once it reaches that size, so its last record can take it past.
const BATCH_SLACK_BYTES: usize = 64 * 1024;
/// What a record takes in the packed layout beyond its key and value, near enough
/// to size a buffer: attributes, offset and timestamp deltas, lengths, and a
/// small header.
const PACKED_RECORD_OVERHEAD: usize = 32;

/// Settings of every source consumer (the cluster's own properties override them).
/// `read_committed` so aborted transactions are never mirrored; offsets are never
/// committed to Kafka (checkpoints live in etcd).
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("group.id", "kmirror"),
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("enable.partition.eof", "true"),
    ("isolation.level", "read_committed"),
    ("queued.max.messages.kbytes", "16384"),
    // librdkafka keeps up to this many records per partition prefetched (default
    // 100 000); each costs a few hundred bytes beyond its data, which for small
    // records would outweigh the 16 MiB cap above.
    ("queued.min.messages", "20000"),
    ("fetch.max.bytes", "16777216"),
    ("fetch.wait.max.ms", "100"),
    // When the fetch queue is full, librdkafka waits this long before fetching
    // again (default 1 s): the partition would stall for a second whenever the
    // writers lag a moment behind.
    ("fetch.queue.backoff.ms", "10"),
    // Source ends for the lag metrics, taken from the statistics (no requests).
    ("statistics.interval.ms", "1000"),
];

/// Settings the fetcher's bookkeeping depends on: positions live in etcd, never in
/// Kafka, and the end of a partition must be reported. A position the source no
/// longer has is reported (`auto.offset.reset=error`), never silently moved to
/// another end: the partition is held until an operator decides. They win over
/// the cluster's properties.
const CONSUMER_REQUIRED: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("enable.partition.eof", "true"),
    ("auto.offset.reset", "error"),
];

/// The source consumer's settings: what the fetcher requires, then the
/// cluster's properties (the operator's tuning and security), then the defaults.
fn source_config(cluster: &ClusterSpec) -> Result<ClientConfig, KafkaError> {
    let role = RoleSettings {
        required: CONSUMER_REQUIRED,
        defaults: CONSUMER_DEFAULTS,
    };
    client_config(cluster, &role, &[])
        .map_err(|error| KafkaError::ClientCreation(error.to_string()))
}

pub enum ConsumerCommand {
    Assign {
        topic: String,
        partition: i32,
        /// `None`: from the beginning of the partition.
        offset: Option<i64>,
        generation: u64,
    },
    Unassign {
        topic: String,
        partition: i32,
    },
    Pause {
        topic: String,
        partition: i32,
    },
    Resume {
        topic: String,
        partition: i32,
    },
}

/// What the consumer thread reports to the core.
pub enum Fetched {
    Batch {
        partition: PartitionKey,
        generation: u64,
        /// The records, packed, with their figures (count, bytes, timestamps).
        packed: PackedBatch,
        /// Where the consumer read from to get them, when it knows: the offsets
        /// from there to the first record hold none.
        read_from: Option<i64>,
        next_offset: i64,
        /// The batch's bytes in the fetcher's in-flight budget.
        reservation: Reservation,
    },
    /// The partition's position moved past offsets that hold no record
    /// (transaction markers, aborted records).
    Skip {
        partition: PartitionKey,
        generation: u64,
        next_offset: i64,
    },
    /// The source refused the partition's position (offset out of range) and
    /// stopped fetching it: its log start and end offsets, as read then
    /// (`None` when they could not be read).
    OutOfRange {
        partition: PartitionKey,
        generation: u64,
        position: i64,
        watermarks_opt: Option<(i64, i64)>,
    },
    /// The source cluster refused the consumer or one of its partitions.
    Refused(Refusal),
}

/// Numbers the consumers of the process (see [`Refusal::consumer_id`]).
static NEXT_CONSUMER_ID: AtomicU64 = AtomicU64::new(1);

/// Handle to a running consumer thread. Dropping it stops the thread.
pub struct ConsumerHandle {
    pub id: u64,
    command_tx: std_mpsc::Sender<ConsumerCommand>,
    pub cluster: ClusterSpec,
    /// Source end offsets of the partitions, for the lag metrics.
    pub ends: SourceEnds,
}

impl ConsumerHandle {
    pub fn send(&self, command: ConsumerCommand) {
        // A closed channel means the thread ended; the core notices through the
        // fetched channel and restarts the flow's partitions.
        let _ = self.command_tx.send(command);
    }
}

/// Starts the consumer thread of a flow.
pub fn spawn(
    flow: FlowName,
    cluster: ClusterSpec,
    fetched_tx: mpsc::Sender<Fetched>,
    budget: InFlightBudget,
) -> Result<ConsumerHandle, KafkaError> {
    let ends = SourceEnds::default();
    let context = SourceContext { ends: ends.clone() };
    let consumer: BaseConsumer<SourceContext> =
        source_config(&cluster)?.create_with_context(context)?;
    let consumer = BatchConsumer::new(consumer);
    let (command_tx, command_rx) = std_mpsc::channel();
    let id = NEXT_CONSUMER_ID.fetch_add(1, Ordering::Relaxed);
    let poller = Poller {
        flow,
        cluster: cluster.name.clone(),
        consumer_id: id,
        refusal_reported: false,
        refused_partitions: HashMap::new(),
        consumer,
        command_rx,
        fetched_tx,
        budget,
        generations: HashMap::new(),
        positions: HashMap::new(),
        from_log_start: HashSet::new(),
        routed_at: Instant::now(),
    };
    std::thread::Builder::new()
        .name("kmirror-consume".to_string())
        .spawn(move || poller.run())
        .expect("a consumer thread can be spawned");
    Ok(ConsumerHandle {
        id,
        command_tx,
        cluster,
        ends,
    })
}

/// A batch being gathered: each record is packed into the batch's one buffer
/// straight from librdkafka's message (the only copy of its data on the way to
/// the writer), with nothing allocated per record.
struct Gathering {
    packed: PackedBuilder,
    next_offset: i64,
}

impl Gathering {
    /// A batch whose buffer has room for `expected` bytes (within the bounds of a
    /// batch).
    fn new(expected: usize) -> Self {
        Self {
            packed: PackedBuilder::with_capacity(
                expected.clamp(MIN_BATCH_BYTES, MAX_BATCH_BYTES + BATCH_SLACK_BYTES),
            ),
            next_offset: 0,
        }
    }

    /// Makes room for `expected` more bytes, up to what the batch can still take.
    fn reserve(&mut self, expected: usize) {
        let room = (MAX_BATCH_BYTES + BATCH_SLACK_BYTES).saturating_sub(self.packed.encoded_len());
        self.packed.reserve(expected.min(room));
    }

    fn is_full(&self) -> bool {
        self.packed.record_count() as usize >= MAX_BATCH_RECORDS
            || self.packed.encoded_len() >= MAX_BATCH_BYTES
    }

    /// Packs the record; returns the bytes it added.
    fn add(&mut self, record: &impl SourceRecord) -> Result<usize, PushError> {
        let size_before = self.packed.encoded_len();
        record.pack_into(&mut self.packed)?;
        self.next_offset = record.offset() + 1;
        Ok(self.packed.encoded_len() - size_before)
    }

    /// Bytes the batch holds until acknowledged: its buffer as allocated (its
    /// packed records, which are also what the gRPC message carries, and the
    /// room left in it), so the in-flight budget bounds the memory the batches
    /// take whatever the number of partitions they spread over. A record's
    /// framing in the packed layout is all it costs beyond its data: kmirror
    /// builds no structure per record on either side of the hop (librdkafka's own
    /// per-message memory is capped by its queue settings).
    fn footprint(&self) -> usize {
        self.packed.capacity()
    }

    fn finish(self) -> (PackedBatch, i64) {
        (self.packed.finish(), self.next_offset)
    }
}

/// The batches one poll round gathers for one partition.
struct PartitionGathering {
    topic: String,
    partition: i32,
    generation: u64,
    batches: Vec<Gathering>,
    /// Bytes of the records announced by [`PartitionGathering::expect`] and not
    /// packed yet: what a batch's buffer is sized for.
    expected: usize,
}

impl PartitionGathering {
    fn new(topic: String, partition: i32, generation: u64) -> Self {
        Self {
            topic,
            partition,
            generation,
            batches: Vec::new(),
            expected: 0,
        }
    }

    fn is(&self, topic: &str, partition: i32) -> bool {
        self.partition == partition && self.topic == topic
    }

    /// Announces `bytes` of records about to be packed, so the batch's buffer
    /// grows once for them instead of doubling as they come.
    fn expect(&mut self, bytes: usize) {
        self.expected += bytes;
        if let Some(batch) = self.batches.last_mut().filter(|batch| !batch.is_full()) {
            batch.reserve(self.expected);
        }
    }

    fn add(&mut self, message: &impl SourceRecord) -> usize {
        if self.batches.last().is_none_or(Gathering::is_full) {
            self.batches.push(Gathering::new(self.expected));
        }
        let batch = self.batches.last_mut().expect("a batch was pushed");
        let added = match batch.add(message) {
            Ok(added) => added,
            Err(error) => {
                // librdkafka hands a partition's records over in order; should it
                // not, the record starts a batch of its own.
                warn!(topic = %self.topic, partition = self.partition, %error, "source record out of order");
                let mut batch = Gathering::new(self.expected);
                // A batch's first record is always accepted.
                let added = batch.add(message).unwrap_or(0);
                if !batch.packed.is_empty() {
                    self.batches.push(batch);
                }
                added
            }
        };
        self.expected = self.expected.saturating_sub(added);
        added
    }
}

/// Takes the source ends from the statistics, and keeps the end of a partition
/// (an error event for librdkafka) out of the logs.
struct SourceContext {
    ends: SourceEnds,
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {}
            error => warn!(%error, reason, "source client error"),
        }
    }

    /// Reads the source ends only: the statistics name every assigned partition
    /// (a few KiB each), and decoding all of them into `rdkafka::Statistics`
    /// every second cost memory and time in proportion to the partitions.
    fn stats_raw(&self, statistics: &[u8]) {
        if let Err(error) = self.ends.record_json(statistics) {
            warn!(%error, "cannot read the source consumer's statistics");
        }
    }
}

impl ConsumerContext for SourceContext {}

struct Poller {
    flow: FlowName,
    cluster: ClusterName,
    consumer_id: u64,
    /// Whether a refusal of the consumer was reported (once is enough: the core
    /// drops the consumer).
    refusal_reported: bool,
    /// Partitions whose refusal was reported, with the generation it was met under.
    refused_partitions: HashMap<(String, i32), u64>,
    consumer: BatchConsumer<SourceContext>,
    command_rx: std_mpsc::Receiver<ConsumerCommand>,
    fetched_tx: mpsc::Sender<Fetched>,
    budget: InFlightBudget,
    generations: HashMap<(String, i32), u64>,
    /// Offset after the last record handed to the core, per partition.
    positions: HashMap<(String, i32), i64>,
    /// Partitions started from the beginning that sent no batch yet.
    from_log_start: HashSet<(String, i32)>,
    /// When the routed partitions were last routed again.
    routed_at: Instant,
}

impl Poller {
    fn run(mut self) {
        debug!(flow = %self.flow, "consumer thread started");
        loop {
            if !self.apply_commands() {
                break;
            }
            if self.generations.is_empty() {
                // Nothing assigned: wait for a command instead of polling.
                match self.command_rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(command) => {
                        self.apply(command);
                        continue;
                    }
                    Err(std_mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            if !self.poll_round() {
                break;
            }
        }
        debug!(flow = %self.flow, "consumer thread stopped");
    }

    /// Applies every queued command; false once the core is gone.
    fn apply_commands(&mut self) -> bool {
        loop {
            match self.command_rx.try_recv() {
                Ok(command) => self.apply(command),
                Err(std_mpsc::TryRecvError::Empty) => return true,
                Err(std_mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn apply(&mut self, command: ConsumerCommand) {
        match command {
            ConsumerCommand::Assign {
                topic,
                partition,
                offset,
                generation,
            } => {
                let key = (topic.clone(), partition);
                if self.generations.contains_key(&key) {
                    self.unassign(&topic, partition);
                }
                let mut list = TopicPartitionList::new();
                let start = offset.map_or(Offset::Beginning, Offset::Offset);
                if let Err(error) = list.add_partition_offset(&topic, partition, start) {
                    warn!(flow = %self.flow, topic, partition, %error, "invalid start offset");
                    return;
                }
                // Routed before it is assigned, so that none of its records takes
                // the consumer's queue: the batch queue is where they are read.
                if !self.consumer.route(&topic, partition) {
                    warn!(flow = %self.flow, topic, partition, "cannot route source partition to the batch queue");
                    return;
                }
                match self.consumer.consumer().incremental_assign(&list) {
                    Ok(()) => {
                        self.generations.insert(key.clone(), generation);
                        if offset.is_none() {
                            self.from_log_start.insert(key.clone());
                        } else {
                            self.from_log_start.remove(&key);
                        }
                        self.positions.insert(key, offset.unwrap_or(0));
                    }
                    Err(error) => {
                        warn!(flow = %self.flow, topic, partition, %error, "cannot assign source partition")
                    }
                }
            }
            ConsumerCommand::Unassign { topic, partition } => self.unassign(&topic, partition),
            ConsumerCommand::Pause { topic, partition } => {
                let list = single(&topic, partition);
                if let Err(error) = self.consumer.consumer().pause(&list) {
                    debug!(topic, partition, %error, "cannot pause partition");
                }
            }
            ConsumerCommand::Resume { topic, partition } => self.resume(&topic, partition),
        }
    }

    /// Resumes a paused partition from the fetcher's own position: the offset after
    /// the last record (or skipped offset) handed to the core.
    ///
    /// librdkafka would resume from where the application last read, which it
    /// notes at the pause. A partition end taken through the batch call counts as
    /// read up to one past the end, so a partition paused while tailing would
    /// resume one record too far and skip that record. Seeking before resuming
    /// (which also drops what was fetched before it) makes the next record the one
    /// after the last sent, whatever librdkafka noted.
    fn resume(&mut self, topic: &str, partition: i32) {
        let key = (topic.to_string(), partition);
        let Some(&next_offset) = self.positions.get(&key) else {
            return;
        };
        let consumer = self.consumer.consumer();
        if let Err(error) = consumer.seek(
            topic,
            partition,
            Offset::Offset(next_offset),
            Duration::ZERO,
        ) {
            warn!(flow = %self.flow, topic, partition, next_offset, %error, "cannot position paused partition to resume it");
        }
        if let Err(error) = consumer.resume(&single(topic, partition)) {
            warn!(flow = %self.flow, topic, partition, %error, "cannot resume partition");
        }
    }

    fn unassign(&mut self, topic: &str, partition: i32) {
        let key = (topic.to_string(), partition);
        if self.generations.remove(&key).is_none() {
            return;
        }
        self.positions.remove(&key);
        if let Err(error) = self
            .consumer
            .consumer()
            .incremental_unassign(&single(topic, partition))
        {
            warn!(flow = %self.flow, topic, partition, %error, "cannot unassign source partition");
        }
    }

    /// One round: whatever waits on the consumer's own queue (statistics, errors),
    /// then the batch queue, waiting briefly for its first records, then whatever
    /// else is already fetched, handed to the core. False once the core is gone.
    fn poll_round(&mut self) -> bool {
        let mut round = Round::default();
        while round.bytes < MAX_ROUND_BYTES {
            let Some(result) = self.consumer.consumer().poll(Duration::ZERO) else {
                break;
            };
            match result {
                // Partitions are routed before they are assigned, so records and
                // ends come through the batch queue; should a record come here
                // all the same, it is not lost.
                Ok(message) => {
                    round.gather(&self.generations, &message);
                }
                Err(KafkaError::PartitionEOF(_)) => {}
                Err(error) => {
                    warn!(flow = %self.flow, %error, "source consumer error");
                    if !self.report_refusal(None, &error) {
                        return false;
                    }
                    break;
                }
            }
        }
        if self.routed_at.elapsed() >= ROUTE_INTERVAL {
            self.route_again();
        }
        let mut wait = if round.bytes == 0 {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        while round.bytes < MAX_ROUND_BYTES {
            let batch = self.consumer.poll_batch(wait, MAX_POLL_BATCH);
            if batch.is_empty() {
                break;
            }
            wait = Duration::ZERO;
            round.expect(&self.generations, &batch);
            for message in batch.iter() {
                match message.error() {
                    None => {
                        round.gather(&self.generations, &message);
                    }
                    // Everything before the end offset was read: records, and
                    // transaction markers and aborted records, which are not.
                    Some(RDKafkaErrorCode::PartitionEOF) => round.end(&message),
                    // The source no longer has the position (librdkafka stopped
                    // fetching the partition): the core decides what it means.
                    Some(RDKafkaErrorCode::AutoOffsetReset) => round.out_of_range(&message),
                    Some(error) => {
                        let error = KafkaError::MessageConsumption(error);
                        warn!(flow = %self.flow, topic = message.topic(), partition = message.partition(), %error, "source consumer error");
                        let key = (message.topic().to_string(), message.partition());
                        round.errors.push((key, error));
                    }
                }
            }
        }
        for ((topic, partition), error) in std::mem::take(&mut round.errors) {
            if !self.report_refusal(Some((&topic, partition)), &error) {
                return false;
            }
        }
        if round.bytes > 0 || !round.ends.is_empty() {
            cluster_access().answered(&self.cluster);
        }
        let gathering = round.partitions;
        for PartitionGathering {
            topic,
            partition,
            generation,
            batches,
            ..
        } in gathering
        {
            for batch in batches {
                // Waits while the fetcher's in-flight budget is spent: the source
                // is then read no further than the writers keep up with.
                let reservation = self.budget.reserve_blocking(batch.footprint());
                let (packed, next_offset) = batch.finish();
                let key = (topic.clone(), partition);
                // Started from the beginning: read from the log start, as the
                // fetch that brought the batch told it.
                let read_from = if self.from_log_start.remove(&key) {
                    self.consumer.cached_log_start(&topic, partition)
                } else {
                    self.positions.get(&key).copied()
                };
                self.positions.insert(key, next_offset);
                let fetched = Fetched::Batch {
                    partition: PartitionKey::new(self.flow.clone(), topic.clone(), partition),
                    generation,
                    packed,
                    read_from,
                    next_offset,
                    reservation,
                };
                if self.fetched_tx.blocking_send(fetched).is_err() {
                    return false;
                }
            }
        }
        for (key, refused) in round.out_of_range {
            if !self.report_out_of_range(key, refused) {
                return false;
            }
        }
        // At the end of a partition, what follows its last record (a transaction
        // marker, aborted records) is reported so the checkpoint, and the lag,
        // reach the end.
        for (key, end) in round.ends {
            let (Some(&generation), Some(&sent)) =
                (self.generations.get(&key), self.positions.get(&key))
            else {
                continue;
            };
            if end <= sent {
                continue;
            }
            self.positions.insert(key.clone(), end);
            let skip = Fetched::Skip {
                partition: PartitionKey::new(self.flow.clone(), key.0, key.1),
                generation,
                next_offset: end,
            };
            if self.fetched_tx.blocking_send(skip).is_err() {
                return false;
            }
        }
        true
    }

    /// Tells the core that the source refused a partition's position, with its
    /// log start and end offsets read now. The position is the fetcher's own
    /// (the offset after the last record handed over), which is where the refused
    /// fetch was made. False once the core is gone.
    fn report_out_of_range(&mut self, key: (String, i32), refused: i64) -> bool {
        let (Some(&generation), Some(&sent)) =
            (self.generations.get(&key), self.positions.get(&key))
        else {
            return true;
        };
        let position = if refused >= 0 { refused } else { sent };
        let watermarks_opt = match self.consumer.consumer().fetch_watermarks(
            &key.0,
            key.1,
            WATERMARKS_TIMEOUT,
        ) {
            Ok(watermarks) => Some(watermarks),
            Err(error) => {
                warn!(flow = %self.flow, topic = key.0, partition = key.1, %error, "cannot read the source offsets of a partition whose position was refused");
                None
            }
        };
        warn!(flow = %self.flow, topic = key.0, partition = key.1, position, ?watermarks_opt, "source refused the partition's position (offset out of range)");
        let fetched = Fetched::OutOfRange {
            partition: PartitionKey::new(self.flow.clone(), key.0, key.1),
            generation,
            position,
            watermarks_opt,
        };
        self.fetched_tx.blocking_send(fetched).is_ok()
    }

    /// Routes the assigned partitions again. librdkafka undoes a partition's routing
    /// when its fetching stops (an unassignment, a restart from the checkpoint) and
    /// then leaves its records on the partition's own queue; routing it again
    /// moves them, in order, to the batch queue.
    fn route_again(&mut self) {
        for (topic, partition) in self.generations.keys() {
            self.consumer.route(topic, *partition);
        }
        self.routed_at = Instant::now();
    }
}

/// The records one poll round gathered, per partition.
#[derive(Default)]
struct Round {
    partitions: Vec<PartitionGathering>,
    /// Where the previous record went: librdkafka hands records over in runs per
    /// partition, so most records find their batch without a lookup.
    current_opt: Option<usize>,
    bytes: usize,
    /// Partitions whose end was reached, with the end offset, in order.
    ends: Vec<((String, i32), i64)>,
    /// Partitions whose position the source refused, with the refused offset.
    out_of_range: Vec<((String, i32), i64)>,
    /// Errors of partitions (a fetch an ACL denies, ...).
    errors: Vec<((String, i32), KafkaError)>,
}

impl Round {
    /// Notes the end of a partition. Its position is the end event's offset (not
    /// the consumer's position, which librdkafka moves one past it when the event
    /// comes through a batch).
    fn end(&mut self, event: &RawMessage<'_>) {
        let key = (event.topic().to_string(), event.partition());
        match self.ends.iter_mut().find(|(ended, _)| *ended == key) {
            Some((_, end)) => *end = (*end).max(event.offset()),
            None => self.ends.push((key, event.offset())),
        }
    }

    /// Notes a partition whose position the source refused.
    fn out_of_range(&mut self, event: &RawMessage<'_>) {
        let key = (event.topic().to_string(), event.partition());
        if !self.out_of_range.iter().any(|(refused, _)| *refused == key) {
            self.out_of_range.push((key, event.offset()));
        }
    }

    /// Packs the record into its partition's batch; false if its partition is not
    /// assigned (a record fetched before an unassignment).
    fn gather(
        &mut self,
        generations: &HashMap<(String, i32), u64>,
        record: &impl SourceRecord,
    ) -> bool {
        let (topic, partition) = (record.topic(), record.partition());
        let index = match self
            .current_opt
            .filter(|&index| self.partitions[index].is(topic, partition))
            .or_else(|| {
                self.partitions
                    .iter()
                    .position(|gathered| gathered.is(topic, partition))
            }) {
            Some(index) => index,
            None => {
                let key = (topic.to_string(), partition);
                let Some(&generation) = generations.get(&key) else {
                    return false;
                };
                self.partitions
                    .push(PartitionGathering::new(key.0, partition, generation));
                self.partitions.len() - 1
            }
        };
        self.current_opt = Some(index);
        self.bytes += self.partitions[index].add(record);
        true
    }

    /// Sizes the batches for the records of `batch` before they are gathered:
    /// librdkafka hands them over in runs per partition, and each run's bytes are
    /// announced to its partition's batch at once.
    fn expect(&mut self, generations: &HashMap<(String, i32), u64>, batch: &MessageBatch<'_>) {
        let mut run: Option<(RawMessage<'_>, usize)> = None;
        for message in batch.iter().filter(|message| message.error().is_none()) {
            let bytes = message.key().map_or(0, <[u8]>::len)
                + message.payload().map_or(0, <[u8]>::len)
                + PACKED_RECORD_OVERHEAD;
            match &mut run {
                Some((first, run_bytes)) if first.same_partition(&message) => *run_bytes += bytes,
                _ => {
                    if let Some((first, run_bytes)) = run.replace((message, bytes)) {
                        self.expect_run(generations, &first, run_bytes);
                    }
                }
            }
        }
        if let Some((first, run_bytes)) = run {
            self.expect_run(generations, &first, run_bytes);
        }
    }

    fn expect_run(
        &mut self,
        generations: &HashMap<(String, i32), u64>,
        first: &RawMessage<'_>,
        bytes: usize,
    ) {
        let (topic, partition) = (first.topic(), first.partition());
        if let Some(gathering) = self
            .partitions
            .iter_mut()
            .find(|gathering| gathering.is(topic, partition))
        {
            gathering.expect(bytes);
            return;
        }
        let key = (topic.to_string(), partition);
        if let Some(&generation) = generations.get(&key) {
            let mut gathering = PartitionGathering::new(key.0, partition, generation);
            gathering.expect(bytes);
            self.partitions.push(gathering);
        }
    }
}

fn single(topic: &str, partition: i32) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, partition);
    list
}

#[cfg(test)]
mod tests;
