//! The round's Kafka side: listing each running flow's clusters, creating and
//! growing destination topics as [`topics`](super::topics) decides, reading the
//! offsets a new flow starts from and carrying config changes over as
//! [`config_sync`](super::config_sync) decides. Every flow is looked at
//! concurrently and on its own, so one failing flow does not hold up the others.
//! Each cluster is listed once a round, and every flow using it decides from
//! that one listing: flows matching a new topic all see it in the same round, so
//! which of them writes it (the oldest, see
//! [`refuse_shared_dest_topics`](super::topics::refuse_shared_dest_topics)) does
//! not depend on whose listing came first.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;
use kmirror_common::schema::{Assignment, ClusterSpec, FlowSpec, FlowState, StartPosition};
use kmirror_common::{ClusterName, FlowName, PartitionKey};
use tracing::info;

use crate::kafka::{ClusterAdmin, KafkaSide, TopicListing, TopicToCreate};
use crate::round::config_sync::{config_changes, wanted_dest_configs, SyncOutcome};
use crate::round::lifecycle::{
    matched_partitions, start_bounds, start_needs_offsets, SourceOffsets,
};
use crate::round::topics::{
    carried, config_exclusions, config_topics, copied_configs, creation_outcome, ready_partitions,
    topic_actions, topics_to_create, Creations, ReadyTopic,
};
use crate::round::FlowDiscovery;
use crate::topic_filter::TopicFilter;

/// Looks at every running flow's clusters.
pub async fn discover_flows(
    running: &[&FlowSpec],
    map_topic: &str,
    clusters: &BTreeMap<ClusterName, ClusterSpec>,
    kafka: &impl KafkaSide,
    previous: &BTreeMap<PartitionKey, Assignment>,
    states: &BTreeMap<FlowName, FlowState>,
) -> BTreeMap<FlowName, FlowDiscovery> {
    let names: BTreeSet<&ClusterName> = running
        .iter()
        .flat_map(|flow| [&flow.source_cluster, &flow.dest_cluster])
        .collect();
    let listings: Listings = join_all(names.into_iter().map(|name| async move {
        let listing = match clusters.get(name).map(|spec| kafka.cluster(spec)) {
            Some(Ok(cluster)) => Some(
                cluster
                    .list_topics()
                    .await
                    .map_err(|error| error.to_string()),
            ),
            // The flow says why: the cluster is not defined or its client refused.
            Some(Err(_)) | None => None,
        };
        (name.clone(), listing)
    }))
    .await
    .into_iter()
    .filter_map(|(name, listing_opt)| Some((name, listing_opt?)))
    .collect();
    let discoveries = join_all(running.iter().map(|flow| {
        discover_flow(
            flow,
            map_topic,
            clusters,
            kafka,
            previous,
            states.get(&flow.name),
            &listings,
        )
    }))
    .await;
    running
        .iter()
        .map(|flow| flow.name.clone())
        .zip(discoveries)
        .collect()
}

/// Each cluster's topics as listed this round (or why they could not be).
type Listings = BTreeMap<ClusterName, Result<TopicListing, String>>;

/// The cluster's topics as listed this round, or as it lists them now.
async fn listed(
    listings: &Listings,
    name: &ClusterName,
    cluster: &impl ClusterAdmin,
) -> Result<TopicListing, String> {
    match listings.get(name) {
        Some(listed) => listed.clone(),
        None => cluster
            .list_topics()
            .await
            .map_err(|error| error.to_string()),
    }
}

/// Looks at a flow's clusters: which source topics match, whether their destination
/// topics exist (creating or growing them), and which partitions to mirror. Where a
/// cluster cannot be looked at, the previous assignments are carried over unchanged
/// (the fetchers report their own errors), so a blip never stops mirroring. A
/// cluster in `listings` is not listed again.
pub async fn discover_flow(
    flow: &FlowSpec,
    map_topic: &str,
    clusters: &BTreeMap<ClusterName, ClusterSpec>,
    kafka: &impl KafkaSide,
    all_previous: &BTreeMap<PartitionKey, Assignment>,
    previous_state_opt: Option<&FlowState>,
    listings: &Listings,
) -> FlowDiscovery {
    let previous: BTreeMap<&PartitionKey, &Assignment> = all_previous
        .iter()
        .filter(|(key, _)| key.flow == flow.name)
        .collect();
    let carry_all = |error: String| FlowDiscovery {
        partitions: previous
            .iter()
            .map(|(key, assignment)| carried(key, assignment))
            .collect(),
        topics: previous_state_opt
            .map(|state| state.topics.clone())
            .unwrap_or_default(),
        errors: vec![error],
        ..FlowDiscovery::default()
    };

    let Some(source_spec) = clusters.get(&flow.source_cluster) else {
        return carry_all(format!(
            "source cluster {} is not defined",
            flow.source_cluster
        ));
    };
    let Some(dest_spec) = clusters.get(&flow.dest_cluster) else {
        return carry_all(format!(
            "destination cluster {} is not defined",
            flow.dest_cluster
        ));
    };
    let filter = match TopicFilter::new(&flow.include, flow.exclude.as_deref()) {
        Ok(filter) => filter,
        Err(error) => return carry_all(error.to_string()),
    };
    let (source, dest) = match (kafka.cluster(source_spec), kafka.cluster(dest_spec)) {
        (Ok(source), Ok(dest)) => (source, dest),
        (Err(error), _) | (_, Err(error)) => return carry_all(error.to_string()),
    };
    let (source_listing, dest_listing) = tokio::join!(
        listed(listings, &flow.source_cluster, &source),
        listed(listings, &flow.dest_cluster, &dest)
    );
    let source_listing = match source_listing {
        Ok(listing) => listing,
        Err(error) => return carry_all(format!("source: {error}")),
    };
    let dest_listing = match dest_listing {
        Ok(listing) => listing,
        Err(error) => return carry_all(format!("destination: {error}")),
    };
    let excluded_configs = match config_exclusions(flow) {
        Ok(excluded) => excluded,
        Err(error) => return carry_all(error),
    };

    let previous_source_count = |topic: &str| {
        previous
            .iter()
            .filter(|(key, _)| key.topic == topic)
            .map(|(_, assignment)| assignment.source_partitions)
            .max()
    };
    let actions = topic_actions(
        flow,
        &filter,
        previous_source_count,
        &source_listing,
        &dest_listing,
    );
    let mut discovery = FlowDiscovery {
        source_listed: true,
        topics: actions.topics.clone(),
        matched: actions.matched.clone(),
        dest_existed: actions.dest_existed.clone(),
        errors: actions.errors.clone(),
        ..FlowDiscovery::default()
    };
    let carry_topic = |discovery: &mut FlowDiscovery, topic: &str| {
        discovery.partitions.extend(
            previous
                .iter()
                .filter(|(key, _)| key.topic == topic)
                .map(|(key, assignment)| carried(key, assignment)),
        );
    };
    for topic in &actions.carried {
        carry_topic(&mut discovery, topic);
    }

    let configs = source
        .topic_configs(&config_topics(flow, &actions))
        .await
        .map(|read| copied_configs(read, &excluded_configs));
    if let Ok(by_topic) = &configs {
        for (topic, result) in by_topic {
            if let Ok(topic_configs) = result {
                discovery
                    .source_configs
                    .insert(topic.clone(), topic_configs.iter().cloned().collect());
            }
        }
    }

    if !dest_listing.partitions.contains_key(map_topic)
        && !dest_listing.unavailable.contains_key(map_topic)
    {
        // Before the flow's topics, so writers find it when they first write.
        let map = offset_map_topic(map_topic, &configs);
        let created = crate::telemetry::kafka_admin(
            "create topics",
            &flow.dest_cluster,
            1,
            dest.create_topics(std::slice::from_ref(&map)),
        )
        .await;
        match creation_outcome(&created, &map.name) {
            Ok(()) => info!(
                flow = %flow.name,
                topic = %map.name,
                cluster = %flow.dest_cluster,
                "created the offset map topic"
            ),
            Err(cause) => discovery.errors.push(format!(
                "cannot create the offset map topic {} in cluster {}: {cause}; batches are not acknowledged until it exists",
                map.name, flow.dest_cluster
            )),
        }
    }

    let mut ready: Vec<ReadyTopic> = actions.ready.clone();
    if !actions.to_create.is_empty() {
        let Creations {
            creatable,
            unreadable,
        } = topics_to_create(flow, &actions.to_create, &configs);
        for (topic, error) in unreadable {
            discovery.errors.push(error);
            carry_topic(&mut discovery, &topic);
        }
        let new_topics: Vec<TopicToCreate> =
            creatable.iter().map(|(_, topic)| topic.clone()).collect();
        let created = crate::telemetry::kafka_admin(
            "create topics",
            &flow.dest_cluster,
            new_topics.len(),
            dest.create_topics(&new_topics),
        )
        .await;
        for (source_topic, topic) in creatable {
            match creation_outcome(&created, &topic.name) {
                Ok(()) => {
                    info!(
                        flow = %flow.name,
                        topic = %topic.name,
                        cluster = %flow.dest_cluster,
                        partitions = topic.partitions,
                        configs = topic.configs.len(),
                        "created destination topic"
                    );
                    discovery.created_topics.push(topic.name.clone());
                    ready.push((source_topic.clone(), topic.partitions, topic.partitions));
                }
                Err(cause) => {
                    discovery.errors.push(format!(
                        "cannot create destination topic {} in cluster {}: {cause}",
                        topic.name, flow.dest_cluster
                    ));
                    carry_topic(&mut discovery, &source_topic);
                }
            }
        }
    }

    for (topic, source_count, dest_count) in &actions.to_grow {
        let dest_topic = flow.dest_topic(topic);
        let grow = dest.create_partitions(&dest_topic, *source_count);
        match crate::telemetry::kafka_admin("create partitions", &flow.dest_cluster, 1, grow).await
        {
            Ok(()) => {
                info!(
                    flow = %flow.name,
                    topic = %dest_topic,
                    from = dest_count,
                    to = source_count,
                    "grew destination topic with its source"
                );
                ready.push((topic.clone(), *source_count, *source_count));
            }
            Err(cause) => {
                discovery.errors.push(format!(
                    "cannot grow destination topic {dest_topic} in cluster {} from {dest_count} to {source_count} partitions: {cause}",
                    flow.dest_cluster
                ));
                carry_topic(&mut discovery, topic);
            }
        }
    }
    discovery.partitions.extend(ready_partitions(flow, &ready));
    discovery
}

/// The fleet's offset map topic on a destination cluster: compacted (one key per
/// batch start keeps the latest copy of a resent batch) and deleted with age, kept
/// at least as long as the longest retention of the source topics read this round
/// (what their destination copies get), Kafka's default 7 days when none says.
/// Infinite retention anywhere keeps the map forever.
fn offset_map_topic(
    name: &str,
    configs: &Result<
        crate::kafka::TopicConfigs<Vec<(String, String)>>,
        crate::error::CoordinatorError,
    >,
) -> TopicToCreate {
    use kmirror_common::offset_map::{DEFAULT_MAP_RETENTION_MS, MAP_PARTITIONS};
    let retentions = configs
        .iter()
        .flat_map(|by_topic| by_topic.values())
        .flatten()
        .flat_map(|topic_configs| {
            topic_configs
                .iter()
                .filter(|(key, _)| key == "retention.ms")
                .filter_map(|(_, value)| value.parse::<i64>().ok())
        });
    let retention_ms = retentions.fold(DEFAULT_MAP_RETENTION_MS, |longest, retention| {
        if longest < 0 || retention < 0 {
            -1
        } else {
            longest.max(retention)
        }
    });
    TopicToCreate {
        name: name.to_string(),
        partitions: MAP_PARTITIONS,
        configs: vec![
            ("cleanup.policy".into(), "compact,delete".into()),
            ("retention.ms".into(), retention_ms.to_string()),
        ],
    }
}

/// Each destination cluster's identity for the shared-topic guard: Kafka's
/// cluster id where flows write to clusters of different names (one cluster may
/// be registered under two), otherwise (or while it cannot be read) its name.
pub async fn dest_cluster_identities(
    running: &[&FlowSpec],
    clusters: &BTreeMap<ClusterName, ClusterSpec>,
    kafka: &impl KafkaSide,
) -> BTreeMap<ClusterName, String> {
    let dest_clusters: std::collections::BTreeSet<&ClusterName> =
        running.iter().map(|flow| &flow.dest_cluster).collect();
    // Cluster ids only matter between two names (and cost a request while a
    // cluster cannot be reached): with one destination name, the name is enough.
    let look_up_ids = dest_clusters.len() > 1;
    let ids = join_all(dest_clusters.iter().map(|name| async move {
        let id_opt = match clusters.get(*name).map(|spec| kafka.cluster(spec)) {
            Some(Ok(client)) if look_up_ids => client.cluster_id().await,
            _ => None,
        };
        (
            (*name).clone(),
            id_opt.unwrap_or_else(|| format!("name:{name}")),
        )
    }))
    .await;
    ids.into_iter().collect()
}

/// The offsets a new flow starts from: `None` when it needs none, an error when
/// they cannot all be read.
pub async fn read_start_offsets(
    flow: &FlowSpec,
    discovery: &FlowDiscovery,
    clusters: &BTreeMap<ClusterName, ClusterSpec>,
    kafka: &impl KafkaSide,
) -> Result<Option<SourceOffsets>, String> {
    if !start_needs_offsets(flow) {
        return Ok(None);
    }
    let partitions = matched_partitions(discovery);
    let source = clusters
        .get(&flow.source_cluster)
        .ok_or_else(|| format!("source cluster {} is not defined", flow.source_cluster))
        .and_then(|spec| kafka.cluster(spec).map_err(|error| error.to_string()))?;
    let watermarks = source.watermarks(partitions.clone()).await;
    let bounds = start_bounds(flow, &partitions, watermarks)?;
    let at_timestamp_opt = match flow.start {
        StartPosition::Timestamp { ms } => Some(
            source
                .offsets_for_time(partitions.clone(), ms)
                .await
                .map_err(|error| format!("cannot start: {error}"))?,
        ),
        StartPosition::Earliest | StartPosition::Latest => None,
    };
    Ok(Some(SourceOffsets {
        partitions,
        bounds,
        at_timestamp_opt,
    }))
}

/// Carries changed source topic configs to the destination. Returns, per source
/// topic, the configs now copied (to remember), or why they could not be.
pub async fn sync_topic_configs(
    flow: &FlowSpec,
    discovery: &FlowDiscovery,
    state: &FlowState,
    clusters: &BTreeMap<ClusterName, ClusterSpec>,
    kafka: &impl KafkaSide,
) -> Vec<SyncOutcome> {
    let (mut outcomes, changed) = config_changes(discovery, state);
    if changed.is_empty() {
        return outcomes;
    }
    let fail_all = |outcomes: &mut Vec<SyncOutcome>, cause: String| {
        outcomes.extend(
            changed
                .iter()
                .map(|change| (change.source_topic.clone(), Err(cause.clone()))),
        );
    };
    let dest = match clusters
        .get(&flow.dest_cluster)
        .ok_or_else(|| format!("destination cluster {} is not defined", flow.dest_cluster))
        .and_then(|spec| kafka.cluster(spec).map_err(|error| error.to_string()))
    {
        Ok(dest) => dest,
        Err(cause) => {
            fail_all(&mut outcomes, cause);
            return outcomes;
        }
    };
    let dest_topics: Vec<String> = changed
        .iter()
        .map(|change| flow.dest_topic(&change.source_topic))
        .collect();
    let dest_configs = match dest.dynamic_topic_configs(&dest_topics).await {
        Ok(configs) => configs,
        Err(error) => {
            fail_all(&mut outcomes, error.to_string());
            return outcomes;
        }
    };
    for (change, dest_topic) in changed.iter().zip(dest_topics) {
        let dest_now = match dest_configs.get(&dest_topic) {
            Some(Ok(configs)) => configs.clone(),
            Some(Err(cause)) => {
                outcomes.push((change.source_topic.clone(), Err(cause.clone())));
                continue;
            }
            None => BTreeMap::new(),
        };
        let wanted = wanted_dest_configs(&dest_now, change);
        let outcome = dest
            .replace_topic_configs(&dest_topic, &wanted)
            .await
            .map(|()| change.current.clone())
            .map_err(|cause| {
                format!(
                    "cannot alter the configs of destination topic {dest_topic} in cluster {}: {cause}",
                    flow.dest_cluster
                )
            });
        if outcome.is_ok() {
            info!(flow = %flow.name, topic = %dest_topic, "carried source topic config changes to the destination");
        }
        outcomes.push((change.source_topic.clone(), outcome));
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::fake_kafka::{FakeCluster, FakeKafka, FakeTopic};
    use crate::round::test_support::{assignment, configs, flow_spec, key};

    const MAP_TOPIC: &str = "__kmirror.test.offsets";

    fn clusters() -> BTreeMap<ClusterName, ClusterSpec> {
        ["src", "dst"]
            .into_iter()
            .map(|name| {
                let name = ClusterName::new(name).unwrap();
                let spec = ClusterSpec {
                    name: name.clone(),
                    bootstrap_servers: "fake:9092".to_string(),
                    properties: Default::default(),
                };
                (name, spec)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_flow_whose_cluster_is_missing_keeps_its_assignments_and_says_why() {
        let flow = flow_spec("dr");
        let previous = BTreeMap::from([(key("dr", "orders", 1), assignment())]);
        let state = FlowState {
            topics: vec!["orders".to_string()],
            ..FlowState::default()
        };
        let discovery = discover_flow(
            &flow,
            MAP_TOPIC,
            &BTreeMap::new(),
            &FakeKafka::default(),
            &previous,
            Some(&state),
            &Listings::new(),
        )
        .await;
        assert_eq!(discovery.errors, vec!["source cluster src is not defined"]);
        assert_eq!(discovery.topics, vec!["orders"]);
        assert_eq!(discovery.partitions.len(), 1);
        assert_eq!(discovery.partitions[0].key, key("dr", "orders", 1));
        assert_eq!(discovery.partitions[0].source_partitions, 2);
    }

    #[tokio::test]
    async fn a_missing_destination_topic_is_created_with_the_source_configs_and_its_partitions_wanted(
    ) {
        let source = FakeCluster {
            topics: BTreeMap::from([(
                "orders".to_string(),
                FakeTopic {
                    configs: vec![("retention.ms".to_string(), "1000".to_string())],
                    ..FakeTopic::empty(3)
                },
            )]),
            ..FakeCluster::default()
        };
        let kafka = FakeKafka::default()
            .with_cluster("src", source)
            .with_cluster("dst", FakeCluster::default());
        let discovery = discover_flow(
            &flow_spec("dr"),
            MAP_TOPIC,
            &clusters(),
            &kafka,
            &BTreeMap::new(),
            None,
            &Listings::new(),
        )
        .await;
        assert!(discovery.errors.is_empty(), "{:?}", discovery.errors);
        assert_eq!(discovery.created_topics, vec!["orders"]);
        assert_eq!(discovery.partitions.len(), 3);
        let created = kafka.cluster_now("dst").created;
        assert_eq!(created.len(), 2);
        assert_eq!(created[1].name, "orders");
        assert_eq!(
            created[1].configs,
            vec![("retention.ms".to_string(), "1000".to_string())]
        );
    }

    #[tokio::test]
    async fn the_offset_map_topic_is_created_first_compacted_and_kept_as_long_as_the_data() {
        let source = FakeCluster {
            topics: BTreeMap::from([(
                "orders".to_string(),
                FakeTopic {
                    configs: vec![("retention.ms".to_string(), "1209600000".to_string())],
                    ..FakeTopic::empty(3)
                },
            )]),
            ..FakeCluster::default()
        };
        let kafka = FakeKafka::default()
            .with_cluster("src", source)
            .with_cluster("dst", FakeCluster::default());
        discover_flow(
            &flow_spec("dr"),
            MAP_TOPIC,
            &clusters(),
            &kafka,
            &BTreeMap::new(),
            None,
            &Listings::new(),
        )
        .await;
        let created = kafka.cluster_now("dst").created;
        assert_eq!(created[0].name, MAP_TOPIC);
        assert_eq!(
            created[0].partitions,
            kmirror_common::offset_map::MAP_PARTITIONS
        );
        assert_eq!(
            created[0].configs,
            vec![
                ("cleanup.policy".to_string(), "compact,delete".to_string()),
                // The longer of the source's 14 days and Kafka's default 7.
                ("retention.ms".to_string(), "1209600000".to_string())
            ]
        );
    }

    #[tokio::test]
    async fn an_unreachable_destination_carries_the_assignments_over() {
        let kafka = FakeKafka::default().with_cluster(
            "src",
            FakeCluster {
                topics: BTreeMap::from([("orders".to_string(), FakeTopic::empty(2))]),
                ..FakeCluster::default()
            },
        );
        let previous = BTreeMap::from([(key("dr", "orders", 0), assignment())]);
        let discovery = discover_flow(
            &flow_spec("dr"),
            MAP_TOPIC,
            &clusters(),
            &kafka,
            &previous,
            None,
            &Listings::new(),
        )
        .await;
        assert!(!discovery.source_listed);
        assert_eq!(discovery.partitions.len(), 1);
        assert!(
            discovery.errors[0].starts_with("destination: "),
            "{:?}",
            discovery.errors
        );
    }

    #[tokio::test]
    async fn a_source_config_change_reaches_the_destination_topic() {
        let dest = FakeCluster {
            topics: BTreeMap::from([(
                "orders".to_string(),
                FakeTopic {
                    dynamic_configs: configs(&[
                        ("retention.ms", "1"),
                        ("min.insync.replicas", "2"),
                    ]),
                    ..FakeTopic::empty(1)
                },
            )]),
            ..FakeCluster::default()
        };
        let kafka = FakeKafka::default().with_cluster("dst", dest);
        let discovery = FlowDiscovery {
            source_listed: true,
            source_configs: BTreeMap::from([(
                "orders".to_string(),
                configs(&[("retention.ms", "2")]),
            )]),
            dest_existed: ["orders".to_string()].into(),
            ..FlowDiscovery::default()
        };
        let state = FlowState {
            source_configs: BTreeMap::from([(
                "orders".to_string(),
                configs(&[("retention.ms", "1")]),
            )]),
            ..FlowState::default()
        };
        let outcomes =
            sync_topic_configs(&flow_spec("dr"), &discovery, &state, &clusters(), &kafka).await;
        assert_eq!(
            outcomes,
            vec![("orders".to_string(), Ok(configs(&[("retention.ms", "2")])))]
        );
        assert_eq!(
            kafka.cluster_now("dst").topics["orders"].dynamic_configs,
            configs(&[("retention.ms", "2"), ("min.insync.replicas", "2")])
        );
    }
}
