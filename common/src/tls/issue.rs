//! Making a fleet's certificates: a self-signed CA and certificates it issues
//! for members and clients, each naming its [`Identity`]. Used by `kmirrorctl
//! certificates`, the local fleet and the tests; production fleets may as well
//! use their own PKI (cert-manager, Vault), as long as each certificate carries
//! the identity URI and the extended key usages below.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use super::identity::Identity;

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("cannot make the certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("{0:?} is not a valid DNS name or IP address for a certificate")]
    Address(String),
}

/// When a certificate is valid: from `not_before` to `not_after`.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clocks differ a little between hosts) for `days`.
    pub fn days(days: u32) -> Self {
        Self::lasting(Duration::from_secs(u64::from(days) * 24 * 3600))
    }

    /// From an hour ago for `length`.
    pub fn lasting(length: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::from_secs(3600),
            not_after: now + length,
        }
    }

    /// A window that ended `ago` before now (expired certificates, for tests).
    pub fn ended(ago: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - ago - Duration::from_secs(24 * 3600),
            not_after: now - ago,
        }
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("IssuedCertificate")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A fleet's certificate authority: its certificate and key, PEM.
#[derive(Clone, Debug)]
pub struct CertificateAuthority {
    pub cert_pem: String,
    key: IssuedCertificate,
}

impl CertificateAuthority {
    /// A new self-signed CA for `fleet`.
    pub fn generate(fleet: &str, validity: Validity) -> Result<Self, IssueError> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "kmirror");
        // The time makes each CA's name its own: a certificate of another CA
        // of the same fleet is then refused as of an unknown issuer, not as a
        // bad signature.
        name.push(
            DnType::CommonName,
            format!(
                "kmirror fleet {fleet} CA {}",
                OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
            ),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let key = KeyPair::generate()?;
        let certificate = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: certificate.pem(),
            key: IssuedCertificate {
                cert_pem: certificate.pem(),
                key_pem: key.serialize_pem(),
            },
        })
    }

    /// A CA read back from its PEM files.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, IssueError> {
        // Checked here so that a wrong pair fails before anything is issued.
        let key = KeyPair::from_pem(key_pem)?;
        Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            key: IssuedCertificate {
                cert_pem: cert_pem.to_string(),
                key_pem: key_pem.to_string(),
            },
        })
    }

    /// The CA's private key, PEM (to be written with mode 0600).
    pub fn key_pem(&self) -> &str {
        &self.key.key_pem
    }

    /// A certificate for `identity`, with `addresses` (DNS names or IP
    /// addresses) as further names. Members' certificates serve and dial
    /// (server and client authentication); clients' only dial.
    pub fn issue(
        &self,
        identity: &Identity,
        addresses: &[String],
        validity: Validity,
    ) -> Result<IssuedCertificate, IssueError> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "kmirror");
        name.push(
            DnType::CommonName,
            format!("{}/{}", identity.role, identity.id),
        );
        params.distinguished_name = name;
        params
            .subject_alt_names
            .push(SanType::URI(identity.uri().try_into()?));
        for address in addresses {
            let san = match address.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    address
                        .clone()
                        .try_into()
                        .map_err(|_| IssueError::Address(address.clone()))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = if identity.role.is_member() {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let ca_key = KeyPair::from_pem(&self.key.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key)?;
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &issuer)?;
        Ok(IssuedCertificate {
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The addresses a certificate names by default: the local host.
pub fn local_addresses() -> Vec<String> {
    vec!["localhost".to_string(), "127.0.0.1".to_string()]
}
