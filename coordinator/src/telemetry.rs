//! What the coordinator tells about its work: spans for the election, each
//! reconcile round and the Kafka admin operations under it (topic creation and
//! growth), and the leadership and reconcile metrics. Rounds are seconds apart, so
//! none of this is on a hot path.

use std::future::Future;
use std::time::Instant;

use kmirror_common::metrics::metrics;
use kmirror_common::schema::MemberInfo;
use kmirror_common::telemetry::{set_error, SPAN_TARGET};
use kmirror_common::ClusterName;
use tracing::{Instrument, Span};

use crate::error::CoordinatorError;

/// Span of a campaign for leadership (ends when elected or given up).
pub fn campaign_span(member: &MemberInfo) -> Span {
    tracing::info_span!(
        target: SPAN_TARGET,
        parent: None,
        "campaign",
        otel.name = "coordinator campaign",
        otel.kind = "internal",
        "kmirror.member" = %member.id,
    )
}

/// This coordinator took (`true`) or left the lead: gauge and count.
pub fn leading(leading: bool) {
    let metrics = metrics();
    metrics.leader.set(i64::from(leading));
    if leading {
        metrics.leader_elections.inc();
    }
}

/// The figures of one reconcile round that its span and metrics record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundFigures {
    pub flows: usize,
    pub partitions: usize,
    pub changed: usize,
    pub removed: usize,
    pub topics_created: usize,
}

/// Runs one reconcile round in its span and records its metrics.
pub async fn reconcile_round<Summary>(
    round: impl Future<Output = Result<Summary, CoordinatorError>>,
) -> Result<Summary, CoordinatorError>
where
    for<'a> &'a Summary: Into<RoundFigures>,
{
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        parent: None,
        "reconcile",
        otel.name = "reconcile",
        otel.kind = "internal",
        "kmirror.flows" = tracing::field::Empty,
        "kmirror.partitions" = tracing::field::Empty,
        "kmirror.assignments_changed" = tracing::field::Empty,
        "kmirror.assignments_removed" = tracing::field::Empty,
        "kmirror.topics_created" = tracing::field::Empty,
    );
    let started = Instant::now();
    let outcome = round.instrument(span.clone()).await;
    let metrics = metrics();
    metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let outcome_label = if outcome.is_ok() { "ok" } else { "error" };
    metrics
        .reconcile_rounds
        .get_or_create(&vec![("outcome", outcome_label.to_string())])
        .inc();
    match &outcome {
        Ok(summary) => {
            let summary: RoundFigures = summary.into();
            span.record("kmirror.flows", summary.flows as i64);
            span.record("kmirror.partitions", summary.partitions as i64);
            span.record("kmirror.assignments_changed", summary.changed as i64);
            span.record("kmirror.assignments_removed", summary.removed as i64);
            span.record("kmirror.topics_created", summary.topics_created as i64);
            if summary.changed > 0 || summary.removed > 0 {
                metrics.rebalances.inc();
            }
            metrics.assignments_changed.inc_by(summary.changed as u64);
            metrics.assignments_removed.inc_by(summary.removed as u64);
            metrics.topics_created.inc_by(summary.topics_created as u64);
            metrics.planned_partitions.set(summary.partitions as i64);
            metrics.flows.set(summary.flows as i64);
        }
        Err(error) => set_error(&span, "reconcile_failed", &error.to_string()),
    }
    outcome
}

/// Runs a Kafka admin operation on `cluster` (creating `topics` topics or growing
/// one) in a client span, a child of the current reconcile round.
pub async fn kafka_admin<T>(
    operation: &'static str,
    cluster: &ClusterName,
    topics: usize,
    call: impl Future<Output = T>,
) -> T {
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "kafka admin",
        otel.name = operation,
        otel.kind = "client",
        "messaging.system" = "kafka",
        "kmirror.cluster" = %cluster,
        "kmirror.topics" = topics as i64,
    );
    call.instrument(span).await
}
