//! Config sync decisions, pure: which source topic config changes a round
//! carries to the destination, what the destination topic's configs become,
//! and what the flow remembers as copied.

use std::collections::{BTreeMap, BTreeSet};

use kmirror_common::schema::{FlowSpec, FlowState};
use kmirror_common::FlowName;

use crate::round::FlowDiscovery;

/// Topic configs by name.
pub type Configs = BTreeMap<String, String>;

/// A source topic whose configs changed since they were last copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    pub source_topic: String,
    pub last_copied: Configs,
    pub current: Configs,
}

/// How carrying one source topic's configs went: the configs now copied (to
/// remember), or why they could not be.
pub type SyncOutcome = (String, Result<Configs, String>);

/// The running, started flows whose configs follow the source, where the
/// source configs could be read.
pub fn flows_to_sync<'a>(
    running: &[&'a FlowSpec],
    states: &BTreeMap<FlowName, FlowState>,
    discovered: &BTreeMap<FlowName, FlowDiscovery>,
) -> Vec<&'a FlowSpec> {
    running
        .iter()
        .copied()
        .filter(|flow| {
            flow.config_sync.enabled
                && states[&flow.name].started_ms.is_some()
                && discovered
                    .get(&flow.name)
                    .is_some_and(|discovery| !discovery.source_configs.is_empty())
        })
        .collect()
}

/// Sorts a flow's source topic configs: seen for the first time (remembered as
/// they are, nothing changed: the topic was created with them, or its
/// destination topic existed already), unchanged, or changed and to carry over
/// (only into a destination topic that existed before this round).
pub fn config_changes(
    discovery: &FlowDiscovery,
    state: &FlowState,
) -> (Vec<SyncOutcome>, Vec<ConfigChange>) {
    let mut first_seen = Vec::new();
    let mut changed = Vec::new();
    for (topic, current) in &discovery.source_configs {
        match state.source_configs.get(topic) {
            None => first_seen.push((topic.clone(), Ok(current.clone()))),
            Some(last) if last == current => {}
            Some(last) if discovery.dest_existed.contains(topic) => changed.push(ConfigChange {
                source_topic: topic.clone(),
                last_copied: last.clone(),
                current: current.clone(),
            }),
            Some(_) => {}
        }
    }
    (first_seen, changed)
}

/// The destination topic's configs after a change: its own, with the source
/// values that changed set and the source configs that were removed removed.
/// Values set on the destination alone stay.
pub fn wanted_dest_configs(dest_now: &Configs, change: &ConfigChange) -> Configs {
    let mut wanted = dest_now.clone();
    for (name, value) in &change.current {
        if change.last_copied.get(name) != Some(value) {
            wanted.insert(name.clone(), value.clone());
        }
    }
    for name in change
        .last_copied
        .keys()
        .filter(|name| !change.current.contains_key(*name))
    {
        wanted.remove(name);
    }
    wanted
}

/// Remembers what was copied and forgets topics no longer mirrored (when the
/// flow's topics are known this round). Returns each topic's failure, or `None`
/// where it succeeded.
pub fn remember_copied(
    state: &mut FlowState,
    outcomes: Vec<SyncOutcome>,
    discovery: &FlowDiscovery,
) -> Vec<(String, Option<String>)> {
    let mut failures = Vec::new();
    for (topic, outcome) in outcomes {
        match outcome {
            Ok(configs) => {
                state.source_configs.insert(topic.clone(), configs);
                failures.push((topic, None));
            }
            Err(cause) => failures.push((topic, Some(cause))),
        }
    }
    let topics: BTreeSet<&String> = discovery.source_configs.keys().collect();
    state
        .source_configs
        .retain(|topic, _| topics.contains(topic) || !discovery.source_listed);
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::test_support::configs;

    fn discovery(current: Configs, dest_existed: bool) -> FlowDiscovery {
        FlowDiscovery {
            source_listed: true,
            source_configs: BTreeMap::from([("orders".to_string(), current)]),
            dest_existed: if dest_existed {
                BTreeSet::from(["orders".to_string()])
            } else {
                BTreeSet::new()
            },
            ..FlowDiscovery::default()
        }
    }

    fn state(last: Configs) -> FlowState {
        FlowState {
            source_configs: BTreeMap::from([("orders".to_string(), last)]),
            ..FlowState::default()
        }
    }

    #[test]
    fn a_source_config_change_is_carried_once() {
        let found = discovery(configs(&[("retention.ms", "2")]), true);
        let mut flow_state = state(configs(&[("retention.ms", "1")]));
        let (first_seen, changed) = config_changes(&found, &flow_state);
        assert!(first_seen.is_empty());
        assert_eq!(changed.len(), 1);
        let copied = ("orders".to_string(), Ok(changed[0].current.clone()));
        remember_copied(&mut flow_state, vec![copied], &found);
        let (_, changed_again) = config_changes(&found, &flow_state);
        assert!(changed_again.is_empty());
    }

    #[test]
    fn configs_seen_for_the_first_time_are_remembered_not_carried() {
        let found = discovery(configs(&[("retention.ms", "2")]), true);
        let (first_seen, changed) = config_changes(&found, &FlowState::default());
        assert_eq!(
            first_seen,
            vec![("orders".to_string(), Ok(configs(&[("retention.ms", "2")])))]
        );
        assert!(changed.is_empty());
    }

    #[test]
    fn a_change_is_not_carried_into_a_destination_topic_created_this_round() {
        let found = discovery(configs(&[("retention.ms", "2")]), false);
        let (first_seen, changed) =
            config_changes(&found, &state(configs(&[("retention.ms", "1")])));
        assert!(first_seen.is_empty() && changed.is_empty());
    }

    #[test]
    fn a_carried_change_sets_changed_values_removes_removed_ones_and_keeps_the_destinations_own() {
        let change = ConfigChange {
            source_topic: "orders".to_string(),
            last_copied: configs(&[("retention.ms", "1"), ("cleanup.policy", "compact")]),
            current: configs(&[("retention.ms", "2")]),
        };
        let dest_now = configs(&[
            ("retention.ms", "1"),
            ("cleanup.policy", "compact"),
            ("min.insync.replicas", "2"),
        ]);
        assert_eq!(
            wanted_dest_configs(&dest_now, &change),
            configs(&[("retention.ms", "2"), ("min.insync.replicas", "2")])
        );
    }

    #[test]
    fn topics_no_longer_mirrored_are_forgotten_only_when_the_topics_are_known() {
        let mut flow_state = state(configs(&[("retention.ms", "1")]));
        let unlisted = FlowDiscovery::default();
        remember_copied(&mut flow_state, vec![], &unlisted);
        assert_eq!(flow_state.source_configs.len(), 1);
        let listed = FlowDiscovery {
            source_listed: true,
            ..FlowDiscovery::default()
        };
        remember_copied(&mut flow_state, vec![], &listed);
        assert!(flow_state.source_configs.is_empty());
    }

    #[test]
    fn a_failed_carry_is_reported_and_not_remembered() {
        let found = discovery(configs(&[("retention.ms", "2")]), true);
        let mut flow_state = state(configs(&[("retention.ms", "1")]));
        let failures = remember_copied(
            &mut flow_state,
            vec![("orders".to_string(), Err("denied".to_string()))],
            &found,
        );
        assert_eq!(
            failures,
            vec![("orders".to_string(), Some("denied".to_string()))]
        );
        assert_eq!(
            flow_state.source_configs["orders"],
            configs(&[("retention.ms", "1")])
        );
    }

    #[test]
    fn only_started_flows_that_follow_the_source_and_read_its_configs_are_synced() {
        let following = crate::round::test_support::flow_spec("following");
        let mut not_following = crate::round::test_support::flow_spec("fixed");
        not_following.config_sync.enabled = false;
        let not_started = crate::round::test_support::flow_spec("new");
        let started = FlowState {
            started_ms: Some(1),
            ..FlowState::default()
        };
        let states = BTreeMap::from([
            (following.name.clone(), started.clone()),
            (not_following.name.clone(), started),
            (not_started.name.clone(), FlowState::default()),
        ]);
        let discovered: BTreeMap<FlowName, FlowDiscovery> =
            [&following, &not_following, &not_started]
                .iter()
                .map(|flow| (flow.name.clone(), discovery(Configs::new(), true)))
                .collect();
        let syncing = flows_to_sync(
            &[&following, &not_following, &not_started],
            &states,
            &discovered,
        );
        assert_eq!(syncing.len(), 1);
        assert_eq!(syncing[0].name, following.name);
    }
}
