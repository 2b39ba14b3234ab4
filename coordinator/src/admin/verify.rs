//! Flow verification (`VerifyFlow`, `kmirrorctl verify`): whether the destination
//! holds what a flow mirrored, to run before a failover.
//!
//! I/O at the edges: the flow and its clusters from etcd; both clusters' topics
//! and topic configs; the flow's offset map entries from the destination, then
//! both clusters' watermarks (in that order, so a running flow's latest entries
//! never look like missing records); records of both clusters (the newest
//! record of a destination gap, to tell retention from drift; the sampled
//! records, read per partition in offset order, seeking over wide gaps). In the
//! middle, [`checks`] decides about topics, configs and each partition's mirrored
//! records, and [`samples`] about the records compared in content (both pure,
//! unit-tested).
//!
//! Configs are compared by the config sync's own rule: the source configs it
//! copies ([`ClusterClient::topic_configs`] less the flow's exclusions) must have
//! the same value in the destination; excluded configs and the destination's own
//! settings are not drift. A flow whose configs do not follow the source has no
//! configs compared.

mod checks;
mod samples;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kmirror_common::offset_map::{self, MapEntry};
use kmirror_common::schema::{ClusterSpec, FlowSpec};
use kmirror_proto::v1::{
    VerifiedPartition, VerifiedTopic, VerifyFinding, VerifyFlowRequest, VerifyFlowResponse,
};

use self::checks::{
    check_partition, config_findings, missing_finding, partition_copies, topic_findings,
    DestRetention, DestTopicState, Finding, MissingRun, PartitionCounts, Unverifiable, Watermarks,
};
use self::samples::{
    before_reading, judge_sample, pick_samples, BeforeReading, SampleOutcome, SamplePick, SampleRng,
};
use super::reading::{
    consumer, failed, read_map, read_records, record_reader, FlowClusters, RecordsRead,
    SourcePartitionId, WantedRecords,
};
use super::AdminService;
use crate::error::CoordinatorError;
use crate::kafka::ClusterClient;
use crate::round::config_sync::Configs;
use crate::round::topics::{config_exclusions, copied_configs};
use crate::topic_filter::TopicFilter;

/// Most records compared per partition in one call: each costs a read on both
/// clusters.
pub const MAX_SAMPLE: u32 = 100_000;

/// One source topic of the flow, as both clusters list it.
#[derive(Debug, Clone)]
struct TopicPlan {
    source_topic: String,
    dest_topic: String,
    source_partitions: i32,
    dest_state: DestTopicState,
    /// Whether its partitions are compared: the destination topic exists with
    /// the source's partition count.
    compare_partitions: bool,
    configs_compared: u32,
    retention: DestRetention,
    /// Topic-wide findings (existence, partition count, configs).
    findings: Vec<Finding>,
    /// Watermarks of each partition: source and destination.
    watermarks: Vec<(Watermarks, Watermarks)>,
}

/// What verification found in one partition.
#[derive(Debug, Clone)]
struct PartitionReport {
    counts: PartitionCounts,
    source: Watermarks,
    dest: Watermarks,
    tally: SampleTally,
    findings: Vec<Finding>,
}

#[derive(Debug, Clone, Copy, Default)]
struct SampleTally {
    sampled: u32,
    matched: u32,
    differing: u32,
    unverifiable: u32,
    missing: u32,
}

impl AdminService {
    pub async fn verify_flow(
        &self,
        request: VerifyFlowRequest,
    ) -> Result<VerifyFlowResponse, CoordinatorError> {
        if request.sample > MAX_SAMPLE {
            return Err(CoordinatorError::InvalidArgument(format!(
                "a sample of {} records per partition is more than the {MAX_SAMPLE} one verification compares",
                request.sample
            )));
        }
        let FlowClusters { flow, source, dest } = self.flow_with_clusters(&request.flow).await?;
        let filter = TopicFilter::new(&flow.include, flow.exclude.as_deref())?;
        let excluded = config_exclusions(&flow).map_err(CoordinatorError::InvalidArgument)?;
        let source_client = self.kafka.client(&source)?;
        let dest_client = self.kafka.client(&dest)?;
        let (source_listing, dest_listing) =
            tokio::join!(source_client.list_topics(), dest_client.list_topics());
        let (source_listing, dest_listing) = (source_listing?, dest_listing?);
        let map_topic = offset_map::map_topic(self.keys.fleet());

        let mut plans: Vec<TopicPlan> = Vec::new();
        let mut unavailable_sources: Vec<(String, String)> = Vec::new();
        for (topic, cause) in &source_listing.unavailable {
            if filter.matches(topic) {
                unavailable_sources.push((topic.clone(), cause.clone()));
            }
        }
        for (topic, &source_partitions) in &source_listing.partitions {
            if !filter.matches(topic) {
                continue;
            }
            let dest_topic = flow.dest_topic(topic);
            let dest_state = match dest_listing.partitions.get(&dest_topic) {
                Some(&partitions) => DestTopicState::Present { partitions },
                None => match dest_listing.unavailable.get(&dest_topic) {
                    Some(cause) => DestTopicState::Unavailable(cause.clone()),
                    None => DestTopicState::Missing,
                },
            };
            let findings =
                topic_findings(source_partitions, &dest_state, flow.dest_cluster.as_str());
            plans.push(TopicPlan {
                compare_partitions: findings.is_empty(),
                source_topic: topic.clone(),
                dest_topic,
                source_partitions,
                dest_state,
                configs_compared: 0,
                retention: DestRetention {
                    retention_ms_opt: None,
                },
                findings,
                watermarks: Vec::new(),
            });
        }

        compare_configs(&flow, &source_client, &dest_client, &excluded, &mut plans).await?;
        let timeout = self.kafka.timeout();
        let map_exists = dest_listing.partitions.contains_key(&map_topic);
        let entries = if map_exists {
            let (flow, dest, map_topic) = (flow.clone(), dest.clone(), map_topic.clone());
            let wanted = compared_partitions(&plans);
            blocking(move || {
                let map_consumer = consumer(&dest, None)?;
                read_map(&map_consumer, &flow, &map_topic, &wanted, timeout)
                    .map_err(|error| failed(&dest, "reading the offset map", &error))
            })
            .await?
        } else {
            BTreeMap::new()
        };
        // After the map: every record an entry read names was in the destination
        // before these watermarks were read, even while the flow runs.
        read_watermarks(&source, &source_client, &dest, &dest_client, &mut plans).await?;

        let seed = match request.seed {
            0 => uuid::Uuid::new_v4().as_u64_pair().0 | 1,
            seed => seed,
        };
        let sample = request.sample;
        let (plans, partitions) = blocking(move || {
            let reports =
                check_partitions(&source, &dest, &plans, &entries, sample, seed, timeout)?;
            Ok((plans, reports))
        })
        .await?;

        let mut flow_findings: Vec<VerifyFinding> = unavailable_sources
            .iter()
            .map(|(topic, cause)| VerifyFinding {
                kind: "source_topic_unavailable".to_string(),
                drift: true,
                source_topic: topic.clone(),
                dest_topic: flow.dest_topic(topic),
                partition: -1,
                detail: format!(
                    "the source topic cannot be looked at now, so it is not verified: {cause}"
                ),
                ..no_offsets()
            })
            .collect();
        if !map_exists && plans.iter().any(|plan| plan.compare_partitions) {
            // Created before a flow's first record is written: without it nothing
            // mirrored can be checked, nor any offset translated.
            flow_findings.push(VerifyFinding {
                kind: "map_missing".to_string(),
                drift: true,
                dest_topic: map_topic.clone(),
                partition: -1,
                detail: format!(
                    "the offset map topic {map_topic} does not exist in cluster {}: no mirrored record can be checked, nor any offset translated",
                    flow.dest_cluster
                ),
                ..no_offsets()
            });
        }
        Ok(response(
            &flow,
            map_topic,
            seed,
            &plans,
            &partitions,
            flow_findings,
        ))
    }
}

/// Runs librdkafka's blocking calls on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CoordinatorError> + Send + 'static,
) -> Result<T, CoordinatorError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        CoordinatorError::InvalidArgument(format!("verification failed: {error}"))
    })?
}

/// The source partitions whose records are compared.
fn compared_partitions(plans: &[TopicPlan]) -> BTreeSet<SourcePartitionId> {
    plans
        .iter()
        .filter(|plan| plan.compare_partitions)
        .flat_map(|plan| {
            (0..plan.source_partitions).map(|partition| (plan.source_topic.clone(), partition))
        })
        .collect()
}

/// Compares each destination topic's synced configs with its source's, and reads
/// the destination's retention (which tells retention from drift in gaps).
async fn compare_configs(
    flow: &FlowSpec,
    source_client: &ClusterClient,
    dest_client: &ClusterClient,
    excluded: &[regex::Regex],
    plans: &mut [TopicPlan],
) -> Result<(), CoordinatorError> {
    let present: Vec<&TopicPlan> = plans
        .iter()
        .filter(|plan| matches!(plan.dest_state, DestTopicState::Present { .. }))
        .collect();
    let source_topics: Vec<String> = present
        .iter()
        .map(|plan| plan.source_topic.clone())
        .collect();
    let dest_topics: Vec<String> = present.iter().map(|plan| plan.dest_topic.clone()).collect();
    let copied = if flow.config_sync.enabled {
        copied_configs(source_client.topic_configs(&source_topics).await?, excluded)
    } else {
        BTreeMap::new()
    };
    let dest_values = dest_client.topic_config_values(&dest_topics).await?;
    for plan in plans.iter_mut() {
        let Some(dest_result) = dest_values.get(&plan.dest_topic) else {
            continue;
        };
        if let Ok(dest_configs) = dest_result {
            plan.retention = DestRetention::from_configs(dest_configs);
        }
        if !flow.config_sync.enabled {
            continue;
        }
        match (copied.get(&plan.source_topic), dest_result) {
            (Some(Ok(source_configs)), Ok(dest_configs)) => {
                let source_configs: Configs = source_configs.iter().cloned().collect();
                plan.configs_compared = source_configs.len() as u32;
                plan.findings
                    .extend(config_findings(&source_configs, dest_configs));
            }
            (Some(Err(cause)), _) => plan.findings.push(Finding::ConfigsUnreadable {
                cause: format!("source cluster {}: {cause}", flow.source_cluster),
            }),
            (_, Err(cause)) => plan.findings.push(Finding::ConfigsUnreadable {
                cause: format!("destination cluster {}: {cause}", flow.dest_cluster),
            }),
            (None, Ok(_)) => plan.findings.push(Finding::ConfigsUnreadable {
                cause: format!(
                    "source cluster {} did not describe the topic",
                    flow.source_cluster
                ),
            }),
        }
    }
    Ok(())
}

/// Both clusters' watermarks of every partition compared. A watermark that
/// cannot be read fails the call: a verification never passes on what it could
/// not look at.
async fn read_watermarks(
    source: &ClusterSpec,
    source_client: &ClusterClient,
    dest: &ClusterSpec,
    dest_client: &ClusterClient,
    plans: &mut [TopicPlan],
) -> Result<(), CoordinatorError> {
    let compared = |plan: &&TopicPlan| plan.compare_partitions;
    let source_partitions: Vec<(String, i32)> = plans
        .iter()
        .filter(compared)
        .flat_map(|plan| {
            (0..plan.source_partitions).map(|partition| (plan.source_topic.clone(), partition))
        })
        .collect();
    let dest_partitions: Vec<(String, i32)> = plans
        .iter()
        .filter(compared)
        .flat_map(|plan| {
            (0..plan.source_partitions).map(|partition| (plan.dest_topic.clone(), partition))
        })
        .collect();
    let (source_marks, dest_marks) = tokio::join!(
        source_client.watermarks(source_partitions.clone()),
        dest_client.watermarks(dest_partitions.clone())
    );
    let unread = |spec: &ClusterSpec, (topic, partition): &(String, i32)| CoordinatorError::Kafka {
        cluster: spec.name.to_string(),
        action: format!("reading the watermarks of {topic}/{partition}"),
        cause: "no answer (is the cluster reachable?)".to_string(),
    };
    let mut pairs = Vec::with_capacity(source_marks.len());
    for (index, (source_pair, dest_pair)) in source_marks.into_iter().zip(dest_marks).enumerate() {
        let (source_low, source_high) =
            source_pair.ok_or_else(|| unread(source, &source_partitions[index]))?;
        let (dest_low, dest_high) =
            dest_pair.ok_or_else(|| unread(dest, &dest_partitions[index]))?;
        pairs.push((
            Watermarks {
                low: source_low,
                high: source_high,
            },
            Watermarks {
                low: dest_low,
                high: dest_high,
            },
        ));
    }
    let mut pairs = pairs.into_iter();
    for plan in plans.iter_mut().filter(|plan| plan.compare_partitions) {
        plan.watermarks = pairs
            .by_ref()
            .take(plan.source_partitions as usize)
            .collect();
    }
    Ok(())
}

/// One partition on its way through the blocking part.
struct PartitionWork<'a> {
    plan_index: usize,
    plan: &'a TopicPlan,
    partition: i32,
    missing: Vec<MissingRun>,
    /// Findings of the count check other than missing records.
    check_findings: Vec<Finding>,
    picks: Vec<SamplePick>,
    report: PartitionReport,
}

/// The blocking part: each partition's count check (pure), the reads (the
/// newest record of each destination gap, to tell retention from drift, and the
/// sampled records: both clusters at once), then the judging (pure).
fn check_partitions(
    source: &ClusterSpec,
    dest: &ClusterSpec,
    plans: &[TopicPlan],
    entries: &BTreeMap<SourcePartitionId, Vec<MapEntry>>,
    sample: u32,
    seed: u64,
    timeout: Duration,
) -> Result<Vec<Vec<PartitionReport>>, CoordinatorError> {
    let mut rng = SampleRng::new(seed);
    let mut work: Vec<PartitionWork<'_>> = Vec::new();
    for (plan_index, plan) in plans.iter().enumerate() {
        for (partition, &(source_marks, dest_marks)) in plan.watermarks.iter().enumerate() {
            let partition = partition as i32;
            let partition_entries = entries
                .get(&(plan.source_topic.clone(), partition))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let copies = partition_copies(partition_entries, &plan.dest_topic, partition);
            let check = check_partition(&copies, source_marks, dest_marks);
            work.push(PartitionWork {
                plan_index,
                plan,
                partition,
                missing: check.missing,
                check_findings: check.findings,
                picks: pick_samples(&copies.latest, sample, &mut rng),
                report: PartitionReport {
                    counts: check.counts,
                    source: source_marks,
                    dest: dest_marks,
                    tally: SampleTally::default(),
                    findings: Vec::new(),
                },
            });
        }
    }

    let mut source_wanted = WantedRecords::new();
    let mut dest_wanted = WantedRecords::new();
    for item in &work {
        let source_id = (item.plan.source_topic.clone(), item.partition);
        if item.plan.retention.retention_ms_opt.is_some() {
            for run in &item.missing {
                source_wanted
                    .entry(source_id.clone())
                    .or_default()
                    .push(run.source.last);
            }
        }
        for pick in &item.picks {
            if before_reading(*pick, item.report.source, item.report.dest) == BeforeReading::Read {
                source_wanted
                    .entry(source_id.clone())
                    .or_default()
                    .push(pick.source_offset);
                dest_wanted
                    .entry((item.plan.dest_topic.clone(), item.partition))
                    .or_default()
                    .push(pick.dest_offset);
            }
        }
    }
    let (source_read, dest_read) = std::thread::scope(|scope| {
        let source_reading = scope.spawn(|| read_from(source, source_wanted, timeout));
        let dest_read = read_from(dest, dest_wanted, timeout);
        let source_read = source_reading
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (source_read, dest_read)
    });
    let (source_read, dest_read) = (source_read?, dest_read?);

    let now_ms = kmirror_common::now_ms();
    let mut reports: Vec<Vec<PartitionReport>> = plans.iter().map(|_| Vec::new()).collect();
    for mut item in work {
        let source_topic = &item.plan.source_topic;
        for run in &item.missing {
            let newest_timestamp_opt = source_read
                .get(&(source_topic.clone(), item.partition, run.source.last))
                .and_then(Option::as_ref)
                .filter(|record| record.offset == run.source.last)
                .and_then(|record| record.timestamp.to_millis());
            item.report.findings.push(missing_finding(
                *run,
                item.report.dest,
                newest_timestamp_opt,
                item.plan.retention,
                now_ms,
            ));
        }
        item.report.findings.append(&mut item.check_findings);
        judge_samples(&mut item, &source_read, &dest_read);
        reports[item.plan_index].push(item.report);
    }
    Ok(reports)
}

/// Reads the wanted records of one cluster (none: no reader at all).
fn read_from(
    spec: &ClusterSpec,
    mut wanted: WantedRecords,
    timeout: Duration,
) -> Result<RecordsRead, CoordinatorError> {
    wanted.retain(|_, offsets| !offsets.is_empty());
    if wanted.is_empty() {
        return Ok(RecordsRead::new());
    }
    for offsets in wanted.values_mut() {
        offsets.sort_unstable();
        offsets.dedup();
    }
    let reader = record_reader(spec)?;
    read_records(&reader, &wanted, timeout)
        .map_err(|error| failed(spec, "reading mirrored records", &error))
}

/// Judges the picked records of one partition from what was read, and tallies
/// the outcomes.
fn judge_samples(item: &mut PartitionWork<'_>, source_read: &RecordsRead, dest_read: &RecordsRead) {
    let report = &mut item.report;
    let mut unverifiable: BTreeMap<Unverifiable, u32> = BTreeMap::new();
    for pick in &item.picks {
        report.tally.sampled += 1;
        let outcome = match before_reading(*pick, report.source, report.dest) {
            BeforeReading::Missing => {
                report.tally.missing += 1;
                continue;
            }
            BeforeReading::Unverifiable(reason) => SampleOutcome::Unverifiable(reason),
            BeforeReading::Read => {
                let record = |read: &RecordsRead, topic: &str, offset: i64| {
                    read.get(&(topic.to_string(), item.partition, offset))
                        .cloned()
                        .flatten()
                };
                let source_record =
                    record(source_read, &item.plan.source_topic, pick.source_offset);
                let dest_record = record(dest_read, &item.plan.dest_topic, pick.dest_offset);
                judge_sample(*pick, source_record.as_ref(), dest_record.as_ref())
            }
        };
        match outcome {
            SampleOutcome::Matched => report.tally.matched += 1,
            SampleOutcome::Differs(differences) => {
                report.tally.differing += 1;
                report.findings.push(Finding::RecordDiffers {
                    source_offset: pick.source_offset,
                    dest_offset: pick.dest_offset,
                    differences,
                });
            }
            SampleOutcome::Unverifiable(reason) => {
                report.tally.unverifiable += 1;
                *unverifiable.entry(reason).or_default() += 1;
            }
        }
    }
    report.findings.extend(
        unverifiable
            .into_iter()
            .map(|(reason, records)| Finding::SamplesUnverifiable { reason, records }),
    );
}

/// The report as the wire carries it: the findings about the flow as a whole
/// first, then by topic and partition.
fn response(
    flow: &FlowSpec,
    map_topic: String,
    seed: u64,
    plans: &[TopicPlan],
    partitions: &[Vec<PartitionReport>],
    flow_findings: Vec<VerifyFinding>,
) -> VerifyFlowResponse {
    let mut findings = flow_findings;
    let mut topics = Vec::with_capacity(plans.len());
    for (plan, reports) in plans.iter().zip(partitions) {
        for finding in &plan.findings {
            findings.push(finding_message(plan, -1, finding));
        }
        let mut verified_partitions = Vec::with_capacity(reports.len());
        for (partition, report) in reports.iter().enumerate() {
            let partition = partition as i32;
            for finding in &report.findings {
                findings.push(finding_message(plan, partition, finding));
            }
            verified_partitions.push(partition_message(partition, report));
        }
        topics.push(VerifiedTopic {
            source_topic: plan.source_topic.clone(),
            dest_topic: plan.dest_topic.clone(),
            source_partitions: plan.source_partitions,
            dest_partitions: match plan.dest_state {
                DestTopicState::Present { partitions } => partitions,
                _ => -1,
            },
            configs_synced: flow.config_sync.enabled,
            configs_compared: plan.configs_compared,
            partitions: verified_partitions,
        });
    }
    VerifyFlowResponse {
        flow: flow.name.to_string(),
        source_cluster: flow.source_cluster.to_string(),
        dest_cluster: flow.dest_cluster.to_string(),
        map_topic,
        seed,
        drift: findings.iter().any(|finding| finding.drift),
        topics,
        findings,
    }
}

fn partition_message(partition: i32, report: &PartitionReport) -> VerifiedPartition {
    let counts = &report.counts;
    let (source, dest) = (report.source, report.dest);
    VerifiedPartition {
        partition,
        mirrored_records: counts.mirrored_records,
        first_source_offset: counts.first_source_offset_opt.unwrap_or(-1),
        last_source_offset: counts.last_source_offset_opt.unwrap_or(-1),
        dest_held_records: counts.dest_held_records,
        source_expired_records: counts.source_expired_records,
        sampled: report.tally.sampled,
        sample_matched: report.tally.matched,
        sample_differing: report.tally.differing,
        sample_unverifiable: report.tally.unverifiable,
        sample_missing: report.tally.missing,
        source_log_start: source.low,
        source_log_end: source.high,
        dest_log_start: dest.low,
        dest_log_end: dest.high,
    }
}

fn no_offsets() -> VerifyFinding {
    VerifyFinding {
        source_first_offset: -1,
        source_last_offset: -1,
        dest_first_offset: -1,
        dest_last_offset: -1,
        ..VerifyFinding::default()
    }
}

fn finding_message(plan: &TopicPlan, partition: i32, finding: &Finding) -> VerifyFinding {
    let mut message = VerifyFinding {
        kind: finding.kind().to_string(),
        drift: finding.is_drift(),
        source_topic: plan.source_topic.clone(),
        dest_topic: plan.dest_topic.clone(),
        partition,
        detail: finding.to_string(),
        ..no_offsets()
    };
    match finding {
        Finding::ConfigDiffers {
            name,
            source_value,
            dest_value_opt,
        } => {
            message.config = name.clone();
            message.source_value = source_value.clone();
            message.dest_value = dest_value_opt.clone().unwrap_or_default();
        }
        Finding::RecordsMissing { run, .. } | Finding::RetentionExpired { run, .. } => {
            message.source_first_offset = run.source.first;
            message.source_last_offset = run.source.last;
            message.dest_first_offset = run.dest.first;
            message.dest_last_offset = run.dest.last;
            message.records = run.records;
        }
        Finding::DestRewritten { dest, records } => {
            message.dest_first_offset = dest.first;
            message.dest_last_offset = dest.last;
            message.records = *records;
        }
        Finding::SourceBehindMap {
            last_mirrored,
            source_log_end,
            records,
        } => {
            message.source_first_offset = *source_log_end;
            message.source_last_offset = *last_mirrored;
            message.records = *records;
        }
        Finding::RecordDiffers {
            source_offset,
            dest_offset,
            ..
        } => {
            message.source_first_offset = *source_offset;
            message.source_last_offset = *source_offset;
            message.dest_first_offset = *dest_offset;
            message.dest_last_offset = *dest_offset;
            message.records = 1;
        }
        Finding::SamplesUnverifiable { records, .. } => message.records = u64::from(*records),
        Finding::NotConsecutive { records } | Finding::Elsewhere { records } => {
            message.records = *records
        }
        Finding::DestTopicMissing { .. }
        | Finding::PartitionCount { .. }
        | Finding::ConfigsUnreadable { .. } => {}
    }
    message
}
