//! Cluster secrets at rest: secret client properties (passwords, private keys)
//! are stored in etcd sealed with AES-256-GCM under the fleet's secrets key, a
//! 32-byte key in a file every member reads (`--secrets-key-file`). etcd, its
//! snapshots and its data files only ever hold the sealed form.
//!
//! Why a fleet key rather than references resolved on each member (Kafka's
//! config providers): a credential changed with `kmirrorctl cluster add
//! --replace` reaches every member through etcd at once, so a flow stopped by a
//! wrong password resumes by itself once it is fixed; with references the new
//! secret would have to be copied to every machine first. The key is the one
//! file to distribute, and etcd (or a backup of it) alone reveals nothing.
//!
//! A sealed value is text, so it lives in [`ClusterSpec::properties`] beside the
//! clear ones:
//!
//! ```text
//! kmirror-sealed:v1:<key id, 16 hex>:<hex of nonce (12 bytes) | ciphertext | tag (16 bytes)>
//! ```
//!
//! The key id (the first 8 bytes of the key's SHA-256) tells a value sealed
//! under another key from a tampered one. The associated data binds a value to
//! its cluster and property, so a sealed value copied to another property or
//! cluster does not open.
//!
//! The coordinator seals on store ([`seal_properties`]); every Kafka client is
//! built through [`crate::kafka::client_config`], which opens sealed values with
//! the key this process installed ([`install`]). The key is process-wide, like
//! the telemetry set-up: `kmirror mirror` runs every role in one process with
//! one key, and every client builder reaches it without carrying it around.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::kafka::is_secret_property;
use crate::types::ClusterName;

/// What a sealed value starts with.
pub const SEALED_PREFIX: &str = "kmirror-sealed:v1:";

const KEY_BYTES: usize = 32;
const KEY_ID_BYTES: usize = 8;
const TAG_BYTES: usize = 16;

/// Why a secret could not be sealed or opened. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read the secrets key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("the secrets key file {path} must hold 64 hexadecimal characters (32 bytes; make one with: openssl rand -hex 32 > {path})")]
    KeyFormat { path: PathBuf },
    #[error("cluster {cluster}: property {property} is a secret and this member has no secrets key to {action} it: start every member with --secrets-key-file (KMIRROR_SECRETS_KEY_FILE) pointing at the fleet's key")]
    NoKey {
        cluster: String,
        property: String,
        action: &'static str,
    },
    #[error("cluster {cluster}: property {property} was sealed under another secrets key (key id {sealed_with}, this member has {have}): give every member the same --secrets-key-file, or store the secret again with kmirrorctl cluster add --replace")]
    WrongKey {
        cluster: String,
        property: String,
        sealed_with: String,
        have: String,
    },
    #[error("cluster {cluster}: the sealed value of property {property} does not open (it was altered, or moved from another property): store the secret again with kmirrorctl cluster add --replace")]
    Tampered { cluster: String, property: String },
    #[error("cluster {cluster}: the sealed value of property {property} is malformed")]
    Malformed { cluster: String, property: String },
    #[error("cannot draw random bytes for a secret")]
    Random,
}

/// The fleet's secrets key. Its `Debug` shows only the key id.
pub struct SecretsKey {
    key: LessSafeKey,
    id: String,
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SecretsKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SecretsKey {
    pub fn from_bytes(bytes: &[u8; KEY_BYTES]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        Self {
            key: LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte key fits AES-256-GCM"),
            ),
            id: hex(&digest.as_ref()[..KEY_ID_BYTES]),
        }
    }

    /// A new random key (for a run of `kmirror mirror`, or a key file).
    pub fn generate() -> Result<([u8; KEY_BYTES], Self), SecretsError> {
        let mut bytes = [0u8; KEY_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SecretsError::Random)?;
        let key = Self::from_bytes(&bytes);
        Ok((bytes, key))
    }

    /// Reads a key file: 64 hexadecimal characters, surrounding whitespace ignored.
    pub fn load(path: &Path) -> Result<Self, SecretsError> {
        let text = std::fs::read_to_string(path).map_err(|error| SecretsError::KeyFile {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
        let format_error = || SecretsError::KeyFormat {
            path: path.to_path_buf(),
        };
        let decoded = unhex(text.trim()).ok_or_else(format_error)?;
        let bytes: [u8; KEY_BYTES] = decoded.try_into().map_err(|_| format_error())?;
        Ok(Self::from_bytes(&bytes))
    }

    /// Writes a new random key to `path` (readable by its owner only) unless
    /// the file exists; returns the key in the file either way.
    pub fn create_if_missing(path: &Path) -> Result<Self, SecretsError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let (bytes, _) = Self::generate()?;
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut file| writeln!(file, "{}", hex(&bytes)));
        match written {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(SecretsError::KeyFile {
                    path: path.to_path_buf(),
                    reason: error.to_string(),
                })
            }
        }
        Self::load(path)
    }

    /// The key's id (not secret: the first bytes of its SHA-256).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn seal(
        &self,
        cluster: &ClusterName,
        property: &str,
        value: &str,
    ) -> Result<String, SecretsError> {
        let mut nonce_bytes = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce_bytes)
            .map_err(|_| SecretsError::Random)?;
        let mut sealed = value.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(associated_data(cluster, property)),
                &mut sealed,
            )
            .map_err(|_| SecretsError::Random)?;
        let mut body = nonce_bytes.to_vec();
        body.extend_from_slice(&sealed);
        Ok(format!("{SEALED_PREFIX}{}:{}", self.id, hex(&body)))
    }

    pub fn open(
        &self,
        cluster: &ClusterName,
        property: &str,
        sealed: &str,
    ) -> Result<String, SecretsError> {
        let malformed = || SecretsError::Malformed {
            cluster: cluster.to_string(),
            property: property.to_string(),
        };
        let rest = sealed.strip_prefix(SEALED_PREFIX).ok_or_else(malformed)?;
        let (key_id, body) = rest.split_once(':').ok_or_else(malformed)?;
        if key_id != self.id {
            return Err(SecretsError::WrongKey {
                cluster: cluster.to_string(),
                property: property.to_string(),
                sealed_with: key_id.to_string(),
                have: self.id.clone(),
            });
        }
        let body = unhex(body).ok_or_else(malformed)?;
        if body.len() < NONCE_LEN + TAG_BYTES {
            return Err(malformed());
        }
        let (nonce_bytes, ciphertext) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce_bytes).map_err(|_| malformed())?;
        let mut in_out = ciphertext.to_vec();
        let opened = self
            .key
            .open_in_place(
                nonce,
                Aad::from(associated_data(cluster, property)),
                &mut in_out,
            )
            .map_err(|_| SecretsError::Tampered {
                cluster: cluster.to_string(),
                property: property.to_string(),
            })?;
        String::from_utf8(opened.to_vec()).map_err(|_| malformed())
    }
}

fn associated_data(cluster: &ClusterName, property: &str) -> Vec<u8> {
    format!("kmirror cluster secret\0{cluster}\0{property}").into_bytes()
}

pub fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_PREFIX)
}

static INSTALLED: RwLock<Option<Arc<SecretsKey>>> = RwLock::new(None);

/// Makes `key` the key this process seals and opens cluster secrets with.
pub fn install(key: SecretsKey) {
    *INSTALLED.write().expect("secrets key lock") = Some(Arc::new(key));
}

/// The key this process installed, if any.
pub fn installed() -> Option<Arc<SecretsKey>> {
    INSTALLED.read().expect("secrets key lock").clone()
}

/// Reads the key file (when one is configured) and installs its key.
pub fn install_from_file(path_opt: Option<&Path>) -> Result<(), SecretsError> {
    if let Some(path) = path_opt {
        install(SecretsKey::load(path)?);
    }
    Ok(())
}

/// Seals every secret property (see [`is_secret_property`]) that is not sealed
/// yet, with the installed key; refuses when there is none, so that no secret
/// is ever stored in the clear.
pub fn seal_properties(
    cluster: &ClusterName,
    properties: &mut std::collections::BTreeMap<String, String>,
) -> Result<(), SecretsError> {
    let key_opt = installed();
    for (property, value) in properties.iter_mut() {
        if !is_secret_property(property) || is_sealed(value) {
            continue;
        }
        let key = key_opt.as_ref().ok_or_else(|| SecretsError::NoKey {
            cluster: cluster.to_string(),
            property: property.clone(),
            action: "seal",
        })?;
        *value = key.seal(cluster, property, value)?;
    }
    Ok(())
}

/// A property's value as a client needs it: opened when sealed.
pub fn open_value(
    cluster: &ClusterName,
    property: &str,
    value: &str,
) -> Result<String, SecretsError> {
    if !is_sealed(value) {
        return Ok(value.to_string());
    }
    match installed() {
        Some(key) => key.open(cluster, property, value),
        None => Err(SecretsError::NoKey {
            cluster: cluster.to_string(),
            property: property.to_string(),
            action: "open",
        }),
    }
}

/// Why a secret property given as a value on a member's command line (`flag
/// KEY=VALUE`) is refused, and where it goes instead. Names the key only.
pub fn command_line_refusal(flag: &str, key: &str) -> String {
    format!(
        "{flag} {key}: {key} is a secret, and a command line is readable by every user of this machine (ps, /proc) and kept in shell histories and unit files: store it with the cluster instead, from a file (kmirrorctl cluster add NAME --replace --property {key}=@FILE), where the fleet keeps it sealed"
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|start| u8::from_str_radix(&text[start..start + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str) -> ClusterName {
        ClusterName::new(name.to_string()).unwrap()
    }

    fn key(byte: u8) -> SecretsKey {
        SecretsKey::from_bytes(&[byte; KEY_BYTES])
    }

    #[test]
    fn a_sealed_secret_opens_to_itself_and_shows_nothing_of_it() {
        let key = key(7);
        let sealed = key
            .seal(&cluster("source"), "sasl.password", "hunter2-p\u{e4}ss")
            .unwrap();
        assert!(sealed.starts_with(SEALED_PREFIX), "{sealed}");
        assert!(!sealed.contains("hunter2"), "{sealed}");
        assert_eq!(
            key.open(&cluster("source"), "sasl.password", &sealed)
                .unwrap(),
            "hunter2-p\u{e4}ss"
        );
        // A fresh nonce each time: equal secrets do not look equal.
        let again = key
            .seal(&cluster("source"), "sasl.password", "hunter2-p\u{e4}ss")
            .unwrap();
        assert_ne!(sealed, again);
    }

    #[test]
    fn a_value_sealed_under_another_key_is_refused_with_both_key_ids() {
        let sealed = key(1).seal(&cluster("dest"), "sasl.password", "s").unwrap();
        let error = key(2)
            .open(&cluster("dest"), "sasl.password", &sealed)
            .unwrap_err();
        assert!(
            matches!(&error, SecretsError::WrongKey { sealed_with, have, .. }
                if *sealed_with == key(1).id && *have == key(2).id),
            "{error:?}"
        );
        assert!(error.to_string().contains("cluster dest"), "{error}");
    }

    #[test]
    fn a_tampered_or_moved_value_is_refused() {
        let key = key(3);
        let sealed = key
            .seal(&cluster("dest"), "sasl.password", "secret")
            .unwrap();
        // Flip one hex digit of the ciphertext.
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(matches!(
            key.open(&cluster("dest"), "sasl.password", &tampered),
            Err(SecretsError::Tampered { .. })
        ));
        // The same sealed value under another property or cluster.
        assert!(matches!(
            key.open(&cluster("dest"), "ssl.key.password", &sealed),
            Err(SecretsError::Tampered { .. })
        ));
        assert!(matches!(
            key.open(&cluster("source"), "sasl.password", &sealed),
            Err(SecretsError::Tampered { .. })
        ));
        assert!(matches!(
            key.open(&cluster("dest"), "sasl.password", "kmirror-sealed:v1:zz"),
            Err(SecretsError::Malformed { .. }) | Err(SecretsError::WrongKey { .. })
        ));
    }

    #[test]
    fn a_command_line_refusal_names_the_key_and_the_way_instead() {
        let message = command_line_refusal("--producer-property", "sasl.password");
        assert!(
            message.contains("--producer-property sasl.password"),
            "{message}"
        );
        assert!(
            message.contains("--property sasl.password=@FILE"),
            "{message}"
        );
    }

    #[test]
    fn key_files_are_read_created_once_and_checked() {
        let dir = std::env::temp_dir().join(format!("kmirror-secrets-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secrets.key");
        let created = SecretsKey::create_if_missing(&path).unwrap();
        let again = SecretsKey::create_if_missing(&path).unwrap();
        assert_eq!(created.id(), again.id());
        assert_eq!(SecretsKey::load(&path).unwrap().id(), created.id());
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&path, "not hex\n").unwrap();
        assert!(matches!(
            SecretsKey::load(&path),
            Err(SecretsError::KeyFormat { .. })
        ));
        assert!(matches!(
            SecretsKey::load(&dir.join("missing")),
            Err(SecretsError::KeyFile { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stored_properties_are_sealed_with_the_installed_key_and_opened_for_clients() {
        let source = cluster("source");
        let mut properties = std::collections::BTreeMap::from([
            ("sasl.password".to_string(), "hunter2".to_string()),
            ("sasl.username".to_string(), "kmirror".to_string()),
        ]);
        // Nothing is installed in this test binary but here.
        let error = seal_properties(&source, &mut properties).unwrap_err();
        assert!(matches!(error, SecretsError::NoKey { .. }), "{error:?}");
        assert!(!error.to_string().contains("hunter2"));
        install(key(9));
        seal_properties(&source, &mut properties).unwrap();
        assert_eq!(properties["sasl.username"], "kmirror");
        assert!(is_sealed(&properties["sasl.password"]));
        // Sealing again leaves sealed values as they are.
        let sealed = properties["sasl.password"].clone();
        seal_properties(&source, &mut properties).unwrap();
        assert_eq!(properties["sasl.password"], sealed);
        assert_eq!(
            open_value(&source, "sasl.password", &sealed).unwrap(),
            "hunter2"
        );
        assert_eq!(
            open_value(&source, "sasl.username", "kmirror").unwrap(),
            "kmirror"
        );
        assert!(!format!("{:?}", installed().unwrap()).contains("0909090909"));
    }
}
