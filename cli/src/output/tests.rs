use kmirror_proto::v1::{Flow, FlowStatus, GroupSyncStatus, Member, PartitionStatus, TopicMatch};

use super::*;

/// Golden files live in `cli/tests/golden/`; `KMIRROR_UPDATE_GOLDEN=1` rewrites
/// them from the current output (review the diff before committing).
fn assert_golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("KMIRROR_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    assert_eq!(
        actual,
        expected,
        "output differs from {} (KMIRROR_UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

fn sample_status() -> Vec<FlowStatus> {
    vec![FlowStatus {
        name: "dr".to_string(),
        source_cluster: "src".to_string(),
        dest_cluster: "dst".to_string(),
        state: "degraded".to_string(),
        error: String::new(),
        total_lag: 42,
        phase: "running".to_string(),
        until_caught_up: false,
        target_records: -1,
        remaining_records: -1,
        records_per_sec: 1234.567,
        bytes_per_sec: 98765.4,
        completed_ms: 0,
        group_sync_at_ms: 1_700_000_000_000,
        group_sync_error: String::new(),
        group_sync: vec![
            GroupSyncStatus {
                group: "billing".to_string(),
                state: "synced".to_string(),
                committed: 2,
                unchanged: 1,
                skipped: Vec::new(),
            },
            GroupSyncStatus {
                group: "shipping".to_string(),
                state: "live".to_string(),
                committed: 0,
                unchanged: 0,
                skipped: vec!["the destination group is in use (1 active member, state Stable): a live group is never moved".to_string()],
            },
        ],
        partitions: vec![
            PartitionStatus {
                topic: "orders".to_string(),
                partition: 0,
                dest_topic: "orders".to_string(),
                log_end_offset: 1000,
                mirrored_offset: 958,
                lag: 42,
                fetcher: "fetcher-1".to_string(),
                writer: "writer-1".to_string(),
                epoch: 7,
                error: String::new(),
                dest_offset: 957,
                target_offset: -1,
                records_per_sec: 1234.567,
                bytes_per_sec: 98765.4,
                checkpoint_ms: 1_700_000_000_000,
                hold: None,
            },
            PartitionStatus {
                topic: "orders".to_string(),
                partition: 1,
                dest_topic: "orders".to_string(),
                log_end_offset: -1,
                mirrored_offset: 0,
                lag: -1,
                fetcher: String::new(),
                writer: String::new(),
                epoch: 0,
                error: "record too large".to_string(),
                dest_offset: -1,
                target_offset: -1,
                records_per_sec: 0.0,
                bytes_per_sec: 0.0,
                checkpoint_ms: 0,
                hold: None,
            },
        ],
    }]
}

fn sample_members() -> Vec<Member> {
    vec![
        Member {
            id: "coordinator-a".to_string(),
            role: "coordinator".to_string(),
            address: "10.0.0.1:7070".to_string(),
            version: "0.1.0".to_string(),
            leader: true,
            partitions: 0,
            lease_remaining_ms: 5000,
            records_per_sec: 0.0,
            bytes_per_sec: 0.0,
            drained: false,
            started_ms: 1_700_000_000_000,
            metrics_url: "http://10.0.0.1:9100/metrics".to_string(),
        },
        Member {
            id: "fetcher-b".to_string(),
            role: "fetcher".to_string(),
            address: "10.0.0.2:40001".to_string(),
            version: "0.1.0".to_string(),
            leader: false,
            partitions: 8,
            lease_remaining_ms: 4000,
            records_per_sec: 12500.0,
            bytes_per_sec: 2_500_000.0,
            drained: true,
            started_ms: 1_700_000_000_500,
            metrics_url: String::new(),
        },
    ]
}

fn sample_flows() -> Vec<Flow> {
    vec![
        Flow {
            name: "dr".to_string(),
            source_cluster: "src".to_string(),
            dest_cluster: "dst".to_string(),
            include: "orders\\..*".to_string(),
            exclude: ".*\\.tmp".to_string(),
            rename_policy: "identity".to_string(),
            start: "earliest".to_string(),
            sync_topic_configs: Some(true),
            sync_topic_configs_exclude: vec!["min\\.insync\\.replicas".to_string()],
            sync_topic_configs_exclude_set: true,
            phase: "running".to_string(),
            created_ms: 1_700_000_000_000,
            exactly_once: true,
            ..Flow::default()
        },
        Flow {
            name: "move".to_string(),
            source_cluster: "east".to_string(),
            dest_cluster: "central".to_string(),
            include: ".*".to_string(),
            rename_policy: "prefix".to_string(),
            rename_prefix: "east".to_string(),
            rename_separator: ".".to_string(),
            start: "timestamp".to_string(),
            start_timestamp_ms: 1_714_521_600_000,
            until_caught_up: true,
            paused: true,
            sync_topic_configs: Some(false),
            sync_topic_configs_exclude_set: true,
            phase: "paused".to_string(),
            created_ms: 1_700_000_001_000,
            ..Flow::default()
        },
    ]
}

#[test]
fn status_json_matches_the_golden_file() {
    let json = render(
        OutputFormat::Json,
        &StatusJson::new("coordinator-a", &sample_status()),
        |_| unreachable!(),
    );
    assert_golden("status.json", &json);
}

#[test]
fn members_json_matches_the_golden_file() {
    let members = sample_members();
    let json = render(
        OutputFormat::Json,
        &MembersJson {
            members: members.iter().map(MemberJson::from).collect(),
        },
        |_| unreachable!(),
    );
    assert_golden("members.json", &json);
}

#[test]
fn flow_list_json_matches_the_golden_file() {
    let flows = sample_flows();
    let json = render(
        OutputFormat::Json,
        &FlowsJson {
            flows: flows.iter().map(FlowJson::from).collect(),
        },
        |_| unreachable!(),
    );
    assert_golden("flow-list.json", &json);
}

#[test]
fn yaml_is_the_same_document_as_json() {
    let value = StatusJson::new("coordinator-a", &sample_status());
    let yaml = render(OutputFormat::Yaml, &value, |_| unreachable!());
    assert!(yaml.contains("leader: coordinator-a"), "{yaml}");
    let json: serde_json::Value = serde_json::from_str(&to_json(&value)).unwrap();
    let from_yaml: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(json, from_yaml);
}

#[test]
fn tables_align_columns_without_borders_or_trailing_spaces() {
    let table = render_table(
        &["NAME", "VALUE"],
        &[
            vec!["a".to_string(), "1".to_string()],
            vec!["longer".to_string(), "".to_string()],
        ],
    );
    assert_eq!(table, "NAME    VALUE\na       1\nlonger\n");
}

#[test]
fn status_text_uses_consumer_group_columns_and_a_total_lag_per_flow() {
    let text = status_text("coordinator-a", &sample_status(), false, None);
    let expected = "\
FLOW  TOPIC   PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  FETCHER    WRITER    ERROR
dr    orders  0          958             1000            42   fetcher-1  writer-1
dr    orders  1          0               -               -    -          -         record too large

FLOW  STATE     TOTAL-LAG  CLUSTERS    ERROR
dr    degraded  42         src -> dst

FLOW  GROUP     SYNC    COMMITTED/UNCHANGED  NOTE
dr    billing   synced  2/1
dr    shipping  live    0/0                  the destination group is in use (1 active member, state Stable): a live group is never moved
";
    assert_eq!(text, expected);
}

#[test]
fn an_unmeasured_total_lag_reads_unknown_and_null_never_0() {
    let mut flows = sample_status();
    flows[0].total_lag = -1;
    let text = status_text("c", &flows, false, None);
    assert!(text.contains("dr    degraded  unknown"), "{text}");
    let json = serde_json::to_value(FlowStatusJson::from(&flows[0])).unwrap();
    assert_eq!(json["total_lag"], serde_json::Value::Null);
}

#[test]
fn status_text_says_when_no_coordinator_leads() {
    let text = status_text("", &[], false, None);
    assert_eq!(text, "no flows\n\nno coordinator leads the fleet\n");
}

#[test]
fn watch_adds_the_rate_measured_between_refreshes() {
    let rates = Rates::from([(("dr".to_string(), "orders".to_string(), 0), 2500.0)]);
    let text = status_text("c", &sample_status(), false, Some(&rates));
    let first_row = text.lines().nth(1).unwrap();
    assert!(first_row.contains("2.5k/s"), "{text}");
}

#[test]
fn a_degraded_fleet_names_the_stopped_partitions() {
    let reasons = degraded_reasons("coordinator-a", &sample_status());
    assert_eq!(
        reasons,
        vec!["flow dr is degraded: 1 partition(s) stopped (orders/1)"]
    );
    assert_eq!(
        degraded_reasons("", &[]),
        vec!["no coordinator leads the fleet"]
    );
}

#[test]
fn top_puts_the_partitions_furthest_behind_first() {
    let text = top_text(&sample_status(), 1, None);
    let expected = "\
FLOW  TOPIC   PARTITION  LAG  RATE    BYTES/S    ETA  FETCHER    ERROR
dr    orders  0          42   1.2k/s  98.8 kB/s  0s   fetcher-1
";
    assert_eq!(text, expected);
}

#[test]
fn members_table_shows_lease_rate_and_drain() {
    let expected = "\
ID             ROLE         ADDRESS         LEADER  LEASE  PARTITIONS  RATE     DRAIN
coordinator-a  coordinator  10.0.0.1:7070   yes     5s     -           -        -
fetcher-b      fetcher      10.0.0.2:40001  -       4s     8           12.5k/s  drained
";
    assert_eq!(members_text(&sample_members(), false), expected);
}

#[test]
fn flows_table_shows_the_phase_and_wide_the_options() {
    let text = flows_text(&sample_flows(), true);
    assert!(text.contains("prefix east."), "{text}");
    assert!(text.contains("migration"), "{text}");
    assert!(text.lines().nth(2).unwrap().contains("paused"), "{text}");
    assert!(text.lines().next().unwrap().ends_with("DELIVERY"), "{text}");
    assert!(
        text.lines().nth(1).unwrap().ends_with("exactly-once"),
        "{text}"
    );
    assert!(
        text.lines().nth(2).unwrap().ends_with("at-least-once"),
        "{text}"
    );
    assert!(!flows_text(&sample_flows(), false).contains("DELIVERY"));
}

#[test]
fn empty_lists_say_so() {
    assert_eq!(members_text(&[], false), "no members\n");
    assert_eq!(clusters_text(&[]), "no clusters\n");
    assert_eq!(flows_text(&[], false), "no flows\n");
    assert_eq!(assignments_text(&[], false), "no assignments\n");
}

#[test]
fn human_units_read_at_a_glance() {
    assert_eq!(human_rate(950.0), "950");
    assert_eq!(human_rate(12_345.0), "12.3k");
    assert_eq!(human_bytes_rate(0.0), "0 B/s");
    assert_eq!(human_bytes_rate(4_500_000.0), "4.5 MB/s");
    assert_eq!(human_duration(200.0), "3m20s");
    assert_eq!(human_duration(7500.0), "2h05m");
}

#[test]
fn unknown_values_are_null_in_json_and_yaml_but_dashes_in_text() {
    let json: serde_json::Value =
        serde_json::from_str(&to_json(&StatusJson::new("", &sample_status()))).unwrap();
    assert!(json["leader"].is_null(), "{json}");
    let unreachable = &json["flows"][0]["partitions"][1];
    assert!(unreachable["log_end_offset"].is_null(), "{unreachable}");
    assert!(unreachable["lag"].is_null(), "{unreachable}");
    assert!(unreachable["dest_offset"].is_null(), "{unreachable}");
    assert!(unreachable["target_offset"].is_null(), "{unreachable}");
    assert!(json["flows"][0]["target_records"].is_null(), "{json}");
    let yaml = to_yaml(&StatusJson::new("", &sample_status()));
    assert!(!yaml.contains(": -1"), "{yaml}");
    assert!(!yaml.contains(": ''"), "{yaml}");
    let text = status_text("coordinator-a", &sample_status(), false, None);
    assert!(!text.contains("null"), "{text}");
    assert!(text.contains(" - "), "{text}");
}

#[test]
fn wide_members_show_the_metrics_url() {
    let text = members_text(&sample_members(), true);
    assert!(text.lines().next().unwrap().ends_with("METRICS"), "{text}");
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .ends_with("http://10.0.0.1:9100/metrics"),
        "{text}"
    );
    assert!(text.lines().nth(2).unwrap().ends_with(" -"), "{text}");
}

#[test]
fn matched_topics_name_their_destination_and_new_topics() {
    let topics = [
        TopicMatch {
            source_topic: "orders".to_string(),
            dest_topic: "east.orders".to_string(),
            source_partitions: 6,
            dest_partitions: 0,
        },
        TopicMatch {
            source_topic: "payments".to_string(),
            dest_topic: "east.payments".to_string(),
            source_partitions: 3,
            dest_partitions: 3,
        },
    ];
    assert_eq!(
        matched_topics_text(&topics),
        "\
2 topic(s) matched:
TOPIC     PARTITIONS  DEST-TOPIC     DEST-PARTITIONS
orders    6           east.orders    new
payments  3           east.payments  3
"
    );
    assert_eq!(matched_topics_text(&[]), "no source topic matches now\n");
    let json = FlowStoredJson::new("dr", "created", &topics, &[]);
    assert_eq!(json.topics[0].dest_partitions, None);
    assert_eq!(json.topics[1].dest_partitions, Some(3));
}

#[test]
fn a_held_partition_shows_its_lost_offsets_and_the_reset_to_run() {
    let mut flows = sample_status();
    let message = "source log start 5000 passed checkpoint 3200: offsets 3200..4999 lost";
    let held = &mut flows[0].partitions[1];
    held.error = format!("held: {message}");
    held.hold = Some(kmirror_proto::v1::PartitionHold {
        reason: "retention_gap".to_string(),
        position: 3_200,
        log_start: 5_000,
        log_end: 9_000,
        lost_from: 3_200,
        lost_to: 4_999,
        message: message.to_string(),
        detected_ms: 1_700_000_000_000,
        detected_by: "fetcher-1".to_string(),
    });
    let text = status_text("coordinator-1", &flows, false, None);
    assert!(text.contains(&format!("held: {message}")), "{text}");
    assert!(
        text.contains("1 partitions held: nothing of them is mirrored until an operator runs `kmirrorctl partition reset FLOW TOPIC PARTITION --to earliest|latest|OFFSET`"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&to_json(&StatusJson::new("coordinator-1", &flows))).unwrap();
    let partitions = &json["flows"][0]["partitions"];
    assert!(partitions[0]["hold"].is_null());
    let hold = &partitions[1]["hold"];
    assert_eq!(hold["reason"], "retention_gap");
    assert_eq!(hold["lost_from"], 3_200);
    assert_eq!(hold["lost_to"], 4_999);
    assert_eq!(hold["message"], message);
}
