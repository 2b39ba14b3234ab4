//! Prometheus metrics of every service: one process-wide set of metric families,
//! exposed by [`crate::http`] at `/metrics` in the Prometheus text format.
//!
//! Names follow Prometheus conventions: one `kmirror_` prefix, base units
//! (`_seconds`, `_bytes`), `_total` on counters. Partition-level series carry
//! `flow`, `topic` and `partition` labels; with [`Granularity::Topic`]
//! (`--metrics-labels topic`) the `partition` label is dropped and the series of a
//! topic's partitions are added up (gauges of seconds take the maximum), so the
//! number of series grows with topics, not partitions. Histograms are labelled per
//! topic at most.
//!
//! Instrumented code records per batch, never per record: a counter handle costs
//! one atomic add.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{LazyLock, Mutex, OnceLock};

use prometheus_client::encoding::prometheus_text;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::types::{PartitionKey, Role};

mod holds;
pub use holds::{partition_held, publish_held};

/// Label set of a series: pairs of label name and value.
pub type Labels = Vec<(&'static str, String)>;
/// A gauge holding a float (seconds).
pub type FloatGauge = Gauge<f64, AtomicU64>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// How finely partition-level series are labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Granularity {
    /// One series per source partition (`flow`, `topic`, `partition`).
    #[default]
    Partition,
    /// One series per source topic (`flow`, `topic`): bounded cardinality.
    Topic,
}

/// Every metric family of the process. Families a role does not use are not
/// registered for it (see [`install`]).
pub struct Metrics {
    granularity: AtomicU8,
    pub build_info: Family<Labels, Gauge>,
    // Membership (every role).
    pub registrations: Counter,
    pub lease_renewals: Counter,
    pub lease_renewal_failures: Counter,
    pub leases_lost: Counter,
    // Fetcher and writer.
    pub replicate_streams: Gauge,
    // Fetcher.
    pub fetched_records: Family<Labels, Counter>,
    pub fetched_bytes: Family<Labels, Counter>,
    pub record_age: HistogramFamily,
    pub batch_round_trip: HistogramFamily,
    pub lag_records: Family<Labels, Gauge>,
    pub lag_seconds: Family<Labels, FloatGauge>,
    pub in_flight_batches: Family<Labels, Gauge>,
    pub in_flight_bytes: Family<Labels, Gauge>,
    pub partition_restarts: Family<Labels, Counter>,
    pub assigned_partitions: Gauge,
    /// 1 per source partition that cannot progress, labelled with the reason.
    pub partition_stopped: Family<Labels, Gauge>,
    // Writer.
    pub produced_records: Family<Labels, Counter>,
    pub produced_bytes: Family<Labels, Counter>,
    pub replication_latency: HistogramFamily,
    pub produce_errors: Family<Labels, Counter>,
    pub producer_replacements: Counter,
    /// Exactly-once transactions ended, by outcome (committed, aborted).
    pub transactions: Family<Labels, Counter>,
    /// Exactly-once partitions opened (previous producer fenced, resume position
    /// read from the map).
    pub transactional_opens: Counter,
    pub producing_batches: Gauge,
    pub producing_bytes: Gauge,
    // Coordinator.
    pub leader: Gauge,
    pub leader_elections: Counter,
    pub reconcile_rounds: Family<Labels, Counter>,
    pub reconcile_duration: Histogram,
    pub rebalances: Counter,
    pub assignments_changed: Counter,
    pub assignments_removed: Counter,
    pub planned_partitions: Gauge,
    pub flows: Gauge,
    pub topics_created: Counter,
    /// Consumer-group offset sync: runs by flow and outcome, partitions
    /// committed by flow, groups of the last run by flow and state.
    pub group_sync_runs: Family<Labels, Counter>,
    pub group_offsets_committed: Family<Labels, Counter>,
    pub group_sync_groups: Family<Labels, Gauge>,
    // Refusals by Kafka clusters (every role, see `crate::cluster_access`).
    pub cluster_access_failures: Family<Labels, Counter>,
    pub cluster_retry_delay: Family<Labels, FloatGauge>,
    /// Label sets of the partition gauges last published, to drop those that went.
    published_partition_gauges: Mutex<HashSet<Labels>>,
    /// The `partition_stopped` series of each stopped partition (one at a time).
    stopped_partitions: Mutex<HashMap<PartitionKey, Labels>>,
    /// Every partition and topic label set handed out, by flow: the series to
    /// remove when the flow is deleted.
    flow_series: Mutex<HashMap<String, HashSet<Labels>>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
static REGISTRY: OnceLock<Registry> = OnceLock::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Buckets of latency and age histograms, in seconds: 1 ms to 1 h.
fn seconds_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        900.0, 3600.0,
    ])
}

fn histogram_family() -> HistogramFamily {
    Family::new_with_constructor(seconds_histogram as fn() -> Histogram)
}

impl Metrics {
    fn new() -> Self {
        Self {
            granularity: AtomicU8::new(0),
            build_info: Family::default(),
            registrations: Counter::default(),
            lease_renewals: Counter::default(),
            lease_renewal_failures: Counter::default(),
            leases_lost: Counter::default(),
            replicate_streams: Gauge::default(),
            fetched_records: Family::default(),
            fetched_bytes: Family::default(),
            record_age: histogram_family(),
            batch_round_trip: histogram_family(),
            lag_records: Family::default(),
            lag_seconds: Family::default(),
            in_flight_batches: Family::default(),
            in_flight_bytes: Family::default(),
            partition_restarts: Family::default(),
            assigned_partitions: Gauge::default(),
            partition_stopped: Family::default(),
            produced_records: Family::default(),
            produced_bytes: Family::default(),
            replication_latency: histogram_family(),
            produce_errors: Family::default(),
            producer_replacements: Counter::default(),
            transactions: Family::default(),
            transactional_opens: Counter::default(),
            producing_batches: Gauge::default(),
            producing_bytes: Gauge::default(),
            leader: Gauge::default(),
            leader_elections: Counter::default(),
            reconcile_rounds: Family::default(),
            reconcile_duration: seconds_histogram(),
            rebalances: Counter::default(),
            assignments_changed: Counter::default(),
            assignments_removed: Counter::default(),
            planned_partitions: Gauge::default(),
            flows: Gauge::default(),
            topics_created: Counter::default(),
            group_sync_runs: Family::default(),
            group_offsets_committed: Family::default(),
            group_sync_groups: Family::default(),
            cluster_access_failures: Family::default(),
            cluster_retry_delay: Family::default(),
            published_partition_gauges: Mutex::new(HashSet::new()),
            stopped_partitions: Mutex::new(HashMap::new()),
            flow_series: Mutex::new(HashMap::new()),
        }
    }

    pub fn granularity(&self) -> Granularity {
        match self.granularity.load(Ordering::Relaxed) {
            0 => Granularity::Partition,
            _ => Granularity::Topic,
        }
    }

    /// Labels of a partition-level series (without `partition` per topic).
    pub fn partition_labels(&self, partition: &PartitionKey) -> Labels {
        let mut labels = self.topic_labels(partition.flow.as_str(), &partition.topic);
        if self.granularity() == Granularity::Partition {
            labels.push(("partition", partition.partition.to_string()));
            self.remember(&labels);
        }
        labels
    }

    /// Labels of a topic-level series (histograms).
    pub fn topic_labels(&self, flow: &str, topic: &str) -> Labels {
        let labels = vec![("flow", flow.to_string()), ("topic", topic.to_string())];
        self.remember(&labels);
        labels
    }

    /// Notes a label set of a flow's series, so that [`Metrics::forget_flow`]
    /// finds it (label sets are the keys of the families, which cannot be listed).
    pub fn remember(&self, labels: &Labels) {
        let Some((_, flow)) = labels.iter().find(|(name, _)| *name == "flow") else {
            return;
        };
        let mut flow_series = self.flow_series.lock().expect("metrics lock poisoned");
        let series = flow_series.entry(flow.clone()).or_default();
        if !series.contains(labels) {
            series.insert(labels.clone());
        }
    }

    /// Removes every series of a deleted flow: counters, gauges and histograms
    /// of its partitions and topics. A flow created again under the name starts
    /// from zero.
    pub fn forget_flow(&self, flow: &str) {
        let series = self
            .flow_series
            .lock()
            .expect("metrics lock poisoned")
            .remove(flow)
            .unwrap_or_default();
        for labels in &series {
            self.fetched_records.remove(labels);
            self.fetched_bytes.remove(labels);
            self.record_age.remove(labels);
            self.batch_round_trip.remove(labels);
            self.lag_records.remove(labels);
            self.lag_seconds.remove(labels);
            self.in_flight_batches.remove(labels);
            self.in_flight_bytes.remove(labels);
            self.partition_restarts.remove(labels);
            self.produced_records.remove(labels);
            self.produced_bytes.remove(labels);
            self.replication_latency.remove(labels);
            self.produce_errors.remove(labels);
            self.partition_stopped.remove(labels);
            holds::forget(labels);
        }
        self.published_partition_gauges
            .lock()
            .expect("metrics lock poisoned")
            .retain(|labels| !series.contains(labels));
        self.stopped_partitions
            .lock()
            .expect("metrics lock poisoned")
            .retain(|partition, _| partition.flow.as_str() != flow);
    }

    /// Marks a partition stopped for `reason` (the error `kmirrorctl status`
    /// shows): `kmirror_partition_stopped{flow,topic,partition,reason} 1`, one
    /// series per partition whatever the label granularity.
    pub fn partition_stopped(&self, partition: &PartitionKey, reason: &str) {
        let labels: Labels = vec![
            ("flow", partition.flow.to_string()),
            ("topic", partition.topic.clone()),
            ("partition", partition.partition.to_string()),
            ("reason", stopped_reason_label(reason)),
        ];
        let mut stopped = self
            .stopped_partitions
            .lock()
            .expect("metrics lock poisoned");
        if let Some(previous) = stopped.insert(partition.clone(), labels.clone()) {
            self.partition_stopped.remove(&previous);
        }
        self.partition_stopped.get_or_create(&labels).set(1);
        self.remember(&labels);
    }

    /// The partition progresses again, or left this member: its series goes.
    pub fn partition_progressing(&self, partition: &PartitionKey) {
        let mut stopped = self
            .stopped_partitions
            .lock()
            .expect("metrics lock poisoned");
        if let Some(previous) = stopped.remove(partition) {
            self.partition_stopped.remove(&previous);
        }
    }

    /// Sets the partition-level gauges of the fetcher from one reading per
    /// partition it holds, added up per topic when so configured, and removes the
    /// series of partitions it no longer holds.
    pub fn publish_partition_gauges<'a>(
        &self,
        readings: impl IntoIterator<Item = PartitionReading<'a>>,
    ) {
        let mut by_labels: HashMap<Labels, PartitionTotals> = HashMap::new();
        let mut partitions = 0;
        for reading in readings {
            partitions += 1;
            let totals = by_labels
                .entry(self.partition_labels(reading.partition))
                .or_default();
            totals.in_flight_batches += reading.in_flight_batches;
            totals.in_flight_bytes += reading.in_flight_bytes;
            if let Some(lag_records) = reading.lag_records {
                totals.lag_records = Some(totals.lag_records.unwrap_or(0) + lag_records);
            }
            if let Some(lag_seconds) = reading.lag_seconds {
                totals.lag_seconds = Some(totals.lag_seconds.unwrap_or(0.0).max(lag_seconds));
            }
        }
        self.assigned_partitions.set(partitions);
        let mut published = self
            .published_partition_gauges
            .lock()
            .expect("metrics lock poisoned");
        for gone in published.difference(&by_labels.keys().cloned().collect()) {
            self.lag_records.remove(gone);
            self.lag_seconds.remove(gone);
            self.in_flight_batches.remove(gone);
            self.in_flight_bytes.remove(gone);
        }
        published.clear();
        for (labels, totals) in by_labels {
            if let Some(lag_records) = totals.lag_records {
                self.lag_records.get_or_create(&labels).set(lag_records);
            }
            if let Some(lag_seconds) = totals.lag_seconds {
                self.lag_seconds.get_or_create(&labels).set(lag_seconds);
            }
            self.in_flight_batches
                .get_or_create(&labels)
                .set(totals.in_flight_batches);
            self.in_flight_bytes
                .get_or_create(&labels)
                .set(totals.in_flight_bytes);
            published.insert(labels);
        }
    }
}

/// What the fetcher knows of one partition at a checkpoint tick.
#[derive(Debug, Clone)]
pub struct PartitionReading<'a> {
    pub partition: &'a PartitionKey,
    /// Records between the mirrored position and the source end (`None`: the
    /// source end is not known yet).
    pub lag_records: Option<i64>,
    /// How far behind the partition is in time (`None`: unknown).
    pub lag_seconds: Option<f64>,
    pub in_flight_batches: i64,
    pub in_flight_bytes: i64,
}

#[derive(Debug, Default)]
struct PartitionTotals {
    lag_records: Option<i64>,
    lag_seconds: Option<f64>,
    in_flight_batches: i64,
    in_flight_bytes: i64,
}

/// Registers the families `role` uses, sets the label granularity and
/// `kmirror_build_info`. The first call wins; later ones change nothing.
pub fn install(role: Role, granularity: Granularity) {
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return;
    }
    let metrics = metrics();
    metrics.granularity.store(
        match granularity {
            Granularity::Partition => 0,
            Granularity::Topic => 1,
        },
        Ordering::Relaxed,
    );
    metrics
        .build_info
        .get_or_create(&vec![
            ("version", crate::VERSION.to_string()),
            ("role", role.to_string()),
        ])
        .set(1);
    let _ = REGISTRY.set(registry_for(role, metrics));
}

fn registry_for(role: Role, metrics: &Metrics) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "kmirror_build_info",
        "Version and role of this kmirror process (always 1)",
        metrics.build_info.clone(),
    );
    registry.register(
        "kmirror_registrations",
        "Times this member registered in etcd under a new lease",
        metrics.registrations.clone(),
    );
    registry.register(
        "kmirror_lease_renewals",
        "Lease keep-alives etcd answered",
        metrics.lease_renewals.clone(),
    );
    registry.register(
        "kmirror_lease_renewal_failures",
        "Lease keep-alives that failed or went unanswered",
        metrics.lease_renewal_failures.clone(),
    );
    registry.register(
        "kmirror_leases_lost",
        "Times the member counted its lease as lost (it stops working until registered again)",
        metrics.leases_lost.clone(),
    );
    register_cluster_access(&mut registry, metrics);
    match role {
        Role::Fetcher => register_fetcher(&mut registry, metrics),
        Role::Writer => register_writer(&mut registry, metrics),
        Role::Coordinator => register_coordinator(&mut registry, metrics),
    }
    registry
}

fn register_fetcher(registry: &mut Registry, metrics: &Metrics) {
    registry.register(
        "kmirror_replicate_streams",
        "Replicate streams open to writers",
        metrics.replicate_streams.clone(),
    );
    registry.register(
        "kmirror_fetched_records",
        "Records read from the source and sent to writers (resent records count again)",
        metrics.fetched_records.clone(),
    );
    registry.register(
        "kmirror_fetched_bytes",
        "Bytes of keys, values and headers read from the source and sent to writers",
        metrics.fetched_bytes.clone(),
    );
    registry.register(
        "kmirror_record_age_seconds",
        "Age of the oldest record of each batch when fetched (now minus its timestamp)",
        metrics.record_age.clone(),
    );
    registry.register(
        "kmirror_batch_round_trip_seconds",
        "Time from sending a batch to a writer until its acknowledgement",
        metrics.batch_round_trip.clone(),
    );
    registry.register(
        "kmirror_lag_records",
        "Records of the source partition not mirrored yet (source end minus mirrored position)",
        metrics.lag_records.clone(),
    );
    registry.register(
        "kmirror_lag_seconds",
        "How far behind the mirror is: age of the oldest record not mirrored yet, 0 when caught up",
        metrics.lag_seconds.clone(),
    );
    registry.register(
        "kmirror_in_flight_batches",
        "Batches sent to writers and not acknowledged yet",
        metrics.in_flight_batches.clone(),
    );
    registry.register(
        "kmirror_in_flight_bytes",
        "Bytes of the batches sent to writers and not acknowledged yet",
        metrics.in_flight_bytes.clone(),
    );
    registry.register(
        "kmirror_partition_restarts",
        "Times a partition restarted from its committed position (after a failure or a new writer)",
        metrics.partition_restarts.clone(),
    );
    registry.register(
        "kmirror_assigned_partitions",
        "Source partitions assigned to this fetcher",
        metrics.assigned_partitions.clone(),
    );
    registry.register(
        "kmirror_partition_stopped",
        "1 for each source partition of this fetcher that cannot progress, with the reason (as kmirrorctl status shows it)",
        metrics.partition_stopped.clone(),
    );
    holds::register_fetcher(registry);
}

fn register_writer(registry: &mut Registry, metrics: &Metrics) {
    registry.register(
        "kmirror_replicate_streams",
        "Replicate streams open from fetchers",
        metrics.replicate_streams.clone(),
    );
    registry.register(
        "kmirror_produced_records",
        "Records the destination acknowledged",
        metrics.produced_records.clone(),
    );
    registry.register(
        "kmirror_produced_bytes",
        "Bytes of keys, values and headers the destination acknowledged",
        metrics.produced_bytes.clone(),
    );
    registry.register(
        "kmirror_replication_latency_seconds",
        "Time from the source timestamp of each batch's oldest record until the destination acknowledged it",
        metrics.replication_latency.clone(),
    );
    registry.register(
        "kmirror_produce_errors",
        "Batches refused or failed, by kind (record_too_large, delivery_failed, stale_epoch, ...)",
        metrics.produce_errors.clone(),
    );
    registry.register(
        "kmirror_producer_replacements",
        "Destination producers replaced after a timed-out or fatal delivery",
        metrics.producer_replacements.clone(),
    );
    registry.register(
        "kmirror_transactions",
        "Exactly-once transactions ended, by outcome (committed, aborted)",
        metrics.transactions.clone(),
    );
    registry.register(
        "kmirror_transactional_opens",
        "Exactly-once partitions opened on this writer: the previous producer fenced, the resume position read from the offset map",
        metrics.transactional_opens.clone(),
    );
    registry.register(
        "kmirror_producing_batches",
        "Batches handed to the destination producer and not acknowledged yet",
        metrics.producing_batches.clone(),
    );
    registry.register(
        "kmirror_producing_bytes",
        "Bytes of the batches handed to the destination producer and not acknowledged yet",
        metrics.producing_bytes.clone(),
    );
}

fn register_coordinator(registry: &mut Registry, metrics: &Metrics) {
    registry.register(
        "kmirror_leader",
        "1 while this coordinator leads the fleet",
        metrics.leader.clone(),
    );
    registry.register(
        "kmirror_leader_elections",
        "Times this coordinator was elected leader",
        metrics.leader_elections.clone(),
    );
    registry.register(
        "kmirror_reconcile_rounds",
        "Reconcile rounds of the leader, by outcome (ok, error)",
        metrics.reconcile_rounds.clone(),
    );
    registry.register(
        "kmirror_reconcile_duration_seconds",
        "Duration of the leader's reconcile rounds",
        metrics.reconcile_duration.clone(),
    );
    registry.register(
        "kmirror_rebalances",
        "Reconcile rounds that changed or removed assignments",
        metrics.rebalances.clone(),
    );
    registry.register(
        "kmirror_assignments_changed",
        "Partition assignments written (new owner, new epoch or new destination)",
        metrics.assignments_changed.clone(),
    );
    registry.register(
        "kmirror_assignments_removed",
        "Partition assignments removed",
        metrics.assignments_removed.clone(),
    );
    registry.register(
        "kmirror_planned_partitions",
        "Source partitions the last reconcile round planned",
        metrics.planned_partitions.clone(),
    );
    registry.register(
        "kmirror_flows",
        "Flows the last reconcile round saw",
        metrics.flows.clone(),
    );
    registry.register(
        "kmirror_topics_created",
        "Destination topics the coordinator created",
        metrics.topics_created.clone(),
    );
    registry.register(
        "kmirror_group_sync_runs",
        "Consumer-group offset syncs of the leader, by flow and outcome (ok, error)",
        metrics.group_sync_runs.clone(),
    );
    registry.register(
        "kmirror_group_offsets_committed",
        "Destination group partitions committed at their translated position, by flow",
        metrics.group_offsets_committed.clone(),
    );
    registry.register(
        "kmirror_group_sync_groups",
        "Groups of the last offset sync, by flow and state (synced, partial, live, failed)",
        metrics.group_sync_groups.clone(),
    );
    holds::register_coordinator(registry);
}

fn register_cluster_access(registry: &mut Registry, metrics: &Metrics) {
    registry.register(
        "kmirror_cluster_access_failures",
        "Attempts a Kafka cluster refused, by cluster and cause (authentication, tls, authorization)",
        metrics.cluster_access_failures.clone(),
    );
    registry.register(
        "kmirror_cluster_retry_delay_seconds",
        "Pause before this member asks a cluster that refused it again (doubling per refused attempt, 0 once it answered)",
        metrics.cluster_retry_delay.clone(),
    );
}

/// The metrics in the Prometheus text format (empty before [`install`]).
pub fn render() -> String {
    let mut text = String::new();
    if let Some(registry) = REGISTRY.get() {
        prometheus_text::encode(&mut text, registry).expect("writing to a String cannot fail");
    }
    text
}

/// Counts an open replicate stream until the returned guard is dropped.
pub fn replicate_stream_opened() -> StreamGuard {
    metrics().replicate_streams.inc();
    StreamGuard(())
}

/// See [`replicate_stream_opened`].
#[must_use]
pub struct StreamGuard(());

impl Drop for StreamGuard {
    fn drop(&mut self) {
        metrics().replicate_streams.dec();
    }
}

/// Longest reason label of `kmirror_partition_stopped`.
const STOPPED_REASON_MAX_CHARS: usize = 200;

/// An error message as a label value: one line, at most a few hundred characters.
fn stopped_reason_label(reason: &str) -> String {
    let one_line = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(STOPPED_REASON_MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &one_line[..cut]),
        None => one_line,
    }
}

/// Removes the series of flows deleted from etcd, for as long as the process
/// runs: a deleted flow's counters would otherwise be scraped forever. Every
/// fetcher and writer runs one (see [`crate::service`]).
pub async fn forget_deleted_flows(mut etcd: etcd_client::Client, keys: crate::Keys) {
    let prefix = keys.flows();
    loop {
        let watched = etcd
            .watch(
                prefix.as_str(),
                Some(etcd_client::WatchOptions::new().with_prefix()),
            )
            .await;
        let mut stream = match watched {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "cannot watch flows for deleted flows' metrics; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Ok(Some(response)) = stream.message().await {
            for event in response.events() {
                if event.event_type() != etcd_client::EventType::Delete {
                    continue;
                }
                if let Some(flow) = event
                    .kv()
                    .and_then(|kv| crate::Keys::last_segment(kv.key()))
                {
                    tracing::debug!(flow, "flow deleted: removing its metric series");
                    metrics().forget_flow(flow);
                }
            }
        }
        // The watch ended (etcd restarted, connection lost): watch again.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Kind of a batch error as a label value (`record_too_large`, ...).
pub fn error_kind_label(kind: &str) -> String {
    let mut label = String::with_capacity(kind.len() + 4);
    for (index, character) in kind.chars().enumerate() {
        if character.is_ascii_uppercase() {
            if index > 0 {
                label.push('_');
            }
            label.push(character.to_ascii_lowercase());
        } else {
            label.push(character);
        }
    }
    label
}

#[cfg(test)]
mod tests;
