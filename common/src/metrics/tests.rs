//! Unit tests of the metrics: labels, aggregation per topic, series removal.

use super::*;
use crate::types::FlowName;

fn partition(topic: &str, number: i32) -> PartitionKey {
    PartitionKey::new(FlowName::new("dr").unwrap(), topic, number)
}

fn reading(partition: &PartitionKey, lag: i64, seconds: f64) -> PartitionReading<'_> {
    PartitionReading {
        partition,
        lag_records: Some(lag),
        lag_seconds: Some(seconds),
        in_flight_batches: 1,
        in_flight_bytes: 100,
    }
}

#[test]
fn partition_gauges_follow_the_partitions_held_and_aggregate_per_topic() {
    let metrics = Metrics::new();
    let (a0, a1, b0) = (partition("a", 0), partition("a", 1), partition("b", 0));
    metrics.publish_partition_gauges([
        reading(&a0, 5, 1.5),
        reading(&a1, 7, 3.0),
        reading(&b0, 0, 0.0),
    ]);
    let labels_a1 = metrics.partition_labels(&a1);
    assert_eq!(
        labels_a1,
        vec![
            ("flow", "dr".to_string()),
            ("topic", "a".to_string()),
            ("partition", "1".to_string())
        ]
    );
    assert_eq!(metrics.lag_records.get(&labels_a1).unwrap().get(), 7);
    assert_eq!(metrics.assigned_partitions.get(), 3);

    // a/1 leaves: its series go.
    metrics.publish_partition_gauges([reading(&a0, 5, 1.5), reading(&b0, 0, 0.0)]);
    assert!(metrics.lag_records.get(&labels_a1).is_none());
    assert!(metrics.in_flight_bytes.get(&labels_a1).is_none());

    // Per topic: sums, and the largest lag in seconds.
    metrics.granularity.store(1, Ordering::Relaxed);
    metrics.publish_partition_gauges([reading(&a0, 5, 1.5), reading(&a1, 7, 3.0)]);
    let topic_a = metrics.partition_labels(&a0);
    assert_eq!(topic_a.len(), 2);
    assert_eq!(metrics.lag_records.get(&topic_a).unwrap().get(), 12);
    assert_eq!(metrics.lag_seconds.get(&topic_a).unwrap().get(), 3.0);
    assert_eq!(metrics.in_flight_batches.get(&topic_a).unwrap().get(), 2);
    assert!(metrics
        .lag_records
        .get(&metrics.partition_labels(&b0))
        .is_none());
}

#[test]
fn rendered_names_follow_prometheus_conventions() {
    let metrics = Metrics::new();
    metrics
        .fetched_records
        .get_or_create(&metrics.partition_labels(&partition("a", 0)))
        .inc_by(3);
    metrics
        .record_age
        .get_or_create(&metrics.topic_labels("dr", "a"))
        .observe(0.2);
    let mut text = String::new();
    prometheus_text::encode(&mut text, &registry_for(Role::Fetcher, &metrics)).unwrap();
    assert!(
        text.contains(r#"kmirror_fetched_records_total{flow="dr",topic="a",partition="0"} 3"#),
        "{text}"
    );
    assert!(
        text.contains("kmirror_record_age_seconds_bucket{"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE kmirror_replicate_streams gauge"),
        "{text}"
    );
    assert!(!text.contains("kmirror_produced_records"), "{text}");
}

/// Series of `kmirror_partition_stopped` a scrape would show.
fn stopped_series(metrics: &Metrics) -> usize {
    let mut text = String::new();
    prometheus_text::encode(&mut text, &registry_for(Role::Fetcher, metrics)).unwrap();
    text.lines()
        .filter(|line| line.starts_with("kmirror_partition_stopped{"))
        .count()
}

#[test]
fn a_deleted_flows_series_are_removed_and_others_stay() {
    let metrics = Metrics::new();
    let dropped = partition("a", 0);
    let kept = PartitionKey::new(FlowName::new("other").unwrap(), "a", 0);
    for key in [&dropped, &kept] {
        let labels = metrics.partition_labels(key);
        metrics.fetched_records.get_or_create(&labels).inc_by(3);
        metrics.produced_records.get_or_create(&labels).inc_by(3);
        metrics
            .record_age
            .get_or_create(&metrics.topic_labels(key.flow.as_str(), &key.topic))
            .observe(0.1);
    }
    metrics.publish_partition_gauges([reading(&dropped, 1, 0.5), reading(&kept, 1, 0.5)]);
    metrics.partition_stopped(&dropped, "record too large");

    metrics.forget_flow("dr");
    let dropped_labels = metrics.partition_labels(&dropped);
    assert!(metrics.fetched_records.get(&dropped_labels).is_none());
    assert!(metrics.produced_records.get(&dropped_labels).is_none());
    assert!(metrics.lag_records.get(&dropped_labels).is_none());
    assert!(metrics
        .record_age
        .get(&metrics.topic_labels("dr", "a"))
        .is_none());
    assert_eq!(stopped_series(&metrics), 0);
    let kept_labels = metrics.partition_labels(&kept);
    assert_eq!(metrics.fetched_records.get(&kept_labels).unwrap().get(), 3);
    assert!(metrics.lag_records.get(&kept_labels).is_some());
}

#[test]
fn a_stopped_partition_has_one_series_naming_its_latest_reason() {
    let metrics = Metrics::new();
    let stuck = partition("a", 0);
    metrics.partition_stopped(&stuck, "destination topic a is missing");
    metrics.partition_stopped(
        &stuck,
        "record at offset 3 is larger\nthan max.message.bytes",
    );
    let mut text = String::new();
    prometheus_text::encode(&mut text, &registry_for(Role::Fetcher, &metrics)).unwrap();
    assert!(
        text.contains(r#"kmirror_partition_stopped{flow="dr",topic="a",partition="0",reason="record at offset 3 is larger than max.message.bytes"} 1"#),
        "{text}"
    );
    assert!(!text.contains("is missing"), "{text}");
    metrics.partition_progressing(&stuck);
    assert_eq!(stopped_series(&metrics), 0);
    assert_eq!(stopped_reason_label(&"x".repeat(300)).len(), 203);
}

#[test]
fn error_kinds_become_snake_case_labels() {
    assert_eq!(error_kind_label("RecordTooLarge"), "record_too_large");
    assert_eq!(error_kind_label("StaleEpoch"), "stale_epoch");
    assert_eq!(error_kind_label("delivery_failed"), "delivery_failed");
}
