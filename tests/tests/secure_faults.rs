//! What an operator sees when a secured cluster's credential or ACL goes bad,
//! on a private secured stack (`deploy/local/stack up --secure`): the flow stops
//! with the cause and loses nothing; fixing it with `kmirrorctl` (or giving the
//! ACL back) resumes it by itself; and no member storms the cluster with
//! retries: each pauses before asking a cluster that refused it again, doubling
//! the pause, and shows it on its metrics
//! (`kmirror_cluster_access_failures_total`, `kmirror_cluster_retry_delay_seconds`).

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::fleet::{CtlOutput, Fleet, FleetOptions};
use kmirror_tests::kafka::{commit_group, produce, WatermarkReader};
use kmirror_tests::observability::member_sums;
use kmirror_tests::secure_stack::{SecureStack, Side, KMIRROR_PRINCIPAL};
use kmirror_tests::unique_name;

const TIMEOUT: Duration = Duration::from_secs(180);
/// How long the retries against a refusing cluster are counted.
const WINDOW: Duration = Duration::from_secs(10);
const ACCESS_FAILURES: &str = "kmirror_cluster_access_failures_total";
const RETRY_DELAY: &str = "kmirror_cluster_retry_delay_seconds";

fn path(path: &Path) -> String {
    path.display().to_string()
}

async fn ctl(fleet: &Fleet, args: &[&str]) -> CtlOutput {
    fleet.ctl(args).await
}

async fn secure_fleet(secure: &SecureStack, name: &str) -> Fleet {
    Fleet::start(FleetOptions {
        clusters: Some((secure.admin(Side::Source), secure.admin(Side::Dest))),
        ..FleetOptions::new(name)
    })
    .await
}

/// Waits until some member shows a pause before it asks `cluster` again.
async fn wait_paused(fleet: &Fleet, cluster: &str) {
    let what = format!("a member to pause before asking cluster {cluster} again");
    fleet
        .wait_until(TIMEOUT, &what, || async {
            let delays = member_sums(fleet, RETRY_DELAY, &[("cluster", cluster)])
                .await
                .map_err(|error| format!("{error:#}"))?;
            match delays.values().any(|delay| *delay > 0.0) {
                true => Ok(()),
                false => Err(format!("pauses: {delays:?}")),
            }
        })
        .await;
}

/// Waits until no member pauses before asking `cluster` (it answered them all).
async fn wait_unpaused(fleet: &Fleet, cluster: &str) {
    let what = format!("every member's pause before cluster {cluster} to end");
    fleet
        .wait_until(TIMEOUT, &what, || async {
            let delays = member_sums(fleet, RETRY_DELAY, &[("cluster", cluster)])
                .await
                .map_err(|error| format!("{error:#}"))?;
            match delays.values().all(|delay| *delay == 0.0) {
                true => Ok(()),
                false => Err(format!("pauses: {delays:?}")),
            }
        })
        .await;
}

fn uuid_suffix() -> String {
    unique_name("x").trim_start_matches("x-").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_an_untrusted_ca_or_a_missing_acl_stops_the_flow_with_the_cause_until_fixed(
) -> Result<()> {
    let secure = SecureStack::start("faults").await?;
    let fleet = secure_fleet(&secure, "secure-faults").await;
    let topic = secure.source_topic("secure-faults", 1_000, 2).await?;
    ctl(
        &fleet,
        &[
            "cluster",
            "add",
            "source",
            "--property-file",
            &path(&secure.file("source.properties")),
        ],
    )
    .await
    .assert_success();
    // The destination's CA from a file of the test's own, to replace later.
    let dest_ca = secure.state_dir().join("dest-ca.pem");
    std::fs::copy(secure.ca(), &dest_ca)?;
    ctl(
        &fleet,
        &[
            "cluster",
            "add",
            "dest",
            "--property-file",
            &path(&secure.file("dest.properties")),
            "--property",
            &format!("ssl.ca.location={}", path(&dest_ca)),
        ],
    )
    .await
    .assert_success();
    ctl(
        &fleet,
        &[
            "flow",
            "create",
            "faults",
            "--source",
            "source",
            "--dest",
            "dest",
            "--include",
            &topic,
        ],
    )
    .await
    .assert_success();
    fleet.wait_for_mirror(&topic, 1_000, TIMEOUT).await;
    fleet.wait_caught_up("faults", &topic, 2, TIMEOUT).await;

    // The source's password is changed on the cluster: kmirror's is now wrong.
    let new_password = format!("rotated-{}", uuid_suffix());
    secure
        .run(&[
            "tool",
            "kafka.admin.ConfigCommand",
            "--bootstrap-server",
            &secure.ssl_bootstrap(Side::Source),
            "--command-config",
            &path(&secure.file("admin-source.properties")),
            "--alter",
            "--add-config",
            &format!("SCRAM-SHA-512=[password={new_password}]"),
            "--entity-type",
            "users",
            "--entity-name",
            KMIRROR_PRINCIPAL,
        ])
        .await?;
    // New members' clients authenticate anew: restart the fleet so that no
    // connection made with the old password survives.
    fleet.sigterm_all().await;
    fleet.restart().await;
    produce(
        secure.admin(Side::Source),
        &topic,
        KeyedRecords {
            first_sequence: 1_000,
            ..KeyedRecords::new(500, 2)
        }
        .generate(),
    )
    .await?;
    fleet
        .wait_until(
            TIMEOUT,
            "the flow to report the source's authentication failure",
            || async {
                let status = ctl(&fleet, &["status", "-o", "json"]).await;
                if status
                    .stdout
                    .to_ascii_lowercase()
                    .contains("authentication")
                {
                    Ok(())
                } else {
                    Err(status.stdout)
                }
            },
        )
        .await;
    let failing = ctl(&fleet, &["status", "-o", "json"]).await;
    assert!(failing.stdout.contains("source"), "{failing}");
    let old_password = secure.password(Side::Source, KMIRROR_PRINCIPAL);
    assert!(!failing.stdout.contains(&old_password), "{failing}");
    eprintln!("status with a wrong source password: {}", failing.stdout);
    // Nothing past what was mirrored before is checkpointed or written.
    let dest = WatermarkReader::new(secure.admin(Side::Dest))?;
    assert_eq!(dest.offset_count(&topic).await?, 1_000);
    // Bounded retries: every member that logs in to the source pauses, and says
    // so on its metrics; the broker sees a handful of failed logins.
    wait_paused(&fleet, "source").await;
    let refused_logins = [("cluster", "source"), ("cause", "authentication")];
    let counted_before = member_sums(&fleet, ACCESS_FAILURES, &refused_logins).await?;
    let failed_logins = |log: &str| log.matches("Failed authentication").count();
    let source_log = secure.log_dir().join("source.log");
    let before = failed_logins(&std::fs::read_to_string(&source_log)?);
    tokio::time::sleep(WINDOW).await; // a measurement window, not a synchronisation
    let during = failed_logins(&std::fs::read_to_string(&source_log)?) - before;
    let counted_after = member_sums(&fleet, ACCESS_FAILURES, &refused_logins).await?;
    let delays = member_sums(&fleet, RETRY_DELAY, &[("cluster", "source")]).await?;
    eprintln!(
        "failed logins in {WINDOW:?}: {during} on the broker; refusals counted by member before and after: {counted_before:?} {counted_after:?}; pauses: {delays:?}"
    );
    assert!(
        during <= 20,
        "{during} failed logins in {WINDOW:?}: a retry storm"
    );
    for (member, after) in &counted_after {
        let grown = after - counted_before.get(member).copied().unwrap_or(0.0);
        assert!(
            grown <= 5.0,
            "{member} counted {grown} refused logins in {WINDOW:?}: its pause does not hold"
        );
    }
    assert!(
        counted_after.values().sum::<f64>() >= 3.0,
        "the coordinator and both fetchers count the source's refusals: {counted_after:?}"
    );
    // A member between two pauses (asking again) shows none at that moment:
    // each must be seen paused, not all at one sample.
    let seen_paused = std::sync::Mutex::new(std::collections::BTreeSet::new());
    fleet
        .wait_until(
            TIMEOUT,
            "the coordinator and both fetchers to be seen pausing",
            || async {
                let delays = member_sums(&fleet, RETRY_DELAY, &[("cluster", "source")])
                    .await
                    .map_err(|error| format!("{error:#}"))?;
                let mut seen = seen_paused.lock().unwrap();
                seen.extend(
                    delays
                        .iter()
                        .filter(|(_, delay)| **delay > 0.0)
                        .map(|(member, _)| member.clone()),
                );
                (seen.len() >= 3)
                    .then_some(())
                    .ok_or(format!("seen pausing: {seen:?}; pauses now: {delays:?}"))
            },
        )
        .await;

    // Fixing the credential with kmirrorctl resumes the flow by itself.
    let password_file = secure.state_dir().join("rotated.password");
    std::fs::write(&password_file, format!("{new_password}\n"))?;
    ctl(
        &fleet,
        &[
            "cluster",
            "add",
            "source",
            "--replace",
            "--property",
            &format!("sasl.password=@{}", path(&password_file)),
        ],
    )
    .await
    .assert_success();
    std::fs::remove_file(&password_file)?;
    fleet.wait_for_mirror(&topic, 1_500, TIMEOUT).await;
    fleet.wait_caught_up("faults", &topic, 2, TIMEOUT).await;
    secure.assert_mirrored_exactly(&topic).await?;
    wait_unpaused(&fleet, "source").await;

    // The destination's Write ACL is taken away.
    let acl = [
        "--allow-principal",
        "User:kmirror",
        "--operation",
        "Write",
        "--topic",
        "*",
    ];
    let mut remove = vec!["--remove"];
    remove.extend_from_slice(&acl);
    secure.acls(Side::Dest, &remove).await?;
    produce(
        secure.admin(Side::Source),
        &topic,
        KeyedRecords {
            first_sequence: 1_500,
            ..KeyedRecords::new(500, 2)
        }
        .generate(),
    )
    .await?;
    fleet
        .wait_until(
            TIMEOUT,
            "the flow to report the destination's missing authorization",
            || async {
                let status = ctl(&fleet, &["status", "-o", "json"]).await;
                if status.stdout.to_ascii_lowercase().contains("authoriz") {
                    Ok(())
                } else {
                    Err(status.stdout)
                }
            },
        )
        .await;
    let denied = ctl(&fleet, &["status", "-o", "json"]).await;
    eprintln!("status without the Write ACL: {}", denied.stdout);
    assert_eq!(dest.offset_count(&topic).await?, 1_500);
    // Counted by the writers; a topic's ACL pauses nothing else of the cluster.
    let denials = [("cluster", "dest"), ("cause", "authorization")];
    let counted = member_sums(&fleet, ACCESS_FAILURES, &denials).await?;
    assert!(counted.values().sum::<f64>() >= 1.0, "{counted:?}");
    let delays = member_sums(&fleet, RETRY_DELAY, &[("cluster", "dest")]).await?;
    assert!(delays.values().all(|delay| *delay == 0.0), "{delays:?}");
    let mut add = vec!["--add"];
    add.extend_from_slice(&acl);
    secure.acls(Side::Dest, &add).await?;
    fleet.wait_for_mirror(&topic, 2_000, TIMEOUT).await;
    fleet.wait_caught_up("faults", &topic, 2, TIMEOUT).await;
    secure.assert_mirrored_exactly(&topic).await?;

    // The destination's CA file now holds a CA that did not sign its brokers'
    // certificates (new connections: the fleet restarts).
    std::fs::copy(secure.other_ca()?, &dest_ca)?;
    fleet.sigterm_all().await;
    fleet.restart().await;
    produce(
        secure.admin(Side::Source),
        &topic,
        KeyedRecords {
            first_sequence: 2_000,
            ..KeyedRecords::new(500, 2)
        }
        .generate(),
    )
    .await?;
    fleet
        .wait_until(
            TIMEOUT,
            "the flow to report the destination's untrusted certificate",
            || async {
                let status = ctl(&fleet, &["status", "-o", "json"]).await;
                if status.stdout.contains("certificate verify failed") {
                    Ok(())
                } else {
                    Err(status.stdout)
                }
            },
        )
        .await;
    let untrusted = ctl(&fleet, &["status", "-o", "json"]).await;
    eprintln!(
        "status with an untrusted destination CA: {}",
        untrusted.stdout
    );
    assert!(untrusted.stdout.contains("dest"), "{untrusted}");
    assert_eq!(dest.offset_count(&topic).await?, 2_000);
    wait_paused(&fleet, "dest").await;
    let handshakes = [("cluster", "dest"), ("cause", "tls")];
    let counted = member_sums(&fleet, ACCESS_FAILURES, &handshakes).await?;
    assert!(counted.values().sum::<f64>() >= 1.0, "{counted:?}");
    ctl(
        &fleet,
        &[
            "cluster",
            "add",
            "dest",
            "--replace",
            "--property",
            &format!("ssl.ca.location={}", path(&secure.ca())),
        ],
    )
    .await
    .assert_success();
    fleet.wait_for_mirror(&topic, 2_500, TIMEOUT).await;
    fleet.wait_caught_up("faults", &topic, 2, TIMEOUT).await;
    secure.assert_mirrored_exactly(&topic).await?;
    wait_unpaused(&fleet, "dest").await;
    // The writers took the new CA as soon as they read it: no record waited for
    // the delivery timeout (which would move partitions between writers).
    let logs: Vec<String> = fleet
        .member_ids()
        .iter()
        .filter(|member| member.starts_with("writer-"))
        .map(|writer| std::fs::read_to_string(fleet.log_dir().join(format!("{writer}.log"))))
        .collect::<Result<_, _>>()?;
    assert!(
        logs.iter().any(|log| log.contains("has new settings")),
        "no writer purged its refused producers on the new settings"
    );
    assert!(
        logs.iter().all(|log| !log.contains("Message timed out")),
        "a record waited for the delivery timeout after the CA was fixed"
    );

    // The destination grants kmirror no ACL on consumer groups: a group sync is
    // refused with the cause, exit 1, and the mirror goes on.
    let group = unique_name("secure-billing");
    let positions = [(0, 600), (1, 700)].into_iter().collect();
    commit_group(secure.admin(Side::Source), &group, &topic, &positions).await?;
    let denied = ctl(
        &fleet,
        &["offsets", "sync", "--flow", "faults", "--groups", &group],
    )
    .await;
    eprintln!("group sync into a destination that denies group writes: {denied}");
    assert_eq!(denied.code, Some(1), "{denied}");
    let said = format!("{}{}", denied.stdout, denied.stderr).to_ascii_lowercase();
    assert!(
        said.contains(&group) && said.contains("authoriz"),
        "the refusal names neither the group nor the missing authorization: {denied}"
    );
    produce(
        secure.admin(Side::Source),
        &topic,
        KeyedRecords {
            first_sequence: 2_500,
            ..KeyedRecords::new(100, 2)
        }
        .generate(),
    )
    .await?;
    fleet.wait_for_mirror(&topic, 2_600, TIMEOUT).await;
    fleet.wait_caught_up("faults", &topic, 2, TIMEOUT).await;
    secure.assert_mirrored_exactly(&topic).await?;
    Ok(())
}
