//! Declarative configs turned into the fleet's clusters and flows: MirrorMaker 2
//! `.properties` files (`kmirrorctl import mm2`) and `kmirror.yaml`, shaped like
//! Strimzi's `KafkaMirrorMaker2` resource (`kmirrorctl apply`, `config validate`,
//! `config show`).
//!
//! Both follow MirrorMaker 2's meaning where the names overlap: topic lists are
//! comma-separated regular expressions matched against the whole topic name,
//! MirrorMaker 2's default excludes apply (`.*[\-\.]internal, .*\.replica, __.*`),
//! and destination topics are named `<source alias>.<topic>`
//! (DefaultReplicationPolicy) unless `replication.policy.class` is
//! IdentityReplicationPolicy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kmirror_proto::v1::{Cluster, Flow};
use serde::{Deserialize, Serialize};

use crate::properties::{load_client_config, parse_properties, translate, ClientRole};

/// MirrorMaker 2's default `topics.exclude`.
pub const MM2_DEFAULT_TOPICS_EXCLUDE: &str = r".*[\-\.]internal, .*\.replica, __.*";

/// What a config file asks for: clusters and flows to create or update, and the
/// settings that have no kmirror equivalent (each with the reason).
#[derive(Debug, Clone, Default)]
pub struct ImportPlan {
    pub clusters: Vec<Cluster>,
    pub flows: Vec<Flow>,
    /// (setting, why it is not mapped)
    pub unmapped: Vec<(String, String)>,
    /// Translations worth knowing about.
    pub notes: Vec<String>,
}

/// A problem that stops a whole file from being used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError(pub String);

impl std::fmt::Display for ManifestError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// A comma-separated MirrorMaker 2 regex list as one regex (each item matches the
/// whole name on its own).
pub fn regex_list(list: &str) -> String {
    let items: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect();
    match items.as_slice() {
        [] => String::new(),
        [one] => one.to_string(),
        many => many
            .iter()
            .map(|item| format!("(?:{item})"))
            .collect::<Vec<_>>()
            .join("|"),
    }
}

/// Checks a regex the way the coordinator will (whole-name match).
fn check_regex(what: &str, regex: &str) -> Result<(), ManifestError> {
    regex::Regex::new(&format!("^(?:{regex})$"))
        .map(|_| ())
        .map_err(|error| ManifestError(format!("{what}: invalid regex {regex:?}: {error}")))
}

/// Settings of one flow, as MirrorMaker 2 names them.
#[derive(Debug, Clone, Default)]
struct FlowSettings {
    topics: Option<String>,
    topics_exclude: Option<String>,
    policy_class: Option<String>,
    separator: Option<String>,
    sync_configs: Option<String>,
    configs_exclude: Option<String>,
}

fn flow_from_settings(
    name: &str,
    source: &str,
    target: &str,
    settings: &FlowSettings,
    unmapped: &mut Vec<(String, String)>,
) -> Result<Flow, ManifestError> {
    let include = regex_list(settings.topics.as_deref().unwrap_or(".*"));
    let exclude = regex_list(
        settings
            .topics_exclude
            .as_deref()
            .unwrap_or(MM2_DEFAULT_TOPICS_EXCLUDE),
    );
    check_regex(&format!("flow {name} topics"), &include)?;
    if !exclude.is_empty() {
        check_regex(&format!("flow {name} topics.exclude"), &exclude)?;
    }
    let policy = settings
        .policy_class
        .as_deref()
        .map(str::trim)
        .unwrap_or("org.apache.kafka.connect.mirror.DefaultReplicationPolicy");
    let (rename_policy, rename_prefix, rename_separator) = if policy
        .ends_with(".IdentityReplicationPolicy")
    {
        ("identity", String::new(), String::new())
    } else {
        if !policy.ends_with(".DefaultReplicationPolicy") {
            unmapped.push((
                format!("{source}->{target}.replication.policy.class"),
                format!("{policy} cannot run in kmirror: flow {name} uses DefaultReplicationPolicy's naming (<alias>.<topic>)"),
            ));
        }
        (
            "prefix",
            source.to_string(),
            settings
                .separator
                .clone()
                .unwrap_or_else(|| ".".to_string()),
        )
    };
    let sync = match settings.sync_configs.as_deref().map(str::trim) {
        None => true,
        Some(value) => !value.eq_ignore_ascii_case("false"),
    };
    let exclude_list: Vec<String> = settings
        .configs_exclude
        .as_deref()
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Ok(Flow {
        name: name.to_string(),
        source_cluster: source.to_string(),
        dest_cluster: target.to_string(),
        include,
        exclude,
        rename_policy: rename_policy.to_string(),
        rename_prefix,
        rename_separator,
        sync_topic_configs: Some(sync),
        sync_topic_configs_exclude_set: settings.configs_exclude.is_some(),
        sync_topic_configs_exclude: exclude_list,
        ..Flow::default()
    })
}

/// Why MirrorMaker 2's consumer group settings (checkpoints, offset sync) are not
/// mapped.
pub const GROUP_OFFSETS_NOT_SYNCED: &str = "kmirror does not sync consumer group offsets yet: consumers that move to the destination cluster must find their position there themselves (e.g. by timestamp)";

/// MirrorMaker 2 settings kmirror has no use for, and why.
const MM2_UNMAPPED: &[(&str, &str)] = &[
    (
        "tasks.max",
        "kmirror scales with its fetchers and writers, not tasks",
    ),
    (
        "replication.factor",
        "destination topics get the destination broker's default.replication.factor",
    ),
    ("emit.checkpoints.enabled", GROUP_OFFSETS_NOT_SYNCED),
    (
        "emit.checkpoints.interval.seconds",
        GROUP_OFFSETS_NOT_SYNCED,
    ),
    ("sync.group.offsets.enabled", GROUP_OFFSETS_NOT_SYNCED),
    (
        "sync.group.offsets.interval.seconds",
        GROUP_OFFSETS_NOT_SYNCED,
    ),
    ("groups", GROUP_OFFSETS_NOT_SYNCED),
    ("groups.exclude", GROUP_OFFSETS_NOT_SYNCED),
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
    ("refresh.groups.enabled", GROUP_OFFSETS_NOT_SYNCED),
    ("refresh.groups.interval.seconds", GROUP_OFFSETS_NOT_SYNCED),
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
    // MirrorMaker 2 emits checkpoints unless told not to: say so even when the
    // file does not ask for them by name.
    let groups_mentioned = plan
        .unmapped
        .iter()
        .any(|(_, reason)| reason == GROUP_OFFSETS_NOT_SYNCED);
    if !groups_mentioned {
        plan.notes.push(format!(
            "consumer group offsets (MirrorMaker 2's checkpoints, on by default): {GROUP_OFFSETS_NOT_SYNCED}"
        ));
    }
    Ok(plan)
}

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
    /// earliest (default), latest, or an RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_position: Option<String>,
    #[serde(default)]
    pub until_caught_up: bool,
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
        "checkpointConnector"
        | "groupsPattern"
        | "groupsExcludePattern"
        | "groupsBlacklistPattern" => GROUP_OFFSETS_NOT_SYNCED,
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
        for key in mirror
            .source_connector
            .iter()
            .flat_map(|connector| connector.unused.keys())
        {
            plan.unmapped.push((
                format!("spec.mirrors[{index}].sourceConnector.{key}"),
                strimzi_unused_reason(key).to_string(),
            ));
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
            Some(time) => match crate::ctl::parse_start(time) {
                Ok(crate::ctl::StartArg::Timestamp(ms)) => {
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
        start_position,
        until_caught_up: flow.until_caught_up,
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

/// What a plan does, for people: one line per cluster and flow, then what was not
/// mapped.
pub fn plan_text(plan: &ImportPlan, verb: &str) -> String {
    let mut text = String::new();
    for cluster in &plan.clusters {
        let masked =
            kmirror_common::kafka::masked(&cluster.properties.clone().into_iter().collect());
        let properties: Vec<String> = masked
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        text.push_str(&format!(
            "cluster {} {verb}: bootstrap {}{}\n",
            cluster.name,
            cluster.bootstrap_servers,
            if properties.is_empty() {
                String::new()
            } else {
                format!(", properties {}", properties.join(","))
            }
        ));
    }
    for flow in &plan.flows {
        let rename = crate::output::rename_cell(flow);
        text.push_str(&format!(
            "flow {} {verb}: {} -> {}, include {:?}, exclude {:?}, rename {rename}, config sync {}\n",
            flow.name,
            flow.source_cluster,
            flow.dest_cluster,
            flow.include,
            flow.exclude,
            if flow.sync_topic_configs.unwrap_or(true) { "on" } else { "off" },
        ));
    }
    text + &plan_remarks(plan)
}

/// A plan's notes and the settings it did not map, one line each.
pub fn plan_remarks(plan: &ImportPlan) -> String {
    let mut text = String::new();
    for note in &plan.notes {
        text.push_str(&format!("note: {note}\n"));
    }
    for (key, reason) in &plan.unmapped {
        text.push_str(&format!("not mapped: {key}: {reason}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const MM2: &str = "\
clusters = A, B
A.bootstrap.servers = a:9092
B.bootstrap.servers = b:9092
A.consumer.fetch.min.bytes = 1
B.producer.compression.type = lz4
A->B.enabled = true
A->B.topics = orders.*, payments
topics.exclude = .*-tmp
replication.factor = 3
tasks.max = 4
emit.checkpoints.enabled = true
";

    #[test]
    fn an_mm2_config_becomes_clusters_and_a_prefix_flow() {
        let plan = import_mm2(MM2).unwrap();
        let names: Vec<&str> = plan.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["A", "B"]);
        assert_eq!(plan.clusters[0].properties["fetch.min.bytes"], "1");
        assert_eq!(plan.clusters[1].properties["compression.type"], "lz4");
        assert_eq!(plan.flows.len(), 1);
        let flow = &plan.flows[0];
        assert_eq!(flow.name, "A-to-B");
        assert_eq!(flow.include, "(?:orders.*)|(?:payments)");
        assert_eq!(flow.exclude, ".*-tmp");
        assert_eq!(flow.rename_policy, "prefix");
        assert_eq!(flow.rename_prefix, "A");
        assert_eq!(flow.rename_separator, ".");
        let unmapped: Vec<&str> = plan.unmapped.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            unmapped,
            vec![
                "emit.checkpoints.enabled",
                "replication.factor",
                "tasks.max"
            ]
        );
        let text = plan_text(&plan, "would be created");
        assert!(
            text.contains("not mapped: emit.checkpoints.enabled: kmirror does not sync consumer group offsets yet"),
            "{text}"
        );
    }

    #[test]
    fn group_offset_sync_is_said_to_be_not_synced_yet() {
        let plan = import_mm2(
            "clusters=A,B\nA.bootstrap.servers=a:1\nB.bootstrap.servers=b:1\nA->B.enabled=true\nA->B.sync.group.offsets.enabled=true\ngroups=.*\n",
        )
        .unwrap();
        let unmapped: Vec<(&str, &str)> = plan
            .unmapped
            .iter()
            .map(|(key, reason)| (key.as_str(), reason.as_str()))
            .collect();
        assert_eq!(
            unmapped,
            vec![
                ("A->B.sync.group.offsets.enabled", GROUP_OFFSETS_NOT_SYNCED),
                ("groups", GROUP_OFFSETS_NOT_SYNCED),
            ]
        );
        // Not asked for by name, MirrorMaker 2's default checkpoints still get a note.
        let plan = import_mm2(
            "clusters=A,B\nA.bootstrap.servers=a:1\nB.bootstrap.servers=b:1\nA->B.enabled=true\n",
        )
        .unwrap();
        assert!(
            plan.notes
                .iter()
                .any(|note| note.contains("does not sync consumer group offsets yet")),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn identity_policy_and_default_excludes() {
        let plan = import_mm2(
            "clusters=A,B\nA.bootstrap.servers=a:1\nB.bootstrap.servers=b:1\nA->B.enabled=true\nreplication.policy.class=org.apache.kafka.connect.mirror.IdentityReplicationPolicy\nsync.topic.configs.enabled=false\n",
        )
        .unwrap();
        let flow = &plan.flows[0];
        assert_eq!(flow.rename_policy, "identity");
        assert_eq!(flow.include, ".*");
        assert_eq!(
            flow.exclude,
            r"(?:.*[\-\.]internal)|(?:.*\.replica)|(?:__.*)"
        );
        assert_eq!(flow.sync_topic_configs, Some(false));
    }

    #[test]
    fn mm2_errors_name_the_setting() {
        let error =
            import_mm2("clusters=A\nA.bootstrap.servers=a:1\nA->C.enabled=true\n").unwrap_err();
        assert!(error.0.contains("cluster C is not in clusters"), "{error}");
        let error =
            import_mm2("clusters=A,B\nA->B.enabled=true\nB.bootstrap.servers=b:1\n").unwrap_err();
        assert!(error.0.contains("A.bootstrap.servers"), "{error}");
    }

    #[test]
    fn a_strimzi_shaped_manifest_becomes_clusters_and_flows() {
        let yaml = "\
apiVersion: kmirror.io/v1
kind: KafkaMirrorMaker2
metadata:
  name: dr
spec:
  replicas: 3
  target:
    alias: central
    bootstrapServers: c:9092
    config:
      compression.type: lz4
  clusters:
    - alias: east
      bootstrapServers: e:9092
  mirrors:
    - sourceCluster: east
      topicsPattern: \"orders.*, payments\"
      topicsExcludePattern: \".*-tmp\"
      groupsPattern: \".*\"
      sourceConnector:
        config:
          replication.policy.class: org.apache.kafka.connect.mirror.IdentityReplicationPolicy
          replication.factor: 3
      startPosition: latest
";
        let manifest: Manifest = serde_saphyr::from_str(yaml).unwrap();
        let plan = plan_manifest(&manifest, Path::new(".")).unwrap();
        assert_eq!(plan.clusters.len(), 2);
        assert_eq!(plan.clusters[0].name, "central");
        assert_eq!(plan.clusters[0].properties["compression.type"], "lz4");
        let flow = &plan.flows[0];
        assert_eq!(flow.name, "east-to-central");
        assert_eq!(flow.dest_cluster, "central");
        assert_eq!(flow.rename_policy, "identity");
        assert_eq!(flow.start, "latest");
        let unmapped: Vec<&str> = plan.unmapped.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            unmapped,
            vec![
                "spec.replicas",
                "spec.mirrors[0].sourceConnector.config.replication.factor",
                "spec.mirrors[0].groupsPattern"
            ]
        );
    }

    #[test]
    fn a_manifest_rejects_unknown_settings_and_undefined_clusters() {
        let yaml = "spec:\n  replicaz: 3\n  mirrors: []\n";
        let manifest: Manifest = serde_saphyr::from_str(yaml).unwrap();
        let error = plan_manifest(&manifest, Path::new(".")).unwrap_err();
        assert!(error.0.contains("spec.replicaz"), "{error}");
        let yaml = "spec:\n  clusters:\n    - alias: a\n      bootstrapServers: a:1\n  mirrors:\n    - sourceCluster: a\n      targetCluster: b\n";
        let manifest: Manifest = serde_saphyr::from_str(yaml).unwrap();
        let error = plan_manifest(&manifest, Path::new(".")).unwrap_err();
        assert!(error.0.contains("cluster b is not defined"), "{error}");
    }

    /// A `KafkaMirrorMaker2` as Strimzi's examples and users write them: read
    /// back from Kubernetes (namespace, status), TLS and SCRAM through secrets,
    /// Connect's storage settings in the target's config, a checkpoint connector
    /// syncing group offsets.
    const STRIMZI: &str = r#"
apiVersion: kafka.strimzi.io/v1beta2
kind: KafkaMirrorMaker2
metadata:
  name: dr-mirror
  namespace: kafka
  labels:
    app: dr
  annotations:
    strimzi.io/use-connector-resources: "true"
spec:
  version: 3.9.0
  replicas: 2
  connectCluster: "dc-b"
  clusters:
    - alias: "dc-a"
      bootstrapServers: dc-a-kafka-bootstrap.kafka.svc:9093
      tls:
        trustedCertificates:
          - secretName: dc-a-cluster-ca-cert
            certificate: ca.crt
      authentication:
        type: scram-sha-512
        username: mirror
        passwordSecret:
          secretName: mirror-user
          password: password
    - alias: "dc-b"
      bootstrapServers: dc-b-kafka-bootstrap.kafka.svc:9093
      config:
        config.storage.replication.factor: -1
        offset.storage.replication.factor: -1
        status.storage.replication.factor: -1
        compression.type: zstd
  mirrors:
    - sourceCluster: "dc-a"
      targetCluster: "dc-b"
      sourceConnector:
        tasksMax: 4
        config:
          replication.factor: -1
          offset-syncs.topic.replication.factor: -1
          sync.topic.acls.enabled: "false"
          replication.policy.class: org.apache.kafka.connect.mirror.IdentityReplicationPolicy
      checkpointConnector:
        tasksMax: 1
        config:
          checkpoints.topic.replication.factor: -1
          sync.group.offsets.enabled: "true"
      topicsPattern: "orders.*, payments"
      groupsPattern: ".*"
  resources:
    requests:
      cpu: "1"
      memory: 2Gi
  logging:
    type: inline
    loggers:
      connect.root.logger.level: INFO
status:
  replicas: 2
"#;

    #[test]
    fn a_strimzi_resource_applies_with_every_unused_field_listed_as_not_mapped() {
        let manifest: Manifest = serde_saphyr::from_str(STRIMZI).unwrap();
        let plan = plan_manifest(&manifest, Path::new(".")).unwrap();
        let names: Vec<&str> = plan.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["dc-a", "dc-b"]);
        assert_eq!(
            plan.clusters[1].properties,
            HashMap::from([("compression.type".to_string(), "zstd".to_string())])
        );
        let flow = &plan.flows[0];
        assert_eq!(flow.name, "dc-a-to-dc-b");
        assert_eq!(flow.dest_cluster, "dc-b");
        assert_eq!(flow.rename_policy, "identity");
        assert_eq!(flow.include, "(?:orders.*)|(?:payments)");
        let unmapped: BTreeMap<&str, &str> = plan
            .unmapped
            .iter()
            .map(|(key, reason)| (key.as_str(), reason.as_str()))
            .collect();
        let keys: Vec<&str> = unmapped.keys().copied().collect();
        assert_eq!(
            keys,
            vec![
                "cluster dc-a: authentication",
                "cluster dc-a: tls",
                "cluster dc-b: config.config.storage.replication.factor",
                "cluster dc-b: config.offset.storage.replication.factor",
                "cluster dc-b: config.status.storage.replication.factor",
                "metadata.annotations",
                "metadata.namespace",
                "spec.logging",
                "spec.mirrors[0].checkpointConnector",
                "spec.mirrors[0].groupsPattern",
                "spec.mirrors[0].sourceConnector.config.offset-syncs.topic.replication.factor",
                "spec.mirrors[0].sourceConnector.config.replication.factor",
                "spec.mirrors[0].sourceConnector.config.sync.topic.acls.enabled",
                "spec.mirrors[0].sourceConnector.tasksMax",
                "spec.replicas",
                "spec.resources",
                "spec.version",
                "status",
            ]
        );
        assert!(unmapped["cluster dc-a: tls"].contains("ssl.ca.location"));
        assert!(unmapped["cluster dc-a: authentication"].contains("sasl.password"));
        assert_eq!(
            unmapped["spec.mirrors[0].checkpointConnector"],
            GROUP_OFFSETS_NOT_SYNCED
        );
        // Nothing of the secrets' names leaks into what is stored.
        assert!(plan.clusters[0].properties.is_empty());
    }

    #[test]
    fn a_flow_shown_as_yaml_plans_back_unchanged_whatever_its_options() {
        let clusters = vec![
            Cluster {
                name: "east".to_string(),
                bootstrap_servers: "e:9092".to_string(),
                properties: HashMap::from([
                    ("sasl.password".to_string(), "********".to_string()),
                    ("client.id".to_string(), "k".to_string()),
                ]),
            },
            Cluster {
                name: "central".to_string(),
                bootstrap_servers: "c:9092".to_string(),
                properties: HashMap::new(),
            },
        ];
        let base = Flow {
            source_cluster: "east".to_string(),
            dest_cluster: "central".to_string(),
            include: "orders.*".to_string(),
            ..Flow::default()
        };
        let flows: Vec<Flow> = [
            Flow {
                name: "plain".to_string(),
                ..base.clone()
            },
            Flow {
                name: "prefixed".to_string(),
                exclude: regex_list(MM2_DEFAULT_TOPICS_EXCLUDE),
                rename_policy: "prefix".to_string(),
                rename_prefix: "dc1".to_string(),
                rename_separator: "_".to_string(),
                start: "latest".to_string(),
                sync_topic_configs: Some(false),
                ..base.clone()
            },
            Flow {
                name: "mapped".to_string(),
                rename_policy: "map".to_string(),
                rename_map: HashMap::from([("orders".to_string(), "orders-copy".to_string())]),
                start: "timestamp".to_string(),
                start_timestamp_ms: 1_714_521_600_000,
                until_caught_up: true,
                sync_topic_configs_exclude_set: true,
                sync_topic_configs_exclude: vec![r"retention\..*".to_string()],
                ..base.clone()
            },
        ]
        .iter()
        .map(|flow| {
            let spec = kmirror_coordinator::admin::flow_spec(flow.clone()).unwrap();
            kmirror_coordinator::admin::flow_message(&spec, None)
        })
        .collect();
        let yaml = crate::output::to_yaml(&manifest_of(&clusters, &flows));
        let parsed: Manifest = serde_saphyr::from_str(&yaml).unwrap();
        let plan = plan_manifest(&parsed, Path::new(".")).unwrap();
        let objects = crate::plan_diff::compare(&plan, &clusters, &flows);
        assert_eq!(objects.len(), 5);
        for object in &objects {
            assert_eq!(
                object.action,
                crate::plan_diff::Action::Unchanged,
                "{object:?}\n{yaml}"
            );
        }
    }

    #[test]
    fn the_fleet_renders_back_as_a_manifest_that_plans_the_same_flows() {
        let plan = import_mm2(MM2).unwrap();
        let manifest = manifest_of(&plan.clusters, &plan.flows);
        let yaml = crate::output::to_yaml(&manifest);
        let parsed: Manifest = serde_saphyr::from_str(&yaml).unwrap();
        let again = plan_manifest(&parsed, Path::new(".")).unwrap();
        assert_eq!(again.flows[0].include, plan.flows[0].include);
        assert_eq!(again.flows[0].rename_policy, "prefix");
        assert_eq!(again.clusters.len(), 2);
    }
}
