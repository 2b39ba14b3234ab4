//! etcd for tests: a client of the local stack's etcd, and removing what a test
//! left under its fleet's prefix.

use etcd_client::{Client, DeleteOptions};
use kmirror_common::Keys;

use crate::local_stack::etcd_endpoint;

/// A client of the local stack's etcd; panics naming the endpoint when it does
/// not answer.
pub async fn connect() -> Client {
    let endpoint = etcd_endpoint();
    Client::connect([endpoint.as_str()], None)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "etcd of the local stack (deploy/local/stack up) must run at {endpoint}: {error}"
            )
        })
}

/// Deletes everything a test left under its fleet's prefix; failures are ignored
/// (the next run uses other names anyway).
pub async fn forget_fleet(client: &mut Client, fleet: &str) {
    let _ = client
        .delete(
            Keys::new(fleet).root(),
            Some(DeleteOptions::new().with_prefix()),
        )
        .await;
}
