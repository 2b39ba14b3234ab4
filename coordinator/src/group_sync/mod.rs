//! Consumer-group offset sync: source groups' committed offsets, translated
//! exactly through the offset map, committed to the destination's groups of
//! the same id, so consumers that fail over carry on where they were.
//!
//! | module | what |
//! | --- | --- |
//! | [`decide`] | per group and partition: commit, unchanged, behind, not translated; a live group left alone (pure) |
//! | [`kafka`] | the groups, their offsets and the map, read and committed |
//! | here | [`sync_flow`]: one flow's sync, shared by the leader's periodic [`GroupSyncer`] and the admin call (`kmirrorctl offsets sync`, `kmirrorctl failover`) |
//!
//! The leader syncs each flow that asks for it (`group_sync` in its spec) every
//! interval, keeps the map it read ([`kafka::MapCache`]) and writes what each
//! sync did to `group-sync/<flow>` for `status`.

pub mod decide;
pub mod kafka;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use etcd_client::{Client, LeaderKey, TxnOp};
use kmirror_common::metrics::metrics;
use kmirror_common::schema::{
    default_group_sync_exclude, encode, ClusterSpec, FlowSpec, GroupSyncOutcome, GroupSyncReport,
};
use kmirror_common::telemetry::{set_error, SPAN_TARGET};
use kmirror_common::{now_ms, ClusterName, FlowName, Keys};
use kmirror_proto::v1::GroupSyncResult;
use rdkafka::consumer::Consumer;
use regex::Regex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use self::decide::{decide_group, SyncOptions, COMMITTED, FAILED};
use self::kafka::{MapCache, MapSource};
use crate::admin::offsets::translate_positions;
use crate::admin::reading::{consumer, failed, SourcePartitionId};
use crate::error::CoordinatorError;
use crate::kafka::KafkaClients;
use crate::store::{fenced_write, read_snapshot, Sections};
use crate::topic_filter::TopicFilter;

/// How often the leader looks for flows whose sync is due.
const TICK: Duration = Duration::from_secs(1);

/// Which groups a sync takes: an include regex and exclusions, whole ids.
#[derive(Debug, Clone)]
pub struct GroupSelection {
    include: Regex,
    exclude: Vec<Regex>,
}

impl GroupSelection {
    pub fn new(include: &str, exclude: &[String]) -> Result<Self, CoordinatorError> {
        let whole = |pattern: &str, what: &str| {
            Regex::new(&format!("^(?:{pattern})$")).map_err(|error| {
                CoordinatorError::InvalidArgument(format!(
                    "invalid group {what} regex {pattern:?}: {error}"
                ))
            })
        };
        if include.is_empty() {
            return Err(CoordinatorError::InvalidArgument(
                "the group regex is empty".into(),
            ));
        }
        Ok(Self {
            include: whole(include, "include")?,
            exclude: exclude
                .iter()
                .map(|pattern| whole(pattern, "exclusion"))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The flow's own selection, or `groups` with the flow's exclusions (MirrorMaker
    /// 2's defaults when the flow syncs no group).
    pub fn for_flow(flow: &FlowSpec, groups: &str) -> Result<Self, CoordinatorError> {
        let exclude = flow
            .group_sync
            .as_ref()
            .map(|sync| sync.exclude.clone())
            .unwrap_or_else(default_group_sync_exclude);
        match (groups, &flow.group_sync) {
            ("", Some(sync)) => Self::new(&sync.include, &exclude),
            ("", None) => Err(CoordinatorError::InvalidArgument(format!(
                "flow {} syncs no consumer group: name the groups (a regular expression)",
                flow.name
            ))),
            (groups, _) => Self::new(groups, &exclude),
        }
    }

    pub fn matches(&self, group: &str) -> bool {
        self.include.is_match(group) && !self.exclude.iter().any(|regex| regex.is_match(group))
    }
}

/// One flow's sync, blocking (run it on a blocking thread): every selected
/// source group with committed offsets on the flow's topics, decided and (unless
/// a dry run) committed.
#[allow(clippy::too_many_arguments)]
pub fn sync_flow(
    flow: &FlowSpec,
    source: &ClusterSpec,
    dest: &ClusterSpec,
    selection: &GroupSelection,
    options: SyncOptions,
    map: &mut dyn MapSource,
    map_topic: &str,
    timeout: Duration,
) -> Result<Vec<GroupSyncResult>, CoordinatorError> {
    let filter = TopicFilter::new(&flow.include, flow.exclude.as_deref())
        .map_err(|error| CoordinatorError::InvalidArgument(error.to_string()))?;
    let source_consumer = consumer(source, None)?;
    let source_counts: BTreeMap<String, i32> = source_consumer
        .fetch_metadata(None, timeout)
        .map_err(|error| failed(source, "reading topics", &error))?
        .topics()
        .iter()
        .filter(|topic| filter.matches(topic.name()))
        .map(|topic| (topic.name().to_string(), topic.partitions().len() as i32))
        .collect();
    let groups = kafka::list_groups(&source_consumer, timeout)
        .map_err(|error| failed(source, "listing consumer groups", &error))?;
    let mut positions_by_group = BTreeMap::new();
    for group in groups.iter().filter(|group| selection.matches(group)) {
        let positions = kafka::committed_positions(source, group, &source_counts, timeout)?;
        if !positions.is_empty() {
            positions_by_group.insert(group.clone(), positions);
        }
    }
    if positions_by_group.is_empty() {
        return Ok(Vec::new());
    }

    let dest_consumer = consumer(dest, None)?;
    let dest_counts: BTreeMap<String, i32> = dest_consumer
        .fetch_metadata(None, timeout)
        .map_err(|error| failed(dest, "reading topics", &error))?
        .topics()
        .iter()
        .filter(|topic| topic.error().is_none())
        .map(|topic| (topic.name().to_string(), topic.partitions().len() as i32))
        .collect();
    let wanted: BTreeSet<SourcePartitionId> = positions_by_group
        .values()
        .flatten()
        .map(|position| (position.topic.clone(), position.partition))
        .collect();
    let entries = if dest_counts.contains_key(map_topic) {
        map.entries(flow, &dest_consumer, map_topic, &wanted, timeout)
            .map_err(|error| failed(dest, "reading the offset map", &error))?
    } else {
        BTreeMap::new()
    };

    let mut results = Vec::new();
    for (group, positions) in positions_by_group {
        let translations =
            translate_positions(flow, &positions, &source_counts, &dest_counts, &entries);
        results.push(sync_group(dest, &group, &translations, options, timeout));
    }
    Ok(results)
}

/// Decides and commits one group on the destination; a failure is the group's,
/// not the sync's.
fn sync_group(
    dest: &ClusterSpec,
    group: &str,
    translations: &[kmirror_proto::v1::OffsetTranslation],
    options: SyncOptions,
    timeout: Duration,
) -> GroupSyncResult {
    let failed_group = |reason: String| GroupSyncResult {
        group: group.to_string(),
        state: FAILED.to_string(),
        reason,
        partitions: Vec::new(),
    };
    let group_consumer = match consumer(dest, Some(group)) {
        Ok(group_consumer) => group_consumer,
        Err(error) => return failed_group(error.to_string()),
    };
    let dest_partitions: BTreeSet<(String, i32)> = translations
        .iter()
        .filter(|translation| translation.translated)
        .map(|translation| (translation.dest_topic.clone(), translation.dest_partition))
        .collect();
    let dest_group = match kafka::dest_group(&group_consumer, group, &dest_partitions, timeout) {
        Ok(dest_group) => dest_group,
        Err(error) => {
            let reason = kafka::group_refusal(&group_consumer, dest, group).unwrap_or_else(|| {
                failed(dest, "reading the destination group", &error).to_string()
            });
            return failed_group(reason);
        }
    };
    let mut result = decide_group(group, translations, &dest_group, options);
    let to_commit: Vec<(String, i32, i64)> = result
        .partitions
        .iter()
        .filter(|sync| sync.action == COMMITTED)
        .map(|sync| {
            (
                sync.dest_topic.clone(),
                sync.dest_partition,
                sync.dest_offset,
            )
        })
        .collect();
    if to_commit.is_empty() {
        return result;
    }
    let refused = match kafka::commit(&group_consumer, &to_commit, timeout) {
        Ok(refused) => refused,
        Err(error) => {
            result.state = FAILED.to_string();
            result.reason =
                kafka::group_refusal(&group_consumer, dest, group).unwrap_or_else(|| {
                    failed(dest, "committing the group's offsets", &error).to_string()
                });
            to_commit
                .iter()
                .map(|(topic, partition, _)| (topic.clone(), *partition))
                .collect()
        }
    };
    if !refused.is_empty() {
        for sync in &mut result.partitions {
            if refused.contains(&(sync.dest_topic.clone(), sync.dest_partition)) {
                sync.action = "commit_failed".to_string();
            }
        }
        if result.state != FAILED {
            result.state = FAILED.to_string();
            result.reason = format!(
                "the destination did not keep the commit of {} partition(s) (the group may have become active)",
                refused.len()
            );
        }
    }
    result
}

/// What `status` keeps of a sync.
pub fn report(at_ms: i64, results: &[GroupSyncResult]) -> GroupSyncReport {
    GroupSyncReport {
        at_ms,
        error: None,
        groups: results
            .iter()
            .map(|result| {
                let count = |action: &str| {
                    result
                        .partitions
                        .iter()
                        .filter(|sync| sync.action == action)
                        .count() as u32
                };
                let mut skipped: Vec<String> = result
                    .partitions
                    .iter()
                    .filter(|sync| !matches!(sync.action.as_str(), COMMITTED | decide::UNCHANGED))
                    .map(|sync| format!("{}/{}: {}", sync.topic, sync.partition, sync.reason))
                    .collect();
                if !result.reason.is_empty() {
                    skipped.insert(0, result.reason.clone());
                }
                GroupSyncOutcome {
                    group: result.group.clone(),
                    state: result.state.clone(),
                    committed: count(COMMITTED),
                    unchanged: count(decide::UNCHANGED),
                    skipped,
                }
            })
            .collect(),
    }
}

/// The leader's periodic sync of every flow that asks for it.
pub struct GroupSyncer {
    client: Client,
    keys: Keys,
    kafka: KafkaClients,
    leader: LeaderKey,
    /// The map read so far, per destination cluster.
    caches: HashMap<ClusterName, MapCache>,
    /// When each flow's next sync is due.
    due: HashMap<FlowName, tokio::time::Instant>,
}

impl GroupSyncer {
    pub fn new(client: Client, keys: Keys, kafka: KafkaClients, leader: LeaderKey) -> Self {
        Self {
            client,
            keys,
            kafka,
            leader,
            caches: HashMap::new(),
            due: HashMap::new(),
        }
    }

    /// Syncs until cancelled (`Ok`) or deposed (`Err(Deposed)`).
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), CoordinatorError> {
        loop {
            match self.sync_due().await {
                Err(CoordinatorError::Deposed) => return Err(CoordinatorError::Deposed),
                Err(error) => warn!(%error, "group offset sync could not read the fleet state"),
                Ok(()) => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    async fn sync_due(&mut self) -> Result<(), CoordinatorError> {
        let snapshot = read_snapshot(
            &mut self.client,
            &self.keys,
            Sections {
                flows: true,
                clusters: true,
                ..Sections::default()
            },
        )
        .await?;
        let now = tokio::time::Instant::now();
        self.due.retain(|flow, _| {
            let syncing = snapshot
                .flows
                .get(flow)
                .is_some_and(|spec| spec.group_sync.is_some());
            if !syncing {
                forget_gauges(flow);
            }
            syncing
        });
        self.caches
            .retain(|name, cache| snapshot.clusters.get(name) == Some(cache.cluster()));
        for (name, flow) in &snapshot.flows {
            let Some(settings) = &flow.group_sync else {
                continue;
            };
            if self.due.get(name).is_some_and(|due| *due > now) {
                continue;
            }
            self.due.insert(
                name.clone(),
                now + Duration::from_millis(settings.interval_ms.max(1_000)),
            );
            let (Some(source), Some(dest)) = (
                snapshot.clusters.get(&flow.source_cluster),
                snapshot.clusters.get(&flow.dest_cluster),
            ) else {
                continue;
            };
            let report = self.sync_one(flow, source, dest).await;
            let write = TxnOp::put(self.keys.group_sync_report(name), encode(&report), None);
            fenced_write(&mut self.client, &self.leader, vec![write]).await?;
        }
        Ok(())
    }

    async fn sync_one(
        &mut self,
        flow: &FlowSpec,
        source: &ClusterSpec,
        dest: &ClusterSpec,
    ) -> GroupSyncReport {
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            parent: None,
            "group_sync",
            otel.name = "group offset sync",
            otel.kind = "internal",
            "kmirror.flow" = %flow.name,
            "kmirror.groups" = tracing::field::Empty,
            "kmirror.committed" = tracing::field::Empty,
        );
        let mut cache = self
            .caches
            .remove(&dest.name)
            .unwrap_or_else(|| MapCache::new(dest));
        let map_topic = kmirror_common::offset_map::map_topic(self.keys.fleet());
        let timeout = self.kafka.timeout();
        let (flow_owned, source_owned, dest_owned) = (flow.clone(), source.clone(), dest.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            let result = GroupSelection::for_flow(&flow_owned, "").and_then(|selection| {
                sync_flow(
                    &flow_owned,
                    &source_owned,
                    &dest_owned,
                    &selection,
                    SyncOptions {
                        dry_run: false,
                        allow_backwards: false,
                    },
                    &mut cache,
                    &map_topic,
                    timeout,
                )
            });
            (result, cache)
        })
        .instrument(span.clone())
        .await;
        let flow_label = vec![("flow", flow.name.to_string())];
        let metrics = metrics();
        let report = match outcome {
            Ok((result, cache)) => {
                self.caches.insert(dest.name.clone(), cache);
                match result {
                    Ok(results) => {
                        let report = report(now_ms(), &results);
                        let committed: u32 =
                            report.groups.iter().map(|group| group.committed).sum();
                        span.record("kmirror.groups", report.groups.len() as i64);
                        span.record("kmirror.committed", i64::from(committed));
                        metrics
                            .group_offsets_committed
                            .get_or_create(&flow_label)
                            .inc_by(u64::from(committed));
                        gauge_groups(&flow.name, &report);
                        if committed > 0 {
                            debug!(flow = %flow.name, committed, "synced consumer group offsets");
                        }
                        report
                    }
                    Err(error) => {
                        set_error(&span, "group_sync", &error.to_string());
                        warn!(flow = %flow.name, %error, "consumer group offset sync failed");
                        GroupSyncReport {
                            at_ms: now_ms(),
                            error: Some(error.to_string()),
                            groups: Vec::new(),
                        }
                    }
                }
            }
            Err(join_error) => GroupSyncReport {
                at_ms: now_ms(),
                error: Some(format!("the sync stopped: {join_error}")),
                groups: Vec::new(),
            },
        };
        let outcome_label = if report.error.is_none() {
            "ok"
        } else {
            "error"
        };
        metrics
            .group_sync_runs
            .get_or_create(&vec![
                ("flow", flow.name.to_string()),
                ("outcome", outcome_label.to_string()),
            ])
            .inc();
        report
    }
}

/// The state gauges of a flow that no longer syncs groups.
fn forget_gauges(flow: &FlowName) {
    for state in [decide::SYNCED, decide::PARTIAL, decide::LIVE, FAILED] {
        metrics().group_sync_groups.remove(&vec![
            ("flow", flow.to_string()),
            ("state", state.to_string()),
        ]);
    }
}

/// Groups per state of the flow's last sync.
fn gauge_groups(flow: &FlowName, report: &GroupSyncReport) {
    let metrics = metrics();
    for state in [decide::SYNCED, decide::PARTIAL, decide::LIVE, FAILED] {
        let count = report
            .groups
            .iter()
            .filter(|group| group.state == state)
            .count();
        metrics
            .group_sync_groups
            .get_or_create(&vec![
                ("flow", flow.to_string()),
                ("state", state.to_string()),
            ])
            .set(count as i64);
    }
}
