//! A requested flow (the wire's `Flow`) checked field by field into the
//! `FlowSpec` stored in etcd, and a stored one back into the wire's form.
//! kmirrorctl uses both to compare manifests with the fleet.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kmirror_common::schema::{
    default_group_sync_exclude, ConfigSync, FlowSpec, FlowState, GroupSync, RenamePolicy,
    StartPosition, DEFAULT_GROUP_SYNC_INTERVAL_MS,
};
use kmirror_common::{now_ms, ClusterName, FlowName};
use kmirror_proto::v1::Flow;

use crate::error::CoordinatorError;
use crate::group_sync::GroupSelection;
use crate::round::flow_phase;
use crate::topic_filter::TopicFilter;

/// A stored flow from a requested one, every field checked.
pub fn flow_spec(flow: Flow) -> Result<FlowSpec, CoordinatorError> {
    let name = FlowName::new(flow.name)?;
    let source_cluster = ClusterName::new(flow.source_cluster)?;
    let dest_cluster = ClusterName::new(flow.dest_cluster)?;
    let invalid = |what: String| CoordinatorError::InvalidArgument(format!("flow {name}: {what}"));
    if flow.include.is_empty() {
        return Err(invalid("the include regex is empty".to_string()));
    }
    let exclude_opt = Some(flow.exclude).filter(|exclude| !exclude.is_empty());
    TopicFilter::new(&flow.include, exclude_opt.as_deref())?;
    let group_sync = group_sync(
        &flow.sync_group_offsets,
        &flow.sync_group_offsets_exclude,
        flow.sync_group_offsets_exclude_set,
        flow.sync_group_offsets_interval_ms,
        &invalid,
    )?;
    let rename = match flow.rename_policy.as_str() {
        "" | "identity" => RenamePolicy::Identity,
        "prefix" => {
            let alias = match flow.rename_prefix.as_str() {
                "" => source_cluster.to_string(),
                alias => alias.to_string(),
            };
            let separator = match flow.rename_separator.as_str() {
                "" => ".".to_string(),
                separator => separator.to_string(),
            };
            if !is_topic_name(&format!("{alias}{separator}x")) {
                return Err(invalid(format!(
                    "prefix {alias:?} with separator {separator:?} does not make valid topic names"
                )));
            }
            RenamePolicy::Prefix { alias, separator }
        }
        "map" => {
            if flow.rename_map.is_empty() {
                return Err(invalid("the rename map is empty".to_string()));
            }
            let topics: BTreeMap<String, String> = flow.rename_map.into_iter().collect();
            if let Some((_, bad)) = topics.iter().find(|(_, dest)| !is_topic_name(dest)) {
                return Err(invalid(format!("{bad:?} is not a valid topic name")));
            }
            let mut seen = BTreeSet::new();
            if let Some((_, twice)) = topics.iter().find(|(_, dest)| !seen.insert(*dest)) {
                return Err(invalid(format!(
                    "two source topics map to destination topic {twice}"
                )));
            }
            RenamePolicy::Map { topics }
        }
        other => {
            return Err(invalid(format!(
                "unknown rename policy {other:?} (use identity, prefix or map)"
            )))
        }
    };
    if source_cluster == dest_cluster && rename == RenamePolicy::Identity {
        // Destination topics named like their sources: the flow would copy every
        // topic onto itself.
        return Err(invalid(format!(
            "source and destination are the same cluster {source_cluster}"
        )));
    }
    let start = match flow.start.as_str() {
        "" | "earliest" => StartPosition::Earliest,
        "latest" => StartPosition::Latest,
        "timestamp" if flow.start_timestamp_ms >= 0 => StartPosition::Timestamp {
            ms: flow.start_timestamp_ms,
        },
        "timestamp" => return Err(invalid("the start timestamp is negative".to_string())),
        other => {
            return Err(invalid(format!(
                "unknown start position {other:?} (use earliest, latest or timestamp)"
            )))
        }
    };
    let mut config_sync = ConfigSync::default();
    if let Some(enabled) = flow.sync_topic_configs {
        config_sync.enabled = enabled;
    }
    if flow.sync_topic_configs_exclude_set || !flow.sync_topic_configs_exclude.is_empty() {
        config_sync.exclude = flow.sync_topic_configs_exclude;
    }
    for pattern in &config_sync.exclude {
        regex::Regex::new(pattern)
            .map_err(|error| invalid(format!("invalid config exclusion {pattern:?}: {error}")))?;
    }
    Ok(FlowSpec {
        name,
        source_cluster,
        dest_cluster,
        include: flow.include,
        exclude: exclude_opt,
        created_ms: now_ms(),
        rename,
        start,
        config_sync,
        paused: false,
        until_caught_up: flow.until_caught_up,
        group_sync,
        exactly_once: flow.exactly_once,
    })
}

/// The flow's consumer-group offset sync, off when no group regex is given.
fn group_sync(
    include: &str,
    exclude: &[String],
    exclude_set: bool,
    interval_ms: i64,
    invalid: &dyn Fn(String) -> CoordinatorError,
) -> Result<Option<GroupSync>, CoordinatorError> {
    let exclude_given = exclude_set || !exclude.is_empty();
    if include.is_empty() {
        if exclude_given || interval_ms != 0 {
            return Err(invalid(
                "group sync exclusions or interval given without the groups to sync".to_string(),
            ));
        }
        return Ok(None);
    }
    let exclude = if exclude_given {
        exclude.to_vec()
    } else {
        default_group_sync_exclude()
    };
    let interval_ms = match interval_ms {
        0 => DEFAULT_GROUP_SYNC_INTERVAL_MS,
        ms if ms < 1_000 => {
            return Err(invalid(format!(
                "group sync interval {ms} ms is under the 1 s minimum"
            )))
        }
        ms => ms as u64,
    };
    GroupSelection::new(include, &exclude).map_err(|error| invalid(error.to_string()))?;
    Ok(Some(GroupSync {
        include: include.to_string(),
        exclude,
        interval_ms,
    }))
}

/// Kafka's topic name rules: 1 to 249 of letters, digits, '.', '_' and '-'.
fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

pub fn flow_message(spec: &FlowSpec, state_opt: Option<&FlowState>) -> Flow {
    let (rename_prefix, rename_separator, rename_map) = match &spec.rename {
        RenamePolicy::Identity => (String::new(), String::new(), HashMap::new()),
        RenamePolicy::Prefix { alias, separator } => {
            (alias.clone(), separator.clone(), HashMap::new())
        }
        RenamePolicy::Map { topics } => (
            String::new(),
            String::new(),
            topics.clone().into_iter().collect(),
        ),
    };
    let group_sync = spec.group_sync.as_ref();
    let (start, start_timestamp_ms) = match spec.start {
        StartPosition::Earliest => ("earliest", 0),
        StartPosition::Latest => ("latest", 0),
        StartPosition::Timestamp { ms } => ("timestamp", ms),
    };
    Flow {
        name: spec.name.to_string(),
        source_cluster: spec.source_cluster.to_string(),
        dest_cluster: spec.dest_cluster.to_string(),
        include: spec.include.clone(),
        exclude: spec.exclude.clone().unwrap_or_default(),
        rename_policy: spec.rename.kind().to_string(),
        rename_prefix,
        rename_separator,
        rename_map,
        start: start.to_string(),
        start_timestamp_ms,
        until_caught_up: spec.until_caught_up,
        paused: spec.paused,
        sync_topic_configs: Some(spec.config_sync.enabled),
        sync_topic_configs_exclude: spec.config_sync.exclude.clone(),
        sync_topic_configs_exclude_set: true,
        phase: flow_phase(spec, state_opt).as_str().to_string(),
        created_ms: spec.created_ms,
        sync_group_offsets: group_sync.map_or_else(String::new, |sync| sync.include.clone()),
        sync_group_offsets_exclude: group_sync.map_or_else(Vec::new, |sync| sync.exclude.clone()),
        sync_group_offsets_exclude_set: group_sync.is_some(),
        sync_group_offsets_interval_ms: group_sync.map_or(0, |sync| sync.interval_ms as i64),
        exactly_once: spec.exactly_once,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-z0-9._-]{1,12}",
            ".{0,24}",
            "[a-z().*+?|\\[\\]{}\\\\^$,-]{1,16}",
        ]
    }

    /// Mostly what a name or a regex may be, so that later checks are reached.
    fn mostly_valid(valid: &'static str) -> impl Strategy<Value = String> {
        prop_oneof![6 => valid, 1 => text()]
    }

    fn flow_strategy() -> impl Strategy<Value = Flow> {
        (
            (
                mostly_valid("[a-z0-9._-]{1,12}"),
                mostly_valid("(east|west)"),
                mostly_valid("(east|west)"),
                mostly_valid("(\\.\\*|orders[a-z.*]{0,6})"),
                prop_oneof![Just(String::new()), text()],
            ),
            (
                prop_oneof![
                    Just(String::new()),
                    Just("identity".to_string()),
                    Just("prefix".to_string()),
                    Just("map".to_string()),
                    ".{0,8}",
                ],
                text(),
                text(),
                prop::collection::hash_map(text(), mostly_valid("[a-z0-9._-]{1,12}"), 0..3),
            ),
            (
                prop_oneof![
                    Just("earliest".to_string()),
                    Just("latest".to_string()),
                    Just("timestamp".to_string()),
                    ".{0,8}",
                ],
                any::<i64>(),
                prop::option::of(any::<bool>()),
                prop::collection::vec(text(), 0..3),
                any::<bool>(),
            ),
        )
            .prop_map(
                |(
                    (name, source_cluster, dest_cluster, include, exclude),
                    (rename_policy, rename_prefix, rename_separator, rename_map),
                    (
                        start,
                        start_timestamp_ms,
                        sync_topic_configs,
                        sync_topic_configs_exclude,
                        exactly_once,
                    ),
                )| Flow {
                    name,
                    source_cluster,
                    dest_cluster,
                    include,
                    exclude,
                    rename_policy,
                    rename_prefix,
                    rename_separator,
                    rename_map,
                    start,
                    start_timestamp_ms,
                    sync_topic_configs,
                    sync_topic_configs_exclude,
                    exactly_once,
                    ..Flow::default()
                },
            )
    }

    fn syncing(groups: &str) -> Flow {
        Flow {
            name: "dr".into(),
            source_cluster: "east".into(),
            dest_cluster: "west".into(),
            include: "orders".into(),
            sync_group_offsets: groups.into(),
            ..Flow::default()
        }
    }

    #[test]
    fn group_sync_takes_mirror_maker_2_defaults_and_refuses_what_cannot_run() {
        let spec = flow_spec(syncing("billing|shipping")).unwrap();
        let sync = spec.group_sync.clone().unwrap();
        assert_eq!(sync.include, "billing|shipping");
        assert_eq!(sync.exclude, default_group_sync_exclude());
        assert_eq!(sync.interval_ms, DEFAULT_GROUP_SYNC_INTERVAL_MS);
        // It reads back as it was stored.
        let again = flow_spec(flow_message(&spec, None)).unwrap();
        assert_eq!(again.group_sync, spec.group_sync);
        assert_eq!(flow_spec(syncing("")).unwrap().group_sync, None);

        let refused = |flow: Flow, words: &str| match flow_spec(flow) {
            Err(CoordinatorError::InvalidArgument(message)) => {
                assert!(message.contains(words), "{message}")
            }
            other => panic!("not refused: {other:?}"),
        };
        refused(syncing("billing("), "invalid group include regex");
        refused(
            Flow {
                sync_group_offsets_interval_ms: 200,
                ..syncing("billing")
            },
            "under the 1 s minimum",
        );
        refused(
            Flow {
                sync_group_offsets_exclude: vec!["test-.*".into()],
                ..syncing("")
            },
            "without the groups to sync",
        );
    }

    #[test]
    fn exactly_once_is_stored_as_asked_and_reads_back() {
        let asked = Flow {
            exactly_once: true,
            ..syncing("")
        };
        let spec = flow_spec(asked).unwrap();
        assert!(spec.exactly_once);
        let message = flow_message(&spec, None);
        assert!(message.exactly_once);
        assert!(flow_spec(message).unwrap().exactly_once);
        // Off unless asked for, so flows created before the option stay at-least-once.
        assert!(!flow_spec(syncing("")).unwrap().exactly_once);
        assert!(!flow_message(&flow_spec(syncing("")).unwrap(), None).exactly_once);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn requested_flows_are_stored_or_refused_as_invalid_arguments_never_panics(
            flow in flow_strategy(),
        ) {
            match flow_spec(flow.clone()) {
                Ok(spec) => {
                    // What is stored is what was asked for, and reads back as it.
                    prop_assert_eq!(spec.name.as_str(), flow.name.as_str());
                    prop_assert!(!spec.include.is_empty());
                    prop_assert!(TopicFilter::new(&spec.include, spec.exclude.as_deref()).is_ok());
                    if let RenamePolicy::Map { topics } = &spec.rename {
                        prop_assert!(topics.values().all(|dest| is_topic_name(dest)));
                    }
                    let again = flow_spec(flow_message(&spec, None)).unwrap();
                    prop_assert_eq!(again.rename, spec.rename);
                    prop_assert_eq!(again.start, spec.start);
                    prop_assert_eq!(again.exactly_once, flow.exactly_once);
                }
                Err(CoordinatorError::InvalidArgument(message)) => {
                    prop_assert!(!message.is_empty());
                }
                Err(other) => prop_assert!(false, "not an invalid argument: {:?}", other),
            }
        }

        #[test]
        fn arbitrary_regexes_and_names_never_panic_the_flow_checks(
            name in ".{0,16}",
            include in ".{0,32}",
            exclude in ".{0,32}",
            rename_target in ".{0,16}",
        ) {
            let flow = Flow {
                name: name.clone(),
                source_cluster: "east".to_string(),
                dest_cluster: "west".to_string(),
                include,
                exclude,
                rename_policy: "map".to_string(),
                rename_map: HashMap::from([("orders".to_string(), rename_target)]),
                ..Flow::default()
            };
            if let Err(CoordinatorError::InvalidArgument(message)) = flow_spec(flow) {
                if FlowName::new(name.clone()).is_err() {
                    prop_assert!(message.contains("invalid flow name"), "{}", message);
                } else {
                    prop_assert!(message.starts_with(&format!("flow {name}:")) || message.contains("regex"), "{}", message);
                }
            }
        }
    }
}
