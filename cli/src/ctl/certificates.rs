//! `kmirrorctl certificates` and `kmirrorctl context`: making a fleet's CA and
//! the certificates it issues to members and people (see
//! `kmirror_common::tls::issue`), and writing kmirrorctl's contexts. Neither
//! talks to a coordinator.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use kmirror_common::tls::issue::{CertificateAuthority, Validity};
use kmirror_common::tls::{Identity, PeerRole};

use super::connection::{ClientConfig, ConnectionArgs, Context, Coordinators};
use super::failure::Failure;

#[derive(Debug, Subcommand)]
pub enum CertificatesCommand {
    /// Create a fleet CA: DIR/ca.pem (give it to every member and client as
    /// --tls-ca) and DIR/ca-key.pem (keep it offline: it issues identities).
    #[command(after_help = "Examples:\n  \
        kmirrorctl certificates ca --fleet prod --dir /etc/kmirror/ca\n\n\
Each member and client then gets a certificate of its own from `kmirrorctl certificates issue`.\n\
Rotating the CA: issue a new CA, give members a CA file holding both certificates (old and new,\n\
concatenated), reissue every certificate from the new CA, then drop the old CA from the files.\n\
Members reload their files within seconds; no restart is needed.")]
    Ca {
        /// The fleet the CA is for (`--fleet` of the members).
        #[arg(long, default_value = "local")]
        fleet: String,
        /// Folder to write ca.pem and ca-key.pem into.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// How long the CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Replace a CA already in DIR (every certificate it issued must then be issued again).
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate naming an identity (spiffe://kmirror/<fleet>/<role>/<id>):
    /// writes DIR/NAME.pem and DIR/NAME-key.pem.
    #[command(
        after_help = "Roles: coordinator, fetcher, writer (members: the id is the member's \
--id), and admin, operator, viewer (people and scripts using kmirrorctl: the id names who).\n\n\
Examples:\n  \
        kmirrorctl certificates issue --ca-dir /etc/kmirror/ca --fleet prod --role writer --id writer-a --address writer-a.internal\n  \
        kmirrorctl certificates issue --ca-dir /etc/kmirror/ca --fleet prod --role operator --id alice\n\n\
A member is started with --tls-cert DIR/NAME.pem --tls-key DIR/NAME-key.pem --tls-ca ca.pem.\n\
Rotating a certificate: issue a new one and write it over the old files (key first, then the\n\
certificate); the member uses it for new connections within seconds, without a restart."
    )]
    Issue {
        /// Folder holding the CA's ca.pem and ca-key.pem.
        #[arg(long, default_value = ".")]
        ca_dir: PathBuf,
        /// The fleet of the identity.
        #[arg(long, default_value = "local")]
        fleet: String,
        /// coordinator, fetcher, writer, admin, operator or viewer.
        #[arg(long)]
        role: String,
        /// The member id (members) or the holder's name (clients).
        #[arg(long)]
        id: String,
        /// DNS names or IP addresses the holder is reached at (repeatable)
        /// [default: localhost and 127.0.0.1 for members].
        #[arg(long = "address")]
        addresses: Vec<String>,
        /// How long the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Folder to write the certificate and key into [default: the CA folder].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// File name stem [default: the id].
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// Create or update a context in kmirrorctl's config file (with the
    /// global --coordinator, --tls-cert, --tls-key, --tls-ca, --insecure).
    #[command(after_help = "Examples:\n  \
        kmirrorctl --coordinator 10.0.0.5:7070 --tls-ca ca.pem --tls-cert alice.pem --tls-key alice-key.pem context set prod --use\n  \
        kmirrorctl context use prod\n  \
        kmirrorctl --context lab status")]
    Set {
        name: String,
        /// Make it the current context.
        #[arg(long = "use")]
        use_it: bool,
    },
    /// Make a context the current one.
    #[command(after_help = "Examples:\n  \
        kmirrorctl context use prod")]
    Use { name: String },
    /// List the contexts (the current one marked with *).
    #[command(after_help = "Examples:\n  \
        kmirrorctl context list")]
    List,
}

fn write_file(path: &Path, text: &str, private: bool) -> Result<(), Failure> {
    let failure = |error: std::io::Error| Failure {
        what: format!("cannot write {}", path.display()),
        cause: error.to_string(),
    };
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).map_err(failure)?;
    }
    // Written aside and renamed: a member reloading its files never reads a
    // half-written one.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text).map_err(failure)?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))
            .map_err(failure)?;
    }
    std::fs::rename(&partial, path).map_err(failure)
}

fn read_file(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|error| Failure {
        what: format!("cannot read {}", path.display()),
        cause: error.to_string(),
    })
}

fn issue_failure(error: kmirror_common::tls::issue::IssueError) -> Failure {
    Failure {
        what: "cannot make the certificate".to_string(),
        cause: error.to_string(),
    }
}

pub fn run_certificates(command: CertificatesCommand) -> Result<String, Failure> {
    match command {
        CertificatesCommand::Ca {
            fleet,
            dir,
            days,
            force,
        } => {
            let cert_path = dir.join("ca.pem");
            if cert_path.exists() && !force {
                return Err(Failure {
                    what: format!("{} exists", cert_path.display()),
                    cause: "give --force to replace the CA (then issue every certificate again)"
                        .to_string(),
                });
            }
            let authority = CertificateAuthority::generate(&fleet, Validity::days(days))
                .map_err(issue_failure)?;
            write_file(&dir.join("ca-key.pem"), authority.key_pem(), true)?;
            write_file(&cert_path, &authority.cert_pem, false)?;
            Ok(format!(
                "CA of fleet {fleet} written to {} (and its key to {})\n",
                cert_path.display(),
                dir.join("ca-key.pem").display()
            ))
        }
        CertificatesCommand::Issue {
            ca_dir,
            fleet,
            role,
            id,
            addresses,
            days,
            dir,
            name,
        } => {
            let role: PeerRole =
                role.parse()
                    .map_err(|error: kmirror_common::tls::IdentityError| Failure {
                        what: "invalid --role".to_string(),
                        cause: error.to_string(),
                    })?;
            let identity = Identity::new(fleet, role, id.clone());
            if id.is_empty() || id.contains('/') {
                return Err(Failure {
                    what: "invalid --id".to_string(),
                    cause: "an id is not empty and holds no '/'".to_string(),
                });
            }
            let authority = CertificateAuthority::from_pem(
                &read_file(&ca_dir.join("ca.pem"))?,
                &read_file(&ca_dir.join("ca-key.pem"))?,
            )
            .map_err(issue_failure)?;
            let addresses = if addresses.is_empty() && role.is_member() {
                kmirror_common::tls::issue::local_addresses()
            } else {
                addresses
            };
            let issued = authority
                .issue(&identity, &addresses, Validity::days(days))
                .map_err(issue_failure)?;
            let dir = dir.unwrap_or(ca_dir);
            let stem = name.unwrap_or(id);
            let cert_path = dir.join(format!("{stem}.pem"));
            let key_path = dir.join(format!("{stem}-key.pem"));
            // The key first: a member that reloads between the two writes
            // finds a certificate that does not match its key and keeps the
            // old pair until the next poll.
            write_file(&key_path, &issued.key_pem, true)?;
            write_file(&cert_path, &issued.cert_pem, false)?;
            Ok(format!(
                "certificate of {identity} written to {} (key {})\n",
                cert_path.display(),
                key_path.display()
            ))
        }
    }
}

pub fn run_context(
    command: ContextCommand,
    connection: &ConnectionArgs,
) -> Result<String, Failure> {
    let path = connection.config_path().ok_or_else(|| Failure {
        what: "no kmirrorctl config file".to_string(),
        cause: "set HOME, KMIRRORCTL_CONFIG or --kmirrorctl-config".to_string(),
    })?;
    let mut config = ClientConfig::read(&path)?;
    let absolute = |file: &Option<PathBuf>| {
        file.as_ref()
            .map(|file| std::path::absolute(file).unwrap_or_else(|_| file.clone()))
    };
    match command {
        ContextCommand::Set { name, use_it } => {
            let context = Context {
                coordinator: connection.coordinator.clone().map(Coordinators::One),
                ca: absolute(&connection.tls_ca),
                cert: absolute(&connection.tls_cert),
                key: absolute(&connection.tls_key),
                insecure: connection.insecure,
                token_file: absolute(&connection.token_file),
            };
            config.contexts.insert(name.clone(), context);
            if use_it || config.current_context.is_none() {
                config.current_context = Some(name.clone());
            }
            config.write(&path)?;
            Ok(format!("context {name} written to {}\n", path.display()))
        }
        ContextCommand::Use { name } => {
            if !config.contexts.contains_key(&name) {
                return Err(Failure {
                    what: format!("no context {name:?}"),
                    cause: format!(
                        "{} has: {}",
                        path.display(),
                        config
                            .contexts
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            config.current_context = Some(name.clone());
            config.write(&path)?;
            Ok(format!("current context: {name}\n"))
        }
        ContextCommand::List => Ok(config
            .contexts
            .keys()
            .map(|name| {
                let mark = if config.current_context.as_deref() == Some(name.as_str()) {
                    "*"
                } else {
                    " "
                };
                format!("{mark} {name}\n")
            })
            .collect()),
    }
}
