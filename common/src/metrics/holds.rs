//! Metrics of held partitions (offset surprises, see [`crate::holds`]): what the
//! fetchers detected, and what the leader holds now. Series are per partition
//! whatever the label granularity: holds are rare, and an operator acts on one
//! partition at a time.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{metrics, Labels};
use crate::schema::PartitionHold;
use crate::PartitionKey;

struct HoldMetrics {
    detected: Family<Labels, Counter>,
    offsets_lost: Family<Labels, Counter>,
    held: Family<Labels, Gauge>,
}

static HOLDS: LazyLock<HoldMetrics> = LazyLock::new(|| HoldMetrics {
    detected: Family::default(),
    offsets_lost: Family::default(),
    held: Family::default(),
});

fn partition_labels(partition: &PartitionKey) -> Labels {
    let labels: Labels = vec![
        ("flow", partition.flow.to_string()),
        ("topic", partition.topic.clone()),
        ("partition", partition.partition.to_string()),
    ];
    metrics().remember(&labels);
    labels
}

/// A fetcher held a partition: `kmirror_partition_holds_total{...,reason}`, and
/// the offsets a retention gap lost in `kmirror_offsets_lost_total`.
pub fn partition_held(partition: &PartitionKey, hold: &PartitionHold) {
    let mut labels = partition_labels(partition);
    if let Some((from, to)) = hold.lost_range() {
        HOLDS
            .offsets_lost
            .get_or_create(&labels)
            .inc_by((to - from + 1).max(0) as u64);
    }
    labels.push(("reason", hold.reason.as_str().to_string()));
    metrics().remember(&labels);
    HOLDS.detected.get_or_create(&labels).inc();
}

/// The partitions held now, per flow and reason (the leader sets it each round;
/// flows with none are left out).
pub fn publish_held<'a>(holds: impl IntoIterator<Item = (&'a PartitionKey, &'a PartitionHold)>) {
    HOLDS.held.clear();
    for (partition, hold) in holds {
        let labels: Labels = vec![
            ("flow", partition.flow.to_string()),
            ("reason", hold.reason.as_str().to_string()),
        ];
        HOLDS.held.get_or_create(&labels).inc();
    }
}

/// Removes a deleted flow's series.
pub(super) fn forget(labels: &Labels) {
    HOLDS.detected.remove(labels);
    HOLDS.offsets_lost.remove(labels);
}

pub(super) fn register_fetcher(registry: &mut Registry) {
    registry.register(
        "kmirror_partition_holds",
        "Times a source partition was held because the source no longer has its position (reason: retention_gap, recreated)",
        HOLDS.detected.clone(),
    );
    registry.register(
        "kmirror_offsets_lost",
        "Source offsets removed by retention before they were mirrored (retention gaps detected)",
        HOLDS.offsets_lost.clone(),
    );
}

pub(super) fn register_coordinator(registry: &mut Registry) {
    registry.register(
        "kmirror_held_partitions",
        "Source partitions held until an operator resets them, per flow and reason (set by the leader)",
        HOLDS.held.clone(),
    );
}
