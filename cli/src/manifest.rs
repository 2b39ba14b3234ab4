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

use kmirror_proto::v1::{Cluster, Flow};

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
    /// `sync.group.offsets.enabled`, `groups`, `groups.exclude`,
    /// `sync.group.offsets.interval.seconds`.
    sync_groups: Option<String>,
    groups: Option<String>,
    groups_exclude: Option<String>,
    sync_groups_interval_secs: Option<String>,
    /// `exactly.once.source.support` of the Connect worker writing to the target
    /// (`disabled`, `preparing`, `enabled`) and the connector's
    /// `exactly.once.support` (`requested`, `required`).
    exactly_once_source_support: Option<String>,
    exactly_once_support: Option<String>,
}

/// The Connect worker setting (KIP-618) under which MirrorMaker 2 writes in
/// transactions.
pub const EXACTLY_ONCE_SOURCE_SUPPORT: &str = "exactly.once.source.support";
/// The connector setting (KIP-618) that makes a connector refuse to run without them.
pub const EXACTLY_ONCE_SUPPORT: &str = "exactly.once.support";

/// A comma-separated list of regular expressions, each kept apart.
fn list_items(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(String::from)
        .collect()
}

/// The flow's consumer-group offset sync from MirrorMaker 2's settings: on only
/// with `sync.group.offsets.enabled=true`, as there.
fn group_sync_of(
    name: &str,
    settings: &FlowSettings,
    flow: &mut Flow,
) -> Result<(), ManifestError> {
    let enabled = settings
        .sync_groups
        .as_deref()
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"));
    if !enabled {
        return Ok(());
    }
    let groups = regex_list(settings.groups.as_deref().unwrap_or(".*"));
    check_regex(&format!("flow {name} groups"), &groups)?;
    flow.sync_group_offsets = groups;
    if let Some(exclude) = &settings.groups_exclude {
        flow.sync_group_offsets_exclude = list_items(exclude);
        flow.sync_group_offsets_exclude_set = true;
        for pattern in &flow.sync_group_offsets_exclude {
            check_regex(&format!("flow {name} groups.exclude"), pattern)?;
        }
    }
    if let Some(seconds) = &settings.sync_groups_interval_secs {
        let seconds: u32 = seconds.trim().parse().map_err(|_| {
            ManifestError(format!(
                "flow {name}: sync.group.offsets.interval.seconds {seconds:?} is not a whole number of seconds"
            ))
        })?;
        if seconds == 0 {
            return Err(ManifestError(format!(
                "flow {name}: sync.group.offsets.interval.seconds must be at least 1"
            )));
        }
        flow.sync_group_offsets_interval_ms = i64::from(seconds) * 1000;
    }
    Ok(())
}

/// The flow's exactly-once mode from MirrorMaker 2's settings, on when its
/// MirrorMaker 2 would write the flow in transactions or refuse to run it without.
///
/// MirrorMaker 2 (3.5 and later, dedicated mode) writes in transactions when the
/// Connect worker writing to the target has `exactly.once.source.support=enabled`.
/// `preparing` is the first of the two restarts that turn it on in a running
/// cluster and still writes without transactions, `disabled` is the default: both
/// leave the flow at-least-once. The connector's `exactly.once.support` does not
/// turn transactions on by itself: `required` makes the connector refuse to run
/// without them, so the flow asks for exactly-once and gets it; `requested` (its
/// default) runs the connector either way, so the worker's setting decides, as in
/// MirrorMaker 2. Mapping `requested` to on would turn on, at a throughput cost,
/// flows their MirrorMaker 2 ran at-least-once.
fn exactly_once_of(
    name: &str,
    settings: &FlowSettings,
    flow: &mut Flow,
) -> Result<(), ManifestError> {
    let normalized = |value: &String| value.trim().to_ascii_lowercase();
    let worker_enabled = match settings
        .exactly_once_source_support
        .as_ref()
        .map(normalized)
        .as_deref()
    {
        None | Some("disabled" | "preparing") => false,
        Some("enabled") => true,
        Some(other) => {
            return Err(ManifestError(format!(
                "flow {name}: {EXACTLY_ONCE_SOURCE_SUPPORT} {other:?}: use enabled, preparing or disabled"
            )))
        }
    };
    let connector_requires = match settings
        .exactly_once_support
        .as_ref()
        .map(normalized)
        .as_deref()
    {
        None | Some("requested") => false,
        Some("required") => true,
        Some(other) => {
            return Err(ManifestError(format!(
                "flow {name}: {EXACTLY_ONCE_SUPPORT} {other:?}: use requested or required"
            )))
        }
    };
    flow.exactly_once = worker_enabled || connector_requires;
    Ok(())
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
        .map(list_items)
        .unwrap_or_default();
    let mut flow = Flow {
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
    };
    group_sync_of(name, settings, &mut flow)?;
    exactly_once_of(name, settings, &mut flow)?;
    Ok(flow)
}

mod mm2;
mod strimzi;

pub use mm2::*;
pub use strimzi::*;

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
            "flow {} {verb}: {} -> {}, include {:?}, exclude {:?}, rename {rename}, config sync {}, group offset sync {}, {}\n",
            flow.name,
            flow.source_cluster,
            flow.dest_cluster,
            flow.include,
            flow.exclude,
            if flow.sync_topic_configs.unwrap_or(true) { "on" } else { "off" },
            if flow.sync_group_offsets.is_empty() {
                "off".to_string()
            } else {
                format!("{:?}", flow.sync_group_offsets)
            },
            crate::output::delivery_cell(flow),
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
mod tests;
