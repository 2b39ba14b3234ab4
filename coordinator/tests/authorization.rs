//! In-process tests of the admin API's authorisation and audit over mutual TLS,
//! against a real etcd: a coordinator with its certificate, clients presenting
//! certificates of each role, the audit log read back through `Audit`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kmirror_common::etcd::EtcdSettings;
use kmirror_common::tls::issue::{CertificateAuthority, Validity};
use kmirror_common::tls::{Identity, PeerRole, TlsFiles, TlsPaths, Transport, TransportSettings};
use kmirror_common::MemberId;
use kmirror_coordinator::{Config, Coordinator};
use kmirror_proto::tonic::transport::{Channel, Endpoint};
use kmirror_proto::tonic::Code;
use kmirror_proto::v1::admin_client::AdminClient;
use kmirror_proto::v1::audit_client::AuditClient;
use kmirror_proto::v1::tokens_client::TokensClient;
use kmirror_proto::v1::{
    CreateTokenRequest, DeleteFlowRequest, ListAuditRequest, ListFlowsRequest, PauseFlowRequest,
    RevokeTokenRequest,
};
use tokio_util::sync::CancellationToken;

const FLEET_PREFIX: &str = "authz";

fn etcd_endpoint() -> String {
    let port = std::env::var("KMIRROR_ETCD_PORT").unwrap_or_else(|_| "2379".to_string());
    format!("http://127.0.0.1:{port}")
}

struct Pki {
    fleet: String,
    dir: PathBuf,
    authority: CertificateAuthority,
}

impl Pki {
    fn new(fleet: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("kmirror-{fleet}"));
        std::fs::create_dir_all(&dir).unwrap();
        let authority = CertificateAuthority::generate(fleet, Validity::days(1)).unwrap();
        std::fs::write(dir.join("ca.pem"), &authority.cert_pem).unwrap();
        Self {
            fleet: fleet.to_string(),
            dir,
            authority,
        }
    }

    fn issue(&self, role: PeerRole, id: &str) -> TlsPaths {
        let issued = self
            .authority
            .issue(
                &Identity::new(self.fleet.clone(), role, id),
                &[],
                Validity::days(1),
            )
            .unwrap();
        let paths = TlsPaths {
            cert: self.dir.join(format!("{id}.pem")),
            key: self.dir.join(format!("{id}-key.pem")),
            ca: self.dir.join("ca.pem"),
        };
        std::fs::write(&paths.key, issued.key_pem).unwrap();
        std::fs::write(&paths.cert, issued.cert_pem).unwrap();
        paths
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn channel(address: &str, paths: TlsPaths) -> Channel {
    let transport = Transport::Tls(TlsFiles::load(paths, None, &[]).unwrap());
    let endpoint = Endpoint::from_shared(address.to_string())
        .unwrap()
        .timeout(Duration::from_secs(10));
    transport
        .connect(endpoint, &[PeerRole::Coordinator])
        .await
        .unwrap()
}

fn path_of(paths: &TlsPaths) -> (&Path, &Path, &Path) {
    (&paths.cert, &paths.key, &paths.ca)
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_follow_the_certificates_role_and_every_mutation_is_audited() {
    let fleet = format!(
        "{FLEET_PREFIX}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let Ok(Ok(mut etcd)) = tokio::time::timeout(
        Duration::from_secs(5),
        kmirror_common::etcd::connect(&EtcdSettings::plain(vec![etcd_endpoint()], &fleet)),
    )
    .await
    else {
        eprintln!("skipping: etcd does not answer at {}", etcd_endpoint());
        return;
    };
    let pki = Pki::new(&fleet);
    let coordinator_files = pki.issue(PeerRole::Coordinator, "coordinator-0");
    let (cert, key, ca) = path_of(&coordinator_files);
    let config = Config {
        etcd: EtcdSettings::plain(vec![etcd_endpoint()], &fleet),
        member_id: MemberId::new("coordinator-0").unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise_opt: None,
        lease_ttl: Duration::from_secs(3),
        shutdown_grace: Duration::from_secs(5),
        refresh_interval: Duration::from_millis(500),
        debounce: Duration::from_millis(50),
        kafka_timeout: Duration::from_secs(3),
        metrics_listen: Default::default(),
        metrics_labels: Default::default(),
        transport: TransportSettings {
            tls_cert: Some(cert.to_path_buf()),
            tls_key: Some(key.to_path_buf()),
            tls_ca: Some(ca.to_path_buf()),
            insecure: false,
        },
    };
    let coordinator = Coordinator::build(config)
        .await
        .expect("coordinator builds");
    let address = format!("http://{}", coordinator.local_addr());
    let stop = CancellationToken::new();
    let handle = tokio::spawn(coordinator.run(stop.clone()));

    let admin = channel(&address, pki.issue(PeerRole::Admin, "alice")).await;
    let viewer = channel(&address, pki.issue(PeerRole::Viewer, "vera")).await;
    let fetcher = channel(&address, pki.issue(PeerRole::Fetcher, "fetcher-0")).await;

    // Reads for every identity; mutations for the roles the table names.
    AdminClient::new(viewer.clone())
        .list_flows(ListFlowsRequest {})
        .await
        .expect("a viewer lists flows");
    for (who, channel) in [("viewer", &viewer), ("fetcher", &fetcher)] {
        let refused = AdminClient::new(channel.clone())
            .delete_flow(DeleteFlowRequest {
                name: "ghost".to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{who}: {refused:?}");
        assert!(refused.message().contains("DeleteFlow"), "{refused:?}");
    }
    let not_found = AdminClient::new(admin.clone())
        .pause_flow(PauseFlowRequest {
            name: "ghost".to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        not_found.code(),
        Code::NotFound,
        "the admin's call reaches the API"
    );

    // The audit log: readable by an admin, not by a viewer.
    let refused = AuditClient::new(viewer.clone())
        .list_audit(ListAuditRequest { limit: 0 })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let entries = AuditClient::new(admin.clone())
        .list_audit(ListAuditRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let mut summary: Vec<(String, String, String, String)> = entries
        .iter()
        .map(|entry| {
            (
                entry
                    .identity
                    .rsplit('/')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join("@"),
                entry
                    .call
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                entry.object.clone(),
                entry.outcome.clone(),
            )
        })
        .collect();
    let expected = |who: &str, call: &str, outcome: &str| {
        (
            who.to_string(),
            call.to_string(),
            "flow/ghost".to_string(),
            outcome.to_string(),
        )
    };
    // Calls made within one millisecond have no order between them: compared
    // as sets. Reads are not audited.
    summary.sort();
    assert_eq!(
        summary,
        vec![
            expected("alice@admin", "PauseFlow", "NotFound"),
            expected("fetcher-0@fetcher", "DeleteFlow", "PermissionDenied"),
            expected("vera@viewer", "DeleteFlow", "PermissionDenied"),
        ]
    );
    assert!(entries
        .iter()
        .all(|entry| entry.time_ms > 0 && !entry.remote.is_empty()));

    stop.cancel();
    let _ = handle.await;
    let _ = etcd
        .delete(
            format!("/kmirror/{fleet}/"),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await;
}

fn with_token(
    channel: Channel,
    token: &str,
) -> AdminClient<
    kmirror_proto::tonic::service::interceptor::InterceptedService<
        Channel,
        impl kmirror_proto::tonic::service::Interceptor,
    >,
> {
    let value: kmirror_proto::tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().unwrap();
    AdminClient::with_interceptor(
        channel,
        move |mut request: kmirror_proto::tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
            Ok(request)
        },
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bearer_token_stands_for_its_role_until_revoked_and_is_stored_hashed() {
    let fleet = format!(
        "{FLEET_PREFIX}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let Ok(Ok(mut etcd)) = tokio::time::timeout(
        Duration::from_secs(5),
        kmirror_common::etcd::connect(&EtcdSettings::plain(vec![etcd_endpoint()], &fleet)),
    )
    .await
    else {
        eprintln!("skipping: etcd does not answer at {}", etcd_endpoint());
        return;
    };
    let pki = Pki::new(&fleet);
    let coordinator_files = pki.issue(PeerRole::Coordinator, "coordinator-0");
    let config = Config {
        etcd: EtcdSettings::plain(vec![etcd_endpoint()], &fleet),
        member_id: MemberId::new("coordinator-0").unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise_opt: None,
        lease_ttl: Duration::from_secs(3),
        shutdown_grace: Duration::from_secs(5),
        refresh_interval: Duration::from_millis(500),
        debounce: Duration::from_millis(50),
        kafka_timeout: Duration::from_secs(3),
        metrics_listen: Default::default(),
        metrics_labels: Default::default(),
        transport: TransportSettings {
            tls_cert: Some(coordinator_files.cert.clone()),
            tls_key: Some(coordinator_files.key.clone()),
            tls_ca: Some(coordinator_files.ca.clone()),
            insecure: false,
        },
    };
    let coordinator = Coordinator::build(config)
        .await
        .expect("coordinator builds");
    let address = format!("http://{}", coordinator.local_addr());
    let stop = CancellationToken::new();
    let handle = tokio::spawn(coordinator.run(stop.clone()));

    let admin = channel(&address, pki.issue(PeerRole::Admin, "alice")).await;
    let operator_cert = channel(&address, pki.issue(PeerRole::Operator, "otto")).await;
    let mut tokens = TokensClient::new(admin.clone());
    let token = tokens
        .create_token(CreateTokenRequest {
            name: "ci".to_string(),
            role: "operator".to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let refused = TokensClient::new(operator_cert)
        .create_token(CreateTokenRequest {
            name: "mine".to_string(),
            role: "admin".to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::PermissionDenied,
        "only admins make tokens"
    );

    // A client with the CA alone: its token is its identity.
    let ca_only = Transport::Tls(TlsFiles::load_ca_only(coordinator_files.ca.clone()).unwrap());
    let anonymous = ca_only
        .connect(
            Endpoint::from_shared(address.clone()).unwrap(),
            &[PeerRole::Coordinator],
        )
        .await
        .unwrap();
    let refused = AdminClient::new(anonymous.clone())
        .list_flows(ListFlowsRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::PermissionDenied,
        "no certificate, no token: {refused:?}"
    );
    let not_found = with_token(anonymous.clone(), &token)
        .pause_flow(PauseFlowRequest {
            name: "ghost".to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        not_found.code(),
        Code::NotFound,
        "an operator token pauses flows"
    );
    let refused = with_token(anonymous.clone(), "kmt_0000")
        .list_flows(ListFlowsRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // Stored as a hash only.
    let stored = etcd
        .get(format!("/kmirror/{fleet}/tokens/ci"), None)
        .await
        .unwrap();
    let stored = String::from_utf8_lossy(stored.kvs()[0].value()).into_owned();
    assert!(!stored.contains(&token[4..]), "{stored}");
    assert!(
        stored.contains("/admin/alice"),
        "the creator is kept: {stored}"
    );

    tokens
        .revoke_token(RevokeTokenRequest {
            name: "ci".to_string(),
        })
        .await
        .unwrap();
    let refused = with_token(anonymous, &token)
        .pause_flow(PauseFlowRequest {
            name: "ghost".to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::Unauthenticated,
        "a revoked token is refused"
    );

    let entries = AuditClient::new(admin)
        .list_audit(ListAuditRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let outcomes: Vec<(String, String)> = entries
        .iter()
        .filter(|entry| entry.call.ends_with("PauseFlow"))
        .map(|entry| (entry.identity.clone(), entry.outcome.clone()))
        .collect();
    assert!(
        outcomes.contains(&(
            format!("spiffe://kmirror/{fleet}/operator/token:ci"),
            "NotFound".to_string()
        )),
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|(_, outcome)| outcome == "Unauthenticated"),
        "{outcomes:?}"
    );

    stop.cancel();
    let _ = handle.await;
    let _ = etcd
        .delete(
            format!("/kmirror/{fleet}/"),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await;
}
