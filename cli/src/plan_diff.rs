//! What applying a plan (`kmirrorctl apply`, `import mm2`) changes in the fleet:
//! per cluster and flow, `created`, `configured` with the fields that change, or
//! `unchanged`.
//!
//! Both sides are compared as the coordinator stores them: a planned flow goes
//! through the coordinator's own [`flow_spec`] and [`flow_message`], so defaults
//! filled in on the way (the prefix alias, the separator, MirrorMaker 2's config
//! excludes) count as what they become, not as differences. The fleet shows
//! secret values masked; a masked value in the file (as `config show` writes
//! it) means "the stored one", and a secret given in clear cannot be compared,
//! so it counts as a change.

use std::collections::{BTreeMap, BTreeSet};

use kmirror_coordinator::admin::{flow_message, flow_spec};
use kmirror_proto::v1::{Cluster, Flow};
use serde::Serialize;

use crate::manifest::ImportPlan;

/// What applying does to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Configured,
    Unchanged,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
        }
    }
}

/// One field that changes: its value in the fleet and in the file (`None` when
/// absent on that side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// One cluster or flow of a plan, compared with the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectChange {
    pub kind: &'static str,
    pub name: String,
    pub action: Action,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
}

/// Compares every cluster and flow of `plan` with the fleet's.
pub fn compare(plan: &ImportPlan, clusters: &[Cluster], flows: &[Flow]) -> Vec<ObjectChange> {
    let mut objects = Vec::new();
    for planned in &plan.clusters {
        let current_opt = clusters.iter().find(|cluster| cluster.name == planned.name);
        objects.push(object(
            "cluster",
            &planned.name,
            current_opt.map(cluster_fields),
            cluster_fields(planned),
        ));
    }
    for planned in &plan.flows {
        let current_opt = flows.iter().find(|flow| flow.name == planned.name);
        objects.push(object(
            "flow",
            &planned.name,
            current_opt.map(flow_fields),
            flow_fields(&as_stored(planned)),
        ));
    }
    objects
}

/// A flow as the coordinator would store it; unchanged when it is invalid (the
/// coordinator then refuses it by name).
fn as_stored(flow: &Flow) -> Flow {
    match flow_spec(flow.clone()) {
        Ok(spec) => flow_message(&spec, None),
        Err(_) => flow.clone(),
    }
}

fn object(
    kind: &'static str,
    name: &str,
    current_opt: Option<BTreeMap<String, String>>,
    planned: BTreeMap<String, String>,
) -> ObjectChange {
    let Some(current) = current_opt else {
        return ObjectChange {
            kind,
            name: name.to_string(),
            action: Action::Created,
            changes: Vec::new(),
        };
    };
    let fields: BTreeSet<&String> = current.keys().chain(planned.keys()).collect();
    let changes: Vec<FieldChange> = fields
        .into_iter()
        .filter_map(|field| {
            let from = current.get(field);
            let to = planned.get(field);
            if same_value(field, from, to) {
                return None;
            }
            Some(FieldChange {
                field: field.clone(),
                from: from.map(|value| shown(field, value)),
                to: to.map(|value| shown(field, value)),
            })
        })
        .collect();
    ObjectChange {
        kind,
        name: name.to_string(),
        action: if changes.is_empty() {
            Action::Unchanged
        } else {
            Action::Configured
        },
        changes,
    }
}

/// Whether a field holds the same value on both sides. A secret's stored value
/// is never seen: only the mask in the file stands for it.
fn same_value(field: &str, from: Option<&String>, to: Option<&String>) -> bool {
    match (from, to) {
        (Some(from), Some(to)) if is_secret_field(field) => {
            from == kmirror_common::kafka::MASK && to == kmirror_common::kafka::MASK
        }
        (from, to) => from == to,
    }
}

fn is_secret_field(field: &str) -> bool {
    field
        .strip_prefix("config.")
        .is_some_and(kmirror_common::kafka::is_secret_property)
}

/// A value as the diff prints it: secrets masked.
fn shown(field: &str, value: &str) -> String {
    if is_secret_field(field) {
        kmirror_common::kafka::MASK.to_string()
    } else {
        value.to_string()
    }
}

/// Secret values the file gives as the mask, which would be stored as such.
pub fn masked_secrets(cluster: &Cluster) -> Vec<String> {
    let mut keys: Vec<String> = cluster
        .properties
        .iter()
        .filter(|(key, value)| {
            kmirror_common::kafka::is_secret_property(key)
                && value.as_str() == kmirror_common::kafka::MASK
        })
        .map(|(key, _)| key.clone())
        .collect();
    keys.sort();
    keys
}

fn cluster_fields(cluster: &Cluster) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::from([(
        "bootstrapServers".to_string(),
        cluster.bootstrap_servers.clone(),
    )]);
    for (key, value) in &cluster.properties {
        fields.insert(format!("config.{key}"), value.clone());
    }
    fields
}

fn flow_fields(flow: &Flow) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::from([
        ("source".to_string(), flow.source_cluster.clone()),
        ("target".to_string(), flow.dest_cluster.clone()),
        ("include".to_string(), flow.include.clone()),
        ("exclude".to_string(), flow.exclude.clone()),
        ("rename".to_string(), flow.rename_policy.clone()),
        ("start".to_string(), flow.start.clone()),
        (
            "untilCaughtUp".to_string(),
            flow.until_caught_up.to_string(),
        ),
        (
            "syncTopicConfigs".to_string(),
            flow.sync_topic_configs.unwrap_or(true).to_string(),
        ),
        (
            "configExclude".to_string(),
            flow.sync_topic_configs_exclude.join(", "),
        ),
        (
            "syncGroupOffsets".to_string(),
            flow.sync_group_offsets.clone(),
        ),
        ("exactlyOnce".to_string(), flow.exactly_once.to_string()),
    ]);
    if !flow.sync_group_offsets.is_empty() {
        fields.insert(
            "syncGroupOffsetsExclude".to_string(),
            flow.sync_group_offsets_exclude.join(", "),
        );
        fields.insert(
            "syncGroupOffsetsIntervalMs".to_string(),
            flow.sync_group_offsets_interval_ms.to_string(),
        );
    }
    match flow.rename_policy.as_str() {
        "prefix" => {
            fields.insert("renamePrefix".to_string(), flow.rename_prefix.clone());
            fields.insert("renameSeparator".to_string(), flow.rename_separator.clone());
        }
        "map" => {
            let map: BTreeMap<&String, &String> = flow.rename_map.iter().collect();
            for (source, dest) in map {
                fields.insert(format!("renameMap.{source}"), dest.clone());
            }
        }
        _ => {}
    }
    if flow.start == "timestamp" {
        fields.insert(
            "startTimestampMs".to_string(),
            flow.start_timestamp_ms.to_string(),
        );
    }
    fields
}

/// The comparison for people: one line per object, then `  field: from -> to`.
pub fn changes_text(objects: &[ObjectChange], dry_run: bool) -> String {
    let mut text = String::new();
    for object in objects {
        let action = match (object.action, dry_run) {
            (Action::Unchanged, _) => "unchanged".to_string(),
            (action, true) => format!("{} (dry run)", action.as_str()),
            (action, false) => action.as_str().to_string(),
        };
        text.push_str(&format!("{} {} {action}\n", object.kind, object.name));
        for change in &object.changes {
            let side = |value: &Option<String>| match value {
                Some(value) => format!("{value:?}"),
                None => "(none)".to_string(),
            };
            text.push_str(&format!(
                "  {}: {} -> {}\n",
                change.field,
                side(&change.from),
                side(&change.to)
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn cluster(name: &str, properties: &[(&str, &str)]) -> Cluster {
        Cluster {
            name: name.to_string(),
            bootstrap_servers: format!("{name}:9092"),
            properties: properties
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect::<HashMap<_, _>>(),
        }
    }

    fn flow(name: &str) -> Flow {
        Flow {
            name: name.to_string(),
            source_cluster: "east".to_string(),
            dest_cluster: "central".to_string(),
            include: "orders.*".to_string(),
            exclude: String::new(),
            rename_policy: "prefix".to_string(),
            ..Flow::default()
        }
    }

    fn plan(clusters: Vec<Cluster>, flows: Vec<Flow>) -> ImportPlan {
        ImportPlan {
            clusters,
            flows,
            ..ImportPlan::default()
        }
    }

    #[test]
    fn a_flow_stored_with_the_defaults_filled_in_is_unchanged() {
        let stored = as_stored(&flow("dr"));
        // The stored flow has the alias, the separator and the config excludes
        // filled in; the planned one leaves them to their defaults.
        assert_eq!(stored.rename_prefix, "east");
        let objects = compare(&plan(vec![], vec![flow("dr")]), &[], &[stored]);
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].action, Action::Unchanged, "{objects:?}");
    }

    #[test]
    fn a_changed_flow_is_configured_with_each_field_that_changes() {
        let stored = as_stored(&flow("dr"));
        let mut planned = flow("dr");
        planned.exclude = ".*-tmp".to_string();
        planned.sync_topic_configs = Some(false);
        let objects = compare(&plan(vec![], vec![planned, flow("new")]), &[], &[stored]);
        assert_eq!(objects[0].action, Action::Configured);
        assert_eq!(
            objects[0].changes,
            vec![
                FieldChange {
                    field: "exclude".to_string(),
                    from: Some(String::new()),
                    to: Some(".*-tmp".to_string()),
                },
                FieldChange {
                    field: "syncTopicConfigs".to_string(),
                    from: Some("true".to_string()),
                    to: Some("false".to_string()),
                },
            ]
        );
        assert_eq!(objects[1].action, Action::Created);
        let text = changes_text(&objects, true);
        assert_eq!(
            text,
            "flow dr configured (dry run)\n  exclude: \"\" -> \".*-tmp\"\n  syncTopicConfigs: \"true\" -> \"false\"\nflow new created (dry run)\n"
        );
    }

    #[test]
    fn turning_exactly_once_on_or_off_configures_the_flow() {
        let stored = as_stored(&flow("dr"));
        let planned = Flow {
            exactly_once: true,
            ..flow("dr")
        };
        let objects = compare(&plan(vec![], vec![planned]), &[], &[stored]);
        assert_eq!(objects[0].action, Action::Configured);
        assert_eq!(
            objects[0].changes,
            vec![FieldChange {
                field: "exactlyOnce".to_string(),
                from: Some("false".to_string()),
                to: Some("true".to_string()),
            }]
        );

        let stored = as_stored(&Flow {
            exactly_once: true,
            ..flow("dr")
        });
        let objects = compare(
            &plan(vec![], vec![flow("dr")]),
            &[],
            std::slice::from_ref(&stored),
        );
        assert_eq!(objects[0].changes[0].field, "exactlyOnce");
        assert_eq!(objects[0].changes[0].to.as_deref(), Some("false"));
        let same = Flow {
            exactly_once: true,
            ..flow("dr")
        };
        let objects = compare(&plan(vec![], vec![same]), &[], &[stored]);
        assert_eq!(objects[0].action, Action::Unchanged, "{objects:?}");
    }

    #[test]
    fn masked_secrets_stand_for_the_stored_ones_and_clear_secrets_are_never_shown() {
        let stored = cluster(
            "east",
            &[("sasl.password", "********"), ("sasl.username", "mirror")],
        );
        let same = compare(
            &plan(vec![stored.clone()], vec![]),
            std::slice::from_ref(&stored),
            &[],
        );
        assert_eq!(same[0].action, Action::Unchanged, "{same:?}");

        let rotated = cluster(
            "east",
            &[("sasl.password", "n3w-s3cret"), ("sasl.username", "mirror")],
        );
        let changed = compare(
            &plan(vec![rotated], vec![]),
            std::slice::from_ref(&stored),
            &[],
        );
        assert_eq!(changed[0].action, Action::Configured);
        let text = changes_text(&changed, true);
        assert!(!text.contains("n3w-s3cret"), "{text}");
        assert!(text.contains("config.sasl.password"), "{text}");

        let mut removed = stored.clone();
        removed.properties.remove("sasl.username");
        removed.bootstrap_servers = "east-2:9092".to_string();
        let changed = compare(&plan(vec![removed], vec![]), &[stored], &[]);
        let fields: Vec<&str> = changed[0]
            .changes
            .iter()
            .map(|change| change.field.as_str())
            .collect();
        assert_eq!(fields, vec!["bootstrapServers", "config.sasl.username"]);
        assert_eq!(changed[0].changes[1].to, None);
    }
}
