//! How kmirrorctl reaches the admin API: coordinator addresses and transport
//! security, from flags, `KMIRROR_*` variables, or a context of its config
//! file (named contexts, as kubeconfig has):
//!
//! ```yaml
//! # ~/.config/kmirror/kmirrorctl.yaml (or $KMIRRORCTL_CONFIG, --kmirrorctl-config)
//! currentContext: local
//! contexts:
//!   local:
//!     coordinator: 127.0.0.1:7070          # several: a list, or comma-separated
//!     ca: /path/to/ca.pem                  # relative paths are from this file's folder
//!     cert: /path/to/admin.pem
//!     key: /path/to/admin-key.pem
//!   lab:
//!     coordinator: 10.0.0.5:7070
//!     insecure: true                       # a fleet run with --insecure
//! ```
//!
//! A flag or variable wins over the context (`--context NAME`, else
//! `currentContext`), which wins over the defaults. Without TLS files from
//! either, kmirrorctl connects only when told `--insecure`, as members do.
//! `kmirrorctl context set` writes contexts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use kmirror_common::tls::{TlsFiles, TlsPaths, Transport};
use serde::{Deserialize, Serialize};

use super::failure::Failure;

/// The coordinator dialled when nothing names one.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7070";
/// Environment variable naming kmirrorctl's config file.
pub const CONFIG_ENV: &str = "KMIRRORCTL_CONFIG";

/// kmirrorctl's global connection flags.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnectionArgs {
    /// Address of a coordinator's admin API (HOST:PORT); several,
    /// comma-separated, are tried in order until one answers
    /// [default: the context's, else 127.0.0.1:7070].
    #[arg(long, global = true, env = "KMIRROR_COORDINATOR")]
    pub coordinator: Option<String>,

    /// The context of kmirrorctl's config file to use [default: its currentContext].
    #[arg(
        long,
        global = true,
        env = "KMIRROR_CONTEXT",
        help_heading = "Connection"
    )]
    pub context: Option<String>,

    /// kmirrorctl's config file (contexts) [default: ~/.config/kmirror/kmirrorctl.yaml].
    #[arg(long, global = true, env = CONFIG_ENV, value_name = "FILE", help_heading = "Connection")]
    pub kmirrorctl_config: Option<PathBuf>,

    /// Client certificate (PEM) of an admin, operator or viewer identity
    /// (`kmirrorctl certificates issue --role admin`).
    #[arg(
        long,
        global = true,
        env = "KMIRROR_TLS_CERT",
        value_name = "FILE",
        help_heading = "Connection"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(
        long,
        global = true,
        env = "KMIRROR_TLS_KEY",
        value_name = "FILE",
        help_heading = "Connection"
    )]
    pub tls_key: Option<PathBuf>,

    /// The fleet CA's certificate (PEM): the coordinator must present one it signed.
    #[arg(
        long,
        global = true,
        env = "KMIRROR_TLS_CA",
        value_name = "FILE",
        help_heading = "Connection"
    )]
    pub tls_ca: Option<PathBuf>,

    /// Connect without TLS, to a fleet run with --insecure.
    #[arg(
        long,
        global = true,
        env = "KMIRROR_INSECURE",
        help_heading = "Connection"
    )]
    pub insecure: bool,

    /// File holding a bearer token of the admin API (`kmirrorctl token
    /// create`): the calls are made as its role. With --tls-ca alone, no client
    /// certificate is needed. A token is never taken on the command line.
    #[arg(
        long,
        global = true,
        env = "KMIRROR_TOKEN_FILE",
        value_name = "FILE",
        help_heading = "Connection"
    )]
    pub token_file: Option<PathBuf>,
}

/// kmirrorctl's config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClientConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    pub contexts: BTreeMap<String, Context>,
}

/// Where one fleet's admin API is and how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Context {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<Coordinators>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// A file holding a bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

/// One address (possibly comma-separated) or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Coordinators {
    One(String),
    Several(Vec<String>),
}

impl Coordinators {
    fn joined(&self) -> String {
        match self {
            Coordinators::One(address) => address.clone(),
            Coordinators::Several(addresses) => addresses.join(","),
        }
    }
}

/// What kmirrorctl connects with.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Comma-separated, tried in order.
    pub coordinators: String,
    pub transport: Transport,
    /// A bearer token sent with every call.
    pub token_opt: Option<Token>,
}

/// A bearer token; shown as `<redacted>`.
#[derive(Clone)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Token(<redacted>)")
    }
}

/// `$KMIRRORCTL_CONFIG` is read by clap; this is the default beside it.
pub fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|path| path.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("kmirror").join("kmirrorctl.yaml"))
}

impl ClientConfig {
    /// Reads the file at `path`; a missing file is an empty config.
    pub fn read(path: &Path) -> Result<Self, Failure> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default())
            }
            Err(error) => {
                return Err(Failure {
                    what: format!("cannot read {}", path.display()),
                    cause: error.to_string(),
                })
            }
        };
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut config: Self = serde_saphyr::from_str(&text).map_err(|error| Failure {
            what: format!("invalid kmirrorctl config {}", path.display()),
            cause: error.to_string(),
        })?;
        // Relative paths are relative to the file, not to where kmirrorctl runs.
        let folder = path.parent().unwrap_or(Path::new("."));
        for context in config.contexts.values_mut() {
            for file in [
                &mut context.ca,
                &mut context.cert,
                &mut context.key,
                &mut context.token_file,
            ]
            .into_iter()
            .flatten()
            {
                if file.is_relative() {
                    *file = folder.join(&*file);
                }
            }
        }
        Ok(config)
    }

    pub fn write(&self, path: &Path) -> Result<(), Failure> {
        let failure = |cause: String| Failure {
            what: format!("cannot write {}", path.display()),
            cause,
        };
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(|error| failure(error.to_string()))?;
        }
        let text = serde_saphyr::to_string(self).map_err(|error| failure(error.to_string()))?;
        std::fs::write(path, text).map_err(|error| failure(error.to_string()))
    }
}

impl ConnectionArgs {
    /// The config file these arguments name, or the default one.
    pub fn config_path(&self) -> Option<PathBuf> {
        self.kmirrorctl_config.clone().or_else(default_config_path)
    }

    /// Resolves the connection: flags and variables over the context over
    /// the defaults.
    pub fn resolve(&self) -> Result<Connection, Failure> {
        let config = match self.config_path() {
            Some(path) => ClientConfig::read(&path)?,
            None => ClientConfig::default(),
        };
        let context_name_opt = self.context.clone().or(config.current_context.clone());
        let context = match &context_name_opt {
            None => Context::default(),
            Some(name) => match config.contexts.get(name) {
                Some(context) => context.clone(),
                None => {
                    return Err(Failure {
                        what: format!("no context {name:?}"),
                        cause: format!(
                            "{} has the contexts: {}",
                            self.config_path().map_or_else(
                                || "the config".to_string(),
                                |path| path.display().to_string()
                            ),
                            config
                                .contexts
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    })
                }
            },
        };
        let coordinators = self
            .coordinator
            .clone()
            .or_else(|| context.coordinator.as_ref().map(Coordinators::joined))
            .unwrap_or_else(|| DEFAULT_COORDINATOR.to_string());
        let flags_tls = [&self.tls_cert, &self.tls_key, &self.tls_ca]
            .iter()
            .any(|path| path.is_some());
        let (cert, key, ca) = if flags_tls {
            (
                self.tls_cert.clone(),
                self.tls_key.clone(),
                self.tls_ca.clone(),
            )
        } else {
            (
                context.cert.clone(),
                context.key.clone(),
                context.ca.clone(),
            )
        };
        let insecure = self.insecure || (!flags_tls && context.insecure);
        let token_file_opt = self.token_file.clone().or(context.token_file.clone());
        let token_opt = match &token_file_opt {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| Failure {
                    what: format!("cannot read the token file {}", path.display()),
                    cause: error.to_string(),
                })?;
                Some(Token(text.trim().to_string()))
            }
        };
        let transport = match (cert, key, ca, insecure) {
            (_, _, _, true) => Transport::Insecure,
            (None, None, Some(ca), false) if token_opt.is_some() => {
                let files = TlsFiles::load_ca_only(ca).map_err(|error| Failure {
                    what: "cannot load the TLS files".to_string(),
                    cause: error.to_string(),
                })?;
                Transport::Tls(files)
            }
            (Some(cert), Some(key), Some(ca), false) => {
                let files = TlsFiles::load(TlsPaths { cert, key, ca }, None, &[]).map_err(|error| Failure {
                    what: "cannot load the TLS files".to_string(),
                    cause: error.to_string(),
                })?;
                Transport::Tls(files)
            }
            (None, None, None, false) => {
                return Err(Failure {
                    what: "no TLS settings to reach the coordinator".to_string(),
                    cause: "give --tls-cert, --tls-key and --tls-ca, or a context with them in \
                            kmirrorctl's config file (--context, ~/.config/kmirror/kmirrorctl.yaml; \
                            deploy/local/fleet writes one), or --insecure for a fleet run without TLS"
                        .to_string(),
                })
            }
            _ => {
                return Err(Failure {
                    what: "incomplete TLS settings".to_string(),
                    cause: "--tls-cert, --tls-key and --tls-ca go together (a context's cert, key and ca too)"
                        .to_string(),
                })
            }
        };
        Ok(Connection {
            coordinators,
            transport,
            token_opt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_file(text: &str) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.path.join("kmirrorctl.yaml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    mod tempdir {
        pub struct Dir {
            pub path: std::path::PathBuf,
        }
        impl Dir {
            pub fn new() -> Self {
                static NEXT: std::sync::atomic::AtomicUsize =
                    std::sync::atomic::AtomicUsize::new(0);
                let path = std::env::temp_dir().join(format!(
                    "kmirrorctl-test-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Self { path }
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    #[test]
    fn the_current_context_names_the_coordinator_and_flags_win() {
        let (_dir, path) = config_file(
            "currentContext: lab\ncontexts:\n  lab:\n    coordinator: [10.0.0.5:7070, 10.0.0.6:7070]\n    insecure: true\n  prod:\n    coordinator: 10.1.0.5:7070\n    insecure: true\n",
        );
        let args = ConnectionArgs {
            kmirrorctl_config: Some(path.clone()),
            ..Default::default()
        };
        let connection = args.resolve().unwrap();
        assert_eq!(connection.coordinators, "10.0.0.5:7070,10.0.0.6:7070");
        assert!(!connection.transport.is_tls());

        let args = ConnectionArgs {
            kmirrorctl_config: Some(path.clone()),
            context: Some("prod".to_string()),
            ..Default::default()
        };
        assert_eq!(args.resolve().unwrap().coordinators, "10.1.0.5:7070");

        let args = ConnectionArgs {
            kmirrorctl_config: Some(path),
            coordinator: Some("127.0.0.1:1".to_string()),
            ..Default::default()
        };
        assert_eq!(args.resolve().unwrap().coordinators, "127.0.0.1:1");
    }

    #[test]
    fn without_tls_settings_or_insecure_kmirrorctl_says_what_to_give() {
        let (_dir, path) = config_file("");
        let args = ConnectionArgs {
            kmirrorctl_config: Some(path.clone()),
            ..Default::default()
        };
        let failure = args.resolve().unwrap_err();
        assert!(failure.cause.contains("--tls-cert"), "{failure}");
        assert!(failure.cause.contains("--insecure"), "{failure}");

        let args = ConnectionArgs {
            kmirrorctl_config: Some(path),
            context: Some("missing".to_string()),
            ..Default::default()
        };
        assert_eq!(args.resolve().unwrap_err().what, "no context \"missing\"");
    }

    #[test]
    fn a_context_round_trips_and_its_relative_paths_are_from_the_file() {
        let (dir, path) = config_file("");
        let mut config = ClientConfig {
            current_context: Some("local".to_string()),
            ..ClientConfig::default()
        };
        config.contexts.insert(
            "local".to_string(),
            Context {
                coordinator: Some(Coordinators::One("127.0.0.1:7070".to_string())),
                ca: Some(PathBuf::from("tls/ca.pem")),
                cert: Some(PathBuf::from("/abs/admin.pem")),
                key: None,
                insecure: false,
                token_file: None,
            },
        );
        config.write(&path).unwrap();
        let read = ClientConfig::read(&path).unwrap();
        let local = &read.contexts["local"];
        assert_eq!(local.ca, Some(dir.path.join("tls/ca.pem")));
        assert_eq!(local.cert, Some(PathBuf::from("/abs/admin.pem")));
        assert_eq!(read.current_context.as_deref(), Some("local"));
    }
}
