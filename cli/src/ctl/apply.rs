//! `import mm2`, `apply` and `config show`: a plan of clusters and flows compared
//! with the fleet and stored where it differs.

use std::path::Path;

use kmirror_proto::v1::{AddClusterRequest, CreateFlowRequest};

use super::failure::Failure;
use super::files::{show_manifest, PlanJson};
use super::Ctl;
use crate::output::{matched_topics_text, render};

impl Ctl {
    /// `import mm2`: a MirrorMaker 2 config applied as a plan.
    pub(super) async fn import_mm2(
        &mut self,
        file: &Path,
        dry_run: bool,
    ) -> Result<String, Failure> {
        let text = std::fs::read_to_string(file).map_err(|error| Failure {
            what: format!("cannot import {}", file.display()),
            cause: error.to_string(),
        })?;
        let plan = crate::manifest::import_mm2(&text).map_err(|error| Failure {
            what: format!("cannot import {}", file.display()),
            cause: error.0,
        })?;
        self.apply_plan(&plan, dry_run).await
    }

    /// `apply`: a `kmirror.yaml` manifest applied as a plan.
    pub(super) async fn apply(&mut self, file: &Path, dry_run: bool) -> Result<String, Failure> {
        let plan = crate::manifest::load_manifest(file).map_err(|error| Failure {
            what: format!("cannot apply {}", file.display()),
            cause: error.0,
        })?;
        self.apply_plan(&plan, dry_run).await
    }

    /// `config show` without a file: the fleet's clusters and flows as a manifest.
    pub(super) async fn show_config(&mut self) -> Result<String, Failure> {
        let clusters = self.list_clusters().await?;
        let flows = self.list_flows().await?;
        Ok(show_manifest(&clusters, &flows, self.format))
    }

    /// Creates or updates a plan's clusters, then its flows; objects the fleet
    /// already holds as planned are left alone. Every object is reported as
    /// created, configured (with what changes) or unchanged.
    async fn apply_plan(
        &mut self,
        plan: &crate::manifest::ImportPlan,
        dry_run: bool,
    ) -> Result<String, Failure> {
        let clusters = self.list_clusters().await?;
        let flows = self.list_flows().await?;
        let objects = crate::plan_diff::compare(plan, &clusters, &flows);
        let (cluster_objects, flow_objects) = objects.split_at(plan.clusters.len());
        let to_store = |object: &crate::plan_diff::ObjectChange| {
            object.action != crate::plan_diff::Action::Unchanged
        };
        // A masked secret (as `config show` writes it) would be stored as the
        // mask: refuse before anything is written.
        for (cluster, _) in plan
            .clusters
            .iter()
            .zip(cluster_objects)
            .filter(|(_, object)| to_store(object))
        {
            let masked = crate::plan_diff::masked_secrets(cluster);
            if !masked.is_empty() {
                return Err(Failure {
                    what: format!("cannot store cluster {}", cluster.name),
                    cause: format!(
                        "{} {} masked in the file: give the secret's value, or make the cluster match the stored one to leave it as it is",
                        masked.join(", "),
                        if masked.len() == 1 { "is" } else { "are" }
                    ),
                });
            }
        }
        if !dry_run {
            for (cluster, _) in plan
                .clusters
                .iter()
                .zip(cluster_objects)
                .filter(|(_, object)| to_store(object))
            {
                self.client
                    .add_cluster(AddClusterRequest {
                        cluster: Some(cluster.clone()),
                        replace: true,
                        // The file is the whole config: properties it drops go.
                        ..AddClusterRequest::default()
                    })
                    .await
                    .map_err(|status| {
                        self.failure(format!("cannot store cluster {}", cluster.name), status)
                    })?;
            }
            for (flow, _) in plan
                .flows
                .iter()
                .zip(flow_objects)
                .filter(|(_, object)| to_store(object))
            {
                let answer = self
                    .client
                    .create_flow(CreateFlowRequest {
                        flow: Some(flow.clone()),
                        replace: true,
                    })
                    .await
                    .map_err(|status| {
                        self.failure(format!("cannot store flow {}", flow.name), status)
                    })?
                    .into_inner();
                print_matched_topics(&flow.name, &answer.topics, &answer.warnings);
            }
        }
        let json = PlanJson::new(plan, &objects, !dry_run);
        Ok(render(self.format, &json, |_| {
            crate::plan_diff::changes_text(&objects, dry_run) + &crate::manifest::plan_remarks(plan)
        }))
    }
}

/// `apply` and `import`: each flow's matched topics (stderr, like the warnings,
/// so `-o json` keeps one document on stdout).
fn print_matched_topics(flow: &str, topics: &[kmirror_proto::v1::TopicMatch], warnings: &[String]) {
    eprint!("flow {flow}: {}", matched_topics_text(topics));
    for warning in warnings {
        eprintln!("warning: flow {flow}: {warning}");
    }
}
