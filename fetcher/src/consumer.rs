//! The source consumer of one flow, run on a dedicated thread: librdkafka's poll
//! loop is blocking, so it is bridged to the async core by channels.
//!
//! Partitions are assigned explicitly with the offsets the core supplies (no
//! consumer group, no rebalancing). Each poll drains what librdkafka already holds
//! and sends it to the core as one batch per partition, so batches go out when a
//! poll returns rather than when a size fills. Every batch carries the
//! partition's assignment generation: batches fetched before a restart are dropped
//! by the core.

use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use kmirror_common::kafka::client_config;
use kmirror_common::schema::ClusterSpec;
use kmirror_common::{FlowName, PartitionKey};
use kmirror_proto::packed::{PackedBatch, PackedBuilder, PushError};
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message, Timestamp};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::budget::{InFlightBudget, Reservation};
use crate::telemetry::SourceEnds;

/// Most bytes of record data one poll round hands to the core.
const MAX_ROUND_BYTES: usize = 8 * 1024 * 1024;
/// How often, at most, the consumer's positions are read to find offsets past
/// the last record (transaction markers) at the end of a partition.
const SKIP_REPORT_INTERVAL: Duration = Duration::from_millis(200);
/// Most records in one batch.
const MAX_BATCH_RECORDS: usize = 5_000;
/// Most bytes of packed records in one batch (the gRPC message stays a few MiB).
const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Room a batch's buffer starts with; it doubles as records come.
const INITIAL_BATCH_BYTES: usize = 64 * 1024;

/// Settings of every source consumer (the cluster's own properties override them).
/// `read_committed` so aborted transactions are never mirrored; offsets are never
/// committed to Kafka (checkpoints live in etcd).
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("group.id", "kmirror"),
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("enable.partition.eof", "true"),
    ("isolation.level", "read_committed"),
    ("auto.offset.reset", "earliest"),
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
/// Kafka, and the end of a partition must be reported. They win over the cluster's
/// properties.
const CONSUMER_REQUIRED: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("enable.partition.eof", "true"),
];

/// The source consumer's settings: the defaults, then the cluster's properties
/// (the operator's tuning and security win), then what the fetcher requires.
fn source_config(cluster: &ClusterSpec) -> ClientConfig {
    let mut config = client_config(cluster, CONSUMER_DEFAULTS);
    for (key, value) in &cluster.properties {
        config.set(key, value);
    }
    for (key, value) in CONSUMER_REQUIRED {
        config.set(*key, *value);
    }
    config
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
}

/// Handle to a running consumer thread. Dropping it stops the thread.
pub struct ConsumerHandle {
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
    let context = SourceContext {
        end_reached: AtomicBool::new(false),
        ends: ends.clone(),
    };
    let consumer: BaseConsumer<SourceContext> =
        source_config(&cluster).create_with_context(context)?;
    let (command_tx, command_rx) = std_mpsc::channel();
    let poller = Poller {
        flow,
        consumer,
        command_rx,
        fetched_tx,
        budget,
        generations: HashMap::new(),
        positions: HashMap::new(),
        skips_reported_at: Instant::now(),
    };
    std::thread::Builder::new()
        .name("kmirror-consume".to_string())
        .spawn(move || poller.run())
        .expect("a consumer thread can be spawned");
    Ok(ConsumerHandle {
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
    fn new() -> Self {
        Self {
            packed: PackedBuilder::with_capacity(INITIAL_BATCH_BYTES),
            next_offset: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.packed.record_count() as usize >= MAX_BATCH_RECORDS
            || self.packed.encoded_len() >= MAX_BATCH_BYTES
    }

    /// Packs the message; returns the bytes it added.
    fn add(&mut self, message: &BorrowedMessage<'_>) -> Result<usize, PushError> {
        let size_before = self.packed.encoded_len();
        let timestamp_ms = match message.timestamp() {
            Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => Some(ms),
            Timestamp::NotAvailable => None,
        };
        let headers = message
            .headers()
            .into_iter()
            .flat_map(|headers| headers.iter())
            .map(|header| (header.key, header.value));
        self.packed.push(
            message.offset(),
            message.key(),
            message.payload(),
            headers,
            timestamp_ms,
        )?;
        self.next_offset = message.offset() + 1;
        Ok(self.packed.encoded_len() - size_before)
    }

    /// Bytes the batch holds until acknowledged: its packed records, which are
    /// also what the gRPC message carries. A record's framing in the packed layout
    /// is all it costs beyond its data: kmirror builds no structure per record on
    /// either side of the hop (librdkafka's own per-message memory is capped by
    /// its queue settings).
    fn footprint(&self) -> usize {
        self.packed.encoded_len()
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
}

impl PartitionGathering {
    fn is(&self, topic: &str, partition: i32) -> bool {
        self.partition == partition && self.topic == topic
    }

    fn add(&mut self, message: &BorrowedMessage<'_>) -> usize {
        if self.batches.last().is_none_or(Gathering::is_full) {
            self.batches.push(Gathering::new());
        }
        let batch = self.batches.last_mut().expect("a batch was pushed");
        match batch.add(message) {
            Ok(added) => added,
            Err(error) => {
                // librdkafka hands a partition's records over in order; should it
                // not, the record starts a batch of its own.
                warn!(topic = %self.topic, partition = self.partition, %error, "source record out of order");
                let mut batch = Gathering::new();
                // A batch's first record is always accepted.
                let added = batch.add(message).unwrap_or(0);
                if !batch.packed.is_empty() {
                    self.batches.push(batch);
                }
                added
            }
        }
    }
}

/// Notes the end of a partition, which librdkafka reports as an error event, and
/// keeps it out of the logs.
struct SourceContext {
    end_reached: AtomicBool,
    ends: SourceEnds,
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {
                self.end_reached.store(true, Ordering::Release)
            }
            error => warn!(%error, reason, "source client error"),
        }
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.ends.record(&statistics);
    }
}

impl ConsumerContext for SourceContext {}

struct Poller {
    flow: FlowName,
    consumer: BaseConsumer<SourceContext>,
    command_rx: std_mpsc::Receiver<ConsumerCommand>,
    fetched_tx: mpsc::Sender<Fetched>,
    budget: InFlightBudget,
    generations: HashMap<(String, i32), u64>,
    /// Offset after the last record handed to the core, per partition.
    positions: HashMap<(String, i32), i64>,
    /// When positions past the last record were last looked for.
    skips_reported_at: Instant,
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
                match self.consumer.incremental_assign(&list) {
                    Ok(()) => {
                        self.generations.insert(key.clone(), generation);
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
                if let Err(error) = self.consumer.pause(&list) {
                    debug!(topic, partition, %error, "cannot pause partition");
                }
            }
            ConsumerCommand::Resume { topic, partition } => {
                let list = single(&topic, partition);
                if let Err(error) = self.consumer.resume(&list) {
                    debug!(topic, partition, %error, "cannot resume partition");
                }
            }
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
            .incremental_unassign(&single(topic, partition))
        {
            warn!(flow = %self.flow, topic, partition, %error, "cannot unassign source partition");
        }
    }

    /// One poll (waiting briefly for the first record), then whatever else is
    /// already fetched, handed to the core. False once the core is gone.
    fn poll_round(&mut self) -> bool {
        let mut gathering: Vec<PartitionGathering> = Vec::new();
        // Where the previous record went: librdkafka hands records over in runs
        // per partition, so most records find their batch without a lookup.
        let mut current_opt: Option<usize> = None;
        let mut round_bytes = 0;
        let mut wait = Duration::from_millis(100);
        while round_bytes < MAX_ROUND_BYTES {
            let Some(result) = self.consumer.poll(wait) else {
                break;
            };
            wait = Duration::ZERO;
            match result {
                Ok(message) => {
                    let (topic, partition) = (message.topic(), message.partition());
                    let index = match current_opt
                        .filter(|&index| gathering[index].is(topic, partition))
                        .or_else(|| {
                            gathering
                                .iter()
                                .position(|gathered| gathered.is(topic, partition))
                        }) {
                        Some(index) => index,
                        None => {
                            let key = (topic.to_string(), partition);
                            let Some(&generation) = self.generations.get(&key) else {
                                continue;
                            };
                            gathering.push(PartitionGathering {
                                topic: key.0,
                                partition,
                                generation,
                                batches: Vec::new(),
                            });
                            gathering.len() - 1
                        }
                    };
                    current_opt = Some(index);
                    round_bytes += gathering[index].add(&message);
                }
                Err(KafkaError::PartitionEOF(_)) => self
                    .consumer
                    .context()
                    .end_reached
                    .store(true, Ordering::Release),
                Err(error) => {
                    warn!(flow = %self.flow, %error, "source consumer error");
                    break;
                }
            }
        }
        for PartitionGathering {
            topic,
            partition,
            generation,
            batches,
        } in gathering
        {
            for batch in batches {
                // Waits while the fetcher's in-flight budget is spent: the source
                // is then read no further than the writers keep up with.
                let reservation = self.budget.reserve_blocking(batch.footprint());
                let (packed, next_offset) = batch.finish();
                self.positions
                    .insert((topic.clone(), partition), next_offset);
                let fetched = Fetched::Batch {
                    partition: PartitionKey::new(self.flow.clone(), topic.clone(), partition),
                    generation,
                    packed,
                    next_offset,
                    reservation,
                };
                if self.fetched_tx.blocking_send(fetched).is_err() {
                    return false;
                }
            }
        }
        // Reading the positions waits for librdkafka's main thread, and a tailing
        // consumer reaches the end of some partition on almost every round: at
        // most one look per interval keeps that wait off the records' path.
        let end_reached = &self.consumer.context().end_reached;
        if end_reached.load(Ordering::Acquire)
            && self.skips_reported_at.elapsed() >= SKIP_REPORT_INTERVAL
        {
            end_reached.store(false, Ordering::Release);
            self.skips_reported_at = Instant::now();
            return self.report_skips();
        }
        true
    }

    /// At the end of a partition, the consumer's position can be past the last
    /// record (a transaction marker follows it): report it so the checkpoint, and
    /// the lag, reach the end.
    fn report_skips(&mut self) -> bool {
        let Ok(positions) = self.consumer.position() else {
            return true;
        };
        for element in positions.elements() {
            let Offset::Offset(position) = element.offset() else {
                continue;
            };
            let key = (element.topic().to_string(), element.partition());
            let (Some(&generation), Some(&sent)) =
                (self.generations.get(&key), self.positions.get(&key))
            else {
                continue;
            };
            if position <= sent {
                continue;
            }
            self.positions.insert(key.clone(), position);
            let skip = Fetched::Skip {
                partition: PartitionKey::new(self.flow.clone(), key.0, key.1),
                generation,
                next_offset: position,
            };
            if self.fetched_tx.blocking_send(skip).is_err() {
                return false;
            }
        }
        true
    }
}

fn single(topic: &str, partition: i32) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, partition);
    list
}
