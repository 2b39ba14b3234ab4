//! `kmirror.yaml`, shaped like Strimzi's `KafkaMirrorMaker2` resource: read it into
//! a plan (`apply`, `config validate`) and write the fleet's config as one (`config show`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kmirror_proto::v1::{Cluster, Flow};
use serde::{Deserialize, Serialize};

use super::*;
use crate::properties::{load_client_config, translate, ClientRole};

/// `kmirror.yaml`: a Strimzi `KafkaMirrorMaker2`-like resource.

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    pub spec: Spec,
    /// Written by Kubernetes on a resource read back from a cluster: listed as not
    /// mapped.
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Kubernetes metadata kmirror has no use for (namespace, annotations, ...):
    /// listed as not mapped.
    #[serde(flatten, skip_serializing)]
    pub unused: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// The cluster every mirror writes to unless it names another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ClusterEntry>,
    /// Strimzi v1beta2's name of the target cluster's alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_cluster: Option<String>,
    /// Source (and other) clusters.
    #[serde(default, alias = "sources")]
    pub clusters: Vec<ClusterEntry>,
    pub mirrors: Vec<MirrorEntry>,
    /// Strimzi settings of the Connect deployment (replicas, version, resources,
    /// ...): not used by kmirror, listed as such.
    #[serde(flatten, skip_serializing)]
    pub deployment: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterEntry {
    pub alias: String,
    pub bootstrap_servers: String,
    /// Client properties: librdkafka keys, or Java client keys kmirror translates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, serde_json::Value>,
    /// A standard `.properties` client file (relative to the YAML file); `config`
    /// wins over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<PathBuf>,
    /// Strimzi's TLS settings: certificates in Kubernetes secrets, which kmirror
    /// cannot read (listed as not mapped).
    #[serde(default, skip_serializing)]
    pub tls: Option<serde_json::Value>,
    /// Strimzi's authentication: credentials in Kubernetes secrets, which kmirror
    /// cannot read (listed as not mapped).
    #[serde(default, skip_serializing)]
    pub authentication: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorEntry {
    /// Flow name [default: <source>-to-<target>].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(alias = "source")]
    pub source_cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_cluster: Option<String>,
    #[serde(default, alias = "topics", skip_serializing_if = "Option::is_none")]
    pub topics_pattern: Option<String>,
    #[serde(
        default,
        alias = "topicsExclude",
        skip_serializing_if = "Option::is_none"
    )]
    pub topics_exclude_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_connector: Option<ConnectorEntry>,
    /// Consumer groups whose offsets are synced when the checkpoint connector's
    /// `sync.group.offsets.enabled` is true (MirrorMaker 2's `groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_pattern: Option<String>,
    #[serde(
        default,
        alias = "groupsBlacklistPattern",
        skip_serializing_if = "Option::is_none"
    )]
    pub groups_exclude_pattern: Option<String>,
    /// Its `sync.group.offsets.enabled` and `sync.group.offsets.interval.seconds`
    /// turn on kmirror's group offset sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_connector: Option<ConnectorEntry>,
    /// earliest (default), latest, or an RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_position: Option<String>,
    #[serde(default)]
    pub until_caught_up: bool,
    /// kmirror: exactly-once mode, the writers producing each batch in a Kafka
    /// transaction with its offset-map entry [default: on when the target
    /// cluster's config has MirrorMaker 2's `exactly.once.source.support: enabled`
    /// or the source connector's `exactly.once.support: required`; `false` turns it
    /// off for this mirror whatever those say].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exactly_once: Option<bool>,
    /// kmirror: the alias DefaultReplicationPolicy's names start with [default:
    /// the source cluster's alias].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename_prefix: Option<String>,
    /// kmirror: explicit destination names (source topic: destination topic);
    /// other topics keep their names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rename_map: BTreeMap<String, String>,
    /// Strimzi settings kmirror does not use (groupsPattern, heartbeatConnector, ...).
    #[serde(flatten, skip_serializing)]
    pub unused: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorEntry {
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
    #[serde(flatten)]
    pub unused: BTreeMap<String, serde_json::Value>,
}

/// Why a Strimzi mirror or connector setting kmirror does not use is not mapped.
fn strimzi_unused_reason(key: &str) -> &'static str {
    match key {
        "heartbeatConnector" => "kmirror writes no heartbeat topics",
        "tasksMax" => "kmirror scales with its fetchers and writers, not tasks",
        "autoRestart" | "state" | "pause" => {
            "a Kafka Connect connector setting: kmirror runs as its own fleet"
        }
        _ => "not a setting kmirror knows",
    }
}

/// Strimzi deployment settings that mean nothing to kmirror.
const STRIMZI_DEPLOYMENT: &[&str] = &[
    "replicas",
    "version",
    "image",
    "resources",
    "template",
    "logging",
    "metricsConfig",
    "jvmOptions",
    "tracing",
    "livenessProbe",
    "readinessProbe",
    "rack",
    "externalConfiguration",
    "clientRackInitImage",
    "build",
    "plugins",
];

fn scalar(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Reads `kmirror.yaml` (client `.properties` files relative to it).
pub fn load_manifest(path: &Path) -> Result<ImportPlan, ManifestError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ManifestError(format!("cannot read {}: {error}", path.display())))?;
    let manifest: Manifest = serde_saphyr::from_str(&text)
        .map_err(|error| ManifestError(format!("{}: {error}", path.display())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    plan_manifest(&manifest, base)
}

pub fn plan_manifest(manifest: &Manifest, base: &Path) -> Result<ImportPlan, ManifestError> {
    let mut plan = ImportPlan::default();
    if let Some(kind) = &manifest.kind {
        if kind != "KafkaMirrorMaker2" {
            return Err(ManifestError(format!(
                "kind {kind:?}: expected KafkaMirrorMaker2"
            )));
        }
    }
    for key in manifest
        .metadata
        .iter()
        .flat_map(|metadata| metadata.unused.keys())
    {
        plan.unmapped.push((
            format!("metadata.{key}"),
            "Kubernetes metadata: kmirror's clusters and flows are named by their aliases and mirrors".to_string(),
        ));
    }
    if manifest.status.is_some() {
        plan.unmapped.push((
            "status".to_string(),
            "written by Kubernetes, not a setting".to_string(),
        ));
    }
    for key in manifest.spec.deployment.keys() {
        if STRIMZI_DEPLOYMENT.contains(&key.as_str()) {
            plan.unmapped.push((
                format!("spec.{key}"),
                "a Kafka Connect deployment setting: kmirror runs as its own fleet".to_string(),
            ));
        } else {
            return Err(ManifestError(format!("spec.{key}: unknown setting")));
        }
    }
    let target_alias = manifest
        .spec
        .target
        .as_ref()
        .map(|target| target.alias.clone())
        .or_else(|| manifest.spec.connect_cluster.clone());
    let entries: Vec<&ClusterEntry> = manifest
        .spec
        .target
        .iter()
        .chain(&manifest.spec.clusters)
        .collect();
    let mirror_targets: Vec<&String> = manifest
        .spec
        .mirrors
        .iter()
        .filter_map(|mirror| mirror.target_cluster.as_ref().or(target_alias.as_ref()))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for entry in &entries {
        if !seen.insert(entry.alias.clone()) {
            continue;
        }
        let mut properties = BTreeMap::new();
        if let Some(file) = &entry.config_file {
            let path = base.join(file);
            let settings = load_client_config(&path, ClientRole::Any)
                .map_err(|errors| ManifestError(errors.to_string()))?;
            plan.notes.extend(
                settings
                    .notes
                    .iter()
                    .map(|note| format!("cluster {}: {note}", entry.alias)),
            );
            properties.extend(settings.properties);
        }
        if entry.tls.is_some() {
            plan.unmapped.push((
                format!("cluster {}: tls", entry.alias),
                "its certificates are in Kubernetes secrets, which kmirror cannot read: set security.protocol=SSL and ssl.ca.location (a PEM file) in config or configFile".to_string(),
            ));
        }
        if entry.authentication.is_some() {
            plan.unmapped.push((
                format!("cluster {}: authentication", entry.alias),
                "its credentials are in Kubernetes secrets, which kmirror cannot read: set sasl.mechanism, sasl.username and sasl.password (or ssl.certificate.location and ssl.key.location) in configFile".to_string(),
            ));
        }
        let mut inline: Vec<(String, String)> = Vec::new();
        for (key, value) in &entry.config {
            if key == "bootstrap.servers" {
                continue;
            }
            if key == EXACTLY_ONCE_SOURCE_SUPPORT {
                // The Connect worker setting of the mirrors writing to this
                // cluster: read with each mirror below.
                if !mirror_targets.contains(&&entry.alias) {
                    plan.unmapped.push((
                        format!("cluster {}: config.{key}", entry.alias),
                        format!("cluster {} is no mirror's target", entry.alias),
                    ));
                }
                continue;
            }
            // Strimzi puts the Kafka Connect worker's settings here too.
            match MM2_UNMAPPED.iter().find(|(setting, _)| setting == key) {
                Some((_, why)) => plan.unmapped.push((
                    format!("cluster {}: config.{key}", entry.alias),
                    why.to_string(),
                )),
                None => inline.push((key.clone(), scalar(value))),
            }
        }
        let translated = translate(&inline, ClientRole::Any).map_err(|errors| {
            ManifestError(format!(
                "cluster {} config: {}",
                entry.alias,
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?;
        properties.extend(translated.properties);
        plan.clusters.push(Cluster {
            name: entry.alias.clone(),
            bootstrap_servers: entry.bootstrap_servers.clone(),
            properties: properties.into_iter().collect(),
        });
    }
    for (index, mirror) in manifest.spec.mirrors.iter().enumerate() {
        let target = mirror
            .target_cluster
            .clone()
            .or_else(|| target_alias.clone())
            .ok_or_else(|| {
                ManifestError(format!(
                    "spec.mirrors[{index}]: no targetCluster and no spec.target"
                ))
            })?;
        for alias in [&mirror.source_cluster, &target] {
            if !seen.contains(alias) {
                return Err(ManifestError(format!(
                    "spec.mirrors[{index}]: cluster {alias} is not defined"
                )));
            }
        }
        let name = mirror
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-to-{target}", mirror.source_cluster));
        let connector = mirror
            .source_connector
            .as_ref()
            .map(|connector| {
                connector
                    .config
                    .iter()
                    .map(|(key, value)| (key.clone(), scalar(value)))
                    .collect::<BTreeMap<_, _>>()
            })
            .unwrap_or_default();
        for key in connector.keys() {
            let mapped = [
                "replication.policy.class",
                "replication.policy.separator",
                "sync.topic.configs.enabled",
                "config.properties.exclude",
                EXACTLY_ONCE_SUPPORT,
            ]
            .contains(&key.as_str());
            if !mapped {
                let reason = MM2_UNMAPPED
                    .iter()
                    .find(|(setting, _)| setting == key)
                    .map(|(_, why)| why.to_string())
                    .unwrap_or_else(|| "not a setting kmirror knows".to_string());
                plan.unmapped.push((
                    format!("spec.mirrors[{index}].sourceConnector.config.{key}"),
                    reason,
                ));
            }
        }
        let checkpoint = mirror
            .checkpoint_connector
            .as_ref()
            .map(|connector| {
                connector
                    .config
                    .iter()
                    .map(|(key, value)| (key.clone(), scalar(value)))
                    .collect::<BTreeMap<_, _>>()
            })
            .unwrap_or_default();
        for key in checkpoint.keys() {
            if ![
                "sync.group.offsets.enabled",
                "sync.group.offsets.interval.seconds",
            ]
            .contains(&key.as_str())
            {
                let reason = MM2_UNMAPPED
                    .iter()
                    .find(|(setting, _)| setting == key)
                    .map(|(_, why)| why.to_string())
                    .unwrap_or_else(|| "not a setting kmirror knows".to_string());
                plan.unmapped.push((
                    format!("spec.mirrors[{index}].checkpointConnector.config.{key}"),
                    reason,
                ));
            }
        }
        let connectors = [
            ("sourceConnector", &mirror.source_connector),
            ("checkpointConnector", &mirror.checkpoint_connector),
        ];
        for (connector_name, connector) in connectors {
            for key in connector
                .iter()
                .flat_map(|connector| connector.unused.keys())
            {
                plan.unmapped.push((
                    format!("spec.mirrors[{index}].{connector_name}.{key}"),
                    strimzi_unused_reason(key).to_string(),
                ));
            }
        }
        for key in mirror.unused.keys() {
            plan.unmapped.push((
                format!("spec.mirrors[{index}].{key}"),
                strimzi_unused_reason(key).to_string(),
            ));
        }
        let settings = FlowSettings {
            topics: mirror.topics_pattern.clone(),
            topics_exclude: mirror.topics_exclude_pattern.clone(),
            policy_class: connector.get("replication.policy.class").cloned(),
            separator: connector.get("replication.policy.separator").cloned(),
            sync_configs: connector.get("sync.topic.configs.enabled").cloned(),
            configs_exclude: connector.get("config.properties.exclude").cloned(),
            sync_groups: checkpoint.get("sync.group.offsets.enabled").cloned(),
            groups: mirror.groups_pattern.clone(),
            groups_exclude: mirror.groups_exclude_pattern.clone(),
            sync_groups_interval_secs: checkpoint
                .get("sync.group.offsets.interval.seconds")
                .cloned(),
            // Strimzi's Connect workers take their settings from the target
            // cluster's config.
            exactly_once_source_support: entries
                .iter()
                .find(|entry| entry.alias == target)
                .and_then(|entry| entry.config.get(EXACTLY_ONCE_SOURCE_SUPPORT))
                .map(scalar),
            exactly_once_support: connector.get(EXACTLY_ONCE_SUPPORT).cloned(),
        };
        let mut flow = flow_from_settings(
            &name,
            &mirror.source_cluster,
            &target,
            &settings,
            &mut plan.unmapped,
        )?;
        match mirror.start_position.as_deref() {
            None | Some("earliest") => {}
            Some("latest") => flow.start = "latest".to_string(),
            Some(time) => match crate::values::parse_start(time) {
                Ok(crate::values::StartArg::Timestamp(ms)) => {
                    flow.start = "timestamp".to_string();
                    flow.start_timestamp_ms = ms;
                }
                Ok(_) => {}
                Err(error) => {
                    return Err(ManifestError(format!(
                        "spec.mirrors[{index}].startPosition: {error}"
                    )))
                }
            },
        }
        flow.until_caught_up = mirror.until_caught_up;
        if let Some(exactly_once) = mirror.exactly_once {
            flow.exactly_once = exactly_once;
        }
        if !mirror.rename_map.is_empty() {
            flow.rename_policy = "map".to_string();
            flow.rename_prefix = String::new();
            flow.rename_separator = String::new();
            flow.rename_map = mirror.rename_map.clone().into_iter().collect();
        } else if let Some(prefix) = &mirror.rename_prefix {
            if flow.rename_policy == "prefix" {
                flow.rename_prefix = prefix.clone();
            }
        }
        plan.flows.push(flow);
    }
    Ok(plan)
}

/// The fleet's clusters and flows as a `kmirror.yaml` (secrets already masked by
/// the coordinator).
pub fn manifest_of(clusters: &[Cluster], flows: &[Flow]) -> Manifest {
    Manifest {
        api_version: Some("kmirror.io/v1".to_string()),
        kind: Some("KafkaMirrorMaker2".to_string()),
        metadata: None,
        spec: Spec {
            target: None,
            connect_cluster: None,
            clusters: clusters
                .iter()
                .map(|cluster| ClusterEntry {
                    alias: cluster.name.clone(),
                    bootstrap_servers: cluster.bootstrap_servers.clone(),
                    config: cluster
                        .properties
                        .iter()
                        .map(|(key, value)| (key.clone(), serde_json::Value::String(value.clone())))
                        .collect(),
                    config_file: None,
                    tls: None,
                    authentication: None,
                })
                .collect(),
            mirrors: flows.iter().map(mirror_of).collect(),
            deployment: BTreeMap::new(),
        },
        status: None,
    }
}

fn mirror_of(flow: &Flow) -> MirrorEntry {
    let mut config = BTreeMap::new();
    let policy = match flow.rename_policy.as_str() {
        "prefix" => "org.apache.kafka.connect.mirror.DefaultReplicationPolicy",
        _ => "org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
    };
    config.insert(
        "replication.policy.class".to_string(),
        serde_json::Value::String(policy.to_string()),
    );
    if flow.rename_policy == "prefix" {
        config.insert(
            "replication.policy.separator".to_string(),
            serde_json::Value::String(flow.rename_separator.clone()),
        );
    }
    config.insert(
        "sync.topic.configs.enabled".to_string(),
        serde_json::Value::String(flow.sync_topic_configs.unwrap_or(true).to_string()),
    );
    config.insert(
        "config.properties.exclude".to_string(),
        serde_json::Value::String(flow.sync_topic_configs_exclude.join(", ")),
    );
    let start_position = match flow.start.as_str() {
        "latest" => Some("latest".to_string()),
        "timestamp" => Some(flow.start_timestamp_ms.to_string()),
        _ => None,
    };
    MirrorEntry {
        name: Some(flow.name.clone()),
        source_cluster: flow.source_cluster.clone(),
        target_cluster: Some(flow.dest_cluster.clone()),
        topics_pattern: Some(flow.include.clone()),
        // Written even when empty: a missing one means MirrorMaker 2's default
        // excludes.
        topics_exclude_pattern: Some(flow.exclude.clone()),
        source_connector: Some(ConnectorEntry {
            config,
            unused: BTreeMap::new(),
        }),
        groups_pattern: Some(flow.sync_group_offsets.clone()).filter(|groups| !groups.is_empty()),
        groups_exclude_pattern: Some(flow.sync_group_offsets_exclude.join(","))
            .filter(|_| !flow.sync_group_offsets.is_empty()),
        checkpoint_connector: (!flow.sync_group_offsets.is_empty()).then(|| ConnectorEntry {
            config: BTreeMap::from([
                (
                    "sync.group.offsets.enabled".to_string(),
                    serde_json::Value::String("true".to_string()),
                ),
                (
                    "sync.group.offsets.interval.seconds".to_string(),
                    serde_json::Value::String(
                        (flow.sync_group_offsets_interval_ms.max(1_000) / 1000).to_string(),
                    ),
                ),
            ]),
            unused: BTreeMap::new(),
        }),
        start_position,
        until_caught_up: flow.until_caught_up,
        // Only kmirror's own key: MirrorMaker 2's exactly.once.source.support is
        // a setting of the Connect workers writing to a cluster, which would turn
        // on every flow to it, where kmirror's mode is the flow's own.
        exactly_once: flow.exactly_once.then_some(true),
        rename_prefix: Some(flow.rename_prefix.clone()).filter(|prefix| {
            flow.rename_policy == "prefix" && !prefix.is_empty() && *prefix != flow.source_cluster
        }),
        rename_map: if flow.rename_policy == "map" {
            flow.rename_map.clone().into_iter().collect()
        } else {
            BTreeMap::new()
        },
        unused: BTreeMap::new(),
    }
}
