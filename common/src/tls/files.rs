//! A member's TLS material read from its PEM files, and read again when they
//! change: [`TlsFiles`] holds the rustls configs built from the files now on
//! disk; a new connection (accepted or dialled) takes the current ones, so a
//! certificate or CA replaced on disk is used from the next connection on,
//! without a restart. Connections already open keep the certificates they
//! were made with.
//!
//! The files are polled (their length and modification time) every
//! [`RELOAD_INTERVAL`]: cheaper to reason about than file notifications, which
//! miss the rename of a directory symlink (how Kubernetes updates a mounted
//! Secret). A set of files that fails to load (a certificate written before its
//! key) keeps the previous configs and is tried again at the next poll.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::identity::{Identity, IdentityError};

/// How often the files are checked for a change.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Where a member's certificate, its key and the fleet CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {cause}")]
    Read { path: PathBuf, cause: String },
    #[error("{path} holds no {what}")]
    Empty { path: PathBuf, what: &'static str },
    #[error("{path}: {source}")]
    Identity {
        path: PathBuf,
        #[source]
        source: IdentityError,
    },
    #[error("{path} is the certificate of {identity}, not of a {expected} of fleet {fleet}")]
    WrongIdentity {
        path: PathBuf,
        /// The identity's URI.
        identity: String,
        expected: String,
        fleet: String,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The process's one crypto provider: ring. rustls 0.23.48 deprecates it for
/// its lack of post-quantum key exchange (aws-lc has it); ring keeps the build
/// free of a C/cmake toolchain and the dependency tree lean, and the fleet's
/// traffic is short-lived mirrored data. Revisit with rustls' next ring release.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of a PEM text, in order.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| error.to_string())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_path_buf(),
        cause: error.to_string(),
    })
}

fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = certificates_from_pem(&read(path)?).map_err(|cause| TlsError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    if certificates.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_path_buf(),
            what,
        });
    }
    Ok(certificates)
}

/// The TLS material as read at one time, ready for connections.
pub struct Loaded {
    /// Whose certificate this member presents (none: a client with the CA
    /// alone, which authenticates with a bearer token).
    pub identity: Option<Identity>,
    /// Absent for a client with the CA alone.
    pub server: Option<Arc<ServerConfig>>,
    pub client: Arc<ClientConfig>,
}

/// Reads `paths` into server and client configs. The certificate must name
/// an identity of `fleet` (when given) whose role is one of `roles` (any when
/// empty): a member refuses to start with another role's certificate.
pub fn load(
    paths: &TlsPaths,
    fleet_opt: Option<&str>,
    roles: &[super::PeerRole],
) -> Result<Loaded, TlsError> {
    let chain = read_certificates(&paths.cert, "certificate")?;
    let key =
        PrivateKeyDer::from_pem_slice(&read(&paths.key)?).map_err(|error| TlsError::Read {
            path: paths.key.clone(),
            cause: error.to_string(),
        })?;
    let mut roots = RootCertStore::empty();
    for ca in read_certificates(&paths.ca, "CA certificate")? {
        roots.add(ca).map_err(|error| TlsError::Read {
            path: paths.ca.clone(),
            cause: error.to_string(),
        })?;
    }
    let identity =
        Identity::from_certificate_der(&chain[0]).map_err(|source| TlsError::Identity {
            path: paths.cert.clone(),
            source,
        })?;
    let other_fleet = fleet_opt.is_some_and(|fleet| fleet != identity.fleet);
    if other_fleet || !(roles.is_empty() || roles.contains(&identity.role)) {
        return Err(TlsError::WrongIdentity {
            path: paths.cert.clone(),
            expected: roles
                .iter()
                .map(|role| role.as_str())
                .collect::<Vec<_>>()
                .join(" or "),
            fleet: fleet_opt.unwrap_or(&identity.fleet).to_string(),
            identity: identity.to_string(),
        });
    }
    let roots = Arc::new(roots);
    let provider = provider();
    let config_error = |error: rustls::Error| TlsError::Config(error.to_string());

    // A coordinator also takes clients without a certificate: kmirrorctl with a
    // bearer token and the CA alone. Every call of such a client is refused
    // unless its token is valid (coordinator/src/authorize.rs); the data path
    // (fetchers, writers) always requires a certificate.
    let verifier_builder =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
    let verifier_builder = if roles == [super::PeerRole::Coordinator] {
        verifier_builder.allow_unauthenticated()
    } else {
        verifier_builder
    };
    let client_verifier = verifier_builder
        .build()
        .map_err(|error| TlsError::Config(error.to_string()))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(config_error)?;
    server.alpn_protocols = vec![b"h2".to_vec()];

    let mut client = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(FleetServerVerifier { roots, provider }))
        .with_client_auth_cert(chain, key)
        .map_err(config_error)?;
    client.alpn_protocols = vec![b"h2".to_vec()];

    Ok(Loaded {
        identity: Some(identity),
        server: Some(Arc::new(server)),
        client: Arc::new(client),
    })
}

/// A client config trusting the CA at `ca` and presenting no certificate.
pub fn load_ca_only(ca: &Path) -> Result<Loaded, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(ca, "CA certificate")? {
        roots.add(certificate).map_err(|error| TlsError::Read {
            path: ca.to_path_buf(),
            cause: error.to_string(),
        })?;
    }
    let provider = provider();
    let mut client = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(FleetServerVerifier {
            roots: Arc::new(roots),
            provider,
        }))
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        identity: None,
        server: None,
        client: Arc::new(client),
    })
}

/// Checks a server's certificate as the fleet's: signed by the fleet CA, valid
/// now, for server authentication. Not by the name dialled: members are dialled
/// at whatever address they advertise, and who they are is the identity in the
/// certificate, which the connection checks next (see `client.rs`).
#[derive(Debug)]
struct FleetServerVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for FleetServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let certificate = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &certificate,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What identifies one version of the files: each one's length and mtime.
type Stamp = Vec<Option<(u64, SystemTime)>>;

fn stamp(paths: &TlsPaths) -> Stamp {
    [&paths.cert, &paths.key, &paths.ca]
        .into_iter()
        .map(|path| {
            std::fs::metadata(path)
                .ok()
                .and_then(|meta| Some((meta.len(), meta.modified().ok()?)))
        })
        .collect()
}

/// A member's TLS material, kept current with its files.
pub struct TlsFiles {
    paths: TlsPaths,
    fleet_opt: Option<String>,
    roles: Vec<super::PeerRole>,
    current: RwLock<(Stamp, Arc<Loaded>)>,
}

impl TlsFiles {
    /// Reads the files once; fails if they do not make a valid set.
    pub fn load(
        paths: TlsPaths,
        fleet_opt: Option<&str>,
        roles: &[super::PeerRole],
    ) -> Result<Arc<Self>, TlsError> {
        let before = stamp(&paths);
        let loaded = load(&paths, fleet_opt, roles)?;
        Ok(Arc::new(Self {
            paths,
            fleet_opt: fleet_opt.map(str::to_string),
            roles: roles.to_vec(),
            current: RwLock::new((before, Arc::new(loaded))),
        }))
    }

    /// A client's material from the CA alone, not reloaded (kmirrorctl with a
    /// bearer token lives for one command).
    pub fn load_ca_only(ca: PathBuf) -> Result<Arc<Self>, TlsError> {
        let loaded = load_ca_only(&ca)?;
        Ok(Arc::new(Self {
            paths: TlsPaths {
                cert: ca.clone(),
                key: ca.clone(),
                ca,
            },
            fleet_opt: None,
            roles: Vec::new(),
            current: RwLock::new((Vec::new(), Arc::new(loaded))),
        }))
    }

    /// The material for the next connection.
    pub fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .1
            .clone()
    }

    pub fn paths(&self) -> &TlsPaths {
        &self.paths
    }

    /// Reads the files again if they changed since the last read; says whether
    /// new material is in use.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamp(&self.paths);
        let unchanged = self
            .current
            .read()
            .map(|current| current.0 == now)
            .unwrap_or(false);
        if unchanged {
            return false;
        }
        match load(&self.paths, self.fleet_opt.as_deref(), &self.roles) {
            Ok(loaded) => {
                info!(identity = ?loaded.identity.as_ref().map(ToString::to_string), cert = %self.paths.cert.display(), "TLS certificates reloaded");
                let mut current = self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                *current = (now, Arc::new(loaded));
                true
            }
            Err(error) => {
                // Keep the stamp as it was so the next poll tries again: the
                // files may be halfway through being replaced.
                warn!(%error, "changed TLS files do not load; keeping the previous certificates");
                false
            }
        }
    }

    /// Polls the files every `interval` until `stop`.
    pub async fn watch(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {
                    let files = self.clone();
                    // File reads and key parsing are blocking work.
                    let _ = tokio::task::spawn_blocking(move || files.reload_if_changed()).await;
                }
            }
        }
    }
}
