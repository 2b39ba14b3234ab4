//! Who may call what on the coordinator's gRPC services: a table from gRPC
//! method to the roles that may call it ([`allowed_roles`]), enforced by
//! [`Authorize`], a service wrapped around the admin API that reads the peer's
//! identity (its client certificate, see `kmirror_common::tls`) before the call
//! reaches [`crate::admin::AdminService`]. Mutating calls, allowed or refused,
//! are audited ([`crate::audit`]: the coordinator's log and etcd): identity,
//! call, object, outcome and time.
//!
//! | role | may call |
//! | --- | --- |
//! | viewer | status, lists (clusters with secrets masked, flows, members, assignments), offset translation, flow verification |
//! | operator | what a viewer may, and flows (create, delete, pause, resume, so `apply`), drain, rebalance, group offset syncs, partition resets, the audit log |
//! | admin | everything: clusters and their credentials too |
//! | coordinator, fetcher, writer | what a viewer may: members are no admins |
//!
//! A method missing from the table is for admins only. A coordinator started
//! with `--insecure` checks nothing (there is no identity to check).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Full, Limited};
use kmirror_common::schema::AuditRecord;
use std::sync::Arc;

use kmirror_common::tls::{Identity, PeerInfo, PeerRole, PeerSecurity};
use kmirror_proto::tonic::body::Body;
use kmirror_proto::tonic::codegen::http;
use kmirror_proto::tonic::codegen::Service;
use kmirror_proto::tonic::server::NamedService;
use kmirror_proto::tonic::{Code, Status};
use tracing::{info, warn};

use crate::audit::AuditLog;
use crate::tokens::TokenStore;

/// Read-only calls: every identity of the fleet.
const READERS: &[PeerRole] = &[
    PeerRole::Viewer,
    PeerRole::Operator,
    PeerRole::Admin,
    PeerRole::Coordinator,
    PeerRole::Fetcher,
    PeerRole::Writer,
];
/// Calls that change flows and where work runs.
const OPERATORS: &[PeerRole] = &[PeerRole::Operator, PeerRole::Admin];
/// Calls that change clusters and their credentials, and anything unlisted.
const ADMINS: &[PeerRole] = &[PeerRole::Admin];

/// The roles that may call `path` (`/package.Service/Method`), and whether
/// the call changes anything (mutations are audited).
pub fn allowed_roles(path: &str) -> (&'static [PeerRole], bool) {
    let method = path.rsplit('/').next().unwrap_or_default();
    match method {
        "ListClusters" | "ListFlows" | "Status" | "ListMembers" | "ListAssignments"
        | "TranslateOffsets" => (READERS, false),
        "VerifyFlow" => (READERS, false),
        "CreateFlow" | "DeleteFlow" | "PauseFlow" | "ResumeFlow" | "DrainMember" | "Rebalance"
        | "SyncGroupOffsets" => (OPERATORS, true),
        "ResetPartition" => (OPERATORS, true),
        "AddCluster" | "DeleteCluster" => (ADMINS, true),
        "CreateToken" | "RevokeToken" => (ADMINS, true),
        "ListTokens" => (ADMINS, false),
        // Who did what: for those who may change things.
        "ListAudit" => (OPERATORS, false),
        _ => (ADMINS, true),
    }
}

/// A gRPC service that lets a call through only for the roles the table
/// allows.
#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    fleet: std::sync::Arc<str>,
    /// Where mutations are recorded besides the log (etcd).
    audit_opt: Option<AuditLog>,
    /// The bearer tokens callers may show instead of a certificate.
    tokens_opt: Option<TokenStore>,
}

impl<S> Authorize<S> {
    pub fn new(
        inner: S,
        fleet: String,
        audit_opt: Option<AuditLog>,
        tokens_opt: Option<TokenStore>,
    ) -> Self {
        Self {
            inner,
            fleet: fleet.into(),
            audit_opt,
            tokens_opt,
        }
    }
}

impl<S: NamedService> NamedService for Authorize<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Authorize<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path().to_string();
        let (roles, mutation) = allowed_roles(&path);
        let peer_opt = request.extensions().get::<PeerInfo>().cloned();
        let token_opt = bearer_token(request.headers());
        // The clone that was made ready serves this call (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let audit_opt = self.audit_opt.clone();
        let tokens_opt = self.tokens_opt.clone();
        let fleet = self.fleet.clone();
        Box::pin(async move {
            let remote = peer_opt
                .as_ref()
                .and_then(|peer| peer.remote_addr)
                .map(|address| address.to_string())
                .unwrap_or_default();
            // A bearer token, when sent, stands for its role instead of the
            // connection's certificate.
            let token_peer_opt = match (&token_opt, &tokens_opt) {
                (Some(token), Some(tokens)) => match tokens.lookup(token).await {
                    Ok(Some((name, role))) => Some(Ok(PeerInfo {
                        remote_addr: peer_opt.as_ref().and_then(|peer| peer.remote_addr),
                        security: PeerSecurity::Verified(Arc::new(Identity::new(
                            fleet.to_string(),
                            role,
                            format!("token:{name}"),
                        ))),
                    })),
                    Ok(None) => Some(Err(Status::unauthenticated(
                        "the bearer token is unknown or revoked",
                    ))),
                    Err(status) => Some(Err(status)),
                },
                _ => None,
            };
            let decision = match &token_peer_opt {
                Some(Err(status)) => Err(status.clone()),
                Some(Ok(token_peer)) => PeerInfo::authorize(Some(token_peer), &fleet, &path, roles)
                    .map(|identity_opt| identity_opt.map(ToString::to_string))
                    .map_err(|denied| Status::permission_denied(denied.to_string())),
                None => PeerInfo::authorize(peer_opt.as_ref(), &fleet, &path, roles)
                    .map(|identity_opt| identity_opt.map(ToString::to_string))
                    .map_err(|denied| {
                        let identity = denied.identity().map(str::to_string);
                        let mut status = Status::permission_denied(denied.to_string());
                        if let Some(identity) = identity {
                            status.metadata_mut().insert(
                                "x-kmirror-identity",
                                identity
                                    .parse()
                                    .unwrap_or_else(|_| "unknown".parse().expect("ascii")),
                            );
                        }
                        status
                    }),
            };
            let identity = match (&decision, &token_peer_opt) {
                (Ok(Some(identity)), _) => identity.clone(),
                (Ok(None), _) => "insecure".to_string(),
                (
                    Err(_),
                    Some(Ok(PeerInfo {
                        security: PeerSecurity::Verified(identity),
                        ..
                    })),
                ) => identity.to_string(),
                (Err(status), _) => status
                    .metadata()
                    .get("x-kmirror-identity")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("unidentified")
                    .to_string(),
            };
            if decision.is_ok() {
                request.extensions_mut().insert(Caller(identity.clone()));
            }
            if !mutation {
                return match decision {
                    Ok(_) => inner.call(request).await,
                    Err(status) => {
                        warn!(call = %path, %remote, %identity, reason = %status.message(), "admin call refused");
                        Ok(status.into_http())
                    }
                };
            }
            // A mutation is audited with the object it names: its (small)
            // request is read whole first, then handed on as it was.
            let (parts, body) = request.into_parts();
            let bytes = match Limited::new(body, MAX_AUDITED_REQUEST_BYTES)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    return Ok(Status::invalid_argument(format!(
                        "cannot read the request: {error}"
                    ))
                    .into_http())
                }
            };
            let object = crate::audit::call_object(&path, &bytes);
            let detail = crate::audit::call_detail(&path, &bytes);
            let (response, outcome) = match decision {
                Ok(_) => {
                    let request = http::Request::from_parts(parts, Body::new(Full::new(bytes)));
                    let response = inner.call(request).await?;
                    let outcome = outcome_of(&response);
                    (response, outcome)
                }
                Err(status) => {
                    let outcome = format!("{:?}", status.code());
                    (status.into_http(), outcome)
                }
            };
            let record = AuditRecord {
                time_ms: kmirror_common::now_ms(),
                identity,
                call: path,
                object,
                outcome,
                remote,
                detail,
            };
            match audit_opt {
                Some(audit) => audit.record(record).await,
                None => {
                    info!(target: "audit", identity = %record.identity, call = %record.call, object = %record.object, outcome = %record.outcome, "admin call")
                }
            }
            Ok(response)
        })
    }
}

/// Who made a call, for the handlers (a token's creator): the identity URI.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

/// The token of an `authorization: Bearer <token>` header.
fn bearer_token(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// Admin requests are small; a mutation's body is read whole up to this.
const MAX_AUDITED_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// `ok`, or the code a failed unary call carries in its headers
/// (trailers-only); a success carries its status in the trailers, as OK.
fn outcome_of(response: &http::Response<Body>) -> String {
    match response
        .headers()
        .get("grpc-status")
        .and_then(|status| status.to_str().ok())
        .and_then(|code| code.parse::<i32>().ok())
    {
        None | Some(0) => "ok".to_string(),
        Some(code) => format!("{:?}", Code::from(code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn may(role: PeerRole, method: &str) -> bool {
        allowed_roles(&format!("/kmirror.v1.Admin/{method}"))
            .0
            .contains(&role)
    }

    #[test]
    fn viewers_read_and_change_nothing() {
        for method in [
            "Status",
            "ListFlows",
            "ListClusters",
            "ListMembers",
            "ListAssignments",
            "TranslateOffsets",
            "VerifyFlow",
        ] {
            assert!(may(PeerRole::Viewer, method), "{method}");
        }
        for method in [
            "CreateFlow",
            "DeleteFlow",
            "PauseFlow",
            "ResumeFlow",
            "DrainMember",
            "Rebalance",
            "AddCluster",
            "DeleteCluster",
            "ResetPartition",
        ] {
            assert!(!may(PeerRole::Viewer, method), "{method}");
        }
    }

    #[test]
    fn operators_run_flows_and_members_but_not_clusters() {
        for method in [
            "CreateFlow",
            "DeleteFlow",
            "PauseFlow",
            "ResumeFlow",
            "DrainMember",
            "Rebalance",
            "Status",
            "ResetPartition",
        ] {
            assert!(may(PeerRole::Operator, method), "{method}");
        }
        for method in ["AddCluster", "DeleteCluster"] {
            assert!(!may(PeerRole::Operator, method), "{method}");
        }
    }

    #[test]
    fn admins_may_do_everything_members_may_only_read() {
        for method in [
            "AddCluster",
            "DeleteCluster",
            "CreateFlow",
            "Rebalance",
            "Status",
            "SomethingNew",
        ] {
            assert!(may(PeerRole::Admin, method), "{method}");
        }
        for member in [PeerRole::Fetcher, PeerRole::Writer, PeerRole::Coordinator] {
            assert!(may(member, "Status"));
            for method in ["DeleteFlow", "AddCluster", "DrainMember", "SomethingNew"] {
                assert!(!may(member, method), "{member} {method}");
            }
        }
    }

    #[test]
    fn mutations_are_audited_reads_are_not() {
        assert!(allowed_roles("/kmirror.v1.Admin/DeleteFlow").1);
        assert!(allowed_roles("/kmirror.v1.Admin/AddCluster").1);
        assert!(allowed_roles("/kmirror.v1.Admin/ResetPartition").1);
        assert!(!allowed_roles("/kmirror.v1.Admin/Status").1);
    }
}
