//! In-process tests of the transport: a tonic server on `127.0.0.1:0` behind
//! [`Transport::incoming`], dialled with [`Transport::connect`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Endpoint, Server};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::issue::{CertificateAuthority, Validity};
use super::*;

struct Pki {
    dir: PathBuf,
    authority: CertificateAuthority,
}

impl Pki {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "kmirror-tls-{name}-{}-{}",
            std::process::id(),
            crate::now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let authority = CertificateAuthority::generate("test", Validity::days(1)).unwrap();
        std::fs::write(dir.join("ca.pem"), &authority.cert_pem).unwrap();
        Self { dir, authority }
    }

    fn issue(&self, role: PeerRole, id: &str, validity: Validity) -> TlsPaths {
        let issued = self
            .authority
            .issue(&Identity::new("test", role, id), &[], validity)
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

fn transport(paths: TlsPaths, roles: &[PeerRole]) -> Transport {
    Transport::Tls(TlsFiles::load(paths, Some("test"), roles).unwrap())
}

/// A health service served over `transport`; returns its address.
async fn serve(transport: Transport, stop: &CancellationToken) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (_, health) = tonic_health::server::health_reporter();
    let server = Server::builder()
        .add_service(health)
        .serve_with_incoming_shutdown(transport.incoming(listener), stop.clone().cancelled_owned());
    tokio::spawn(server);
    address
}

/// Whether a health check over a new connection succeeds.
async fn check(
    client: &Transport,
    address: &str,
    expect: &'static [PeerRole],
) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(address.to_string())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let channel = client
        .connect(endpoint, expect)
        .await
        .map_err(|error| format!("{error:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|status| format!("{status:?}"))
}

fn server_certificate_serial(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[tokio::test]
async fn a_fleet_certificate_is_accepted_and_every_other_refused() {
    let pki = Pki::new("refusals");
    let other = Pki::new("other");
    let stop = CancellationToken::new();
    let writer = transport(
        pki.issue(PeerRole::Writer, "writer-1", Validity::days(1)),
        &[PeerRole::Writer],
    );
    let address = serve(writer, &stop).await;

    let fetcher = transport(
        pki.issue(PeerRole::Fetcher, "fetcher-1", Validity::days(1)),
        &[PeerRole::Fetcher],
    );
    check(&fetcher, &address, &[PeerRole::Writer])
        .await
        .unwrap();

    // The server is not of the role the client dials.
    let error = check(&fetcher, &address, &[PeerRole::Coordinator])
        .await
        .unwrap_err();
    assert!(error.contains("expected a coordinator"), "{error}");

    // Another CA's certificate.
    let stranger = transport(
        other.issue(PeerRole::Fetcher, "fetcher-x", Validity::days(1)),
        &[PeerRole::Fetcher],
    );
    assert!(check(&stranger, &address, &[PeerRole::Writer])
        .await
        .is_err());

    // An expired certificate of the fleet CA.
    let expired = transport(
        pki.issue(
            PeerRole::Fetcher,
            "fetcher-old",
            Validity::ended(Duration::from_secs(3600)),
        ),
        &[PeerRole::Fetcher],
    );
    assert!(check(&expired, &address, &[PeerRole::Writer])
        .await
        .is_err());

    // No client certificate at all: plaintext against a TLS server.
    assert!(check(&Transport::Insecure, &address, &[PeerRole::Writer])
        .await
        .is_err());
    stop.cancel();
}

#[tokio::test]
async fn replaced_files_serve_new_connections_without_a_restart() {
    let pki = Pki::new("rotation");
    let stop = CancellationToken::new();
    let paths = pki.issue(PeerRole::Writer, "writer-1", Validity::days(1));
    let files = TlsFiles::load(paths.clone(), Some("test"), &[PeerRole::Writer]).unwrap();
    let address = serve(Transport::Tls(files.clone()), &stop).await;
    let fetcher_files = TlsFiles::load(
        pki.issue(PeerRole::Fetcher, "fetcher-1", Validity::days(1)),
        Some("test"),
        &[PeerRole::Fetcher],
    )
    .unwrap();
    let fetcher = Transport::Tls(fetcher_files.clone());
    check(&fetcher, &address, &[PeerRole::Writer])
        .await
        .unwrap();
    assert!(!files.reload_if_changed(), "nothing changed yet");

    // A new CA: both trusted during the rotation, then the writer's
    // certificate from the new one.
    let before = server_certificate_serial(&paths.cert);
    let successor = Pki::new("rotation-next");
    let both = format!("{}{}", pki.authority.cert_pem, successor.authority.cert_pem);
    std::fs::write(&paths.ca, &both).unwrap();
    let issued = successor
        .authority
        .issue(
            &Identity::new("test", PeerRole::Writer, "writer-1"),
            &[],
            Validity::days(1),
        )
        .unwrap();
    std::fs::write(&paths.key, issued.key_pem).unwrap();
    std::fs::write(&paths.cert, issued.cert_pem).unwrap();
    assert_ne!(before, server_certificate_serial(&paths.cert));
    assert!(files.reload_if_changed());
    assert!(
        fetcher_files.reload_if_changed(),
        "the fetcher's CA file changed too"
    );

    // A client that trusts the new CA alone now reaches the writer.
    let successor_fetcher = successor.issue(PeerRole::Fetcher, "fetcher-2", Validity::days(1));
    let successor_fetcher = transport(successor_fetcher, &[PeerRole::Fetcher]);
    check(&successor_fetcher, &address, &[PeerRole::Writer])
        .await
        .unwrap();
    // And the old fetcher's certificate is still trusted during the rotation.
    check(&fetcher, &address, &[PeerRole::Writer])
        .await
        .unwrap();
    stop.cancel();
}

#[test]
fn a_member_refuses_a_certificate_of_another_role_or_fleet() {
    let pki = Pki::new("wrong-role");
    let paths = pki.issue(PeerRole::Admin, "alice", Validity::days(1));
    let error = TlsFiles::load(paths.clone(), Some("test"), &[PeerRole::Writer])
        .err()
        .unwrap();
    assert!(matches!(error, TlsError::WrongIdentity { .. }), "{error}");
    let error = TlsFiles::load(paths, Some("prod"), &[PeerRole::Admin])
        .err()
        .unwrap();
    assert!(error.to_string().contains("fleet prod"), "{error}");
}
