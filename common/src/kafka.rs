//! Kafka client properties: building librdkafka configs from stored cluster specs
//! (sealed secrets opened, see [`crate::secrets`]) without ever exposing secrets.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

use crate::schema::ClusterSpec;
use crate::secrets::SecretsError;

/// What a secret value is shown as.
pub const MASK: &str = "********";

/// Whether a property holds a secret that must never be logged or shown.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("secret")
        || key.contains("jaas")
        || key.contains("token")
        || key.ends_with(".key.pem")
        || key.ends_with("key.pem")
        || key == "ssl.key.location"
        || key.contains("credential")
}

/// Properties with secret values replaced by a mask, for display.
pub fn masked(properties: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    properties
        .iter()
        .map(|(key, value)| {
            let shown = if is_secret_property(key) {
                MASK.to_string()
            } else {
                value.clone()
            };
            (key.clone(), shown)
        })
        .collect()
}

/// kmirror's own settings for one kind of client (a fetcher's consumer, a
/// writer's producer, the coordinator's admin client), on either side of the
/// user's properties in [`client_config`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RoleSettings<'a> {
    /// Settings kmirror's bookkeeping depends on (offsets never committed to
    /// Kafka, a partition's end reported, ...): nothing the user gives changes them.
    pub required: &'a [(&'a str, &'a str)],
    /// kmirror's tuning: used for a key only where the user set nothing.
    pub defaults: &'a [(&'a str, &'a str)],
}

/// A librdkafka config for a cluster. One precedence, highest first:
///
/// 1. `role.required`: what kmirror cannot work without;
/// 2. the user's settings: `overrides` (a role's own flag, such as the writer's
///    `--producer-property`), then the cluster's stored properties, then its
///    bootstrap servers;
/// 3. `role.defaults`, for keys the user did not set.
///
/// Sealed secrets among the cluster's properties are opened with the process's
/// secrets key; fails, naming the cluster and the property but never a value,
/// when one cannot be. Callers add nothing after it. Never log the result:
/// `ClientConfig`'s `Debug` prints every value, secrets included.
pub fn client_config(
    cluster: &ClusterSpec,
    role: &RoleSettings<'_>,
    overrides: &[(String, String)],
) -> Result<ClientConfig, SecretsError> {
    let mut config = ClientConfig::new();
    // Each layer overwrites the one before: lowest precedence first.
    for (key, value) in role.defaults {
        config.set(*key, *value);
    }
    config.set("bootstrap.servers", &cluster.bootstrap_servers);
    for (key, value) in &cluster.properties {
        config.set(key, crate::secrets::open_value(&cluster.name, key, value)?);
    }
    for (key, value) in overrides {
        config.set(key, value);
    }
    for (key, value) in role.required {
        config.set(*key, *value);
    }
    Ok(config)
}

/// The context of a consumer that reads partitions to their end
/// (`enable.partition.eof`): librdkafka reports each end as an error event as
/// well, which is how reading stops, not a failure worth a log line. Other
/// errors are logged as warnings.
pub struct ReadToEndContext;

impl rdkafka::ClientContext for ReadToEndContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaErrorCode;
        match error {
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {}
            error if is_group_authorization_error(&error) => {
                tracing::debug!(%error, reason, "group coordinator refused (the reader uses no group)")
            }
            error => tracing::warn!(%error, reason, "kafka client error"),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReadToEndContext {}

/// Whether a consumer's error is the cluster refusing access to its group. A
/// reader that assigns partitions by hand and commits nothing uses no group, but
/// librdkafka still looks for the group's coordinator (it needs a group id to
/// assign), and a cluster that grants no ACL on the group refuses that search:
/// readers skip the error.
pub fn is_group_authorization_error(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode;
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::GroupAuthorizationFailed)
    )
}

/// A consumer with [`ReadToEndContext`].
pub type ReadToEndConsumer = rdkafka::consumer::BaseConsumer<ReadToEndContext>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterName;

    fn cluster(properties: &[(&str, &str)]) -> ClusterSpec {
        ClusterSpec {
            name: ClusterName::new("source").unwrap(),
            bootstrap_servers: "10.0.0.1:9092".to_string(),
            properties: properties
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        }
    }

    const ROLE: RoleSettings<'static> = RoleSettings {
        required: &[("enable.auto.commit", "false")],
        defaults: &[("linger.ms", "5"), ("acks", "all")],
    };

    #[test]
    fn kmirrors_required_settings_win_over_properties_and_overrides() {
        let config = client_config(
            &cluster(&[("enable.auto.commit", "true")]),
            &ROLE,
            &[("enable.auto.commit".to_string(), "true".to_string())],
        )
        .unwrap();
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
    }

    #[test]
    fn the_users_properties_win_over_kmirrors_defaults() {
        let config = client_config(&cluster(&[("linger.ms", "50")]), &ROLE, &[]).unwrap();
        assert_eq!(config.get("linger.ms"), Some("50"));
        assert_eq!(config.get("acks"), Some("all"));
    }

    #[test]
    fn overrides_win_over_the_clusters_properties() {
        let config = client_config(
            &cluster(&[("linger.ms", "50"), ("client.rack", "a")]),
            &ROLE,
            &[("linger.ms".to_string(), "10".to_string())],
        )
        .unwrap();
        assert_eq!(config.get("linger.ms"), Some("10"));
        assert_eq!(config.get("client.rack"), Some("a"));
    }

    #[test]
    fn the_bootstrap_servers_come_from_the_cluster() {
        let config = client_config(&cluster(&[]), &RoleSettings::default(), &[]).unwrap();
        assert_eq!(config.get("bootstrap.servers"), Some("10.0.0.1:9092"));
    }

    #[test]
    fn secrets_are_masked_and_other_values_kept() {
        let mut properties = BTreeMap::new();
        properties.insert("sasl.password".to_string(), "hunter2".to_string());
        properties.insert("sasl.username".to_string(), "alice".to_string());
        properties.insert("ssl.key.pem".to_string(), "-----BEGIN".to_string());
        let shown = masked(&properties);
        assert_eq!(shown["sasl.password"], MASK);
        assert_eq!(shown["ssl.key.pem"], MASK);
        assert_eq!(shown["sasl.username"], "alice");
    }
}
