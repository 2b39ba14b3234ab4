//! Mutual TLS for `kmirror mirror`'s one-host fleet. Its members listen on
//! loopback only, but a loopback port is open to every user of the host: a
//! writer's would let any of them write records into the destination. So the
//! fleet runs with TLS like any other: a CA kept in the state folder
//! (`<state>/<fleet>/tls/`, made on the first run, shared by every run and
//! process of the fleet on this host) and a certificate per member issued at
//! each start. Nothing for the user to set up, no plaintext anywhere.

use std::path::{Path, PathBuf};

use kmirror_common::tls::issue::{local_addresses, CertificateAuthority, Validity};
use kmirror_common::tls::{Identity, PeerRole, TransportSettings};

use super::MirrorError;

/// Members' certificates last this long: a run longer than that keeps its
/// connections, and a restart issues new ones.
const MEMBER_DAYS: u32 = 30;
const CA_DAYS: u32 = 3650;

pub struct MirrorTls {
    dir: PathBuf,
    fleet: String,
    authority: CertificateAuthority,
}

fn failed(what: &str, cause: impl std::fmt::Display) -> MirrorError {
    MirrorError::Failed(format!("{what}: {cause}"))
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), MirrorError> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)
        .map_err(|error| failed(&format!("cannot write {}", partial.display()), error))?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))
            .map_err(|error| failed(&format!("cannot protect {}", partial.display()), error))?;
    }
    std::fs::rename(&partial, path)
        .map_err(|error| failed(&format!("cannot write {}", path.display()), error))
}

impl MirrorTls {
    /// The fleet's CA in `dir`, made if absent.
    pub fn open(dir: PathBuf, fleet: &str) -> Result<Self, MirrorError> {
        std::fs::create_dir_all(&dir)
            .map_err(|error| failed(&format!("cannot create {}", dir.display()), error))?;
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca-key.pem");
        let authority = if cert_path.exists() && key_path.exists() {
            let read = |path: &Path| {
                std::fs::read_to_string(path)
                    .map_err(|error| failed(&format!("cannot read {}", path.display()), error))
            };
            CertificateAuthority::from_pem(&read(&cert_path)?, &read(&key_path)?)
                .map_err(|error| failed("the fleet CA of the state folder", error))?
        } else {
            let authority = CertificateAuthority::generate(fleet, Validity::days(CA_DAYS))
                .map_err(|error| failed("cannot make the fleet CA", error))?;
            write(&key_path, authority.key_pem(), true)?;
            write(&cert_path, &authority.cert_pem, false)?;
            authority
        };
        Ok(Self {
            dir,
            fleet: fleet.to_string(),
            authority,
        })
    }

    /// A fresh certificate for member `id` of `role`, as its transport settings.
    pub fn member(&self, role: PeerRole, id: &str) -> Result<TransportSettings, MirrorError> {
        let identity = Identity::new(self.fleet.clone(), role, id);
        let issued = self
            .authority
            .issue(&identity, &local_addresses(), Validity::days(MEMBER_DAYS))
            .map_err(|error| failed(&format!("cannot issue the certificate of {id}"), error))?;
        let cert = self.dir.join(format!("{id}.pem"));
        let key = self.dir.join(format!("{id}-key.pem"));
        write(&key, &issued.key_pem, true)?;
        write(&cert, &issued.cert_pem, false)?;
        Ok(TransportSettings {
            tls_cert: Some(cert),
            tls_key: Some(key),
            tls_ca: Some(self.dir.join("ca.pem")),
            insecure: false,
        })
    }
}
