//! Certificates for one test's fleet, made in-process with the same code as
//! `kmirrorctl certificates` (`kmirror_common::tls::issue`): a CA per fleet and
//! a certificate per member and client, as PEM files in the fleet's log folder,
//! so every end-to-end test crosses mutual TLS. Tests of refusals issue what a
//! fleet must refuse: another CA's certificates, expired ones, the wrong role.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kmirror_common::tls::issue::{local_addresses, CertificateAuthority, Validity};
use kmirror_common::tls::{Identity, PeerRole};

/// A certificate's files, as the `--tls-*` flags take them.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    /// `--tls-cert C --tls-key K --tls-ca CA`.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
            "--tls-ca".into(),
            self.ca.display().to_string(),
        ]
    }
}

/// A fleet's CA and the folder its certificates are written to.
pub struct TestPki {
    fleet: String,
    dir: PathBuf,
    authority: CertificateAuthority,
}

fn write(path: &Path, text: &str) {
    // Written aside and renamed, as an operator's tooling would: a member
    // polling the files never reads half of one.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", partial.display()));
    std::fs::rename(&partial, path)
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
}

impl TestPki {
    /// A new CA for `fleet`, its files under `dir`.
    pub fn new(fleet: &str, dir: &Path) -> Self {
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", dir.display()));
        let authority =
            CertificateAuthority::generate(fleet, Validity::days(2)).expect("a test CA");
        write(&dir.join("ca.pem"), &authority.cert_pem);
        Self {
            fleet: fleet.to_string(),
            dir: dir.to_path_buf(),
            authority,
        }
    }

    pub fn fleet(&self) -> &str {
        &self.fleet
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues (or issues again, over the same files) the certificate of `id`
    /// in `role`, named `file_stem`, valid for `validity`.
    pub fn issue_with(
        &self,
        role: PeerRole,
        id: &str,
        file_stem: &str,
        validity: Validity,
    ) -> TlsFiles {
        let identity = Identity::new(self.fleet.clone(), role, id);
        let issued = self
            .authority
            .issue(&identity, &local_addresses(), validity)
            .expect("a test certificate");
        let files = TlsFiles {
            cert: self.dir.join(format!("{file_stem}.pem")),
            key: self.dir.join(format!("{file_stem}-key.pem")),
            ca: self.ca_path(),
        };
        // The key first: a member reloading in between sees a pair that does
        // not match and keeps its previous one until the next poll.
        write(&files.key, &issued.key_pem);
        write(&files.cert, &issued.cert_pem);
        files
    }

    /// The certificate of `id` in `role`, valid for a day.
    pub fn issue(&self, role: PeerRole, id: &str) -> TlsFiles {
        self.issue_with(role, id, id, Validity::days(1))
    }

    /// A certificate of `id` that expired a day ago.
    pub fn issue_expired(&self, role: PeerRole, id: &str) -> TlsFiles {
        self.issue_with(
            role,
            id,
            &format!("{id}-expired"),
            Validity::ended(Duration::from_secs(24 * 3600)),
        )
    }

    /// A new CA of the same fleet whose certificates go to the same files
    /// (a CA rotation); `ca.pem` is left as it is: see [`TestPki::trust`].
    pub fn successor(&self) -> TestPki {
        TestPki {
            fleet: self.fleet.clone(),
            dir: self.dir.clone(),
            authority: CertificateAuthority::generate(&self.fleet, Validity::days(2))
                .expect("a test CA"),
        }
    }

    /// Writes `ca.pem` to trust exactly these CAs.
    pub fn trust(&self, authorities: &[&TestPki]) {
        let pem: String = authorities
            .iter()
            .map(|pki| pki.authority.cert_pem.as_str())
            .collect();
        write(&self.ca_path(), &pem);
    }

    /// This CA's certificate alone, in a file of its own (for a client that
    /// must trust nothing else).
    pub fn ca_only_file(&self, name: &str) -> PathBuf {
        let path = self.dir.join(format!("{name}.pem"));
        write(&path, &self.authority.cert_pem);
        path
    }
}
