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

/// A librdkafka config for a cluster: its bootstrap servers and properties, then
/// the caller's role-specific settings (which win).
///
/// Never log the result: `ClientConfig`'s `Debug` prints every value, secrets included.
pub fn client_config(
    cluster: &ClusterSpec,
    role_settings: &[(&str, &str)],
) -> Result<ClientConfig, SecretsError> {
    layered_client_config(cluster, &[], role_settings)
}

/// A librdkafka config in three layers: the role's `defaults`, then the
/// cluster's bootstrap servers and properties (the operator's tuning and
/// security win over the defaults; sealed secrets opened with the process's
/// secrets key), then what the role `requires`.
///
/// Fails, naming the cluster and the property but never a value, when a sealed
/// secret cannot be opened. Never log the result.
pub fn layered_client_config(
    cluster: &ClusterSpec,
    defaults: &[(&str, &str)],
    requires: &[(&str, &str)],
) -> Result<ClientConfig, SecretsError> {
    let mut config = ClientConfig::new();
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    config.set("bootstrap.servers", &cluster.bootstrap_servers);
    for (key, value) in &cluster.properties {
        config.set(key, crate::secrets::open_value(&cluster.name, key, value)?);
    }
    for (key, value) in requires {
        config.set(*key, *value);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

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
