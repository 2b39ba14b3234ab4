//! Bearer tokens of the admin API: an admin creates one for a role (`kmirrorctl
//! token create`), a client sends it as `authorization: Bearer <token>` and is
//! treated as that role, an admin revokes it. Only the token's SHA-256 is stored
//! (`tokens/<name>` in etcd); the token is shown once, when created. A token is
//! 32 random bytes, hex, after the prefix `kmt_` (so that secret scanners and
//! people recognise it).

use std::str::FromStr;

use etcd_client::{Client, GetOptions};
use kmirror_common::schema::{decode, encode, TokenRecord};
use kmirror_common::tls::PeerRole;
use kmirror_common::Keys;
use kmirror_proto::tonic::{Request, Response, Status};
use kmirror_proto::v1::tokens_server::Tokens;
use kmirror_proto::v1::{
    CreateTokenRequest, CreateTokenResponse, ListTokensRequest, ListTokensResponse,
    RevokeTokenRequest, RevokeTokenResponse, TokenInfo,
};
use ring::rand::SecureRandom;

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "kmt_";

/// Lowercase hex SHA-256 of `token`.
pub fn token_hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn new_token() -> Result<String, Status> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Status::internal("no randomness for a token"))?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        bytes
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    ))
}

/// The tokens of a fleet, in etcd.
#[derive(Clone)]
pub struct TokenStore {
    etcd: Client,
    keys: Keys,
}

impl TokenStore {
    pub fn new(etcd: Client, keys: Keys) -> Self {
        Self { etcd, keys }
    }

    async fn all(&self) -> Result<Vec<TokenRecord>, Status> {
        let response = self
            .etcd
            .clone()
            .get(self.keys.tokens(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|error| Status::unavailable(format!("cannot read tokens: {error}")))?;
        Ok(response
            .kvs()
            .iter()
            .filter_map(|entry| decode::<TokenRecord>(entry.key(), entry.value()).ok())
            .collect())
    }

    /// The name and role of a valid token; `None` for an unknown or revoked one.
    /// Read from etcd at every call, so a revocation holds at once.
    pub async fn lookup(&self, token: &str) -> Result<Option<(String, PeerRole)>, Status> {
        let hash = token_hash(token);
        Ok(self
            .all()
            .await?
            .into_iter()
            .find(|record| record.sha256 == hash)
            .and_then(|record| Some((record.name, PeerRole::from_str(&record.role).ok()?))))
    }
}

/// The `kmirror.v1.Tokens` service (admins only: see `authorize.rs`).
pub struct TokenService {
    store: TokenStore,
}

impl TokenService {
    pub fn new(store: TokenStore) -> Self {
        Self { store }
    }
}

fn valid_name(name: &str) -> Result<(), Status> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "invalid token name {name:?}: 1 to 64 of a-z, A-Z, 0-9, '-', '_', '.'"
        )))
    }
}

#[kmirror_proto::tonic::async_trait]
impl Tokens for TokenService {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let created_by = request
            .extensions()
            .get::<crate::authorize::Caller>()
            .map(|caller| caller.0.clone())
            .unwrap_or_default();
        let CreateTokenRequest { name, role } = request.into_inner();
        valid_name(&name)?;
        let role = PeerRole::from_str(&role)
            .ok()
            .filter(|role| !role.is_member())
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "a token's role is admin, operator or viewer, not {role:?}"
                ))
            })?;
        let token = new_token()?;
        let record = TokenRecord {
            name: name.clone(),
            role: role.to_string(),
            sha256: token_hash(&token),
            created_ms: kmirror_common::now_ms(),
            created_by,
        };
        let key = self.store.keys.token(&name);
        // Created only if absent: a name is never silently given a new token.
        let txn = etcd_client::Txn::new()
            .when([etcd_client::Compare::create_revision(
                key.clone(),
                etcd_client::CompareOp::Equal,
                0,
            )])
            .and_then([etcd_client::TxnOp::put(key, encode(&record), None)]);
        let response = self
            .store
            .etcd
            .clone()
            .txn(txn)
            .await
            .map_err(|error| Status::unavailable(format!("cannot store the token: {error}")))?;
        if !response.succeeded() {
            return Err(Status::already_exists(format!(
                "token {name} already exists: revoke it first"
            )));
        }
        Ok(Response::new(CreateTokenResponse { token }))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        let name = request.into_inner().name;
        valid_name(&name)?;
        let response = self
            .store
            .etcd
            .clone()
            .delete(self.store.keys.token(&name), None)
            .await
            .map_err(|error| Status::unavailable(format!("cannot revoke the token: {error}")))?;
        if response.deleted() == 0 {
            return Err(Status::not_found(format!("token {name} not found")));
        }
        Ok(Response::new(RevokeTokenResponse {}))
    }

    async fn list_tokens(
        &self,
        _request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        let tokens = self
            .store
            .all()
            .await?
            .into_iter()
            .map(|record| TokenInfo {
                name: record.name,
                role: record.role,
                created_ms: record.created_ms,
                created_by: record.created_by,
            })
            .collect();
        Ok(Response::new(ListTokensResponse { tokens }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_stored_as_their_hash() {
        let first = new_token().unwrap();
        let second = new_token().unwrap();
        assert!(first.starts_with(TOKEN_PREFIX));
        assert_eq!(first.len(), TOKEN_PREFIX.len() + 64);
        assert_ne!(first, second);
        let hash = token_hash(&first);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&first[TOKEN_PREFIX.len()..]));
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn token_names_are_checked() {
        assert!(valid_name("ci-deploy.1").is_ok());
        for name in ["", "a/b", "a b", &"x".repeat(65)] {
            assert!(valid_name(name).is_err(), "{name}");
        }
    }
}
