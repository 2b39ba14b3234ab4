//! Config files without a coordinator (`config validate`, `config show -f`) and
//! the machine-readable shape of an import or apply plan.

use kmirror_proto::v1::{Cluster, Flow};

use super::Failure;
use crate::output::{render, ClusterJson, FlowJson, OutputFormat};

/// The outcome of an import or apply, for `-o json|yaml`.
#[derive(serde::Serialize)]
pub(super) struct PlanJson {
    applied: bool,
    /// Per cluster and flow: created, configured (with the changes) or unchanged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    objects: Vec<crate::plan_diff::ObjectChange>,
    clusters: Vec<crate::output::ClusterJson>,
    flows: Vec<FlowJson>,
    not_mapped: Vec<NotMappedJson>,
    notes: Vec<String>,
}

#[derive(serde::Serialize)]
pub(super) struct NotMappedJson {
    setting: String,
    reason: String,
}

impl PlanJson {
    pub(super) fn new(
        plan: &crate::manifest::ImportPlan,
        objects: &[crate::plan_diff::ObjectChange],
        applied: bool,
    ) -> Self {
        Self {
            applied,
            objects: objects.to_vec(),
            clusters: plan
                .clusters
                .iter()
                .map(|cluster| {
                    let mut json = ClusterJson::from(cluster);
                    json.properties = kmirror_common::kafka::masked(&json.properties);
                    json
                })
                .collect(),
            flows: plan.flows.iter().map(FlowJson::from).collect(),
            not_mapped: plan
                .unmapped
                .iter()
                .map(|(setting, reason)| NotMappedJson {
                    setting: setting.clone(),
                    reason: reason.clone(),
                })
                .collect(),
            notes: plan.notes.clone(),
        }
    }
}

/// `config validate FILE`: the plan a file makes, or what is wrong with it.
pub(super) fn validate_file(
    file: &std::path::Path,
    format: OutputFormat,
) -> Result<String, Failure> {
    let plan = crate::manifest::load_manifest(file).map_err(|error| Failure {
        what: format!("{} is not valid", file.display()),
        cause: error.0,
    })?;
    let json = PlanJson::new(&plan, &[], false);
    Ok(render(format, &json, |_| {
        format!(
            "{} is valid: {} cluster(s), {} flow(s)\n{}",
            file.display(),
            plan.clusters.len(),
            plan.flows.len(),
            crate::manifest::plan_text(&plan, "defined")
        )
    }))
}

/// `config show -f FILE`: the file's effective config, secrets masked.
pub(super) fn show_file(file: &std::path::Path, format: OutputFormat) -> Result<String, Failure> {
    let plan = crate::manifest::load_manifest(file).map_err(|error| Failure {
        what: format!("cannot read {}", file.display()),
        cause: error.0,
    })?;
    Ok(show_manifest(&plan.clusters, &plan.flows, format))
}

pub(super) fn show_manifest(clusters: &[Cluster], flows: &[Flow], format: OutputFormat) -> String {
    let masked: Vec<Cluster> = clusters
        .iter()
        .map(|cluster| Cluster {
            properties: kmirror_common::kafka::masked(
                &cluster.properties.clone().into_iter().collect(),
            )
            .into_iter()
            .collect(),
            ..cluster.clone()
        })
        .collect();
    let manifest = crate::manifest::manifest_of(&masked, flows);
    match format {
        OutputFormat::Json => crate::output::to_json(&manifest) + "\n",
        _ => crate::output::to_yaml(&manifest),
    }
}
