//! Who a certificate speaks for: a fleet, a role and a name, written in the
//! certificate as one URI subject alternative name,
//! `spiffe://kmirror/<fleet>/<role>/<id>`. Members are the roles `coordinator`,
//! `fetcher` and `writer` (the id is the member id); people and scripts are the
//! client roles `admin`, `operator` and `viewer` (the id names who holds it).
//! Addresses (DNS and IP names) may be in the certificate too, but identity is
//! decided by this URI alone: members move between hosts and are dialled at the
//! addresses they advertise in etcd.

use std::fmt;
use std::str::FromStr;

/// The URI scheme and trust domain of every kmirror identity.
pub const IDENTITY_URI_PREFIX: &str = "spiffe://kmirror/";

/// What a certificate's holder is in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerRole {
    Coordinator,
    Fetcher,
    Writer,
    /// Clusters and their credentials, and everything an operator may do.
    Admin,
    /// Flows (create, delete, pause, resume, apply), drain, rebalance, and
    /// everything a viewer may do.
    Operator,
    /// Status, lists and configs with secrets masked.
    Viewer,
}

impl PeerRole {
    pub const ALL: [PeerRole; 6] = [
        PeerRole::Coordinator,
        PeerRole::Fetcher,
        PeerRole::Writer,
        PeerRole::Admin,
        PeerRole::Operator,
        PeerRole::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PeerRole::Coordinator => "coordinator",
            PeerRole::Fetcher => "fetcher",
            PeerRole::Writer => "writer",
            PeerRole::Admin => "admin",
            PeerRole::Operator => "operator",
            PeerRole::Viewer => "viewer",
        }
    }

    /// A member of the fleet (it serves gRPC and dials other members), as
    /// opposed to a client of the admin API.
    pub fn is_member(self) -> bool {
        matches!(
            self,
            PeerRole::Coordinator | PeerRole::Fetcher | PeerRole::Writer
        )
    }
}

impl From<crate::Role> for PeerRole {
    fn from(role: crate::Role) -> Self {
        match role {
            crate::Role::Coordinator => PeerRole::Coordinator,
            crate::Role::Fetcher => PeerRole::Fetcher,
            crate::Role::Writer => PeerRole::Writer,
        }
    }
}

impl fmt::Display for PeerRole {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for PeerRole {
    type Err = IdentityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        PeerRole::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| IdentityError::UnknownRole(text.to_string()))
    }
}

/// A certificate's holder: its fleet, role and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub fleet: String,
    pub role: PeerRole,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate cannot be read: {0}")]
    Certificate(String),
    #[error("the certificate names no kmirror identity (a URI {IDENTITY_URI_PREFIX}<fleet>/<role>/<id>)")]
    Missing,
    #[error("the certificate names more than one kmirror identity")]
    Several,
    #[error("{0:?} is not a kmirror identity: expected {IDENTITY_URI_PREFIX}<fleet>/<role>/<id>")]
    Malformed(String),
    #[error("unknown role {0:?}: one of coordinator, fetcher, writer, admin, operator, viewer")]
    UnknownRole(String),
}

impl Identity {
    pub fn new(fleet: impl Into<String>, role: PeerRole, id: impl Into<String>) -> Self {
        Self {
            fleet: fleet.into(),
            role,
            id: id.into(),
        }
    }

    /// The URI subject alternative name that carries this identity.
    pub fn uri(&self) -> String {
        format!(
            "{IDENTITY_URI_PREFIX}{}/{}/{}",
            self.fleet, self.role, self.id
        )
    }

    /// Reads `spiffe://kmirror/<fleet>/<role>/<id>`; each part is non-empty and
    /// holds no `/`.
    pub fn parse_uri(uri: &str) -> Result<Self, IdentityError> {
        let malformed = || IdentityError::Malformed(uri.to_string());
        let path = uri
            .strip_prefix(IDENTITY_URI_PREFIX)
            .ok_or_else(malformed)?;
        let parts: Vec<&str> = path.split('/').collect();
        let [fleet, role, id] = parts.as_slice() else {
            return Err(malformed());
        };
        if fleet.is_empty() || id.is_empty() {
            return Err(malformed());
        }
        Ok(Self::new(*fleet, role.parse()?, *id))
    }

    /// The identity of a DER certificate: its one `spiffe://kmirror/` URI name
    /// (other URI names are ignored).
    pub fn from_certificate_der(der: &[u8]) -> Result<Self, IdentityError> {
        use x509_parser::extensions::GeneralName;
        let (_, certificate) = x509_parser::parse_x509_certificate(der)
            .map_err(|error| IdentityError::Certificate(error.to_string()))?;
        let names = certificate
            .subject_alternative_name()
            .map_err(|error| IdentityError::Certificate(error.to_string()))?;
        let mut identities = names
            .iter()
            .flat_map(|extension| extension.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with(IDENTITY_URI_PREFIX) => Some(*uri),
                _ => None,
            });
        let uri = identities.next().ok_or(IdentityError::Missing)?;
        if identities.next().is_some() {
            return Err(IdentityError::Several);
        }
        Self::parse_uri(uri)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::issue::{CertificateAuthority, Validity};

    #[test]
    fn an_identity_uri_round_trips() {
        let identity = Identity::new("prod", PeerRole::Fetcher, "fetcher-a1");
        assert_eq!(identity.uri(), "spiffe://kmirror/prod/fetcher/fetcher-a1");
        assert_eq!(Identity::parse_uri(&identity.uri()), Ok(identity));
    }

    #[test]
    fn malformed_identity_uris_are_refused() {
        for uri in [
            "spiffe://other/prod/fetcher/a",
            "spiffe://kmirror/prod/fetcher",
            "spiffe://kmirror/prod/fetcher/a/b",
            "spiffe://kmirror//fetcher/a",
            "spiffe://kmirror/prod/fetcher/",
            "https://kmirror/prod/fetcher/a",
        ] {
            assert!(
                matches!(Identity::parse_uri(uri), Err(IdentityError::Malformed(_))),
                "{uri}"
            );
        }
        assert_eq!(
            Identity::parse_uri("spiffe://kmirror/prod/root/a"),
            Err(IdentityError::UnknownRole("root".to_string()))
        );
    }

    #[test]
    fn the_identity_is_read_from_an_issued_certificate() {
        let authority = CertificateAuthority::generate("prod", Validity::days(1)).unwrap();
        let identity = Identity::new("prod", PeerRole::Writer, "writer-1");
        let issued = authority
            .issue(
                &identity,
                &["127.0.0.1".to_string(), "localhost".to_string()],
                Validity::days(1),
            )
            .unwrap();
        let der = crate::tls::files::certificates_from_pem(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(Identity::from_certificate_der(&der[0]), Ok(identity));
        let ca_der =
            crate::tls::files::certificates_from_pem(authority.cert_pem.as_bytes()).unwrap();
        assert_eq!(
            Identity::from_certificate_der(&ca_der[0]),
            Err(IdentityError::Missing)
        );
    }
}
