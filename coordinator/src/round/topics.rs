//! Topic decisions of a round, pure: what becomes of each source topic a flow
//! matches (its destination topic is ready, to create, to grow, carried over as
//! it was, or in error), which configs a copy carries, and which flow keeps a
//! destination topic two flows would write.

use std::collections::{BTreeMap, BTreeSet};

use kmirror_common::schema::{Assignment, FlowSpec};
use kmirror_common::{ClusterName, FlowName, PartitionKey};
use tracing::debug;

use crate::error::CoordinatorError;
use crate::guard::{refused_dest_claims, DestClaim, DestTopic};
use crate::kafka::{TopicConfigs, TopicListing, TopicToCreate};
use crate::planner::WantedPartition;
use crate::round::FlowDiscovery;
use crate::topic_filter::TopicFilter;

/// A matched source topic whose destination topic can take its partitions:
/// (source topic, source partitions, destination partitions).
pub type ReadyTopic = (String, i32, i32);

/// What becomes of a flow's matched source topics, from both clusters' listings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicActions {
    /// Every source topic the flow mirrors, sorted.
    pub topics: Vec<String>,
    /// Matching source topics with complete metadata, and their partition counts.
    pub matched: BTreeMap<String, i32>,
    /// Source topics whose destination topic exists.
    pub dest_existed: BTreeSet<String>,
    /// Source topics whose previous assignments are carried over unchanged, in
    /// the order they were found.
    pub carried: Vec<String>,
    /// Why part of the flow cannot run.
    pub errors: Vec<String>,
    pub ready: Vec<ReadyTopic>,
    /// (source topic, partitions)
    pub to_create: Vec<(String, i32)>,
    /// (source topic, source partitions, destination partitions)
    pub to_grow: Vec<(String, i32, i32)>,
}

/// Sorts a flow's matched source topics by what their destination topic needs.
/// `previous_source_count` is the source partition count the flow's assignments
/// of a topic recorded, if it has any.
pub fn topic_actions(
    flow: &FlowSpec,
    filter: &TopicFilter,
    previous_source_count: impl Fn(&str) -> Option<i32>,
    source_listing: &TopicListing,
    dest_listing: &TopicListing,
) -> TopicActions {
    let mut actions = TopicActions::default();
    // Source topics that exist but whose metadata is incomplete right now.
    for topic in source_listing
        .unavailable
        .keys()
        .filter(|topic| filter.matches(topic))
    {
        debug!(flow = %flow.name, %topic, "source topic metadata incomplete, keeping its assignments");
        actions.topics.push(topic.clone());
        actions.carried.push(topic.clone());
    }
    for (topic, &source_count) in source_listing
        .partitions
        .iter()
        .filter(|(topic, _)| filter.matches(topic))
    {
        actions.topics.push(topic.clone());
        actions.matched.insert(topic.clone(), source_count);
        let dest_topic = flow.dest_topic(topic);
        let previous_count_opt = previous_source_count(topic);
        match dest_listing.partitions.get(&dest_topic) {
            None if dest_listing.unavailable.contains_key(&dest_topic) => {
                debug!(flow = %flow.name, topic = %dest_topic, "destination topic metadata incomplete, keeping its assignments");
                actions.carried.push(topic.clone());
            }
            None if previous_count_opt.is_some() => {
                // It existed (the partitions were assigned) and is gone: someone
                // deleted it. Creating it again would silently resume mid-stream
                // into an empty topic; stop and say so instead.
                actions.errors.push(format!(
                    "destination topic {dest_topic} no longer exists in cluster {}: create it again to resume from the checkpoints, or delete and re-create the flow to copy from the start",
                    flow.dest_cluster
                ));
                actions.carried.push(topic.clone());
            }
            None => actions.to_create.push((topic.clone(), source_count)),
            Some(&dest_count)
                if dest_count < source_count && Some(dest_count) == previous_count_opt =>
            {
                // The destination mirrored the source partition for partition; keep
                // it that way as the source grows.
                actions
                    .to_grow
                    .push((topic.clone(), source_count, dest_count));
            }
            Some(&dest_count) => actions
                .ready
                .push((topic.clone(), source_count, dest_count)),
        }
    }
    actions.topics.sort();
    actions.dest_existed = actions
        .matched
        .keys()
        .filter(|topic| {
            dest_listing
                .partitions
                .contains_key(&flow.dest_topic(topic))
        })
        .cloned()
        .collect();
    actions
}

/// The source topics whose configs the round reads: every matching topic when
/// configs follow the source, otherwise only those to create.
pub fn config_topics(flow: &FlowSpec, actions: &TopicActions) -> Vec<String> {
    if flow.config_sync.enabled {
        actions.matched.keys().cloned().collect()
    } else {
        actions
            .to_create
            .iter()
            .map(|(topic, _)| topic.clone())
            .collect()
    }
}

/// The flow's config sync exclusions, compiled (whole-name matches).
pub fn config_exclusions(flow: &FlowSpec) -> Result<Vec<regex::Regex>, String> {
    flow.config_sync
        .exclude
        .iter()
        .map(|pattern| {
            let invalid = |error| format!("invalid config sync exclusion {pattern:?}: {error}");
            // Alone first: `a)|(?:b` compiles once wrapped, but matches parts of names.
            regex::Regex::new(pattern).map_err(invalid)?;
            regex::Regex::new(&format!("^(?:{pattern})$")).map_err(invalid)
        })
        .collect()
}

/// The source configs a copy carries: the read ones without the excluded names.
pub fn copied_configs(
    read: TopicConfigs<Vec<(String, String)>>,
    excluded: &[regex::Regex],
) -> TopicConfigs<Vec<(String, String)>> {
    read.into_iter()
        .map(|(topic, result)| {
            let copied = result.map(|configs| {
                configs
                    .into_iter()
                    .filter(|(name, _)| !excluded.iter().any(|regex| regex.is_match(name)))
                    .collect::<Vec<_>>()
            });
            (topic, copied)
        })
        .collect()
}

/// The destination topics to create and those that cannot be created now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Creations {
    /// (source topic, destination topic to create)
    pub creatable: Vec<(String, TopicToCreate)>,
    /// (source topic, why): its configs could not be read.
    pub unreadable: Vec<(String, String)>,
}

/// The destination topics to create, with the source configs they carry.
pub fn topics_to_create(
    flow: &FlowSpec,
    to_create: &[(String, i32)],
    configs: &Result<TopicConfigs<Vec<(String, String)>>, CoordinatorError>,
) -> Creations {
    let mut creatable = Vec::new();
    let mut unreadable = Vec::new();
    for (topic, partitions) in to_create {
        let topic_configs = match configs {
            Ok(configs_by_topic) => match configs_by_topic.get(topic) {
                Some(Ok(topic_configs)) => topic_configs.clone(),
                Some(Err(cause)) => {
                    unreadable.push((
                        topic.clone(),
                        format!("cannot read the configs of source topic {topic}: {cause}"),
                    ));
                    continue;
                }
                None => Vec::new(),
            },
            Err(error) => {
                unreadable.push((
                    topic.clone(),
                    format!("cannot read the configs of source topic {topic}: {error}"),
                ));
                continue;
            }
        };
        creatable.push((
            topic.clone(),
            TopicToCreate {
                name: flow.dest_topic(topic),
                partitions: *partitions,
                configs: topic_configs,
            },
        ));
    }
    Creations {
        creatable,
        unreadable,
    }
}

/// How the creation of one topic went, from the cluster's answer to all of them.
pub fn creation_outcome(
    created: &Result<BTreeMap<String, Result<(), String>>, CoordinatorError>,
    topic: &str,
) -> Result<(), String> {
    match created {
        Ok(results) => results
            .get(topic)
            .cloned()
            .unwrap_or_else(|| Err("no answer from the cluster".to_string())),
        Err(error) => Err(error.to_string()),
    }
}

/// Every partition of the ready topics, to plan.
pub fn ready_partitions(flow: &FlowSpec, ready: &[ReadyTopic]) -> Vec<WantedPartition> {
    ready
        .iter()
        .flat_map(|(topic, source_count, dest_count)| {
            let dest_topic = flow.dest_topic(topic);
            (0..*source_count).map(move |partition| WantedPartition {
                key: PartitionKey::new(flow.name.clone(), topic.clone(), partition),
                dest_topic: dest_topic.clone(),
                dest_partitions: *dest_count,
                source_partitions: *source_count,
                bytes_per_sec: 0.0,
            })
        })
        .collect()
}

/// A partition as its previous assignment describes it.
pub fn carried(key: &PartitionKey, assignment: &Assignment) -> WantedPartition {
    WantedPartition {
        key: key.clone(),
        dest_topic: assignment.dest_topic.clone(),
        dest_partitions: assignment.dest_partitions,
        source_partitions: assignment.source_partitions,
        bytes_per_sec: 0.0,
    }
}

/// Keeps each destination topic to one flow: a topic that appears later and
/// matches two flows writing into the same Kafka cluster (by name or cluster id,
/// `identity` giving each destination cluster's) is assigned to the flow already
/// writing it, else the oldest; the other flows leave its partitions unassigned
/// and report why (see [`crate::guard`]). A flow claims every topic it matches,
/// ready or not: the clusters' listings are read one after the other, so a
/// younger flow can see a new destination topic ready a round before the older
/// one does, and must not take it meanwhile.
pub fn refuse_shared_dest_topics(
    running: &[&FlowSpec],
    discovered: &mut BTreeMap<FlowName, FlowDiscovery>,
    previous: &BTreeMap<PartitionKey, Assignment>,
    identity: &BTreeMap<ClusterName, String>,
) {
    let dest_of = |flow: &FlowSpec, topic: &str| DestTopic {
        cluster: identity
            .get(&flow.dest_cluster)
            .cloned()
            .unwrap_or_else(|| format!("name:{}", flow.dest_cluster)),
        topic: topic.to_string(),
    };
    let mut claims = Vec::new();
    for flow in running {
        if let Some(discovery) = discovered.get(&flow.name) {
            let topics: BTreeSet<String> = discovery
                .partitions
                .iter()
                .map(|partition| partition.dest_topic.clone())
                .chain(discovery.matched.keys().map(|topic| flow.dest_topic(topic)))
                .collect();
            claims.extend(topics.into_iter().map(|topic| DestClaim {
                flow: flow.name.clone(),
                flow_created_ms: flow.created_ms,
                dest: dest_of(flow, &topic),
            }));
        }
    }
    let mut held: BTreeMap<DestTopic, BTreeSet<FlowName>> = BTreeMap::new();
    for (key, assignment) in previous {
        if let Some(flow) = running.iter().find(|flow| flow.name == key.flow) {
            held.entry(dest_of(flow, &assignment.dest_topic))
                .or_default()
                .insert(flow.name.clone());
        }
    }
    let refused = refused_dest_claims(&claims, &held);
    for flow in running {
        let Some(discovery) = discovered.get_mut(&flow.name) else {
            continue;
        };
        let mine: Vec<(&DestTopic, &FlowName)> = refused
            .iter()
            .filter(|((refused_flow, _), _)| refused_flow == &flow.name)
            .map(|((_, dest), owner)| (dest, owner))
            .collect();
        for (dest, owner) in &mine {
            discovery
                .partitions
                .retain(|partition| partition.dest_topic != dest.topic);
            discovery.errors.push(format!(
                "destination topic {} in cluster {} is written by flow {owner}: its partitions are not assigned to this flow (two flows writing one topic would copy every record twice)",
                dest.topic, flow.dest_cluster
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::test_support::{assignment, flow_spec, key};

    fn listing(topics: &[(&str, i32)]) -> TopicListing {
        TopicListing {
            partitions: topics
                .iter()
                .map(|(name, count)| (name.to_string(), *count))
                .collect(),
            unavailable: BTreeMap::new(),
        }
    }

    fn actions_for(
        previous_count_opt: Option<i32>,
        source: &TopicListing,
        dest: &TopicListing,
    ) -> TopicActions {
        let flow = flow_spec("dr");
        let filter = TopicFilter::new(&flow.include, None).unwrap();
        topic_actions(&flow, &filter, |_| previous_count_opt, source, dest)
    }

    #[test]
    fn a_missing_destination_topic_is_created_with_the_source_partition_count() {
        let actions = actions_for(None, &listing(&[("orders", 3)]), &listing(&[]));
        assert_eq!(actions.to_create, vec![("orders".to_string(), 3)]);
        assert!(actions.ready.is_empty() && actions.errors.is_empty());
        assert!(actions.dest_existed.is_empty());
    }

    #[test]
    fn a_destination_topic_that_followed_its_source_grows_with_it() {
        let actions = actions_for(
            Some(2),
            &listing(&[("orders", 4)]),
            &listing(&[("orders", 2)]),
        );
        assert_eq!(actions.to_grow, vec![("orders".to_string(), 4, 2)]);
        assert!(actions.ready.is_empty());
    }

    #[test]
    fn a_destination_topic_with_its_own_partition_count_is_used_as_it_is() {
        // Never assigned before, so it did not follow the source: it is not grown.
        let actions = actions_for(None, &listing(&[("orders", 4)]), &listing(&[("orders", 2)]));
        assert_eq!(actions.ready, vec![("orders".to_string(), 4, 2)]);
        assert!(actions.to_grow.is_empty() && actions.to_create.is_empty());
        assert_eq!(actions.dest_existed, BTreeSet::from(["orders".to_string()]));
    }

    #[test]
    fn a_deleted_destination_topic_is_not_created_again_and_the_flow_says_so() {
        let actions = actions_for(Some(3), &listing(&[("orders", 3)]), &listing(&[]));
        assert!(actions.to_create.is_empty());
        assert_eq!(actions.carried, vec!["orders"]);
        assert_eq!(actions.errors.len(), 1);
        assert!(
            actions.errors[0]
                .starts_with("destination topic orders no longer exists in cluster dst"),
            "{}",
            actions.errors[0]
        );
    }

    #[test]
    fn topics_with_incomplete_metadata_keep_their_assignments() {
        let mut source = listing(&[("orders", 3)]);
        source
            .unavailable
            .insert("payments".to_string(), "Leader not available".to_string());
        let mut dest = listing(&[]);
        dest.unavailable
            .insert("orders".to_string(), "Leader not available".to_string());
        let actions = actions_for(None, &source, &dest);
        assert_eq!(actions.carried, vec!["payments", "orders"]);
        assert_eq!(actions.topics, vec!["orders", "payments"]);
        assert!(actions.to_create.is_empty() && actions.errors.is_empty());
    }

    #[test]
    fn config_sync_exclusions_match_whole_config_names() {
        let mut flow = flow_spec("dr");
        flow.config_sync.exclude = vec![r"retention\..*".to_string()];
        let excluded = config_exclusions(&flow).unwrap();
        let read = BTreeMap::from([(
            "orders".to_string(),
            Ok(vec![
                ("retention.ms".to_string(), "1000".to_string()),
                ("local.retention.ms".to_string(), "10".to_string()),
            ]),
        )]);
        let copied = copied_configs(read, &excluded);
        assert_eq!(
            copied["orders"],
            Ok(vec![("local.retention.ms".to_string(), "10".to_string())])
        );
    }

    #[test]
    fn an_invalid_config_sync_exclusion_is_reported() {
        let mut flow = flow_spec("dr");
        flow.config_sync.exclude = vec!["(".to_string()];
        let error = config_exclusions(&flow).unwrap_err();
        assert!(
            error.starts_with("invalid config sync exclusion \"(\""),
            "{error}"
        );
        // Valid only once wrapped in the anchors: refused, not a partial match.
        flow.config_sync.exclude = vec!["x)|(?:y".to_string()];
        assert!(config_exclusions(&flow).is_err());
    }

    #[test]
    fn a_topic_whose_source_configs_cannot_be_read_is_not_created() {
        let flow = flow_spec("dr");
        let configs = Ok(BTreeMap::from([
            ("orders".to_string(), Ok(vec![])),
            (
                "payments".to_string(),
                Err("Authorization failed".to_string()),
            ),
        ]));
        let Creations {
            creatable,
            unreadable,
        } = topics_to_create(
            &flow,
            &[("orders".to_string(), 2), ("payments".to_string(), 1)],
            &configs,
        );
        assert_eq!(creatable.len(), 1);
        assert_eq!(creatable[0].1.name, "orders");
        assert_eq!(
            unreadable,
            vec![(
                "payments".to_string(),
                "cannot read the configs of source topic payments: Authorization failed"
                    .to_string()
            )]
        );
    }

    #[test]
    fn a_topic_the_cluster_did_not_answer_for_counts_as_not_created() {
        let created = Ok(BTreeMap::new());
        assert_eq!(
            creation_outcome(&created, "orders"),
            Err("no answer from the cluster".to_string())
        );
    }

    #[test]
    fn a_ready_topic_wants_every_source_partition_into_its_destination_topic() {
        let mut flow = flow_spec("dr");
        flow.rename = kmirror_common::schema::RenamePolicy::Prefix {
            alias: "east".to_string(),
            separator: ".".to_string(),
        };
        let wanted = ready_partitions(&flow, &[("orders".to_string(), 3, 2)]);
        assert_eq!(wanted.len(), 3);
        assert!(wanted
            .iter()
            .all(|partition| partition.dest_topic == "east.orders"
                && partition.dest_partitions == 2
                && partition.source_partitions == 3));
        assert_eq!(wanted[2].key, key("dr", "orders", 2));
    }

    #[test]
    fn a_second_flow_writing_a_destination_topic_the_first_holds_is_refused() {
        let first = FlowSpec {
            created_ms: 2,
            ..flow_spec("first")
        };
        let second = FlowSpec {
            created_ms: 1,
            ..flow_spec("second")
        };
        let wanting = |flow: &str| FlowDiscovery {
            partitions: vec![carried(&key(flow, "orders", 0), &assignment())],
            ..FlowDiscovery::default()
        };
        let mut discovered = BTreeMap::from([
            (first.name.clone(), wanting("first")),
            (second.name.clone(), wanting("second")),
        ]);
        // The first (younger) flow already writes the topic: it keeps it.
        let previous = BTreeMap::from([(key("first", "orders", 0), assignment())]);
        refuse_shared_dest_topics(
            &[&first, &second],
            &mut discovered,
            &previous,
            &BTreeMap::new(),
        );
        assert_eq!(discovered[&first.name].partitions.len(), 1);
        assert!(discovered[&first.name].errors.is_empty());
        assert!(discovered[&second.name].partitions.is_empty());
        assert!(
            discovered[&second.name].errors[0]
                .starts_with("destination topic orders in cluster dst is written by flow first"),
            "{:?}",
            discovered[&second.name].errors
        );
    }

    #[test]
    fn a_younger_flow_does_not_take_a_topic_the_older_one_matched_before_it_is_ready() {
        let older = FlowSpec {
            created_ms: 1,
            ..flow_spec("older")
        };
        let younger = FlowSpec {
            created_ms: 2,
            ..flow_spec("younger")
        };
        // The older flow's listing does not show the destination topic yet (it
        // is to be created); the younger one's already does.
        let mut discovered = BTreeMap::from([
            (
                older.name.clone(),
                FlowDiscovery {
                    matched: BTreeMap::from([("orders".to_string(), 1)]),
                    ..FlowDiscovery::default()
                },
            ),
            (
                younger.name.clone(),
                FlowDiscovery {
                    partitions: vec![carried(&key("younger", "orders", 0), &assignment())],
                    matched: BTreeMap::from([("orders".to_string(), 1)]),
                    ..FlowDiscovery::default()
                },
            ),
        ]);
        refuse_shared_dest_topics(
            &[&older, &younger],
            &mut discovered,
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert!(discovered[&older.name].errors.is_empty());
        assert!(discovered[&younger.name].partitions.is_empty());
        assert!(
            discovered[&younger.name].errors[0]
                .starts_with("destination topic orders in cluster dst is written by flow older"),
            "{:?}",
            discovered[&younger.name].errors
        );
    }
}
