//! `cluster add|delete|list`.

use std::collections::HashMap;

use kmirror_proto::v1::{AddClusterRequest, Cluster, DeleteClusterRequest, ListClustersRequest};

use super::args::ClusterCommand;
use super::failure::Failure;
use super::Ctl;
use crate::output::{clusters_text, render, ClusterJson, ClustersJson};

impl Ctl {
    pub(super) async fn cluster(&mut self, command: ClusterCommand) -> Result<String, Failure> {
        match command {
            ClusterCommand::Add {
                name,
                bootstrap,
                properties,
                property_files,
                replace,
                remove_properties,
            } => {
                let what = || format!("cannot add cluster {name}");
                let resolved = crate::cluster_properties::resolve(&properties, &property_files)
                    .map_err(|cause| Failure {
                        what: what(),
                        cause,
                    })?;
                // With --replace, the coordinator keeps the stored address when none is given.
                let bootstrap_servers = match bootstrap.or(resolved.bootstrap_opt) {
                    Some(bootstrap) => bootstrap,
                    None if replace => String::new(),
                    None => return Err(Failure {
                        what: what(),
                        cause: "give the bootstrap servers with --bootstrap (or bootstrap.servers in a --property-file)".to_string(),
                    }),
                };
                let request = AddClusterRequest {
                    cluster: Some(Cluster {
                        name: name.clone(),
                        bootstrap_servers,
                        properties: resolved.properties.into_iter().collect::<HashMap<_, _>>(),
                    }),
                    replace,
                    keep_properties: replace,
                    remove_properties,
                };
                let answer = self
                    .client
                    .add_cluster(request)
                    .await
                    .map_err(|status| self.failure(format!("cannot add cluster {name}"), status))?
                    .into_inner();
                let action = cluster_stored_action(
                    replace,
                    &answer.kept_properties,
                    &answer.removed_properties,
                );
                Ok(self.done("cluster", &name, &action))
            }
            ClusterCommand::Delete { name } => {
                self.client
                    .delete_cluster(DeleteClusterRequest { name: name.clone() })
                    .await
                    .map_err(|status| {
                        self.failure(format!("cannot delete cluster {name}"), status)
                    })?;
                Ok(self.done("cluster", &name, "deleted"))
            }
            ClusterCommand::List => {
                let clusters = self.list_clusters().await?;
                let json = ClustersJson {
                    clusters: clusters.iter().map(ClusterJson::from).collect(),
                };
                Ok(render(self.format, &json, |_| clusters_text(&clusters)))
            }
        }
    }

    pub async fn list_clusters(&mut self) -> Result<Vec<Cluster>, Failure> {
        Ok(self
            .client
            .list_clusters(ListClustersRequest {})
            .await
            .map_err(|status| self.failure("cannot list clusters", status))?
            .into_inner()
            .clusters)
    }
}

/// What `cluster add` did: added, or stored with the properties it kept and removed.
pub(super) fn cluster_stored_action(replace: bool, kept: &[String], removed: &[String]) -> String {
    if !replace {
        return "added".to_string();
    }
    let mut notes = Vec::new();
    if !kept.is_empty() {
        notes.push(format!("kept properties: {}", kept.join(", ")));
    }
    if !removed.is_empty() {
        notes.push(format!("removed properties: {}", removed.join(", ")));
    }
    match notes.is_empty() {
        true => "stored".to_string(),
        false => format!("stored ({})", notes.join("; ")),
    }
}
