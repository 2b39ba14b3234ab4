//! Transport security of the fleet: mutual TLS on every gRPC connection
//! (fetcher → writer, kmirrorctl → coordinator, member → member), identities
//! read from certificates, and the certificates themselves.
//!
//! | module | what for |
//! | --- | --- |
//! | [`identity`] | `spiffe://kmirror/<fleet>/<role>/<id>`: who a certificate speaks for |
//! | [`files`] | a member's PEM files as rustls configs, reloaded when they change |
//! | [`connection`] | accepting and dialling with or without TLS; the peer's identity for handlers |
//! | [`issue`] | a fleet CA and the certificates it issues (rcgen) |
//!
//! A member runs with TLS when given `--tls-cert`, `--tls-key` and `--tls-ca`,
//! without it only when given `--insecure`; with neither it does not start
//! ([`TransportSettings::resolve`]).

pub mod connection;
pub mod files;
pub mod identity;
pub mod issue;

use std::path::PathBuf;

pub use connection::{Denied, PeerInfo, PeerSecurity, Transport};
pub use files::{TlsError, TlsFiles, TlsPaths};
pub use identity::{Identity, IdentityError, PeerRole};

/// The transport settings of a member, as given (flags, variables, file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportSettings {
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub insecure: bool,
}

/// Why a member's transport settings do not make a transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(
        "no transport security configured: give --tls-cert, --tls-key and --tls-ca \
         (KMIRROR_TLS_CERT, KMIRROR_TLS_KEY, KMIRROR_TLS_CA; tlsCert, tlsKey, tlsCa in a config file) \
         to run with mutual TLS, or --insecure (KMIRROR_INSECURE) to run without it, \
         unauthenticated and in plaintext"
    )]
    NotConfigured,
    #[error("TLS needs --tls-cert, --tls-key and --tls-ca together: {missing} missing")]
    Partial { missing: String },
    #[error("--insecure and the --tls-* settings exclude each other: give one or the other")]
    Both,
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl TransportSettings {
    /// The paths, when TLS is asked for; `Ok(None)` for `--insecure`.
    pub fn paths(&self) -> Result<Option<TlsPaths>, TransportError> {
        let given = [
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
            ("--tls-ca", &self.tls_ca),
        ];
        let missing: Vec<&str> = given
            .iter()
            .filter(|(_, path)| path.is_none())
            .map(|(flag, _)| *flag)
            .collect();
        match (missing.len(), self.insecure) {
            (3, true) => Ok(None),
            (3, false) => Err(TransportError::NotConfigured),
            (_, true) => Err(TransportError::Both),
            (0, false) => Ok(Some(TlsPaths {
                cert: self.tls_cert.clone().unwrap_or_default(),
                key: self.tls_key.clone().unwrap_or_default(),
                ca: self.tls_ca.clone().unwrap_or_default(),
            })),
            _ => Err(TransportError::Partial {
                missing: missing.join(", "),
            }),
        }
    }

    /// Loads the certificate of a `role` member of `fleet` (or warns that it
    /// runs insecure).
    pub fn resolve(&self, fleet: &str, role: PeerRole) -> Result<Transport, TransportError> {
        match self.paths()? {
            None => {
                tracing::warn!(
                    %role,
                    "running with --insecure: fleet connections are plaintext and unauthenticated, \
                     anyone who reaches this member's port may call it"
                );
                Ok(Transport::Insecure)
            }
            Some(paths) => {
                let files = TlsFiles::load(paths, Some(fleet), &[role])?;
                if let Some(identity) = &files.current().identity {
                    tracing::info!(%identity, "mutual TLS on");
                }
                Ok(Transport::Tls(files))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(cert: bool, key: bool, ca: bool, insecure: bool) -> TransportSettings {
        TransportSettings {
            tls_cert: cert.then(|| PathBuf::from("c.pem")),
            tls_key: key.then(|| PathBuf::from("k.pem")),
            tls_ca: ca.then(|| PathBuf::from("ca.pem")),
            insecure,
        }
    }

    #[test]
    fn a_member_without_tls_or_insecure_is_refused_with_both_named() {
        let error = settings(false, false, false, false).paths().unwrap_err();
        let message = error.to_string();
        for named in [
            "--tls-cert",
            "--tls-key",
            "--tls-ca",
            "--insecure",
            "KMIRROR_TLS_CERT",
        ] {
            assert!(message.contains(named), "{message}");
        }
    }

    #[test]
    fn tls_needs_all_three_files_and_excludes_insecure() {
        assert!(matches!(
            settings(true, false, true, false).paths(),
            Err(TransportError::Partial { missing }) if missing == "--tls-key"
        ));
        assert!(matches!(
            settings(true, true, true, true).paths(),
            Err(TransportError::Both)
        ));
        assert!(matches!(
            settings(false, false, false, true).paths(),
            Ok(None)
        ));
        assert!(matches!(
            settings(true, true, true, false).paths(),
            Ok(Some(_))
        ));
    }
}

#[cfg(test)]
mod transport_tests;
