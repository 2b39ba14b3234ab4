use super::*;
use crate::send::extend_runs;
use kmirror_common::FlowName;
use kmirror_proto::packed::PackedBuilder;

fn batch(offsets: std::ops::Range<i64>) -> Batch {
    let mut records = PackedBuilder::default();
    for offset in offsets.clone() {
        records
            .push(offset, Some(b"key"), None, [("h", None)], Some(offset))
            .unwrap();
    }
    let mut batch = Batch {
        seq: 4,
        next_offset: offsets.end,
        ..Batch::default()
    };
    batch.set_packed(records.finish());
    batch
}

#[test]
fn a_partitions_acks_leave_in_arrival_order_whatever_order_batches_complete_in() {
    let orders = PartitionKey::new(FlowName::new("dr").unwrap(), "orders", 0);
    let payments = PartitionKey::new(FlowName::new("dr").unwrap(), "payments", 0);
    let mut ack_order: HashMap<PartitionKey, VecDeque<u64>> = HashMap::new();
    ack_order.insert(orders.clone(), VecDeque::from([1, 2, 3]));
    ack_order.insert(payments.clone(), VecDeque::from([4]));
    let mut finished: HashMap<u64, &str> = HashMap::new();

    // The cut-short batch 2 completes first: it waits for batch 1.
    finished.insert(2, "orders 2");
    assert!(next_in_order(&mut ack_order, &mut finished, &orders).is_empty());
    // Another partition is not held up by it.
    finished.insert(4, "payments 4");
    assert_eq!(
        next_in_order(&mut ack_order, &mut finished, &payments),
        ["payments 4"]
    );
    assert!(!ack_order.contains_key(&payments));
    // Batch 1 completes: both leave, in order; batch 3 is still waited for.
    finished.insert(1, "orders 1");
    assert_eq!(
        next_in_order(&mut ack_order, &mut finished, &orders),
        ["orders 1", "orders 2"]
    );
    finished.insert(3, "orders 3");
    assert_eq!(
        next_in_order(&mut ack_order, &mut finished, &orders),
        ["orders 3"]
    );
    assert!(ack_order.is_empty() && finished.is_empty());
}

#[test]
fn a_batchs_source_offsets_are_kept_as_runs_split_at_each_gap() {
    let mut runs = Vec::new();
    for offset in [10, 11, 12, 15, 16, 20] {
        extend_runs(&mut runs, offset);
    }
    assert_eq!(runs, vec![(10, 3), (15, 2), (20, 1)]);
}

#[test]
fn a_malformed_batch_is_refused_naming_the_partition_and_the_record() {
    let partition = PartitionKey::new(FlowName::new("dr").unwrap(), "orders", 2);
    let summary = read_records(&batch(10..13), &partition).unwrap();
    assert_eq!((summary.record_count, summary.first_offset), (3, Some(10)));

    let mut truncated = batch(10..13);
    truncated.records.truncate(truncated.records.len() - 1);
    let error = read_records(&truncated, &partition).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Rejected);
    assert_eq!(error.offset, -1);
    assert_eq!(
        error.message,
        "batch 4 of dr:orders/2 is malformed, nothing of it was written: \
         record 2: its header 0 value is cut off by the end of the packed records"
    );

    let mut miscounted = batch(10..13);
    miscounted.record_count = 4;
    let error = read_records(&miscounted, &partition).unwrap_err();
    assert!(
        error
            .message
            .ends_with("hold 3 records where the batch declares 4"),
        "{}",
        error.message
    );
}

#[test]
fn producers_keep_idempotence_and_one_request_in_flight_whatever_the_operator_sets() {
    let cluster = ClusterSpec {
        name: ClusterName::new("dest").unwrap(),
        bootstrap_servers: "127.0.0.1:9092".to_string(),
        properties: [
            ("max.in.flight.requests.per.connection", "5"),
            ("acks", "1"),
            ("linger.ms", "20"),
        ]
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect(),
    };
    let overrides = [("enable.idempotence".to_string(), "false".to_string())];
    let config = producer_config(&cluster, 65_536, &overrides).unwrap();
    assert_eq!(
        config.get("max.in.flight.requests.per.connection"),
        Some("1")
    );
    assert_eq!(config.get("acks"), Some("all"));
    assert_eq!(config.get("enable.idempotence"), Some("true"));
    // The operator's tuning still counts.
    assert_eq!(config.get("linger.ms"), Some("20"));
    assert_eq!(config.get("batch.size"), Some("65536"));
}
