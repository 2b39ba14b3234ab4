//! One replicate stream: the batches of one fetcher, produced in order, each
//! acknowledged once the destination has every record of it.
//!
//! The session is an actor: it reads batches one at a time and hands their records
//! to the producer in order, and it receives batch outcomes from the delivery
//! trackers on a channel. A partition whose batch failed is halted: later batches
//! of it are refused unproduced until the fetcher restarts the partition from its
//! checkpoint (a batch flagged `restart`), so nothing is ever written around a gap.
//!
//! A partition's acks leave in the order its batches arrived, whatever order their
//! deliveries complete in: a batch cut short before its first record completes at
//! once, while the batch before it may still wait for the destination, and the
//! fetcher drops everything in flight when it sees a failure. Acked out of order,
//! the earlier batch's records would be written and never checkpointed, so every
//! retry would write them again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kmirror_common::kafka::{client_config, RoleSettings};
use kmirror_common::offset_map::{MapEntry, MapKey};
use kmirror_common::schema::ClusterSpec;
use kmirror_common::{ClusterName, Epoch, PartitionKey};
use kmirror_proto::packed::PackedSummary;
use kmirror_proto::tonic::Status;
use kmirror_proto::v1::{Batch, BatchAck, ErrorKind, SourcePartition, WriteError};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Span};

use crate::deliverability::is_delivery_timeout;
use crate::producer::{
    batch_size_for, classify, settings_of, BatchTracker, Completion, DeliveryContext,
    DestinationProducer, FailureClass, PRODUCER_DEFAULTS, PRODUCER_REQUIRED,
};
use crate::send::{error_kind, produce_map_entry, produce_records, write_error, Target};
use crate::transactional::{self, TxnBatch, TxnOutcome};
use crate::WriterShared;

/// A batch handed to the producer whose outcome is not known yet.
struct PendingBatch {
    partition: PartitionKey,
    source: SourcePartition,
    epoch: u64,
    seq: u64,
    cluster: ClusterName,
    /// The producer it went through (see [`ProducerKey`]).
    producer: ProducerKey,
    dest_topic: String,
    /// Offset acknowledged as committed when every delivery succeeds.
    committed_on_success: i64,
    /// Set when the batch was cut short before producing (a record too large, ...).
    cut_short: Option<WriteError>,
    telemetry: crate::telemetry::BatchTelemetry,
    /// Source offsets of the records handed to the producer, as runs; empty when
    /// the batch gets no offset map entry (records re-partitioned by key).
    map_runs: Vec<(i64, u32)>,
    /// Where the fetcher read from to get the batch, when it said.
    read_from: Option<i64>,
}

/// A batch whose records are delivered, waiting for its offset map entry: its ack
/// leaves only once the entry is delivered too, so every checkpointed offset has
/// its entry.
struct AwaitingEntry {
    batch_token: u64,
    partition: PartitionKey,
    cluster: ClusterName,
    producer: ProducerKey,
    ack: BatchAck,
}

/// A destination cluster, the `batch.size` of its producer (topics whose limit,
/// `max.message.bytes`, is below the usual batch size get a producer of their own
/// with smaller batches) and the [`settings_of`] the cluster when it was built: a
/// partition that restarts after the cluster's settings changed gets a new one.
type ProducerKey = (ClusterName, i64, u64);

pub struct Session {
    shared: Arc<WriterShared>,
    producers: HashMap<ProducerKey, Arc<DestinationProducer>>,
    /// The producer each partition goes through. It changes only when the
    /// partition restarts from its checkpoint, so one partition's records are
    /// never split between two producers' queues (which could reorder them).
    partition_producers: HashMap<PartitionKey, ProducerKey>,
    halted: HashSet<PartitionKey>,
    pending: HashMap<u64, PendingBatch>,
    /// Per partition, the tokens of its batches not acknowledged yet, in arrival
    /// order; an ack leaves only from the front.
    ack_order: HashMap<PartitionKey, VecDeque<u64>>,
    /// Acks of completed batches waiting for an earlier batch of their partition.
    finished: HashMap<u64, BatchAck>,
    /// By the token of their entry's delivery.
    awaiting_entries: HashMap<u64, AwaitingEntry>,
    /// The task of each exactly-once partition (see [`transactional`]).
    /// With the token of its first batch: outcomes of an earlier task (before a
    /// restart) do not halt the partition again.
    txn_partitions: HashMap<PartitionKey, (u64, mpsc::UnboundedSender<TxnBatch>)>,
    txn_outcome_tx: mpsc::UnboundedSender<TxnOutcome>,
    txn_outcome_rx: mpsc::UnboundedReceiver<TxnOutcome>,
    /// Batches handed to exactly-once partitions whose outcome is not known yet.
    txn_outstanding: usize,
    next_token: u64,
    completion_tx: mpsc::UnboundedSender<Completion>,
    completion_rx: mpsc::UnboundedReceiver<Completion>,
    ack_tx: mpsc::Sender<Result<BatchAck, Status>>,
    /// Covers the stream until the session ends (see `telemetry::stream_span`).
    stream_span: Span,
}

impl Session {
    pub fn new(
        shared: Arc<WriterShared>,
        ack_tx: mpsc::Sender<Result<BatchAck, Status>>,
        stream_span: Span,
    ) -> Self {
        let (completion_tx, completion_rx) = mpsc::unbounded_channel();
        let (txn_outcome_tx, txn_outcome_rx) = mpsc::unbounded_channel();
        Self {
            shared,
            producers: HashMap::new(),
            partition_producers: HashMap::new(),
            halted: HashSet::new(),
            pending: HashMap::new(),
            ack_order: HashMap::new(),
            finished: HashMap::new(),
            awaiting_entries: HashMap::new(),
            txn_partitions: HashMap::new(),
            txn_outcome_tx,
            txn_outcome_rx,
            txn_outstanding: 0,
            next_token: 0,
            completion_tx,
            completion_rx,
            ack_tx,
            stream_span,
        }
    }

    pub async fn run(mut self, mut inbound: impl Stream<Item = Result<Batch, Status>> + Unpin) {
        let _open_stream = kmirror_common::metrics::replicate_stream_opened();
        loop {
            tokio::select! {
                message = inbound.next() => match message {
                    Some(Ok(batch)) => {
                        if self.handle_batch(batch).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                    Some(Err(status)) => {
                        debug!(%status, "replicate stream ended with an error");
                        crate::telemetry::stream_failed(&self.stream_span, &status);
                        break;
                    }
                },
                Some(completion) = self.completion_rx.recv() => {
                    if self.handle_completion(completion).await.is_err() {
                        break;
                    }
                }
                Some(outcome) = self.txn_outcome_rx.recv() => {
                    if self.handle_txn_outcome(outcome).await.is_err() {
                        break;
                    }
                }
            }
        }
        self.drain().await;
    }

    /// Waits for the outcome of every batch already handed to a producer, so the
    /// fetcher learns about each (a graceful stop checkpoints them).
    async fn drain(mut self) {
        // Exactly-once partitions end once the batches they hold are written.
        self.txn_partitions.clear();
        let deadline = tokio::time::Instant::now() + self.shared.drain_timeout;
        while !self.pending.is_empty()
            || !self.awaiting_entries.is_empty()
            || self.txn_outstanding > 0
        {
            tokio::select! {
                Some(completion) = self.completion_rx.recv() => {
                    let _ = self.handle_completion(completion).await;
                }
                Some(outcome) = self.txn_outcome_rx.recv() => {
                    let _ = self.handle_txn_outcome(outcome).await;
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        if !self.pending.is_empty() || self.txn_outstanding > 0 {
            warn!(
                batches = self.pending.len() + self.txn_outstanding,
                "stream closed with batches still in flight"
            );
        }
        for (_, producer) in self.producers.drain() {
            retire(producer);
        }
    }

    async fn ack(&self, ack: BatchAck) -> Result<(), ()> {
        crate::telemetry::count_ack(&ack);
        self.ack_tx.send(Ok(ack)).await.map_err(|_| ())
    }

    /// Answers a batch without producing it. The refusal waits behind the
    /// partition's batches still with the destination, as any ack does: taken
    /// first, it would make the fetcher drop their acks and send them again.
    async fn refuse(&mut self, batch: &Batch, error: WriteError) -> Result<(), ()> {
        let trace_context = crate::telemetry::refused(batch, &error);
        let ack = BatchAck {
            source: batch.source.clone(),
            epoch: batch.epoch,
            seq: batch.seq,
            committed_offset: -1,
            dest_partition: -1,
            dest_offset: -1,
            error: Some(error),
            trace_context,
        };
        let Some(order) = PartitionKey::from_wire(batch.source.as_ref())
            .and_then(|partition| self.ack_order.get_mut(&partition))
        else {
            return self.ack(ack).await;
        };
        let token = self.next_token;
        self.next_token += 1;
        order.push_back(token);
        self.finished.insert(token, ack);
        Ok(())
    }

    async fn handle_batch(&mut self, batch: Batch) -> Result<(), ()> {
        let Some(partition) = PartitionKey::from_wire(batch.source.as_ref()) else {
            return self
                .refuse(
                    &batch,
                    write_error(
                        ErrorKind::UnknownFlow,
                        "batch names no valid source partition".into(),
                        -1,
                    ),
                )
                .await;
        };
        if let Some(held) = self.shared.check_epoch(&partition, Epoch(batch.epoch)) {
            let message = format!(
                "partition {partition} is owned by epoch {held}; this batch has epoch {}",
                batch.epoch
            );
            return self
                .refuse(&batch, write_error(ErrorKind::StaleEpoch, message, -1))
                .await;
        }
        if !self.shared.lease_is_live() {
            self.halted.insert(partition);
            let message =
                "the writer lost its etcd lease and writes nothing until it registers again"
                    .to_string();
            return self
                .refuse(&batch, write_error(ErrorKind::DeliveryFailed, message, -1))
                .await;
        }
        if batch.restart {
            self.halted.remove(&partition);
        } else if self.halted.contains(&partition) {
            let message = format!("partition {partition} is halted after an earlier failure; restart it from its checkpoint");
            return self
                .refuse(&batch, write_error(ErrorKind::PartitionHalted, message, -1))
                .await;
        }
        let summary = match read_records(&batch, &partition) {
            Ok(summary) => summary,
            Err(error) => {
                warn!(%partition, seq = batch.seq, error = %error.message, "refusing a malformed batch");
                self.halted.insert(partition);
                return self.refuse(&batch, error).await;
            }
        };
        let cluster = match self
            .shared
            .routes
            .destination(&partition.flow, batch.restart)
            .await
        {
            Ok(cluster) => cluster,
            Err(error) => {
                self.halted.insert(partition);
                return self
                    .refuse(
                        &batch,
                        write_error(ErrorKind::UnknownFlow, error.to_string(), -1),
                    )
                    .await;
            }
        };
        if let Some(refusal) = self
            .shared
            .deliverability
            .refusal(&self.shared.routes, &cluster.name, batch.restart)
            .await
        {
            // Queued here it would only time out or be refused again: the fetcher
            // retries, and the leader moves the partition to a writer that can deliver.
            self.halted.insert(partition);
            let error = write_error(refusal.kind, refusal.message, -1);
            return self.refuse(&batch, error).await;
        }
        let limit = self
            .shared
            .routes
            .topic_limit(&cluster, &batch.dest_topic)
            .await;
        if self.shared.routes.exactly_once(&partition.flow) {
            self.hand_to_transaction(batch, partition, cluster, limit, &summary);
            return Ok(());
        }
        let producer_key = match self.partition_producers.get(&partition) {
            Some(key) if !batch.restart && key.0 == cluster.name => key.clone(),
            _ => (
                cluster.name.clone(),
                batch_size_for(limit),
                settings_of(&cluster),
            ),
        };
        if let Err(error) = self.ensure_producer(&cluster, &producer_key) {
            self.halted.insert(partition);
            return self
                .refuse(
                    &batch,
                    write_error(ErrorKind::DeliveryFailed, error.to_string(), -1),
                )
                .await;
        }
        let moved = self
            .partition_producers
            .insert(partition.clone(), producer_key.clone())
            .is_some_and(|before| before != producer_key);
        if moved {
            self.retire_outdated(&producer_key);
        }
        let token = self.next_token;
        self.next_token += 1;
        let tracker = BatchTracker::new(token, self.completion_tx.clone());
        let mut telemetry = crate::telemetry::BatchTelemetry::start(&batch, &summary, &partition);
        let mut map_runs = Vec::new();
        let (produced, cut_short) = self
            .produce(
                &batch,
                &partition,
                &producer_key,
                limit,
                &tracker,
                &mut map_runs,
            )
            .await;
        tracker.finish_sending();
        if let Some(error) = &cut_short {
            telemetry.cut_at(&batch, error.offset);
            warn!(
                %partition,
                offset = error.offset,
                kind = ?error.kind(),
                produced_from_batch = produced,
                error = %error.message,
                "partition halted at a record it cannot produce; the records before it are written"
            );
            self.halted.insert(partition.clone());
            if error.kind() == ErrorKind::DestinationMissing {
                // The producer's view of the topic may be stale (partitions added
                // since): the retry goes through a fresh one, with fresh metadata.
                self.replace_producer(&producer_key);
            }
        }
        let committed_on_success = cut_short
            .as_ref()
            .map(|error| error.offset)
            .unwrap_or(batch.next_offset);
        self.ack_order
            .entry(partition.clone())
            .or_default()
            .push_back(token);
        self.pending.insert(
            token,
            PendingBatch {
                partition,
                source: batch.source.clone().unwrap_or_default(),
                epoch: batch.epoch,
                seq: batch.seq,
                cluster: cluster.name.clone(),
                producer: producer_key,
                dest_topic: batch.dest_topic.clone(),
                committed_on_success,
                cut_short,
                telemetry,
                map_runs,
                read_from: batch.read_from,
            },
        );
        Ok(())
    }

    async fn produce(
        &mut self,
        batch: &Batch,
        partition: &PartitionKey,
        producer_key: &ProducerKey,
        limit: Option<i64>,
        tracker: &Arc<BatchTracker>,
        map_runs: &mut Vec<(i64, u32)>,
    ) -> (usize, Option<WriteError>) {
        let producer = self.producers.get(producer_key).expect("producer ensured");
        let target = Target {
            producer,
            cluster: &producer_key.0,
            limit,
            skip_below: i64::MIN,
        };
        produce_records(&self.shared, &target, batch, partition, tracker, map_runs).await
    }

    async fn handle_completion(&mut self, completion: Completion) -> Result<(), ()> {
        if let Some(awaiting) = self.awaiting_entries.remove(&completion.token) {
            return self.handle_entry_completion(awaiting, completion).await;
        }
        let Some(pending) = self.pending.remove(&completion.token) else {
            return Ok(());
        };
        let (committed_offset, error) = match (completion.failure, pending.cut_short) {
            (Some(failure), _) => {
                let class = classify(&failure);
                self.halted.insert(pending.partition.clone());
                self.shared
                    .deliverability
                    .failed(&pending.cluster, &failure);
                if matches!(
                    class,
                    FailureClass::DeliveryFailed | FailureClass::DestinationMissing
                ) {
                    self.replace_producer(&pending.producer);
                }
                if class == FailureClass::RecordTooLarge {
                    self.shared
                        .routes
                        .forget_limit(&pending.cluster, &pending.dest_topic);
                }
                let message = format!(
                    "delivery to {} failed for {}: {failure}",
                    pending.dest_topic, pending.partition
                );
                warn!(partition = %pending.partition, error = %failure, "delivery failed, partition halted");
                (-1, Some(write_error(error_kind(class), message, -1)))
            }
            (None, cut_short) => {
                self.shared.deliverability.delivered(&pending.cluster);
                (pending.committed_on_success, cut_short)
            }
        };
        let trace_context = pending.telemetry.finish(
            &pending.partition,
            committed_offset,
            error.as_ref(),
            completion.dest_partition,
            completion.dest_offset,
        );
        let ack = BatchAck {
            source: Some(pending.source),
            epoch: pending.epoch,
            seq: pending.seq,
            committed_offset,
            dest_partition: completion.dest_partition,
            dest_offset: completion.dest_offset,
            error,
            trace_context,
        };
        let writes_map = !cfg!(feature = "bench-without-offset-map");
        let entry_opt = (writes_map && committed_offset >= 0 && completion.dest_partition >= 0)
            .then(|| {
                // The delivery reports tell whether the records are consecutive in
                // the destination partition (nothing else wrote between them).
                let span = completion.dest_offset - completion.dest_first_offset + 1;
                let consecutive = span == completion.delivered as i64;
                MapEntry::from_runs(
                    pending.map_runs,
                    committed_offset,
                    &pending.dest_topic,
                    completion.dest_partition,
                    completion.dest_first_offset,
                    consecutive,
                )
                .map(|entry| entry.read_from(pending.read_from))
            })
            .flatten();
        if let Some(entry) = entry_opt {
            let key = MapKey {
                flow: pending.partition.flow.as_str().to_string(),
                topic: pending.partition.topic.clone(),
                partition: pending.partition.partition,
                first_offset: entry.first_offset(),
            };
            match self.send_map_entry(&pending.producer, &key, &entry).await {
                Ok(entry_token) => {
                    self.awaiting_entries.insert(
                        entry_token,
                        AwaitingEntry {
                            batch_token: completion.token,
                            partition: pending.partition,
                            cluster: pending.cluster,
                            producer: pending.producer,
                            ack,
                        },
                    );
                    return Ok(());
                }
                Err(error) => {
                    let awaiting = AwaitingEntry {
                        batch_token: completion.token,
                        partition: pending.partition,
                        cluster: pending.cluster,
                        producer: pending.producer,
                        ack,
                    };
                    return self.entry_failed(awaiting, &error).await;
                }
            }
        }
        self.finished.insert(completion.token, ack);
        self.release_acks(&pending.partition).await
    }

    /// Hands a batch of an exactly-once partition to the partition's task; a
    /// restart starts a new task, which fences the previous one's producer.
    fn hand_to_transaction(
        &mut self,
        batch: Batch,
        partition: PartitionKey,
        cluster: ClusterSpec,
        limit: Option<i64>,
        summary: &PackedSummary,
    ) {
        if batch.restart {
            self.txn_partitions.remove(&partition);
        }
        let token = self.next_token;
        self.next_token += 1;
        let telemetry = crate::telemetry::BatchTelemetry::start(&batch, summary, &partition);
        let (shared, outcome_tx) = (self.shared.clone(), self.txn_outcome_tx.clone());
        let (_, task) = self
            .txn_partitions
            .entry(partition.clone())
            .or_insert_with(|| {
                let task = transactional::spawn(shared, partition.clone(), outcome_tx);
                (token, task)
            });
        // The task ends only when this sender is dropped.
        let _ = task.send(TxnBatch {
            token,
            batch,
            cluster,
            limit,
            telemetry,
        });
        self.txn_outstanding += 1;
        self.ack_order
            .entry(partition)
            .or_default()
            .push_back(token);
    }

    async fn handle_txn_outcome(&mut self, outcome: TxnOutcome) -> Result<(), ()> {
        self.txn_outstanding = self.txn_outstanding.saturating_sub(1);
        let current = self
            .txn_partitions
            .get(&outcome.partition)
            .is_some_and(|(first_token, _)| outcome.token >= *first_token);
        if outcome.halted && current {
            self.halted.insert(outcome.partition.clone());
        }
        self.finished.insert(outcome.token, outcome.ack);
        self.release_acks(&outcome.partition).await
    }

    /// Produces a batch's offset map entry through the producer of its records;
    /// returns the token its delivery reports under.
    async fn send_map_entry(
        &mut self,
        producer_key: &ProducerKey,
        key: &MapKey,
        entry: &MapEntry,
    ) -> Result<u64, KafkaError> {
        let Some(producer) = self.producers.get(producer_key).cloned() else {
            // Replaced after a failure of another batch: this one resends too.
            return Err(KafkaError::Canceled);
        };
        let token = self.next_token;
        self.next_token += 1;
        let tracker = BatchTracker::new(token, self.completion_tx.clone());
        produce_map_entry(&self.shared, &producer, key, entry, &tracker).await?;
        tracker.finish_sending();
        Ok(token)
    }

    async fn handle_entry_completion(
        &mut self,
        awaiting: AwaitingEntry,
        completion: Completion,
    ) -> Result<(), ()> {
        match completion.failure {
            None => {
                let partition = awaiting.partition.clone();
                self.finished.insert(awaiting.batch_token, awaiting.ack);
                self.release_acks(&partition).await
            }
            Some(error) => self.entry_failed(awaiting, &error).await,
        }
    }

    /// The batch's records are written but its map entry is not: the batch fails
    /// as a delivery failure does, so the partition resends it (and its entry) from
    /// its checkpoint.
    async fn entry_failed(
        &mut self,
        awaiting: AwaitingEntry,
        error: &KafkaError,
    ) -> Result<(), ()> {
        let class = classify(error);
        self.halted.insert(awaiting.partition.clone());
        if matches!(
            class,
            FailureClass::DeliveryFailed | FailureClass::DestinationMissing
        ) {
            self.replace_producer(&awaiting.producer);
        }
        if is_delivery_timeout(error) {
            self.shared
                .deliverability
                .timed_out(&awaiting.cluster, error);
        }
        warn!(partition = %awaiting.partition, error = %error, topic = %self.shared.offset_map_topic, "offset map entry not delivered, partition halted");
        let message = format!(
            "the offset map entry of a batch of {} could not be written to {}: {error}",
            awaiting.partition, self.shared.offset_map_topic
        );
        let mut ack = awaiting.ack;
        ack.committed_offset = -1;
        ack.error = Some(write_error(error_kind(class), message, -1));
        self.finished.insert(awaiting.batch_token, ack);
        self.release_acks(&awaiting.partition).await
    }

    /// Sends the acks of the partition's completed batches that no earlier batch
    /// of it waits before.
    async fn release_acks(&mut self, partition: &PartitionKey) -> Result<(), ()> {
        let ready = next_in_order(&mut self.ack_order, &mut self.finished, partition);
        for ack in ready {
            self.ack(ack).await?;
        }
        Ok(())
    }

    fn ensure_producer(
        &mut self,
        cluster: &ClusterSpec,
        key: &ProducerKey,
    ) -> Result<(), KafkaError> {
        if self.producers.contains_key(key) {
            return Ok(());
        }
        let producer = Arc::new(self.shared.create_producer(cluster, key.1)?);
        self.shared
            .deliverability
            .track(&cluster.name, Arc::downgrade(&producer));
        self.producers.insert(key.clone(), producer);
        Ok(())
    }

    /// Lets go of `key`'s cluster's producers built from other settings that no
    /// partition goes through, and no batch waits on, any more. (A refused one
    /// would otherwise keep knocking at the cluster with its old settings.)
    fn retire_outdated(&mut self, key: &ProducerKey) {
        let outdated: Vec<ProducerKey> = self
            .producers
            .keys()
            .filter(|built| built.0 == key.0 && built.2 != key.2)
            .filter(|built| {
                let used = |producer: &ProducerKey| producer == *built;
                !self.partition_producers.values().any(used)
                    && !self.pending.values().any(|batch| used(&batch.producer))
                    && !self
                        .awaiting_entries
                        .values()
                        .any(|entry| used(&entry.producer))
            })
            .cloned()
            .collect();
        for built in outdated {
            if let Some(producer) = self.producers.remove(&built) {
                retire(producer);
            }
        }
    }

    /// A producer whose delivery failed may hold a broken idempotence state: the
    /// partition is resent from its checkpoint through a fresh one.
    fn replace_producer(&mut self, key: &ProducerKey) {
        if let Some(producer) = self.producers.remove(key) {
            info!(cluster = %key.0, batch_size = key.1, "replacing destination producer after a delivery failure");
            kmirror_common::metrics::metrics()
                .producer_replacements
                .inc();
            retire(producer);
        }
    }
}

/// Lets a producer finish what it holds (or time out) off the async threads.
fn retire(producer: Arc<DestinationProducer>) {
    tokio::task::spawn_blocking(move || {
        let _ = producer.flush(Duration::from_secs(30));
        drop(producer);
    });
}

/// Takes the completed acks at the front of the partition's order, up to the first
/// batch still waiting for the destination.
fn next_in_order<Ack>(
    ack_order: &mut HashMap<PartitionKey, VecDeque<u64>>,
    finished: &mut HashMap<u64, Ack>,
    partition: &PartitionKey,
) -> Vec<Ack> {
    let mut ready = Vec::new();
    let Some(order) = ack_order.get_mut(partition) else {
        return ready;
    };
    while let Some(ack) = order.front().and_then(|token| finished.remove(token)) {
        order.pop_front();
        ready.push(ack);
    }
    if order.is_empty() {
        ack_order.remove(partition);
    }
    ready
}

/// Reads every record of the batch once, before any is produced, so that a
/// malformed batch is refused whole rather than written in part. Returns the
/// figures of its records.
fn read_records(batch: &Batch, partition: &PartitionKey) -> Result<PackedSummary, WriteError> {
    batch.packed().validate().map_err(|malformed| {
        let message = format!(
            "batch {} of {partition} is malformed, nothing of it was written: {malformed}",
            batch.seq
        );
        write_error(ErrorKind::Rejected, message, -1)
    })
}

/// Builds a destination producer from [`producer_config`].
pub fn build_producer(
    cluster: &ClusterSpec,
    batch_size: i64,
    overrides: &[(String, String)],
) -> Result<DestinationProducer, KafkaError> {
    producer_config(cluster, batch_size, overrides)?
        .create_with_context(DeliveryContext::new(cluster))
}

/// A destination producer's settings: what the writer's guarantee requires,
/// then the operator's `--producer-property` overrides, then the cluster's
/// properties, then the writer's defaults (with the `batch.size` for the
/// topic's limit).
pub fn producer_config(
    cluster: &ClusterSpec,
    batch_size: i64,
    overrides: &[(String, String)],
) -> Result<rdkafka::ClientConfig, KafkaError> {
    let batch_size = batch_size.to_string();
    let mut defaults = PRODUCER_DEFAULTS.to_vec();
    defaults.push(("batch.size", batch_size.as_str()));
    let role = RoleSettings {
        required: PRODUCER_REQUIRED,
        defaults: &defaults,
    };
    client_config(cluster, &role, overrides)
        .map_err(|error| KafkaError::ClientCreation(error.to_string()))
}

#[cfg(test)]
mod tests;
