//! Guarantee: a fleet reaches an etcd that requires TLS client certificates and
//! RBAC, each role as its own user limited to the fleet's prefix, and mirrors
//! exactly while etcd's auth tokens expire every few seconds, without losing a
//! lease; a member whose certificate, password or permissions are wrong does not
//! start, and says why without showing the secret.
//!
//! etcd is a private one (tests/src/secure_etcd.rs); Kafka is the shared stack's.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{assert_same_partitions, create_topic, produce, read_all, Cluster};
use kmirror_tests::secure_etcd::{SecureEtcd, AUTH_TOKEN_TTL};
use kmirror_tests::{stack, unique_name, wait_until, Fleet, FleetOptions};

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_on_tls_etcd_with_a_user_per_role_mirrors_exactly_while_auth_tokens_expire(
) -> Result<()> {
    const RECORDS: u64 = 20_000;
    const PARTITIONS: i32 = 4;
    let etcd = SecureEtcd::start("secure-fleet").await?;
    etcd.enable_auth()?;
    let fleet_name = unique_name("secure-etcd");
    let role_env = etcd.fleet_users(&fleet_name)?;
    let topic = unique_name("secure-etcd");
    let flow = unique_name("secure-etcd-flow");
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;
    let mut records = KeyedRecords::new(RECORDS, PARTITIONS).generate();
    let tail = records.split_off(records.len() / 2);

    let fleet = Fleet::start(FleetOptions {
        name: fleet_name,
        name_is_unique: true,
        etcd_endpoint: Some(etcd.endpoint.clone()),
        etcd_connect_options: Some(etcd.root_options()?),
        role_env,
        ..FleetOptions::default()
    })
    .await;
    let started = Instant::now();
    fleet.add_clusters().await;
    produce(Cluster::Source, &topic, records).await?;
    fleet.create_flow(&flow, &topic, None).await;
    fleet
        .wait_for_mirror(&topic, (RECORDS / 2) as i64, Duration::from_secs(180))
        .await;
    // Every member's first token has expired (several times) before the tail
    // is produced: the tail crosses only with renewed tokens.
    wait_until(
        Duration::from_secs(60),
        "three auth token lifetimes since the fleet started",
        || async {
            match started.elapsed() > AUTH_TOKEN_TTL * 3 {
                true => Ok(()),
                false => Err(format!("{:?} since the start", started.elapsed())),
            }
        },
    )
    .await
    .map_err(anyhow::Error::msg)?;
    produce(Cluster::Source, &topic, tail).await?;
    fleet
        .wait_for_mirror(&topic, RECORDS as i64, Duration::from_secs(180))
        .await;
    fleet
        .wait_caught_up(&flow, &topic, PARTITIONS, Duration::from_secs(60))
        .await;

    let source = read_all(Cluster::Source, &topic).await?;
    let dest = read_all(Cluster::Dest, &topic).await?;
    assert_same_partitions(&source, &dest);
    let mut lost = Vec::new();
    for entry in std::fs::read_dir(fleet.log_dir())? {
        let path = entry?.path();
        // Members' logs; the folder also holds the fleet's certificates.
        if path.extension().is_none_or(|extension| extension != "log") {
            continue;
        }
        let log = std::fs::read_to_string(&path)?;
        let count = log.matches("lease counted as lost").count()
            + log.matches("lease expired in etcd").count();
        if count > 0 {
            lost.push(format!("{}: {count}", path.display()));
        }
    }
    assert!(
        lost.is_empty(),
        "leases lost while tokens expired: {lost:?}"
    );
    Ok(())
}

/// What a writer started with `identity` (and `extra` flags) printed before it
/// exited, and whether it exited non-zero within the deadline.
async fn writer_start_failure(
    etcd: &SecureEtcd,
    fleet: &str,
    env: Vec<(String, String)>,
    extra: &[&str],
) -> Result<String> {
    let mut command = tokio::process::Command::new(stack().binary("kmirror-writer"));
    command
        .args([
            "--etcd",
            &etcd.endpoint,
            "--fleet",
            fleet,
            "--listen",
            "127.0.0.1:0",
            // The member's own gRPC is not what these cases are about.
            "--insecure",
        ])
        .args(extra)
        .envs(env)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .context("the writer kept running with settings etcd refuses")??;
    assert!(!output.status.success(), "the writer started");
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// `env` with the variable `name` set to `value_opt`, or removed.
fn with(env: &[(String, String)], name: &str, value_opt: Option<PathBuf>) -> Vec<(String, String)> {
    env.iter()
        .filter_map(|(key, value)| match key == name {
            true => value_opt
                .as_ref()
                .map(|path| (key.clone(), path.display().to_string())),
            false => Some((key.clone(), value.clone())),
        })
        .collect()
}

/// A start etcd refuses: why, the member's environment and extra flags, and
/// what its output must say.
struct Refusal<'a>(&'a str, Vec<(String, String)>, Vec<&'a str>, &'a str);

#[tokio::test(flavor = "multi_thread")]
async fn a_member_refused_by_etcd_does_not_start_and_names_the_cause_without_the_secret(
) -> Result<()> {
    let etcd = SecureEtcd::start("secure-refusals").await?;
    etcd.enable_auth()?;
    let fleet = unique_name("secure-refusals");
    let identity = etcd.add_user(&fleet, &format!("{fleet}-writer"), "ca")?;
    let password = std::fs::read_to_string(&identity.password_file)?;
    let password = password.trim();
    let stranger = etcd.add_user(&unique_name("other-fleet"), "stranger", "other-ca")?;

    let stranger_password_file = stranger.password_file.display().to_string();
    let cases = [
        Refusal(
            "no client certificate",
            with(
                &with(&identity.env(), "KMIRROR_ETCD_CERT", None),
                "KMIRROR_ETCD_KEY",
                None,
            ),
            vec![],
            "refused the TLS connection",
        ),
        Refusal(
            "a certificate from another CA",
            with(
                &with(
                    &identity.env(),
                    "KMIRROR_ETCD_CERT",
                    Some(stranger.cert.clone()),
                ),
                "KMIRROR_ETCD_KEY",
                Some(stranger.key.clone()),
            ),
            vec![],
            "refused the TLS connection",
        ),
        Refusal(
            "a wrong password",
            with(
                &identity.env(),
                "KMIRROR_ETCD_PASSWORD_FILE",
                Some(stranger.password_file.clone()),
            ),
            vec![],
            "refused user",
        ),
        Refusal(
            "a user without permission on the fleet's prefix",
            with(
                &with(&identity.env(), "KMIRROR_ETCD_USER", None),
                "KMIRROR_ETCD_PASSWORD_FILE",
                None,
            ),
            vec![
                "--etcd-user",
                "stranger",
                "--etcd-password-file",
                &stranger_password_file,
            ],
            "has no permission on the fleet's keys",
        ),
        Refusal(
            "a missing certificate file",
            with(
                &identity.env(),
                "KMIRROR_ETCD_CERT",
                Some(etcd.dir().join("missing.crt")),
            ),
            vec![],
            "--etcd-cert: cannot read",
        ),
    ];
    for Refusal(cause, env, extra, expected) in cases {
        let output = writer_start_failure(&etcd, &fleet, env, &extra).await?;
        assert!(
            output.contains(expected),
            "{cause}: the writer's output names the cause ({expected:?}):\n{output}"
        );
        assert!(
            !output.contains(password),
            "{cause}: the writer's output shows the password"
        );
    }

    let output = writer_start_failure(
        &etcd,
        &fleet,
        Vec::new(),
        &["--etcd-user", "x", "--etcd-password", password],
    )
    .await?;
    assert!(
        output.contains("--etcd-password-file"),
        "a password on the command line is refused, pointing at the file setting:\n{output}"
    );
    assert!(
        !output.contains(password),
        "the refusal of a password on the command line shows it"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleets_user_cannot_read_or_write_another_fleets_keys() -> Result<()> {
    let etcd = SecureEtcd::start("secure-prefix").await?;
    etcd.enable_auth()?;
    let fleet = unique_name("secure-prefix");
    let other_fleet = unique_name("secure-prefix-other");
    let identity = etcd.add_user(&fleet, &format!("{fleet}-fetcher"), "ca")?;
    let password = std::fs::read_to_string(&identity.password_file)?;
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(
            &identity.ca,
        )?))
        .identity(etcd_client::Identity::from_pem(
            std::fs::read(&identity.cert)?,
            std::fs::read(&identity.key)?,
        ));
    let options = etcd_client::ConnectOptions::new()
        .with_tls(tls)
        .with_user(identity.user.clone(), password.trim().to_string());
    let mut client = etcd_client::Client::connect([etcd.endpoint.as_str()], Some(options)).await?;

    let own = kmirror_common::Keys::new(&fleet).root().to_string();
    let other = kmirror_common::Keys::new(&other_fleet).root().to_string();
    client.put(format!("{own}probe"), "own", None).await?;
    let read_other = client
        .get(
            other.as_str(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await;
    let write_other = client.put(format!("{other}probe"), "intruder", None).await;
    for (what, outcome) in [("read", read_other.err()), ("write", write_other.err())] {
        let error = outcome.map(|error| error.to_string()).unwrap_or_default();
        assert!(
            error.contains("permission denied"),
            "a {what} of another fleet's keys is denied, got {error:?}"
        );
    }
    Ok(())
}
