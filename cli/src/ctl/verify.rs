//! `verify FLOW`: whether the destination holds what a flow mirrored, as the
//! coordinator checks it (`VerifyFlow`). Prints the partitions checked and every
//! finding; exits 1 on drift.
//!
//! `-o json` document (fields may be added, never renamed or removed):
//! `{"flow","source_cluster","dest_cluster","map_topic","seed","drift",
//! "topics":[{"source_topic","dest_topic","source_partitions","dest_partitions",
//! "configs_synced","configs_compared","partitions":[{"partition",
//! "mirrored_records","first_source_offset","last_source_offset",
//! "dest_held_records","source_expired_records","sampled","sample_matched",
//! "sample_differing","sample_unverifiable","sample_missing","source_log_start",
//! "source_log_end","dest_log_start","dest_log_end"}]}],"findings":[{"kind",
//! "drift","source_topic","dest_topic","partition","detail","config",
//! "source_value","dest_value","source_first_offset","source_last_offset",
//! "dest_first_offset","dest_last_offset","records"}]}`. Unknown or inapplicable
//! values are null: `dest_partitions` of a missing topic, the offsets of a
//! partition with nothing mirrored, a finding's `partition` when it is about a
//! whole topic, its `source_topic` when it is about the flow (`map_missing`: its
//! `dest_topic` is the map topic), its `config` fields unless it is about a
//! config, its offsets when it names none.

use kmirror_proto::v1::{
    VerifiedPartition, VerifiedTopic, VerifyFinding, VerifyFlowRequest, VerifyFlowResponse,
};
use serde::Serialize;

use super::failure::Failure;
use super::{Ctl, Outcome};
use crate::output::{offset_cell, or_dash, render, render_table};

#[derive(Debug, Serialize)]
struct VerifyJson {
    flow: String,
    source_cluster: String,
    dest_cluster: String,
    map_topic: String,
    seed: u64,
    drift: bool,
    topics: Vec<TopicJson>,
    findings: Vec<FindingJson>,
}

#[derive(Debug, Serialize)]
struct TopicJson {
    source_topic: String,
    dest_topic: String,
    source_partitions: i32,
    dest_partitions: Option<i32>,
    configs_synced: bool,
    configs_compared: u32,
    partitions: Vec<PartitionJson>,
}

#[derive(Debug, Serialize)]
struct PartitionJson {
    partition: i32,
    mirrored_records: u64,
    first_source_offset: Option<i64>,
    last_source_offset: Option<i64>,
    dest_held_records: u64,
    source_expired_records: u64,
    sampled: u32,
    sample_matched: u32,
    sample_differing: u32,
    sample_unverifiable: u32,
    sample_missing: u32,
    source_log_start: i64,
    source_log_end: i64,
    dest_log_start: i64,
    dest_log_end: i64,
}

#[derive(Debug, Serialize)]
struct FindingJson {
    kind: String,
    drift: bool,
    source_topic: Option<String>,
    dest_topic: String,
    partition: Option<i32>,
    detail: String,
    config: Option<String>,
    source_value: Option<String>,
    dest_value: Option<String>,
    source_first_offset: Option<i64>,
    source_last_offset: Option<i64>,
    dest_first_offset: Option<i64>,
    dest_last_offset: Option<i64>,
    records: u64,
}

fn known(offset: i64) -> Option<i64> {
    (offset >= 0).then_some(offset)
}

impl From<&VerifiedPartition> for PartitionJson {
    fn from(partition: &VerifiedPartition) -> Self {
        Self {
            partition: partition.partition,
            mirrored_records: partition.mirrored_records,
            first_source_offset: known(partition.first_source_offset),
            last_source_offset: known(partition.last_source_offset),
            dest_held_records: partition.dest_held_records,
            source_expired_records: partition.source_expired_records,
            sampled: partition.sampled,
            sample_matched: partition.sample_matched,
            sample_differing: partition.sample_differing,
            sample_unverifiable: partition.sample_unverifiable,
            sample_missing: partition.sample_missing,
            source_log_start: partition.source_log_start,
            source_log_end: partition.source_log_end,
            dest_log_start: partition.dest_log_start,
            dest_log_end: partition.dest_log_end,
        }
    }
}

impl From<&VerifiedTopic> for TopicJson {
    fn from(topic: &VerifiedTopic) -> Self {
        Self {
            source_topic: topic.source_topic.clone(),
            dest_topic: topic.dest_topic.clone(),
            source_partitions: topic.source_partitions,
            dest_partitions: (topic.dest_partitions >= 0).then_some(topic.dest_partitions),
            configs_synced: topic.configs_synced,
            configs_compared: topic.configs_compared,
            partitions: topic.partitions.iter().map(Into::into).collect(),
        }
    }
}

impl From<&VerifyFinding> for FindingJson {
    fn from(finding: &VerifyFinding) -> Self {
        let about_config = !finding.config.is_empty();
        Self {
            kind: finding.kind.clone(),
            drift: finding.drift,
            source_topic: (!finding.source_topic.is_empty()).then(|| finding.source_topic.clone()),
            dest_topic: finding.dest_topic.clone(),
            partition: (finding.partition >= 0).then_some(finding.partition),
            detail: finding.detail.clone(),
            config: about_config.then(|| finding.config.clone()),
            source_value: about_config.then(|| finding.source_value.clone()),
            dest_value: (about_config && !finding.dest_value.is_empty())
                .then(|| finding.dest_value.clone()),
            source_first_offset: known(finding.source_first_offset),
            source_last_offset: known(finding.source_last_offset),
            dest_first_offset: known(finding.dest_first_offset),
            dest_last_offset: known(finding.dest_last_offset),
            records: finding.records,
        }
    }
}

impl From<&VerifyFlowResponse> for VerifyJson {
    fn from(answer: &VerifyFlowResponse) -> Self {
        Self {
            flow: answer.flow.clone(),
            source_cluster: answer.source_cluster.clone(),
            dest_cluster: answer.dest_cluster.clone(),
            map_topic: answer.map_topic.clone(),
            seed: answer.seed,
            drift: answer.drift,
            topics: answer.topics.iter().map(Into::into).collect(),
            findings: answer.findings.iter().map(Into::into).collect(),
        }
    }
}

impl Ctl {
    pub(super) async fn verify(
        &mut self,
        flow: String,
        sample: u32,
        seed_opt: Option<u64>,
    ) -> Result<Outcome, Failure> {
        let answer = self
            .client
            .verify_flow(VerifyFlowRequest {
                flow: flow.clone(),
                sample,
                seed: seed_opt.unwrap_or(0),
            })
            .await
            .map_err(|status| self.failure(format!("cannot verify flow {flow}"), status))?
            .into_inner();
        let stdout = render(self.format, &VerifyJson::from(&answer), |wide| {
            verify_text(&answer, sample, wide)
        });
        let drifted = answer
            .findings
            .iter()
            .filter(|finding| finding.drift)
            .count();
        Ok(Outcome {
            stdout,
            degraded_opt: answer.drift.then(|| {
                format!(
                    "flow {} drifted: {drifted} finding(s) of drift (see the report)",
                    answer.flow
                )
            }),
        })
    }
}

/// The partitions checked, then the findings, then one line of summary.
pub(super) fn verify_text(answer: &VerifyFlowResponse, sample: u32, wide: bool) -> String {
    let mut output = String::new();
    let mut headers = vec![
        "TOPIC",
        "PARTITION",
        "MIRRORED",
        "DEST-HELD",
        "SOURCE-EXPIRED",
    ];
    if sample > 0 {
        headers.extend(["SAMPLED", "MATCHED", "DIFFERING", "NOT-COMPARED"]);
    }
    if wide {
        // Mirrored source offsets (first..=last); each log as start..end.
        headers.extend(["DEST-TOPIC", "MIRRORED-OFFSETS", "SOURCE-LOG", "DEST-LOG"]);
    }
    let mut rows = Vec::new();
    for topic in &answer.topics {
        for partition in &topic.partitions {
            let mut row = vec![
                topic.source_topic.clone(),
                partition.partition.to_string(),
                partition.mirrored_records.to_string(),
                partition.dest_held_records.to_string(),
                partition.source_expired_records.to_string(),
            ];
            if sample > 0 {
                row.extend([
                    partition.sampled.to_string(),
                    partition.sample_matched.to_string(),
                    partition.sample_differing.to_string(),
                    (partition.sample_unverifiable + partition.sample_missing).to_string(),
                ]);
            }
            if wide {
                row.extend([
                    topic.dest_topic.clone(),
                    if partition.mirrored_records > 0 {
                        format!(
                            "{}..={}",
                            partition.first_source_offset, partition.last_source_offset
                        )
                    } else {
                        "-".to_string()
                    },
                    format!(
                        "{}..{}",
                        partition.source_log_start, partition.source_log_end
                    ),
                    format!("{}..{}", partition.dest_log_start, partition.dest_log_end),
                ]);
            }
            rows.push(row);
        }
    }
    if !rows.is_empty() {
        output.push_str(&render_table(&headers, &rows));
    }
    if !answer.findings.is_empty() {
        if !output.is_empty() {
            output.push('\n');
        }
        let finding_rows: Vec<Vec<String>> = answer
            .findings
            .iter()
            .map(|finding| {
                vec![
                    if finding.drift { "drift" } else { "note" }.to_string(),
                    or_dash(&finding.source_topic),
                    offset_cell(i64::from(finding.partition)),
                    finding.detail.clone(),
                ]
            })
            .collect();
        output.push_str(&render_table(
            &["FINDING", "TOPIC", "PARTITION", "WHAT"],
            &finding_rows,
        ));
        output.push('\n');
    }
    output.push_str(&summary(answer, sample));
    output
}

fn summary(answer: &VerifyFlowResponse, sample: u32) -> String {
    let partitions: Vec<&VerifiedPartition> = answer
        .topics
        .iter()
        .flat_map(|topic| &topic.partitions)
        .collect();
    let mirrored: u64 = partitions
        .iter()
        .map(|partition| partition.mirrored_records)
        .sum();
    let compared: u32 = partitions.iter().map(|partition| partition.sampled).sum();
    let drifted = answer
        .findings
        .iter()
        .filter(|finding| finding.drift)
        .count();
    let verdict = if answer.drift {
        format!("{drifted} finding(s) of drift")
    } else {
        "no drift".to_string()
    };
    let mut line = format!(
        "flow {}: {verdict} ({} topic(s), {} partition(s) checked, {mirrored} mirrored record(s)",
        answer.flow,
        answer.topics.len(),
        partitions.len()
    );
    if sample > 0 {
        line.push_str(&format!(", {compared} sampled, seed {}", answer.seed));
    }
    line.push_str(")\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(findings: Vec<VerifyFinding>) -> VerifyFlowResponse {
        VerifyFlowResponse {
            flow: "dr".into(),
            source_cluster: "source".into(),
            dest_cluster: "dest".into(),
            map_topic: "__kmirror.prod.offsets".into(),
            seed: 42,
            drift: findings.iter().any(|finding| finding.drift),
            topics: vec![VerifiedTopic {
                source_topic: "orders".into(),
                dest_topic: "orders".into(),
                source_partitions: 1,
                dest_partitions: 1,
                configs_synced: true,
                configs_compared: 4,
                partitions: vec![VerifiedPartition {
                    partition: 0,
                    mirrored_records: 10,
                    first_source_offset: 0,
                    last_source_offset: 9,
                    dest_held_records: 9,
                    source_expired_records: 0,
                    sampled: 5,
                    sample_matched: 5,
                    source_log_end: 10,
                    dest_log_start: 1,
                    dest_log_end: 10,
                    ..VerifiedPartition::default()
                }],
            }],
            findings,
        }
    }

    fn missing_record() -> VerifyFinding {
        VerifyFinding {
            kind: "records_missing".into(),
            drift: true,
            source_topic: "orders".into(),
            dest_topic: "orders".into(),
            partition: 0,
            detail: "1 mirrored record(s) at destination offset 0 are gone".into(),
            source_first_offset: 0,
            source_last_offset: 0,
            dest_first_offset: 0,
            dest_last_offset: 0,
            records: 1,
            ..VerifyFinding::default()
        }
    }

    #[test]
    fn a_healthy_flow_reads_no_drift_with_its_counts() {
        let text = verify_text(&answer(Vec::new()), 5, false);
        assert!(
            text.contains("MIRRORED") && text.contains("MATCHED"),
            "{text}"
        );
        assert!(!text.contains("FINDING"), "{text}");
        assert!(
            text.ends_with(
                "flow dr: no drift (1 topic(s), 1 partition(s) checked, 10 mirrored record(s), 5 sampled, seed 42)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn each_finding_says_what_and_where_and_json_has_nulls_for_what_it_lacks() {
        let report = answer(vec![
            missing_record(),
            VerifyFinding {
                kind: "config".into(),
                drift: true,
                source_topic: "orders".into(),
                dest_topic: "orders".into(),
                partition: -1,
                detail: "config retention.ms is 1 in the destination where the source has 2".into(),
                config: "retention.ms".into(),
                source_value: "2".into(),
                dest_value: "1".into(),
                source_first_offset: -1,
                source_last_offset: -1,
                dest_first_offset: -1,
                dest_last_offset: -1,
                records: 0,
            },
        ]);
        let text = verify_text(&report, 0, false);
        assert!(
            text.contains(
                "drift    orders  0          1 mirrored record(s) at destination offset 0 are gone"
            ),
            "{text}"
        );
        assert!(
            text.contains("drift    orders  -          config retention.ms"),
            "{text}"
        );
        assert!(text.contains("flow dr: 2 finding(s) of drift"), "{text}");
        let json = serde_json::to_value(VerifyJson::from(&report)).unwrap();
        assert_eq!(json["drift"], true);
        assert_eq!(json["findings"][0]["config"], serde_json::Value::Null);
        assert_eq!(json["findings"][0]["dest_first_offset"], 0);
        assert_eq!(json["findings"][1]["partition"], serde_json::Value::Null);
        assert_eq!(json["findings"][1]["dest_value"], "1");
        assert_eq!(json["topics"][0]["partitions"][0]["dest_held_records"], 9);
    }
}
