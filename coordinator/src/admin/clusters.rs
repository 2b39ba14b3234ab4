//! Clusters: storing one once it answers (its properties merged with the
//! stored ones when asked), deleting one no flow uses, listing them.

use std::collections::BTreeMap;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use kmirror_common::schema::{encode, ClusterSpec};
use kmirror_common::ClusterName;
use kmirror_proto::v1::{AddClusterRequest, AddClusterResponse, Cluster};
use tracing::info;

use super::{already_exists, not_found, AdminService};
use crate::error::CoordinatorError;
use crate::kafka::ClusterClient;
use crate::store::Sections;

impl AdminService {
    pub async fn add_cluster(
        &self,
        request: AddClusterRequest,
    ) -> Result<AddClusterResponse, CoordinatorError> {
        let cluster = request.cluster.ok_or_else(|| {
            CoordinatorError::InvalidArgument("the cluster is missing".to_string())
        })?;
        let name = ClusterName::new(cluster.name)?;
        let given_bootstrap = cluster.bootstrap_servers.trim().to_string();
        if given_bootstrap.is_empty() && !(request.replace && request.keep_properties) {
            return Err(CoordinatorError::InvalidArgument(format!(
                "cluster {name}: the bootstrap address is empty"
            )));
        }
        if cluster.properties.contains_key("bootstrap.servers") {
            return Err(CoordinatorError::InvalidArgument(format!(
                "cluster {name}: give bootstrap.servers as the bootstrap address, not as a property"
            )));
        }
        let mut client = self.client.clone();
        let key = self.keys.cluster(&name);
        let stored_opt: Option<(ClusterSpec, i64)> = self.read_stored(key.as_str()).await?;
        if !request.replace && stored_opt.is_some() {
            return Err(already_exists("cluster", &name));
        }
        // Replacing what is kept (a credential, say) may leave the address as stored.
        let bootstrap_servers = match (given_bootstrap.is_empty(), &stored_opt) {
            (false, _) => given_bootstrap,
            (true, Some((stored, _))) => stored.bootstrap_servers.clone(),
            (true, None) => {
                return Err(CoordinatorError::InvalidArgument(format!(
                "cluster {name}: the bootstrap address is empty (there is no stored one to keep)"
            )))
            }
        };
        let given: BTreeMap<String, String> = cluster.properties.into_iter().collect();
        let merged = if request.keep_properties {
            merged_properties(
                stored_opt.as_ref().map(|(stored, _)| &stored.properties),
                given,
                &request.remove_properties,
            )
            .map_err(|unknown| {
                CoordinatorError::InvalidArgument(format!(
                    "cluster {name}: cannot remove property {unknown}: it is not set"
                ))
            })?
        } else {
            MergedProperties {
                properties: given,
                ..MergedProperties::default()
            }
        };
        let spec = ClusterSpec {
            name: name.clone(),
            bootstrap_servers,
            properties: merged.properties,
        };
        // Secrets are stored sealed, never in the clear (refused without a key).
        let mut stored = spec.clone();
        kmirror_common::secrets::seal_properties(&name, &mut stored.properties)?;
        // A cluster is only stored once it answers: a typo in the address fails here,
        // not later in a flow.
        let probe = ClusterClient::build(&spec, self.kafka.timeout())?;
        let reachable = probe.list_topics().await;
        probe.dispose();
        reachable?;

        let put = TxnOp::put(key.as_str(), encode(&stored), None);
        // Stored over exactly what was read: a concurrent change is not lost
        // silently (its properties were merged from the version read).
        let unchanged = match &stored_opt {
            Some((_, revision)) => Compare::mod_revision(key.as_str(), CompareOp::Equal, *revision),
            None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
        };
        let response = client
            .txn(Txn::new().when([unchanged]).and_then([put]))
            .await?;
        if !response.succeeded() {
            return Err(match request.replace {
                true => CoordinatorError::InvalidArgument(format!(
                    "cluster {name} changed while it was being stored: try again"
                )),
                false => already_exists("cluster", &name),
            });
        }
        info!(cluster = %name, bootstrap = %spec.bootstrap_servers, replace = request.replace, kept = merged.kept.len(), removed = merged.removed.len(), "stored cluster");
        Ok(AddClusterResponse {
            cluster: Some(cluster_message(&spec)),
            kept_properties: merged.kept,
            removed_properties: merged.removed,
        })
    }

    /// Removes a cluster no flow reads from or writes to. The check and the
    /// delete are one transaction over the flows, so a flow created meanwhile
    /// keeps its cluster.
    pub async fn delete_cluster(&self, name: &str) -> Result<(), CoordinatorError> {
        let name = ClusterName::new(name)?;
        let snapshot = self
            .read(Sections {
                clusters: true,
                flows: true,
                ..Sections::default()
            })
            .await?;
        if !snapshot.clusters.contains_key(&name) {
            return Err(not_found("cluster", &name));
        }
        let users: Vec<String> = snapshot
            .flows
            .values()
            .filter(|flow| flow.source_cluster == name || flow.dest_cluster == name)
            .map(|flow| flow.name.to_string())
            .collect();
        if !users.is_empty() {
            return Err(CoordinatorError::Refused(format!(
                "cluster {name} is used by flow(s) {}: delete them first (kmirrorctl flow delete NAME)",
                users.join(", ")
            )));
        }
        let key = self.keys.cluster(&name);
        let flows_unchanged = Compare::mod_revision(
            self.keys.flows().as_str(),
            CompareOp::Less,
            snapshot.revision + 1,
        )
        .with_prefix();
        let response = self
            .client
            .clone()
            .txn(
                Txn::new()
                    .when([flows_unchanged])
                    .and_then([TxnOp::delete(key.as_str(), None)]),
            )
            .await?;
        if !response.succeeded() {
            return Err(CoordinatorError::InvalidArgument(format!(
                "the flows changed while cluster {name} was being deleted: try again"
            )));
        }
        info!(cluster = %name, "deleted cluster");
        Ok(())
    }

    pub async fn list_clusters(&self) -> Result<Vec<Cluster>, CoordinatorError> {
        let snapshot = self
            .read(Sections {
                clusters: true,
                ..Sections::default()
            })
            .await?;
        Ok(snapshot.clusters.values().map(cluster_message).collect())
    }
}

fn cluster_message(spec: &ClusterSpec) -> Cluster {
    Cluster {
        name: spec.name.to_string(),
        bootstrap_servers: spec.bootstrap_servers.clone(),
        properties: kmirror_common::kafka::masked(&spec.properties)
            .into_iter()
            .collect(),
    }
}

/// A cluster's properties after an update that keeps what it does not set.
#[derive(Debug, Default, PartialEq, Eq)]
struct MergedProperties {
    properties: BTreeMap<String, String>,
    /// Stored keys kept because the update did not set them.
    kept: Vec<String>,
    removed: Vec<String>,
}

/// The stored properties, overridden by the given ones, without those to remove.
/// Err names a key to remove that is set nowhere (a typo would otherwise keep
/// the property silently).
fn merged_properties(
    stored_opt: Option<&BTreeMap<String, String>>,
    given: BTreeMap<String, String>,
    remove: &[String],
) -> Result<MergedProperties, String> {
    let stored = stored_opt.cloned().unwrap_or_default();
    let mut merged = MergedProperties::default();
    for key in remove {
        if !stored.contains_key(key) && !given.contains_key(key) {
            return Err(key.clone());
        }
    }
    for (key, value) in stored {
        if remove.contains(&key) {
            merged.removed.push(key);
        } else if !given.contains_key(&key) {
            merged.kept.push(key.clone());
            merged.properties.insert(key, value);
        }
    }
    for (key, value) in given {
        if !remove.contains(&key) {
            merged.properties.insert(key, value);
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn a_replaced_cluster_keeps_the_properties_it_does_not_set() {
        let stored = properties(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.username", "mirror"),
            ("compression.type", "lz4"),
        ]);
        let merged = merged_properties(
            Some(&stored),
            properties(&[("sasl.username", "other")]),
            &["compression.type".to_string()],
        )
        .unwrap();
        assert_eq!(
            merged,
            MergedProperties {
                properties: properties(&[
                    ("security.protocol", "SASL_SSL"),
                    ("sasl.username", "other"),
                ]),
                kept: vec!["security.protocol".to_string()],
                removed: vec!["compression.type".to_string()],
            }
        );
    }

    #[test]
    fn removing_a_property_that_is_not_set_is_an_error() {
        assert_eq!(
            merged_properties(None, BTreeMap::new(), &["client.rack".to_string()]),
            Err("client.rack".to_string())
        );
    }
}
