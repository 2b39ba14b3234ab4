//! Connecting to etcd and the small helpers every service needs on top of the client.
//!
//! Every connection to etcd is built here ([`connect`], [`connect_for_election`]),
//! from [`EtcdSettings`]: endpoints, and the optional [`EtcdSecurity`] (TLS with a
//! client certificate for `https://` endpoints, and an etcd RBAC user whose
//! password comes from a file). etcd's auth tokens expire (`--auth-token-ttl`, or a
//! JWT's `ttl`); the client re-authenticates with the same user when etcd calls a
//! token invalid and retries the call (`with_auto_token_refresh`), and a lease
//! keep-alive stream that breaks is opened again by the lease's keeper under the
//! same lease id, so an expiring token never costs a member its lease.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};

/// How to reach the fleet's etcd.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    /// Fleet name: every key lives under `/kmirror/<fleet>/`.
    pub fleet: String,
    pub security: EtcdSecurity,
}

impl EtcdSettings {
    /// Plaintext, no user: what the local stack and tests without security use.
    pub fn plain(endpoints: Vec<String>, fleet: impl Into<String>) -> Self {
        Self {
            endpoints,
            fleet: fleet.into(),
            security: EtcdSecurity::default(),
        }
    }
}

/// TLS and RBAC settings of the etcd connection (`--etcd-cert`, `--etcd-key`,
/// `--etcd-ca`, `--etcd-user`, `--etcd-password-file`). Holds paths only: the
/// password is read from its file when connecting and never kept here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdSecurity {
    /// The member's client certificate (PEM), presented to etcd.
    pub cert: Option<PathBuf>,
    /// The private key of `cert` (PEM).
    pub key: Option<PathBuf>,
    /// The CA (PEM) that signed etcd's server certificate.
    pub ca: Option<PathBuf>,
    /// The etcd user the member authenticates as.
    pub user: Option<String>,
    /// A file holding the user's password (one line).
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("cannot reach etcd at {endpoints}: {source}")]
    Connect {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    /// A security setting is incomplete, inconsistent, or names a file that
    /// cannot be read. Names the setting, never a secret.
    #[error("{setting}: {reason}")]
    Setting {
        setting: &'static str,
        reason: String,
    },
    /// etcd (or the TLS handshake with it) refused the member's certificate, or
    /// the member could not verify etcd's.
    #[error("etcd at {endpoints} refused the TLS connection ({cause}): check --etcd-cert and --etcd-key (a client certificate signed by the CA etcd trusts) and --etcd-ca (the CA of etcd's server certificate)")]
    Tls { endpoints: String, cause: String },
    /// etcd refused the user or its password.
    #[error("etcd at {endpoints} refused user {user:?}: unknown user or wrong password (check --etcd-user and the file of --etcd-password-file)")]
    Authentication { endpoints: String, user: String },
    /// etcd requires a user and none was given.
    #[error("etcd at {endpoints} requires authentication: give --etcd-user and --etcd-password-file, or a client certificate whose common name is an etcd user")]
    AuthenticationRequired { endpoints: String },
    /// The user may not read the fleet's keys.
    #[error("etcd user {user} has no permission on the fleet's keys {prefix}: grant its role readwrite on that prefix (etcdctl role grant-permission ROLE --prefix=true readwrite {prefix})")]
    PermissionDenied { user: String, prefix: String },
    #[error("etcd request failed: {0}")]
    Request(#[from] etcd_client::Error),
    #[error(transparent)]
    Decode(#[from] crate::schema::DecodeError),
}

/// Connects, failing fast (with the endpoints named) when etcd does not answer,
/// does not accept the member's certificate or user, or the user may not read
/// the fleet's keys.
pub async fn connect(settings: &EtcdSettings) -> Result<Client, EtcdError> {
    let options = base_options().with_timeout(Duration::from_secs(10));
    let mut client = open(settings, options).await?;
    // `connect` is lazy about the first request: make one so a dead etcd is reported now.
    client
        .status()
        .await
        .map_err(|source| classify(settings, source))?;
    check_permission(settings, &mut client).await?;
    Ok(client)
}

/// A client whose requests have no timeout: a campaign waits as long as another
/// member leads.
pub async fn connect_for_election(settings: &EtcdSettings) -> Result<Client, EtcdError> {
    open(settings, base_options()).await
}

fn base_options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
        .with_auto_token_refresh(true)
}

async fn open(settings: &EtcdSettings, options: ConnectOptions) -> Result<Client, EtcdError> {
    let options = secure_options(settings, options)?;
    Client::connect(&settings.endpoints, Some(options))
        .await
        .map_err(|source| classify(settings, source))
}

/// A read of the fleet's prefix, so a user without permission on it is told at
/// start rather than at the first write.
async fn check_permission(settings: &EtcdSettings, client: &mut Client) -> Result<(), EtcdError> {
    let Some(user) = &settings.security.user else {
        return Ok(());
    };
    let prefix = crate::schema::Keys::new(&settings.fleet).root().to_string();
    match client
        .get(
            prefix.as_str(),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if error.to_string().contains("permission denied") => {
            Err(EtcdError::PermissionDenied {
                user: user.clone(),
                prefix,
            })
        }
        Err(error) => Err(classify(settings, error)),
    }
}

/// Adds TLS and the user to `options` as the settings ask, checking they hold together.
fn secure_options(
    settings: &EtcdSettings,
    mut options: ConnectOptions,
) -> Result<ConnectOptions, EtcdError> {
    let security = &settings.security;
    let https = settings
        .endpoints
        .iter()
        .any(|endpoint| endpoint.starts_with("https://"));
    let any_tls_setting =
        security.cert.is_some() || security.key.is_some() || security.ca.is_some();
    if any_tls_setting && !https {
        return Err(EtcdError::Setting {
            setting: "--etcd",
            reason: format!(
                "TLS settings (--etcd-cert, --etcd-key, --etcd-ca) are given but the endpoints {} are not https:// ones",
                settings.endpoints.join(",")
            ),
        });
    }
    if https {
        options = options.with_tls(tls_options(security)?);
    }
    match (&security.user, &security.password_file) {
        (Some(user), Some(password_file)) => {
            let password = read_password(password_file)?;
            options = options.with_user(user.clone(), password);
        }
        (Some(_), None) => {
            return Err(EtcdError::Setting {
                setting: "--etcd-user",
                reason: "needs --etcd-password-file (KMIRROR_ETCD_PASSWORD_FILE), a file holding the user's password".to_string(),
            })
        }
        (None, Some(_)) => {
            return Err(EtcdError::Setting {
                setting: "--etcd-password-file",
                reason: "needs --etcd-user (KMIRROR_ETCD_USER), the user the password belongs to"
                    .to_string(),
            })
        }
        (None, None) => {}
    }
    Ok(options)
}

fn tls_options(security: &EtcdSecurity) -> Result<TlsOptions, EtcdError> {
    let Some(ca) = &security.ca else {
        return Err(EtcdError::Setting {
            setting: "--etcd-ca",
            reason:
                "an https:// etcd endpoint needs the CA (PEM) that signed etcd's server certificate"
                    .to_string(),
        });
    };
    let mut tls =
        TlsOptions::new().ca_certificate(Certificate::from_pem(read_file("--etcd-ca", ca)?));
    match (&security.cert, &security.key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(
                read_file("--etcd-cert", cert)?,
                read_file("--etcd-key", key)?,
            ));
        }
        (Some(_), None) => {
            return Err(EtcdError::Setting {
                setting: "--etcd-key",
                reason: "--etcd-cert needs its private key (PEM)".to_string(),
            })
        }
        (None, Some(_)) => {
            return Err(EtcdError::Setting {
                setting: "--etcd-cert",
                reason: "--etcd-key needs its certificate (PEM)".to_string(),
            })
        }
        (None, None) => {}
    }
    Ok(tls)
}

fn read_file(setting: &'static str, path: &Path) -> Result<Vec<u8>, EtcdError> {
    let bytes = std::fs::read(path).map_err(|error| EtcdError::Setting {
        setting,
        reason: format!("cannot read {}: {error}", path.display()),
    })?;
    if !bytes.windows(11).any(|window| window == b"-----BEGIN ") {
        return Err(EtcdError::Setting {
            setting,
            reason: format!("{} is not a PEM file", path.display()),
        });
    }
    Ok(bytes)
}

/// The password file's first line; the error never quotes the file.
fn read_password(path: &Path) -> Result<String, EtcdError> {
    let text = std::fs::read_to_string(path).map_err(|error| EtcdError::Setting {
        setting: "--etcd-password-file",
        reason: format!("cannot read {}: {error}", path.display()),
    })?;
    let password = text.lines().next().unwrap_or_default().to_string();
    if password.is_empty() {
        return Err(EtcdError::Setting {
            setting: "--etcd-password-file",
            reason: format!("{} is empty", path.display()),
        });
    }
    Ok(password)
}

/// Sorts a failure to connect by its cause, which tonic and rustls bury in the
/// error's sources.
fn classify(settings: &EtcdSettings, source: etcd_client::Error) -> EtcdError {
    let endpoints = settings.endpoints.join(",");
    let chain = error_chain(&source);
    if chain.contains("authentication failed") || chain.contains("user name not found") {
        return EtcdError::Authentication {
            endpoints,
            user: settings.security.user.clone().unwrap_or_default(),
        };
    }
    if chain.contains("user name is empty") {
        return EtcdError::AuthenticationRequired { endpoints };
    }
    const TLS_CAUSES: &[&str] = &[
        "certificate",
        "Certificate",
        "tls",
        "TLS",
        "handshake",
        "UnknownIssuer",
        // A server that rejects the client's certificate under TLS 1.3 often
        // closes the connection before its alert is read.
        "broken pipe",
        "connection reset",
    ];
    if settings
        .endpoints
        .iter()
        .any(|endpoint| endpoint.starts_with("https://"))
        && TLS_CAUSES.iter().any(|cause| chain.contains(cause))
    {
        return EtcdError::Tls {
            endpoints,
            cause: chain,
        };
    }
    EtcdError::Connect { endpoints, source }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source_opt = error.source();
    while let Some(source) = source_opt {
        let message = source.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source_opt = source.source();
    }
    text
}

/// Reads every value under a prefix, decoded, with the revision of the read.
pub async fn get_prefix<T: for<'de> serde::Deserialize<'de>>(
    client: &mut Client,
    prefix: &str,
) -> Result<(Vec<(Vec<u8>, T)>, i64), EtcdError> {
    let response = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = response
        .header()
        .map(|header| header.revision())
        .unwrap_or(0);
    let mut values = Vec::with_capacity(response.kvs().len());
    for kv in response.kvs() {
        let value = crate::schema::decode(kv.key(), kv.value())?;
        values.push((kv.key().to_vec(), value));
    }
    Ok((values, revision))
}
