//! Guarantee: every fleet listener (coordinator, fetcher, writer) takes only
//! certificates of the fleet CA, and what a certificate may do follows its role;
//! a member starts only with TLS files or an explicit `--insecure`; certificate
//! files replaced while records flow are used without a restart and lose nothing.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use kmirror_common::schema::{decode, MemberInfo};
use kmirror_common::tls::{PeerRole, TlsFiles as TransportFiles, TlsPaths, Transport};
use kmirror_common::{Keys, MemberId, Role};
use kmirror_proto::tonic::transport::Endpoint;
use kmirror_proto::tonic::Code;
use kmirror_proto::tonic_health::pb::health_client::HealthClient;
use kmirror_proto::tonic_health::pb::HealthCheckRequest;
use kmirror_proto::v1::writer_client::WriterClient;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{
    assert_same_partitions, create_topic, produce, read_all, record_count, Cluster,
};
use kmirror_tests::pki::{TestPki, TlsFiles};
use kmirror_tests::stack::{self, stack};
use kmirror_tests::{unique_name, Fleet, FleetOptions};

/// The address a member registered in etcd (where others dial it).
async fn member_address(fleet: &Fleet, role: Role, id: &str) -> String {
    let key = Keys::new(fleet.name()).member(role, &MemberId::new(id).unwrap());
    let response = fleet.etcd().get(key.as_str(), None).await.unwrap();
    let entry = response.kvs().first().expect("the member is registered");
    let info: MemberInfo = decode(entry.key(), entry.value()).unwrap();
    if info.address.contains("://") {
        info.address
    } else {
        format!("http://{}", info.address)
    }
}

fn client(files: &TlsFiles) -> Transport {
    let paths = TlsPaths {
        cert: files.cert.clone(),
        key: files.key.clone(),
        ca: files.ca.clone(),
    };
    Transport::Tls(TransportFiles::load(paths, None, &[]).expect("the test's certificate loads"))
}

/// A gRPC health check over a new connection to `address`, the server
/// expected to be of `role`.
async fn health_check(
    transport: &Transport,
    address: &str,
    role: &'static [PeerRole],
) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(address.to_string())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let channel = transport
        .connect(endpoint, role)
        .await
        .map_err(|error| format!("{error:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|status| format!("{status:?}"))
}

/// What a client dialling a member of `role` expects it to present.
fn dialled(role: PeerRole) -> &'static [PeerRole] {
    match role {
        PeerRole::Writer => &[PeerRole::Writer],
        PeerRole::Fetcher => &[PeerRole::Fetcher],
        _ => &[PeerRole::Coordinator],
    }
}

/// Opens a `Replicate` stream to the writer at `address` presenting `files`.
async fn replicate_as(files: &TlsFiles, address: &str) -> Result<(), kmirror_proto::tonic::Status> {
    let endpoint = Endpoint::from_shared(address.to_string()).unwrap();
    let channel = client(files)
        .connect(endpoint, &[PeerRole::Writer])
        .await
        .map_err(|error| kmirror_proto::tonic::Status::unavailable(format!("{error:?}")))?;
    WriterClient::new(channel)
        .replicate(tokio_stream::empty())
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_listener_refuses_what_is_not_a_fleet_identity_allowed_the_call() -> Result<()> {
    let fleet = Fleet::start(FleetOptions {
        fetchers: 1,
        writers: 1,
        ..FleetOptions::new("tls-refuse")
    })
    .await;
    let pki = fleet.pki().expect("test fleets run with TLS");
    let flow = unique_name("tls-refuse-flow");
    let topic = unique_name("tls-refuse");
    create_topic(Cluster::Source, &topic, 1, &[]).await?;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    let flows_before = fleet
        .ctl(["flow", "list", "-o", "json"])
        .await
        .assert_success()
        .stdout;
    let clusters_before = fleet
        .ctl(["cluster", "list", "-o", "json"])
        .await
        .assert_success()
        .stdout;

    let other_fleet = TestPki::new(fleet.name(), &fleet.log_dir().join("tls-other-ca"));
    let stranger_admin = other_fleet.issue(PeerRole::Admin, "mallory");
    let expired_admin = pki.issue_expired(PeerRole::Admin, "old-admin");
    let fetcher = pki.issue(PeerRole::Fetcher, "probe-fetcher");
    let writer = pki.issue(PeerRole::Writer, "probe-writer");
    let viewer = pki.issue(PeerRole::Viewer, "vera");
    let operator = pki.issue(PeerRole::Operator, "otto");

    // The coordinator: no certificate, another CA's, an expired one.
    for (who, tls_opt) in [
        ("no certificate", None),
        ("another CA", Some(&stranger_admin)),
        ("expired", Some(&expired_admin)),
    ] {
        let output = fleet
            .ctl_as(tls_opt, ["flow", "delete", flow.as_str()])
            .await;
        assert_eq!(output.code, Some(1), "{who}: {output}");
    }
    // A member's certificate may read but not change anything.
    let output = fleet
        .ctl_as(Some(&fetcher), ["flow", "delete", flow.as_str()])
        .await;
    output.assert_failure(1, &["may not call", "DeleteFlow"]);
    fleet
        .ctl_as(Some(&fetcher), ["flow", "list"])
        .await
        .assert_success();
    // A viewer reads, and deletes nothing.
    fleet.ctl_as(Some(&viewer), ["status", "-o", "json"]).await;
    fleet
        .ctl_as(Some(&viewer), ["flow", "list"])
        .await
        .assert_success();
    let output = fleet
        .ctl_as(Some(&viewer), ["flow", "delete", flow.as_str()])
        .await;
    output.assert_failure(1, &["may not call", "operator"]);
    // An operator runs flows but does not touch clusters.
    let output = fleet
        .ctl_as(Some(&operator), ["cluster", "delete", "source"])
        .await;
    output.assert_failure(1, &["may not call", "admin"]);

    // The writer: Replicate is for fetchers only.
    let writer_address = member_address(&fleet, Role::Writer, "writer-0").await;
    let refused = replicate_as(&writer, &writer_address).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = replicate_as(&pki.issue(PeerRole::Admin, "probe-admin"), &writer_address)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // Every member's listener refuses another CA's, an expired and no certificate.
    let fetcher_address = member_address(&fleet, Role::Fetcher, "fetcher-0").await;
    for (address, role) in [
        (writer_address.clone(), dialled(PeerRole::Writer)),
        (fetcher_address, dialled(PeerRole::Fetcher)),
        (
            fleet.coordinator_address().to_string(),
            dialled(PeerRole::Coordinator),
        ),
    ] {
        let address = &address;
        health_check(&client(&fetcher), address, role)
            .await
            .unwrap();
        for (who, transport) in [
            (
                "another CA",
                client(&other_fleet.issue(PeerRole::Fetcher, "fetcher-x")),
            ),
            (
                "expired",
                client(&pki.issue_expired(PeerRole::Fetcher, "fetcher-old")),
            ),
            ("no certificate", Transport::Insecure),
        ] {
            assert!(
                health_check(&transport, address, role).await.is_err(),
                "{address} accepted {who}"
            );
        }
    }

    // A bearer token of an operator pauses the flow; once revoked it is refused.
    let token_file = fleet.log_dir().join("tls").join("ci.token");
    fleet
        .ctl([
            "token",
            "create",
            "ci",
            "--role",
            "operator",
            "--out",
            token_file.to_str().unwrap(),
        ])
        .await
        .assert_success();
    let with_token = |args: &[&str]| {
        let mut command = tokio::process::Command::new(stack().binary(stack::CTL_BINARY));
        command
            .args(["--coordinator", fleet.coordinator_address()])
            .args(["--tls-ca", pki.ca_path().to_str().unwrap()])
            .args(["--token-file", token_file.to_str().unwrap()])
            .args(args)
            .env("KMIRRORCTL_CONFIG", "/dev/null")
            .kill_on_drop(true);
        async move { command.output().await.unwrap() }
    };
    let paused = with_token(&["flow", "pause", flow.as_str()]).await;
    assert!(paused.status.success(), "{paused:?}");
    fleet.ctl(["token", "revoke", "ci"]).await.assert_success();
    let refused = with_token(&["flow", "resume", flow.as_str()]).await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unknown or revoked"),
        "{refused:?}"
    );
    fleet
        .ctl(["flow", "resume", flow.as_str()])
        .await
        .assert_success();

    // The mutations, allowed and refused, are in the audit log with who tried
    // what on which object; viewers may not read it.
    let audit = fleet
        .ctl(["audit", "-o", "json"])
        .await
        .assert_success()
        .stdout;
    let audit: serde_json::Value = serde_json::from_str(&audit)?;
    let entries = audit["entries"].as_array().expect("entries");
    let has = |role: &str, call: &str, object: &str, outcome: &str| {
        entries.iter().any(|entry| {
            entry["identity"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!("/{role}/"))
                && entry["call"].as_str().unwrap_or_default().ends_with(call)
                && entry["object"] == object
                && entry["outcome"] == outcome
        })
    };
    let flow_object = format!("flow/{flow}");
    assert!(has("admin", "CreateFlow", &flow_object, "ok"), "{audit:#}");
    assert!(
        has("fetcher", "DeleteFlow", &flow_object, "PermissionDenied"),
        "{audit:#}"
    );
    assert!(
        has("viewer", "DeleteFlow", &flow_object, "PermissionDenied"),
        "{audit:#}"
    );
    assert!(
        has(
            "operator",
            "DeleteCluster",
            "cluster/source",
            "PermissionDenied"
        ),
        "{audit:#}"
    );
    assert!(
        has("operator", "PauseFlow", &flow_object, "ok"),
        "the token's call: {audit:#}"
    );
    assert!(
        entries.iter().any(|entry| entry["call"]
            .as_str()
            .unwrap_or_default()
            .ends_with("ResumeFlow")
            && entry["outcome"] == "Unauthenticated"),
        "{audit:#}"
    );
    fleet
        .ctl_as(Some(&viewer), ["audit"])
        .await
        .assert_failure(1, &["may not call"]);

    // Nothing changed.
    assert_eq!(
        fleet
            .ctl(["flow", "list", "-o", "json"])
            .await
            .assert_success()
            .stdout,
        flows_before
    );
    assert_eq!(
        fleet
            .ctl(["cluster", "list", "-o", "json"])
            .await
            .assert_success()
            .stdout,
        clusters_before
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_without_tls_files_or_insecure_does_not_start_and_says_why() {
    let stack = stack();
    for binary in [
        stack::COORDINATOR_BINARY,
        stack::FETCHER_BINARY,
        stack::WRITER_BINARY,
    ] {
        let output = tokio::process::Command::new(stack.binary(binary))
            .args([
                "--etcd",
                &stack.etcd_endpoint,
                "--fleet",
                &unique_name("tls-none"),
            ])
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("KMIRROR_TLS_CERT")
            .env_remove("KMIRROR_TLS_KEY")
            .env_remove("KMIRROR_TLS_CA")
            .env_remove("KMIRROR_INSECURE")
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(30), output)
            .await
            .expect("the member exits at once")
            .unwrap();
        assert!(!output.status.success(), "{binary} started without TLS");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for named in ["--tls-cert", "--tls-key", "--tls-ca", "--insecure"] {
            assert!(
                said.contains(named),
                "{binary} does not name {named}: {said}"
            );
        }
    }
}

/// How many times a member's log says it started and reloaded its files.
fn log_counts(log: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    (
        text.matches("--- kmirror-tests: starting").count(),
        text.matches("TLS certificates reloaded").count(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_rotated_while_records_flow_are_used_without_restart_and_lose_nothing(
) -> Result<()> {
    const RECORDS: u64 = 30_000;
    const PARTITIONS: i32 = 4;
    let topic = unique_name("tls-rotate");
    let flow = unique_name("tls-rotate-flow");
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;
    // A third before the rotation, a third during, a third after.
    let mut records = KeyedRecords::new(RECORDS, PARTITIONS).generate();
    let mut middle = records.split_off(records.len() / 3);
    let tail = middle.split_off(middle.len() / 2);

    let fleet = Fleet::start(FleetOptions::new("tls-rotate")).await;
    let pki = fleet.pki().expect("test fleets run with TLS");
    fleet.add_clusters().await;
    produce(Cluster::Source, &topic, records).await?;
    fleet.create_flow(&flow, &topic, None).await;

    // A new CA: first trusted beside the old one everywhere, then every
    // member's certificate issued again from it, over the same files, while
    // records are produced.
    let successor = pki.successor();
    pki.trust(&[pki, &successor]);
    let producing = tokio::spawn({
        let topic = topic.clone();
        async move { produce(Cluster::Source, &topic, middle).await }
    });
    let members = fleet.member_ids();
    fleet
        .wait_until(
            Duration::from_secs(60),
            "every member to reload the CA file",
            || async {
                let behind: Vec<&String> = members
                    .iter()
                    .filter(|id| log_counts(&fleet.log_dir().join(format!("{id}.log"))).1 < 1)
                    .collect();
                if behind.is_empty() {
                    Ok(())
                } else {
                    Err(format!("not reloaded: {behind:?}"))
                }
            },
        )
        .await;
    let role_of = |id: &str| {
        if id.starts_with("coordinator") {
            PeerRole::Coordinator
        } else if id.starts_with("fetcher") {
            PeerRole::Fetcher
        } else {
            PeerRole::Writer
        }
    };
    for id in &members {
        successor.issue(role_of(id), id);
    }
    producing.await??;

    // New connections get the new certificates: a client trusting the new CA
    // alone reaches every member.
    let successor_only = successor.ca_only_file("successor-ca");
    let mut probe = successor.issue(PeerRole::Fetcher, "probe-fetcher");
    probe.ca = successor_only.clone();
    let probe = client(&probe);
    let mut addresses = vec![(
        fleet.coordinator_address().to_string(),
        PeerRole::Coordinator,
    )];
    for id in &members {
        match role_of(id) {
            PeerRole::Fetcher => addresses.push((
                member_address(&fleet, Role::Fetcher, id).await,
                PeerRole::Fetcher,
            )),
            PeerRole::Writer => addresses.push((
                member_address(&fleet, Role::Writer, id).await,
                PeerRole::Writer,
            )),
            _ => {}
        }
    }
    for (address, role) in &addresses {
        let role = dialled(*role);
        fleet
            .wait_until(
                Duration::from_secs(60),
                &format!("{address} to serve the new certificate"),
                || async { health_check(&probe, address, role).await },
            )
            .await;
    }
    // Then the old CA is dropped from every CA file; kmirrorctl uses a
    // certificate of the new CA.
    pki.trust(&[&successor]);
    let new_admin = {
        let mut files = successor.issue(PeerRole::Admin, "new-admin");
        files.ca = successor_only;
        files
    };
    produce(Cluster::Source, &topic, tail).await?;
    fleet
        .ctl_as(Some(&new_admin), ["flow", "list"])
        .await
        .assert_success();
    fleet
        .wait_for_mirror(&topic, RECORDS as i64, Duration::from_secs(300))
        .await;
    fleet
        .wait_caught_up(&flow, &topic, PARTITIONS, Duration::from_secs(60))
        .await;

    for id in &members {
        let (starts, reloads) = log_counts(&fleet.log_dir().join(format!("{id}.log")));
        assert_eq!(starts, 1, "{id} was restarted");
        assert!(reloads >= 2, "{id} reloaded its files {reloads} times");
        assert!(fleet.is_running(id), "{id} stopped");
    }
    let source = read_all(Cluster::Source, &topic).await?;
    let dest = read_all(Cluster::Dest, &topic).await?;
    assert_eq!(record_count(&source), RECORDS as usize);
    assert_same_partitions(&source, &dest);
    Ok(())
}
