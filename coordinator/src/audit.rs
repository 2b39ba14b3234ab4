//! The audit log of the admin API: every mutating call, allowed or refused,
//! with who made it, what it named, how it ended and when. [`AuditLog`] writes
//! an entry to the coordinator's log (target `audit`) and to etcd
//! (`audit/<time>-<random>`, see `kmirror_common::schema`); [`AuditService`]
//! serves them back (`kmirrorctl audit`). [`call_object`] reads what a call
//! names out of its request.

use etcd_client::{Client, GetOptions, SortOrder, SortTarget};
use kmirror_common::schema::{decode, encode, AuditRecord};
use kmirror_common::Keys;
use kmirror_proto::prost::Message;
use kmirror_proto::tonic::{Request, Response, Status};
use kmirror_proto::v1::audit_server::Audit;
use kmirror_proto::v1::{
    AddClusterRequest, AuditEntry, CreateFlowRequest, CreateTokenRequest, DeleteClusterRequest,
    DeleteFlowRequest, DrainMemberRequest, ListAuditRequest, ListAuditResponse, PauseFlowRequest,
    ResetPartitionRequest, ResumeFlowRequest, RevokeTokenRequest,
};
use tracing::{info, warn};

/// Entries `kmirrorctl audit` shows when it asks for no number.
const DEFAULT_LIMIT: u32 = 100;

/// Where audit entries go.
#[derive(Clone)]
pub struct AuditLog {
    etcd: Client,
    keys: Keys,
}

impl AuditLog {
    pub fn new(etcd: Client, keys: Keys) -> Self {
        Self { etcd, keys }
    }

    /// Logs the entry and stores it in etcd. A failed store is logged, not
    /// returned: the call it records has already happened.
    pub async fn record(&self, record: AuditRecord) {
        info!(
            target: "audit",
            identity = %record.identity,
            call = %record.call,
            object = %record.object,
            outcome = %record.outcome,
            remote = %record.remote,
            detail = %record.detail,
            time_ms = record.time_ms,
            "admin call"
        );
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let key = self.keys.audit_entry(record.time_ms, &unique[..8]);
        if let Err(error) = self.etcd.clone().put(key, encode(&record), None).await {
            warn!(%error, call = %record.call, "cannot store an audit entry in etcd");
        }
    }
}

/// What a mutating call names, read from its request body (the gRPC message
/// after its 5-byte prefix); empty when the call names nothing or the body
/// does not decode.
pub fn call_object(path: &str, body: &[u8]) -> String {
    let message = body.get(5..).unwrap_or_default();
    let method = path.rsplit('/').next().unwrap_or_default();
    let object = match method {
        "AddCluster" => AddClusterRequest::decode(message)
            .ok()
            .and_then(|request| request.cluster)
            .map(|cluster| format!("cluster/{}", cluster.name)),
        "DeleteCluster" => DeleteClusterRequest::decode(message)
            .ok()
            .map(|request| format!("cluster/{}", request.name)),
        "CreateFlow" => CreateFlowRequest::decode(message)
            .ok()
            .and_then(|request| request.flow)
            .map(|flow| format!("flow/{}", flow.name)),
        "DeleteFlow" => DeleteFlowRequest::decode(message)
            .ok()
            .map(|request| format!("flow/{}", request.name)),
        "PauseFlow" => PauseFlowRequest::decode(message)
            .ok()
            .map(|request| format!("flow/{}", request.name)),
        "ResumeFlow" => ResumeFlowRequest::decode(message)
            .ok()
            .map(|request| format!("flow/{}", request.name)),
        "DrainMember" => DrainMemberRequest::decode(message)
            .ok()
            .map(|request| format!("member/{}", request.id)),
        "Rebalance" => Some("fleet".to_string()),
        "CreateToken" => CreateTokenRequest::decode(message)
            .ok()
            .map(|request| format!("token/{}", request.name)),
        "RevokeToken" => RevokeTokenRequest::decode(message)
            .ok()
            .map(|request| format!("token/{}", request.name)),
        "ResetPartition" => ResetPartitionRequest::decode(message).ok().map(|request| {
            format!(
                "partition/{}/{}/{}",
                request.flow, request.topic, request.partition
            )
        }),
        _ => None,
    };
    object.unwrap_or_default()
}

/// What a mutating call asked for beyond the object it names, in words (the
/// target of a partition reset); empty for most calls.
pub fn call_detail(path: &str, body: &[u8]) -> String {
    let message = body.get(5..).unwrap_or_default();
    match path.rsplit('/').next().unwrap_or_default() {
        "ResetPartition" => ResetPartitionRequest::decode(message)
            .map(|request| format!("to {}", request.to))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// The `kmirror.v1.Audit` service.
pub struct AuditService {
    etcd: Client,
    keys: Keys,
}

impl AuditService {
    pub fn new(etcd: Client, keys: Keys) -> Self {
        Self { etcd, keys }
    }
}

#[kmirror_proto::tonic::async_trait]
impl Audit for AuditService {
    async fn list_audit(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => DEFAULT_LIMIT,
            limit => limit,
        };
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(i64::from(limit));
        let response = self
            .etcd
            .clone()
            .get(self.keys.audit_log(), Some(options))
            .await
            .map_err(|error| Status::unavailable(format!("cannot read the audit log: {error}")))?;
        let entries = response
            .kvs()
            .iter()
            .filter_map(|entry| decode::<AuditRecord>(entry.key(), entry.value()).ok())
            .map(|record| AuditEntry {
                time_ms: record.time_ms,
                identity: record.identity,
                call: record.call,
                object: record.object,
                outcome: record.outcome,
                remote: record.remote,
                detail: record.detail,
            })
            .collect();
        Ok(Response::new(ListAuditResponse { entries }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmirror_proto::v1::{Cluster, Flow};

    fn framed(message: &impl Message) -> Vec<u8> {
        let mut body = vec![0, 0, 0, 0, 0];
        message.encode(&mut body).unwrap();
        body
    }

    #[test]
    fn the_object_of_a_call_is_read_from_its_request() {
        let delete = framed(&DeleteFlowRequest {
            name: "dr".to_string(),
        });
        assert_eq!(
            call_object("/kmirror.v1.Admin/DeleteFlow", &delete),
            "flow/dr"
        );
        let create = framed(&CreateFlowRequest {
            flow: Some(Flow {
                name: "move".to_string(),
                ..Flow::default()
            }),
            replace: false,
        });
        assert_eq!(
            call_object("/kmirror.v1.Admin/CreateFlow", &create),
            "flow/move"
        );
        let add = framed(&AddClusterRequest {
            cluster: Some(Cluster {
                name: "source".to_string(),
                ..Cluster::default()
            }),
            ..AddClusterRequest::default()
        });
        assert_eq!(
            call_object("/kmirror.v1.Admin/AddCluster", &add),
            "cluster/source"
        );
        assert_eq!(call_object("/kmirror.v1.Admin/Rebalance", &[]), "fleet");
        let reset = framed(&ResetPartitionRequest {
            flow: "dr".to_string(),
            topic: "orders".to_string(),
            partition: 3,
            to: "earliest".to_string(),
        });
        assert_eq!(
            call_object("/kmirror.v1.Admin/ResetPartition", &reset),
            "partition/dr/orders/3"
        );
        assert_eq!(
            call_detail("/kmirror.v1.Admin/ResetPartition", &reset),
            "to earliest"
        );
        assert_eq!(call_detail("/kmirror.v1.Admin/DeleteFlow", &delete), "");
        assert_eq!(
            call_object("/kmirror.v1.Admin/DeleteFlow", &[1, 2]),
            "flow/"
        );
    }
}
