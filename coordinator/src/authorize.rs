//! Who may call what on the coordinator's gRPC services: a table from gRPC
//! method to the roles that may call it ([`allowed_roles`]), enforced by
//! [`Authorize`], a service wrapped around the admin API that reads the peer's
//! identity (its client certificate, see `kmirror_common::tls`) before the call
//! reaches [`crate::admin::AdminService`]. Mutating calls are audited in the
//! coordinator's log (target `audit`): identity, call, outcome and time.
//!
//! | role | may call |
//! | --- | --- |
//! | viewer | status, lists (clusters with secrets masked, flows, members, assignments) |
//! | operator | what a viewer may, and flows (create, delete, pause, resume, so `apply`), drain, rebalance |
//! | admin | everything: clusters and their credentials too |
//! | coordinator, fetcher, writer | what a viewer may: members are no admins |
//!
//! A method missing from the table is for admins only. A coordinator started
//! with `--insecure` checks nothing (there is no identity to check).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use kmirror_common::tls::{PeerInfo, PeerRole};
use kmirror_proto::tonic::body::Body;
use kmirror_proto::tonic::codegen::http;
use kmirror_proto::tonic::codegen::Service;
use kmirror_proto::tonic::server::NamedService;
use kmirror_proto::tonic::Status;
use tracing::{info, warn};

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
        "ListClusters" | "ListFlows" | "Status" | "ListMembers" | "ListAssignments" => {
            (READERS, false)
        }
        "CreateFlow" | "DeleteFlow" | "PauseFlow" | "ResumeFlow" | "DrainMember" | "Rebalance" => {
            (OPERATORS, true)
        }
        "AddCluster" | "DeleteCluster" => (ADMINS, true),
        _ => (ADMINS, true),
    }
}

/// A gRPC service that lets a call through only for the roles the table
/// allows.
#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    fleet: std::sync::Arc<str>,
}

impl<S> Authorize<S> {
    pub fn new(inner: S, fleet: String) -> Self {
        Self {
            inner,
            fleet: fleet.into(),
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

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path().to_string();
        let (roles, mutation) = allowed_roles(&path);
        let peer_opt = request.extensions().get::<PeerInfo>().cloned();
        let identity = match PeerInfo::authorize(peer_opt.as_ref(), &self.fleet, &path, roles) {
            Ok(identity_opt) => {
                identity_opt.map_or_else(|| "insecure".to_string(), ToString::to_string)
            }
            Err(denied) => {
                let remote = peer_opt.and_then(|peer| peer.remote_addr);
                if mutation {
                    warn!(target: "audit", call = %path, ?remote, outcome = "permission denied", reason = %denied, time_ms = kmirror_common::now_ms(), "admin call refused");
                } else {
                    warn!(call = %path, ?remote, reason = %denied, "admin call refused");
                }
                let response = Status::permission_denied(denied.to_string()).into_http();
                return Box::pin(async move { Ok(response) });
            }
        };
        // The clone that was made ready serves this call (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            if mutation {
                // A failed unary call carries its status in the headers
                // (trailers-only); a success in trailers, as OK.
                let outcome = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|status| status.to_str().ok())
                    .map(|code| Status::new(code.parse::<i32>().unwrap_or(2).into(), "").code())
                    .map_or_else(|| "ok".to_string(), |code| format!("{code:?}"));
                info!(target: "audit", %identity, call = %path, %outcome, time_ms = kmirror_common::now_ms(), "admin call");
            }
            Ok(response)
        })
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
        assert!(!allowed_roles("/kmirror.v1.Admin/Status").1);
    }
}
