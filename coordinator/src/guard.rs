//! Guard rails: the decisions that refuse a change an operator would regret
//! (two flows writing one destination topic, the last live member of a role
//! drained, a flow renamed under its checkpoints) and the warnings a new flow's
//! matched topics deserve. Pure functions; the admin API and the reconciler do
//! the reading and writing around them.
//!
//! Two flows writing one destination topic interleave their records and copy
//! each source record once per flow; the check looks at clusters by Kafka's
//! cluster id, so one cluster registered under two names is still one cluster.

use std::collections::{BTreeMap, BTreeSet};

use kmirror_common::schema::{FlowSpec, RenamePolicy};
use kmirror_common::{FlowName, MemberId, Role};

use crate::kafka::TopicListing;
use crate::topic_filter::TopicFilter;

/// A source topic a flow matches and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMatch {
    pub source_topic: String,
    pub dest_topic: String,
    pub source_partitions: i32,
    /// `None` when the destination topic does not exist yet.
    pub dest_partitions_opt: Option<i32>,
}

/// A destination topic in one Kafka cluster. `cluster` is the cluster's Kafka id
/// where known, otherwise its name in the fleet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DestTopic {
    pub cluster: String,
    pub topic: String,
}

/// The source topics `flow` matches in `source` (complete metadata only) and
/// their destination topics as `dest` lists them.
pub fn topic_matches(
    flow: &FlowSpec,
    filter: &TopicFilter,
    source: &TopicListing,
    dest: &TopicListing,
) -> Vec<TopicMatch> {
    source
        .partitions
        .iter()
        .filter(|(topic, _)| filter.matches(topic))
        .map(|(topic, &source_partitions)| {
            let dest_topic = flow.dest_topic(topic);
            TopicMatch {
                source_topic: topic.clone(),
                dest_partitions_opt: dest.partitions.get(&dest_topic).copied(),
                dest_topic,
                source_partitions,
            }
        })
        .collect()
}

/// What an operator should know about a flow's matched topics before records
/// move: nothing matched, or partitions that will not map one to one.
pub fn match_warnings(flow: &FlowSpec, matches: &[TopicMatch]) -> Vec<String> {
    let mut warnings = Vec::new();
    if matches.is_empty() {
        let exclude = flow
            .exclude
            .as_deref()
            .map(|exclude| format!(" and not --exclude {exclude:?}"))
            .unwrap_or_default();
        warnings.push(format!(
            "no topic of source cluster {} matches --include {:?}{exclude} now: the flow mirrors nothing until a matching topic appears",
            flow.source_cluster, flow.include
        ));
    }
    for matched in matches {
        let Some(dest_partitions) = matched.dest_partitions_opt else {
            continue;
        };
        if dest_partitions < matched.source_partitions {
            warnings.push(format!(
                "destination topic {} has {dest_partitions} partitions, fewer than source topic {}'s {}: records are placed by key (Kafka's default partitioner), so partitions and offsets do not map 1:1",
                matched.dest_topic, matched.source_topic, matched.source_partitions
            ));
        }
    }
    warnings
}

/// Each of `ours` that another flow already writes: `(destination topic, that flow)`.
pub fn shared_dest_topics<'a>(
    ours: impl IntoIterator<Item = &'a String>,
    others: &BTreeMap<FlowName, BTreeSet<String>>,
) -> Vec<(String, FlowName)> {
    let mut shared = Vec::new();
    for topic in ours {
        for (other, topics) in others {
            if topics.contains(topic) {
                shared.push((topic.clone(), other.clone()));
            }
        }
    }
    shared.sort();
    shared.dedup();
    shared
}

/// The refusal of a create or update whose destination topics other flows
/// already write, naming the first few.
pub fn shared_dest_topics_refusal(
    flow: &FlowName,
    dest_cluster: &str,
    shared: &[(String, FlowName)],
) -> Option<String> {
    const NAMED: usize = 5;
    if shared.is_empty() {
        return None;
    }
    let named: Vec<String> = shared
        .iter()
        .take(NAMED)
        .map(|(topic, other)| format!("{topic} (written by flow {other})"))
        .collect();
    let more = match shared.len().saturating_sub(NAMED) {
        0 => String::new(),
        more => format!(" and {more} more"),
    };
    Some(format!(
        "flow {flow} would write destination topic(s) {}{more} in cluster {dest_cluster}: two flows writing one topic copy every record twice; exclude these topics or rename them (--rename prefix, --map)",
        named.join(", ")
    ))
}

/// Why changing a flow's rename policy is refused while it has checkpoints: the
/// checkpoints say how far the old destination topics got, and the new topics
/// would start from there, missing everything before.
pub fn rename_change_refusal(
    stored: &FlowSpec,
    wanted: &FlowSpec,
    checkpointed_partitions: usize,
) -> Option<String> {
    if stored.rename == wanted.rename || checkpointed_partitions == 0 {
        return None;
    }
    Some(format!(
        "flow {} has progress for {checkpointed_partitions} partition(s) and cannot change its destination names ({} to {}): the new topics would start at the old topics' offsets and miss what came before; delete the flow and create it again to copy into new names from the start",
        stored.name,
        describe_rename(&stored.rename),
        describe_rename(&wanted.rename)
    ))
}

fn describe_rename(rename: &RenamePolicy) -> String {
    match rename {
        RenamePolicy::Identity => "identity".to_string(),
        RenamePolicy::Prefix { alias, separator } => format!("prefix {alias}{separator}<topic>"),
        RenamePolicy::Map { topics } => {
            let pairs: Vec<String> = topics
                .iter()
                .map(|(source, dest)| format!("{source}={dest}"))
                .collect();
            format!("map {}", pairs.join(","))
        }
    }
}

/// Why draining `id` is refused when no other live, undrained member of its role
/// would be left to take its partitions.
pub fn last_member_drain_refusal<'a>(
    role: Role,
    id: &MemberId,
    live_undrained: impl IntoIterator<Item = &'a MemberId>,
) -> Option<String> {
    let others = live_undrained
        .into_iter()
        .filter(|other| *other != id)
        .count();
    if others > 0 {
        return None;
    }
    Some(format!(
        "member {id} is the last live {role} not drained: its partitions would have nowhere to go and every flow would stop; start another {role} first"
    ))
}

/// A running flow's wish to write a destination topic this round.
#[derive(Debug, Clone)]
pub struct DestClaim {
    pub flow: FlowName,
    pub flow_created_ms: i64,
    pub dest: DestTopic,
}

/// Which flow may write each destination topic several flows want: the one
/// already writing it (holding assignments to it), else the oldest flow (then
/// the first by name). Returns the refused `(flow, topic)` claims with the flow
/// that keeps the topic.
pub fn refused_dest_claims(
    claims: &[DestClaim],
    held: &BTreeMap<DestTopic, BTreeSet<FlowName>>,
) -> BTreeMap<(FlowName, DestTopic), FlowName> {
    let mut claimants: BTreeMap<&DestTopic, Vec<&DestClaim>> = BTreeMap::new();
    for claim in claims {
        let entry = claimants.entry(&claim.dest).or_default();
        if !entry.iter().any(|earlier| earlier.flow == claim.flow) {
            entry.push(claim);
        }
    }
    let mut refused = BTreeMap::new();
    for (dest, flows) in claimants {
        if flows.len() < 2 {
            continue;
        }
        let holders_opt = held.get(dest);
        let owner = flows
            .iter()
            .min_by_key(|claim| {
                let holds = holders_opt.is_some_and(|holders| holders.contains(&claim.flow));
                (!holds, claim.flow_created_ms, claim.flow.clone())
            })
            .map(|claim| claim.flow.clone())
            .expect("two or more claimants");
        for claim in flows.iter().filter(|claim| claim.flow != owner) {
            refused.insert((claim.flow.clone(), dest.clone()), owner.clone());
        }
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmirror_common::schema::{ConfigSync, StartPosition};
    use kmirror_common::ClusterName;

    fn flow(name: &str, rename: RenamePolicy) -> FlowSpec {
        FlowSpec {
            name: FlowName::new(name).unwrap(),
            source_cluster: ClusterName::new("src").unwrap(),
            dest_cluster: ClusterName::new("dst").unwrap(),
            include: "orders.*".to_string(),
            exclude: None,
            created_ms: 0,
            rename,
            start: StartPosition::Earliest,
            config_sync: ConfigSync::default(),
            paused: false,
            until_caught_up: false,
            group_sync: None,
            exactly_once: false,
        }
    }

    fn listing(topics: &[(&str, i32)]) -> TopicListing {
        TopicListing {
            partitions: topics
                .iter()
                .map(|(topic, count)| (topic.to_string(), *count))
                .collect(),
            unavailable: BTreeMap::new(),
        }
    }

    fn name(flow: &str) -> FlowName {
        FlowName::new(flow).unwrap()
    }

    fn dest(topic: &str) -> DestTopic {
        DestTopic {
            cluster: "cluster-id-1".to_string(),
            topic: topic.to_string(),
        }
    }

    fn claim(flow: &str, created_ms: i64, topic: &str) -> DestClaim {
        DestClaim {
            flow: name(flow),
            flow_created_ms: created_ms,
            dest: dest(topic),
        }
    }

    #[test]
    fn matches_name_each_destination_topic_and_its_partitions() {
        let spec = flow(
            "dr",
            RenamePolicy::Prefix {
                alias: "east".to_string(),
                separator: ".".to_string(),
            },
        );
        let filter = TopicFilter::new(&spec.include, None).unwrap();
        let matches = topic_matches(
            &spec,
            &filter,
            &listing(&[("orders", 6), ("payments", 3), ("orders-eu", 2)]),
            &listing(&[("east.orders", 6)]),
        );
        assert_eq!(
            matches,
            vec![
                TopicMatch {
                    source_topic: "orders".to_string(),
                    dest_topic: "east.orders".to_string(),
                    source_partitions: 6,
                    dest_partitions_opt: Some(6),
                },
                TopicMatch {
                    source_topic: "orders-eu".to_string(),
                    dest_topic: "east.orders-eu".to_string(),
                    source_partitions: 2,
                    dest_partitions_opt: None,
                },
            ]
        );
        assert!(match_warnings(&spec, &matches).is_empty());
    }

    #[test]
    fn no_match_and_a_smaller_destination_are_warned_about() {
        let spec = flow("dr", RenamePolicy::Identity);
        let warnings = match_warnings(&spec, &[]);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("no topic of source cluster src matches"));

        let smaller = TopicMatch {
            source_topic: "orders".to_string(),
            dest_topic: "orders".to_string(),
            source_partitions: 6,
            dest_partitions_opt: Some(2),
        };
        let warnings = match_warnings(&spec, &[smaller]);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("orders has 2 partitions, fewer than source topic orders's 6"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_destination_topic_of_another_flow_is_named_in_the_refusal() {
        let others = BTreeMap::from([
            (name("a"), BTreeSet::from(["payments".to_string()])),
            (name("b"), BTreeSet::from(["refunds".to_string()])),
        ]);
        let ours = ["payments".to_string(), "orders".to_string()];
        let shared = shared_dest_topics(&ours, &others);
        assert_eq!(shared, vec![("payments".to_string(), name("a"))]);
        let refusal = shared_dest_topics_refusal(&name("c"), "dest", &shared).unwrap();
        assert!(
            refusal.contains("payments (written by flow a) in cluster dest"),
            "{refusal}"
        );
        assert_eq!(shared_dest_topics_refusal(&name("c"), "dest", &[]), None);
    }

    #[test]
    fn a_rename_change_is_refused_only_once_the_flow_has_progress() {
        let stored = flow("dr", RenamePolicy::Identity);
        let renamed = flow(
            "dr",
            RenamePolicy::Map {
                topics: BTreeMap::from([("payments".to_string(), "payments-copy".to_string())]),
            },
        );
        assert_eq!(rename_change_refusal(&stored, &renamed, 0), None);
        assert_eq!(rename_change_refusal(&stored, &stored, 3), None);
        let refusal = rename_change_refusal(&stored, &renamed, 3).unwrap();
        assert!(
            refusal.contains("identity to map payments=payments-copy"),
            "{refusal}"
        );
    }

    #[test]
    fn draining_the_last_live_member_of_a_role_is_refused() {
        let one = MemberId::new("fetcher-1").unwrap();
        let two = MemberId::new("fetcher-2").unwrap();
        assert!(last_member_drain_refusal(Role::Fetcher, &one, [&one, &two]).is_none());
        let refusal = last_member_drain_refusal(Role::Fetcher, &one, [&one]).unwrap();
        assert!(
            refusal.contains("fetcher-1 is the last live fetcher"),
            "{refusal}"
        );
        assert!(last_member_drain_refusal(Role::Writer, &one, []).is_some());
    }

    #[test]
    fn the_flow_already_writing_a_topic_keeps_it_even_when_younger() {
        let claims = [claim("old", 1, "payments"), claim("young", 2, "payments")];
        let held = BTreeMap::from([(dest("payments"), BTreeSet::from([name("young")]))]);
        let refused = refused_dest_claims(&claims, &held);
        assert_eq!(
            refused,
            BTreeMap::from([((name("old"), dest("payments")), name("young"))])
        );
    }

    #[test]
    fn a_new_topic_wanted_by_two_flows_goes_to_the_older_flow() {
        let claims = [
            claim("young", 2, "payments"),
            claim("old", 1, "payments"),
            claim("young", 2, "orders"),
            claim("young", 2, "payments"),
        ];
        let refused = refused_dest_claims(&claims, &BTreeMap::new());
        assert_eq!(
            refused,
            BTreeMap::from([((name("young"), dest("payments")), name("old"))])
        );
    }
}
