//! Connecting to etcd and the small helpers every service needs on top of the client.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};

/// How to reach the fleet's etcd.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    /// Fleet name: every key lives under `/kmirror/<fleet>/`.
    pub fleet: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("cannot reach etcd at {endpoints}: {source}")]
    Connect {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd request failed: {0}")]
    Request(#[from] etcd_client::Error),
    #[error(transparent)]
    Decode(#[from] crate::schema::DecodeError),
}

/// Connects, failing fast (with the endpoints named) when etcd does not answer.
pub async fn connect(settings: &EtcdSettings) -> Result<Client, EtcdError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(10))
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
    let connect_error = |source| EtcdError::Connect {
        endpoints: settings.endpoints.join(","),
        source,
    };
    let mut client = Client::connect(&settings.endpoints, Some(options))
        .await
        .map_err(connect_error)?;
    // `connect` is lazy about the first request: make one so a dead etcd is reported now.
    client.status().await.map_err(connect_error)?;
    Ok(client)
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
