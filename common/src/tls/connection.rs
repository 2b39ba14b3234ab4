//! Connections of the fleet's gRPC servers and clients, with or without TLS:
//! [`Transport::incoming`] accepts and handshakes connections for
//! `tonic::transport::Server::serve_with_incoming*` and tells handlers who the
//! peer is ([`PeerInfo`], a request extension); [`Transport::connect`] dials a
//! member and checks that the certificate it presents is of the expected role.
//! Only the connection changes: what runs over it (tonic's services, the
//! hand-built `Replicate` request and service) is the same bytes either way.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn};

use super::files::{TlsFiles, RELOAD_INTERVAL};
use super::identity::{Identity, IdentityError, PeerRole};

/// How long a peer may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handshaken but not yet taken by the server.
const ACCEPT_QUEUE: usize = 64;

/// How a member's connections are made: mutual TLS with its certificate, or,
/// when asked for by name (`--insecure`), plaintext.
#[derive(Clone)]
pub enum Transport {
    Tls(Arc<TlsFiles>),
    Insecure,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Tls(files) => match &files.current().identity {
                Some(identity) => write!(formatter, "Tls({identity})"),
                None => formatter.write_str("Tls(no certificate)"),
            },
            Transport::Insecure => formatter.write_str("Insecure"),
        }
    }
}

/// Who is on the other end of a server's connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    pub security: PeerSecurity,
}

#[derive(Debug, Clone)]
pub enum PeerSecurity {
    /// The server runs without TLS: nobody is identified.
    Insecure,
    /// A certificate of the fleet CA naming this identity.
    Verified(Arc<Identity>),
    /// A certificate of the fleet CA that names no identity.
    Unidentified(IdentityError),
    /// TLS without a client certificate (only a coordinator takes these: the
    /// caller must show a bearer token).
    Anonymous,
}

/// Why a peer may not make a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("the connection carries no peer information")]
    NoPeer,
    #[error("no client certificate and no valid bearer token")]
    NoCertificate,
    #[error("the client certificate names no kmirror identity: {0}")]
    Unidentified(IdentityError),
    #[error("{identity} belongs to another fleet than {fleet}")]
    OtherFleet { identity: String, fleet: String },
    #[error("{identity} may not call {call}: it needs the role {needed}")]
    Role {
        identity: String,
        call: String,
        needed: String,
    },
}

impl Denied {
    /// The identity refused, when the peer had one.
    pub fn identity(&self) -> Option<&str> {
        match self {
            Denied::OtherFleet { identity, .. } | Denied::Role { identity, .. } => Some(identity),
            Denied::NoPeer | Denied::NoCertificate | Denied::Unidentified(_) => None,
        }
    }
}

impl PeerInfo {
    /// Lets the call through when the peer's role is one of `roles` in
    /// `fleet`, or when the server runs insecure; returns the identity, if any.
    pub fn authorize<'a>(
        peer_opt: Option<&'a PeerInfo>,
        fleet: &str,
        call: &str,
        roles: &[PeerRole],
    ) -> Result<Option<&'a Identity>, Denied> {
        let peer = peer_opt.ok_or(Denied::NoPeer)?;
        match &peer.security {
            PeerSecurity::Insecure => Ok(None),
            PeerSecurity::Unidentified(error) => Err(Denied::Unidentified(error.clone())),
            PeerSecurity::Anonymous => Err(Denied::NoCertificate),
            PeerSecurity::Verified(identity) => {
                if identity.fleet != fleet {
                    return Err(Denied::OtherFleet {
                        identity: identity.to_string(),
                        fleet: fleet.to_string(),
                    });
                }
                if !roles.contains(&identity.role) {
                    return Err(Denied::Role {
                        identity: identity.to_string(),
                        call: call.to_string(),
                        needed: roles
                            .iter()
                            .map(|role| role.as_str())
                            .collect::<Vec<_>>()
                            .join(" or "),
                    });
                }
                Ok(Some(identity))
            }
        }
    }
}

/// An accepted connection: TCP, or TLS over TCP, and who the peer is.
pub struct PeerStream {
    io: Either<TcpStream, Box<tokio_rustls::server::TlsStream<TcpStream>>>,
    info: PeerInfo,
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Transport {
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Keeps the certificates current with their files until `stop` (nothing
    /// to do without TLS).
    pub async fn watch(self, stop: CancellationToken) {
        if let Transport::Tls(files) = self {
            files.watch(RELOAD_INTERVAL, stop).await;
        }
    }

    /// The connections `listener` accepts, each handshaken on a task of its own
    /// (a slow or failing peer holds up nobody else). Accepting stops when the
    /// server drops the stream.
    pub fn incoming(&self, listener: TcpListener) -> ReceiverStream<io::Result<PeerStream>> {
        let (stream_tx, stream_rx) = mpsc::channel(ACCEPT_QUEUE);
        let transport = self.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stream_tx.closed() => return,
                    accepted = listener.accept() => accepted,
                };
                let (tcp, remote_addr) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait a moment
                        // rather than spin.
                        warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Acks and small admin calls would otherwise wait for the
                // peer's delayed TCP acknowledgement.
                let _ = tcp.set_nodelay(true);
                let stream_tx = stream_tx.clone();
                let transport = transport.clone();
                tokio::spawn(async move {
                    if let Some(stream) = transport.accept(tcp, remote_addr).await {
                        let _ = stream_tx.send(Ok(stream)).await;
                    }
                });
            }
        });
        ReceiverStream::new(stream_rx)
    }

    async fn accept(&self, tcp: TcpStream, remote_addr: SocketAddr) -> Option<PeerStream> {
        let files = match self {
            Transport::Insecure => {
                return Some(PeerStream {
                    io: Either::Left(tcp),
                    info: PeerInfo {
                        remote_addr: Some(remote_addr),
                        security: PeerSecurity::Insecure,
                    },
                })
            }
            Transport::Tls(files) => files,
        };
        let Some(server) = files.current().server.clone() else {
            warn!("a client-only TLS configuration cannot accept connections");
            return None;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                // Refused peers are expected now and then (a scanner, a member
                // of another fleet): not an error of ours.
                warn!(peer = %remote_addr, %error, "TLS handshake refused");
                return None;
            }
            Err(_) => {
                debug!(peer = %remote_addr, "TLS handshake timed out");
                return None;
            }
        };
        let security = match tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
        {
            Some(certificate) => match Identity::from_certificate_der(certificate) {
                Ok(identity) => PeerSecurity::Verified(Arc::new(identity)),
                Err(error) => PeerSecurity::Unidentified(error),
            },
            // Only a coordinator's verifier lets a client without one through.
            None => PeerSecurity::Anonymous,
        };
        Some(PeerStream {
            io: Either::Right(Box::new(tls)),
            info: PeerInfo {
                remote_addr: Some(remote_addr),
                security,
            },
        })
    }

    /// Dials `endpoint`; over TLS, the server must present a certificate of the
    /// fleet CA naming one of `expect` in this member's fleet.
    pub async fn connect(
        &self,
        endpoint: Endpoint,
        expect: &'static [PeerRole],
    ) -> Result<Channel, tonic::transport::Error> {
        match self {
            Transport::Insecure => endpoint.connect().await,
            Transport::Tls(files) => {
                endpoint
                    .connect_with_connector(Connector {
                        files: files.clone(),
                        expect,
                    })
                    .await
            }
        }
    }

    /// As [`Transport::connect`], connecting at the first call.
    pub fn connect_lazy(&self, endpoint: Endpoint, expect: &'static [PeerRole]) -> Channel {
        match self {
            Transport::Insecure => endpoint.connect_lazy(),
            Transport::Tls(files) => endpoint.connect_with_connector_lazy(Connector {
                files: files.clone(),
                expect,
            }),
        }
    }
}

/// Dials TCP, handshakes TLS with the current certificates and checks the
/// server's identity.
#[derive(Clone)]
struct Connector {
    files: Arc<TlsFiles>,
    expect: &'static [PeerRole],
}

type ClientIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = ClientIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<ClientIo>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move { connector.dial(uri).await })
    }
}

impl Connector {
    async fn dial(self, uri: http::Uri) -> io::Result<ClientIo> {
        let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
        let host = uri
            .host()
            .ok_or_else(|| invalid(format!("{uri} names no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri
            .port_u16()
            .ok_or_else(|| invalid(format!("{uri} names no port")))?;
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        let loaded = self.files.current();
        // The name only feeds SNI: the verifier checks the identity, not it.
        let server_name = ServerName::try_from(host.clone())
            .unwrap_or_else(|_| ServerName::try_from("kmirror").expect("a valid DNS name"));
        let tls = tokio_rustls::TlsConnector::from(loaded.client.clone())
            .connect(server_name, tcp)
            .await?;
        let identity = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the server presented no certificate",
                )
            })
            .and_then(|certificate| {
                Identity::from_certificate_der(certificate).map_err(|error| {
                    io::Error::new(io::ErrorKind::PermissionDenied, format!("{uri}: {error}"))
                })
            })?;
        let own_fleet_opt = loaded.identity.as_ref().map(|own| own.fleet.as_str());
        let other_fleet = own_fleet_opt.is_some_and(|fleet| fleet != identity.fleet);
        if other_fleet || !self.expect.contains(&identity.role) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{uri} presented the certificate of {identity}, expected a {} of fleet {}",
                    self.expect
                        .iter()
                        .map(|role| role.as_str())
                        .collect::<Vec<_>>()
                        .join(" or "),
                    own_fleet_opt.unwrap_or(&identity.fleet)
                ),
            ));
        }
        Ok(TokioIo::new(tls))
    }
}
