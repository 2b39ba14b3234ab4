//! `kmirrorctl import mm2`: a MirrorMaker 2 `.properties` file as clusters and flows.

use std::collections::BTreeMap;

use kmirror_proto::v1::Cluster;

use super::*;
use crate::properties::{parse_properties, translate, ClientRole};

/// Why MirrorMaker 2's checkpoint settings are not mapped.
pub const CHECKPOINTS_NOT_EMITTED: &str = "kmirror emits no checkpoints topic: offsets translate exactly through its offset map (kmirrorctl offsets translate), and group offsets are synced with sync.group.offsets.enabled=true (--sync-group-offsets)";

/// MirrorMaker 2 settings kmirror has no use for, and why.
pub(super) const MM2_UNMAPPED: &[(&str, &str)] = &[
    (
        "tasks.max",
        "kmirror scales with its fetchers and writers, not tasks",
    ),
    (
        "replication.factor",
        "destination topics get the destination broker's default.replication.factor",
    ),
    ("emit.checkpoints.enabled", CHECKPOINTS_NOT_EMITTED),
    ("emit.checkpoints.interval.seconds", CHECKPOINTS_NOT_EMITTED),
    (
        "emit.heartbeats.enabled",
        "kmirror writes no heartbeat topics",
    ),
    (
        "emit.heartbeats.interval.seconds",
        "kmirror writes no heartbeat topics",
    ),
    (
        "heartbeats.topic.replication.factor",
        "kmirror writes no heartbeat topics",
    ),
    (
        "checkpoints.topic.replication.factor",
        "kmirror keeps checkpoints in etcd",
    ),
    (
        "offset-syncs.topic.replication.factor",
        "kmirror keeps offset mappings in etcd",
    ),
    (
        "offset-syncs.topic.location",
        "kmirror keeps offset mappings in etcd",
    ),
    (
        "offset.storage.replication.factor",
        "kmirror keeps its state in etcd",
    ),
    (
        "status.storage.replication.factor",
        "kmirror keeps its state in etcd",
    ),
    (
        "config.storage.replication.factor",
        "kmirror keeps its state in etcd",
    ),
    ("sync.topic.acls.enabled", "ACLs are not mirrored"),
    (
        "refresh.topics.enabled",
        "the coordinator always looks for new topics (every --refresh-interval)",
    ),
    (
        "refresh.topics.interval.seconds",
        "set the coordinator's --refresh-interval instead",
    ),
    (
        "refresh.groups.enabled",
        "the group offset sync lists the source's groups at every sync",
    ),
    (
        "refresh.groups.interval.seconds",
        "the group offset sync lists the source's groups at every sync",
    ),
    (
        "dedicated.mode.enable.internal.rest",
        "kmirror has no Connect REST API",
    ),
    ("key.converter", "kmirror copies keys and values as bytes"),
    ("value.converter", "kmirror copies keys and values as bytes"),
    ("header.converter", "kmirror copies headers as bytes"),
    (
        "replication.policy.internal.topic.separator.enabled",
        "kmirror creates no internal topics",
    ),
    (
        "transaction.boundary",
        "kmirror's exactly-once mode commits one transaction per batch",
    ),
    (
        "transaction.boundary.interval.ms",
        "kmirror's exactly-once mode commits one transaction per batch",
    ),
];

/// Reads a MirrorMaker 2 `.properties` config.
pub fn import_mm2(text: &str) -> Result<ImportPlan, ManifestError> {
    let entries = parse_properties(text).map_err(ManifestError)?;
    let settings: BTreeMap<String, String> = entries.into_iter().collect();
    let aliases: Vec<String> = settings
        .get("clusters")
        .ok_or_else(|| ManifestError("clusters: missing (e.g. clusters = A, B)".to_string()))?
        .split(',')
        .map(|alias| alias.trim().to_string())
        .filter(|alias| !alias.is_empty())
        .collect();
    let mut plan = ImportPlan::default();
    let mut used: Vec<&String> = vec![];
    let clusters_key = "clusters".to_string();
    used.push(&clusters_key);

    // Flows first: which clusters are sources and which targets decides which
    // client overrides apply.
    let mut flows: Vec<(String, String)> = Vec::new();
    for (key, value) in &settings {
        // `A->B.enabled`, not `A->B.sync.group.offsets.enabled`.
        let pair_opt = key
            .split_once("->")
            .and_then(|(source, rest)| Some((source, rest.split_once('.')?)));
        let Some((source, (target, "enabled"))) = pair_opt else {
            continue;
        };
        let (source, target) = (source.trim().to_string(), target.trim().to_string());
        for alias in [&source, &target] {
            if !aliases.contains(alias) {
                return Err(ManifestError(format!(
                    "{key}: cluster {alias} is not in clusters"
                )));
            }
        }
        if value.trim().eq_ignore_ascii_case("true") {
            flows.push((source, target));
        }
    }
    if flows.is_empty() {
        return Err(ManifestError(
            "no flow is enabled: set A->B.enabled = true for each direction to mirror".to_string(),
        ));
    }

    for alias in &aliases {
        let is_source = flows.iter().any(|(source, _)| source == alias);
        let is_target = flows.iter().any(|(_, target)| target == alias);
        if !is_source && !is_target {
            plan.notes.push(format!(
                "cluster {alias} is in no enabled flow: not created"
            ));
            continue;
        }
        let bootstrap_key = format!("{alias}.bootstrap.servers");
        let Some(bootstrap) = settings.get(&bootstrap_key) else {
            return Err(ManifestError(format!("{bootstrap_key}: missing")));
        };
        let prefix = format!("{alias}.");
        let mut client: Vec<(String, String)> = Vec::new();
        for (key, value) in &settings {
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            if rest == "bootstrap.servers" {
                continue;
            }
            if rest == EXACTLY_ONCE_SOURCE_SUPPORT {
                // The worker setting of the flows writing to this cluster: read
                // with each flow's settings below.
                if !is_target {
                    plan.unmapped
                        .push((key.clone(), format!("cluster {alias} is no flow's target")));
                }
                continue;
            }
            let client_key = if let Some(consumer_key) = rest.strip_prefix("consumer.") {
                if !is_source {
                    plan.unmapped
                        .push((key.clone(), format!("cluster {alias} is no flow's source")));
                    continue;
                }
                consumer_key
            } else if let Some(producer_key) = rest.strip_prefix("producer.") {
                if !is_target {
                    plan.unmapped
                        .push((key.clone(), format!("cluster {alias} is no flow's target")));
                    continue;
                }
                producer_key
            } else if let Some(admin_key) = rest.strip_prefix("admin.") {
                admin_key
            } else {
                rest
            };
            client.push((client_key.to_string(), value.clone()));
        }
        let translated = translate(&client, ClientRole::Any).map_err(|errors| {
            ManifestError(format!(
                "client settings of cluster {alias}: {}",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?;
        plan.notes.extend(
            translated
                .notes
                .iter()
                .map(|note| format!("cluster {alias}: {note}")),
        );
        plan.clusters.push(Cluster {
            name: alias.clone(),
            bootstrap_servers: bootstrap.trim().to_string(),
            properties: translated.properties.into_iter().collect(),
        });
    }

    let global = |name: &str| settings.get(name).cloned();
    for (source, target) in &flows {
        let pair = format!("{source}->{target}.");
        let specific = |name: &str| settings.get(&format!("{pair}{name}")).cloned();
        let flow_settings = FlowSettings {
            topics: specific("topics").or_else(|| global("topics")),
            topics_exclude: specific("topics.exclude")
                .or_else(|| specific("topics.blacklist"))
                .or_else(|| global("topics.exclude"))
                .or_else(|| global("topics.blacklist")),
            policy_class: specific("replication.policy.class")
                .or_else(|| global("replication.policy.class")),
            separator: specific("replication.policy.separator")
                .or_else(|| global("replication.policy.separator")),
            sync_configs: specific("sync.topic.configs.enabled")
                .or_else(|| global("sync.topic.configs.enabled")),
            configs_exclude: specific("config.properties.exclude")
                .or_else(|| specific("config.properties.blacklist"))
                .or_else(|| global("config.properties.exclude"))
                .or_else(|| global("config.properties.blacklist")),
            sync_groups: specific("sync.group.offsets.enabled")
                .or_else(|| global("sync.group.offsets.enabled")),
            groups: specific("groups")
                .or_else(|| specific("groups.whitelist"))
                .or_else(|| global("groups"))
                .or_else(|| global("groups.whitelist")),
            groups_exclude: specific("groups.exclude")
                .or_else(|| specific("groups.blacklist"))
                .or_else(|| global("groups.exclude"))
                .or_else(|| global("groups.blacklist")),
            sync_groups_interval_secs: specific("sync.group.offsets.interval.seconds")
                .or_else(|| global("sync.group.offsets.interval.seconds")),
            // MirrorMaker 2 reads the worker setting of the target cluster's
            // workers; the flow's own and the top-level one are taken too.
            exactly_once_source_support: specific(EXACTLY_ONCE_SOURCE_SUPPORT)
                .or_else(|| global(&format!("{target}.{EXACTLY_ONCE_SOURCE_SUPPORT}")))
                .or_else(|| global(EXACTLY_ONCE_SOURCE_SUPPORT)),
            exactly_once_support: specific(EXACTLY_ONCE_SUPPORT)
                .or_else(|| global(EXACTLY_ONCE_SUPPORT)),
        };
        let name = format!("{source}-to-{target}");
        plan.flows.push(flow_from_settings(
            &name,
            source,
            target,
            &flow_settings,
            &mut plan.unmapped,
        )?);
    }

    // Everything else: mapped above, or said why not.
    let flow_keys = [
        "enabled",
        "topics",
        "topics.exclude",
        "topics.blacklist",
        "replication.policy.class",
        "replication.policy.separator",
        "sync.topic.configs.enabled",
        "config.properties.exclude",
        "config.properties.blacklist",
        "sync.group.offsets.enabled",
        "sync.group.offsets.interval.seconds",
        "groups",
        "groups.whitelist",
        "groups.exclude",
        "groups.blacklist",
        EXACTLY_ONCE_SOURCE_SUPPORT,
        EXACTLY_ONCE_SUPPORT,
    ];
    for key in settings.keys() {
        if key == "clusters"
            || aliases
                .iter()
                .any(|alias| key.starts_with(&format!("{alias}.")))
        {
            continue;
        }
        let setting = match key.split_once("->") {
            Some((_, rest)) => rest
                .split_once('.')
                .map(|(_, setting)| setting)
                .unwrap_or(rest),
            None => key.as_str(),
        };
        if flow_keys.contains(&setting) {
            continue;
        }
        let reason = MM2_UNMAPPED
            .iter()
            .find(|(name, _)| *name == setting)
            .map(|(_, why)| why.to_string())
            .unwrap_or_else(|| "not a setting kmirror knows".to_string());
        plan.unmapped.push((key.clone(), reason));
    }
    if settings.contains_key(EXACTLY_ONCE_SOURCE_SUPPORT) {
        plan.notes.push(format!(
            "{EXACTLY_ONCE_SOURCE_SUPPORT}: MirrorMaker 2 reads it from the target cluster's settings (<target>.{EXACTLY_ONCE_SOURCE_SUPPORT}); kmirror takes the top-level one for every flow without its own"
        ));
    }
    if plan
        .flows
        .iter()
        .all(|flow| flow.sync_group_offsets.is_empty())
    {
        plan.notes.push(
            "consumer group offsets are not synced (as in MirrorMaker 2 without sync.group.offsets.enabled=true); kmirrorctl offsets translate tells any group's position exactly".to_string(),
        );
    }
    Ok(plan)
}
