//! Health: every member serves the gRPC health protocol and HTTP `/healthz` and
//! `/readyz`. When etcd stops, members lose their leases and report NOT_SERVING
//! and 503 (while `/healthz` stays 200 and the processes keep running); when etcd
//! returns they register again and report SERVING and 200.
//!
//! The test runs its own etcd, so stopping it disturbs no other test.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use kmirror_common::health::LEADER_HEALTH_SERVICE;
use kmirror_common::schema::MemberInfo;
use kmirror_common::tls::Transport;
use kmirror_common::Role;
use kmirror_proto::tonic_health::pb::health_check_response::ServingStatus;
use kmirror_tests::observability::{
    grpc_health, http_get, members, metrics_url, scrape, sum, PrivateEtcd,
};
use kmirror_tests::{stack, unique_name, Fleet, FleetOptions};

#[tokio::test(flavor = "multi_thread")]
async fn members_are_not_ready_without_their_lease_and_ready_again_when_etcd_returns() -> Result<()>
{
    let log_dir = stack().logs_dir.join(unique_name("health-etcd"));
    let etcd = PrivateEtcd::start("health-etcd", &log_dir).await?;
    let fleet = Fleet::start(FleetOptions {
        fetchers: 1,
        writers: 1,
        lease_ttl: Duration::from_secs(3),
        etcd_endpoint: Some(etcd.endpoint.clone()),
        ..FleetOptions::new("health")
    })
    .await;
    let members = members(&fleet).await?;
    assert_eq!(members.len(), 3, "{members:?}");

    wait_for_health(&fleet, &members, true, "every member to be ready").await;

    etcd.stop();
    wait_for_health(
        &fleet,
        &members,
        false,
        "every member to be not ready without etcd",
    )
    .await;
    for member in members.values() {
        let (status, _) = http_get(metrics_url(member)?, "/healthz").await?;
        assert_eq!(status, 200, "{} is alive", member.id);
    }

    etcd.resume().await?;
    wait_for_health(
        &fleet,
        &members,
        true,
        "every member to be ready again after etcd returned",
    )
    .await;
    for member in members.values() {
        let scraped = scrape(metrics_url(member)?).await?;
        assert!(
            sum(&scraped, "kmirror_leases_lost_total", &[]) >= 1.0,
            "{} counted its lost lease",
            member.id
        );
        assert!(sum(&scraped, "kmirror_registrations_total", &[]) >= 2.0);
    }
    Ok(())
}

/// Waits until every member's `/readyz` and gRPC health say `ready` (or not).
async fn wait_for_health(
    fleet: &Fleet,
    members: &BTreeMap<String, MemberInfo>,
    ready: bool,
    what: &str,
) {
    let transport = fleet.client_transport();
    let transport = &transport;
    fleet
        .wait_until(Duration::from_secs(60), what, || async move {
            let mut states = Vec::new();
            let mut all = true;
            for member in members.values() {
                let (matches, state) = member_health(transport, member, ready)
                    .await
                    .unwrap_or_else(|error| (false, format!("{error:#}")));
                all &= matches;
                states.push(format!("{}: {state}", member.id));
            }
            if all {
                Ok(())
            } else {
                Err(states.join("; "))
            }
        })
        .await;
}

/// Whether the member's health is as expected, and what it says.
async fn member_health(
    transport: &Transport,
    member: &MemberInfo,
    ready: bool,
) -> Result<(bool, String)> {
    let expected_status = if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    let (readyz, body) = http_get(metrics_url(member)?, "/readyz").await?;
    let mut services = vec![""];
    match member.role {
        Role::Fetcher => services.push("kmirror.v1.Worker"),
        Role::Writer => services.push("kmirror.v1.Writer"),
        // Only the leader serves the leader service; with one coordinator, it leads.
        Role::Coordinator => services.extend(["kmirror.v1.Admin", LEADER_HEALTH_SERVICE]),
    }
    let mut grpc = Vec::new();
    let mut matches = readyz == if ready { 200 } else { 503 };
    for service in services {
        let status = grpc_health(transport, member.role.into(), &member.address, service).await?;
        matches &= status == expected_status;
        grpc.push(format!("{service:?}={status:?}"));
    }
    Ok((
        matches,
        format!(
            "readyz {readyz} ({}), grpc {}",
            body.trim().replace('\n', ", "),
            grpc.join(" ")
        ),
    ))
}
