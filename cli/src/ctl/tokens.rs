//! `kmirrorctl token`: bearer tokens of the admin API (create, revoke, list;
//! admins only), and [`BearerToken`], which sends kmirrorctl's own token, if
//! any, with every call. A new token is written to a file (mode 0600), never
//! printed: it is a secret.

use std::path::PathBuf;

use clap::Subcommand;
use kmirror_proto::tonic::metadata::{Ascii, MetadataValue};
use kmirror_proto::tonic::service::Interceptor;
use kmirror_proto::tonic::{Request, Status};
use kmirror_proto::v1::tokens_client::TokensClient;
use kmirror_proto::v1::{CreateTokenRequest, ListTokensRequest, RevokeTokenRequest};
use serde::Serialize;

use super::connection::Token;
use super::failure::Failure;
use super::Ctl;
use crate::output::{render, render_table};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for a role and write it to a file (mode 0600).
    #[command(
        after_help = "The token is written to --out and shown nowhere else; only its \
hash is stored. Give the file to the script, which runs kmirrorctl --token-file FILE \
--tls-ca ca.pem (no client certificate needed).\n\n\
Examples:\n  \
        kmirrorctl token create ci-deploy --role operator --out ci-deploy.token"
    )]
    Create {
        name: String,
        /// admin, operator or viewer.
        #[arg(long)]
        role: String,
        /// File to write the token to (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Revoke a token: calls with it are refused from now on.
    #[command(after_help = "Examples:\n  \
        kmirrorctl token revoke ci-deploy")]
    Revoke { name: String },
    /// List the tokens (names and roles, never the tokens).
    #[command(after_help = "Examples:\n  \
        kmirrorctl token list -o json")]
    List,
}

/// Adds `authorization: Bearer <token>` to every call when kmirrorctl has a token.
#[derive(Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    pub fn new(token_opt: Option<&Token>) -> Result<Self, Failure> {
        match token_opt {
            None => Ok(Self(None)),
            Some(token) => {
                let mut value: MetadataValue<Ascii> =
                    format!("Bearer {}", token.0).parse().map_err(|_| Failure {
                        what: "invalid token".to_string(),
                        cause: "a token is printable ASCII".to_string(),
                    })?;
                value.set_sensitive(true);
                Ok(Self(Some(value)))
            }
        }
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[derive(Debug, Serialize)]
struct TokenJson {
    name: String,
    role: String,
    created_ms: i64,
    created_by: String,
}

#[derive(Debug, Serialize)]
struct TokensJson {
    tokens: Vec<TokenJson>,
}

impl Ctl {
    pub(super) async fn token(&self, command: TokenCommand) -> Result<String, Failure> {
        let mut client = TokensClient::with_interceptor(self.channel.clone(), self.bearer.clone());
        match command {
            TokenCommand::Create { name, role, out } => {
                if out.exists() {
                    return Err(Failure {
                        what: format!("{} exists", out.display()),
                        cause: "a token is written to a new file".to_string(),
                    });
                }
                let token = client
                    .create_token(CreateTokenRequest {
                        name: name.clone(),
                        role,
                    })
                    .await
                    .map_err(|status| self.failure(format!("cannot create token {name}"), status))?
                    .into_inner()
                    .token;
                write_secret(&out, &token)?;
                Ok(format!("token {name} written to {}\n", out.display()))
            }
            TokenCommand::Revoke { name } => {
                client
                    .revoke_token(RevokeTokenRequest { name: name.clone() })
                    .await
                    .map_err(|status| {
                        self.failure(format!("cannot revoke token {name}"), status)
                    })?;
                Ok(format!("token {name} revoked\n"))
            }
            TokenCommand::List => {
                let tokens = client
                    .list_tokens(ListTokensRequest {})
                    .await
                    .map_err(|status| self.failure("cannot list tokens", status))?
                    .into_inner()
                    .tokens;
                let value = TokensJson {
                    tokens: tokens
                        .into_iter()
                        .map(|token| TokenJson {
                            name: token.name,
                            role: token.role,
                            created_ms: token.created_ms,
                            created_by: token.created_by,
                        })
                        .collect(),
                };
                Ok(render(self.format, &value, |_| {
                    let rows: Vec<Vec<String>> = value
                        .tokens
                        .iter()
                        .map(|token| {
                            vec![
                                token.name.clone(),
                                token.role.clone(),
                                token.created_by.clone(),
                            ]
                        })
                        .collect();
                    render_table(&["NAME", "ROLE", "CREATED-BY"], &rows)
                }))
            }
        }
    }
}

fn write_secret(path: &std::path::Path, secret: &str) -> Result<(), Failure> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let failure = |error: std::io::Error| Failure {
        what: format!("cannot write {}", path.display()),
        cause: error.to_string(),
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(failure)?;
    writeln!(file, "{secret}").map_err(failure)
}
