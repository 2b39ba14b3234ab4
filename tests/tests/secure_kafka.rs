//! kmirror against secured Kafka clusters (`deploy/local/stack up --secure`, a
//! private stack per test): SASL_SSL with SCRAM-SHA-512, SCRAM-SHA-256 and
//! PLAIN, SSL with client certificates, ACLs for kmirror's principal only;
//! credentials given from files and stored sealed; what `kmirrorctl cluster add`
//! says of a secret on the command line or an untrusted CA; `kmirror mirror` with
//! the Java client properties the stack writes; and a sweep of every log,
//! output, etcd value, metrics page and exported span for the secrets. What an
//! operator sees when a credential or an ACL goes bad later: `secure_faults.rs`.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::fleet::{CtlOutput, Fleet, FleetOptions};
use kmirror_tests::kafka::{assert_same_partitions, create_topic, produce, read_all};
use kmirror_tests::mirror_process::{MirrorDir, MirrorProcess};
use kmirror_tests::observability::{http_get, members, OtlpReceiver};
use kmirror_tests::secure_stack::{SecureStack, Side, KMIRROR_PRINCIPAL};
use kmirror_tests::unique_name;

const TIMEOUT: Duration = Duration::from_secs(180);

fn path(path: &Path) -> String {
    path.display().to_string()
}

async fn ctl(fleet: &Fleet, args: &[&str]) -> CtlOutput {
    fleet.ctl(args).await
}

async fn secure_fleet(secure: &SecureStack, name: &str, env: Vec<(String, String)>) -> Fleet {
    Fleet::start(FleetOptions {
        clusters: Some((secure.admin(Side::Source), secure.admin(Side::Dest))),
        env,
        ..FleetOptions::new(name)
    })
    .await
}

/// A topic in the secured source with `count` keyed records (headers,
/// timestamps) in `partitions` partitions.
async fn source_topic(secure: &SecureStack, prefix: &str, count: u64, partitions: i32) -> String {
    let topic = unique_name(prefix);
    create_topic(secure.admin(Side::Source), &topic, partitions, &[])
        .await
        .expect("source topic");
    produce(
        secure.admin(Side::Source),
        &topic,
        KeyedRecords::new(count, partitions).generate(),
    )
    .await
    .expect("records produced into the secured source");
    topic
}

async fn assert_mirrored_exactly(secure: &SecureStack, topic: &str) {
    assert_same_partitions(
        &read_all(secure.admin(Side::Source), topic)
            .await
            .expect("source read back"),
        &read_all(secure.admin(Side::Dest), topic)
            .await
            .expect("destination read back"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_plain_and_client_certificates_mirror_exactly_between_secured_clusters() -> Result<()>
{
    let secure = SecureStack::start("mechanisms").await?;
    let fleet = secure_fleet(&secure, "secure-mechanisms", Vec::new()).await;

    // SCRAM-SHA-512 over SASL_SSL into client certificates, from the Java
    // client properties the stack wrote (what MirrorMaker would be given).
    let main_topic = source_topic(&secure, "secure-scram512", 20_000, 4).await;
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
    ctl(
        &fleet,
        &[
            "cluster",
            "add",
            "dest",
            "--property-file",
            &path(&secure.file("dest.properties")),
        ],
    )
    .await
    .assert_success();
    ctl(
        &fleet,
        &[
            "flow",
            "create",
            "main",
            "--source",
            "source",
            "--dest",
            "dest",
            "--include",
            &main_topic,
        ],
    )
    .await
    .assert_success();

    // SCRAM-SHA-256 into SCRAM-SHA-512; PLAIN (its password from a file, the
    // rest on the command line) into client certificates; client certificates
    // into PLAIN.
    let scram256_topic = source_topic(&secure, "secure-scram256", 2_000, 2).await;
    let plain_topic = source_topic(&secure, "secure-plain", 2_000, 2).await;
    let certificate_topic = source_topic(&secure, "secure-mtls", 2_000, 2).await;
    for (name, file) in [
        ("source-scram256", "source-scram-sha-256.properties"),
        ("dest-scram512", "dest-scram-sha-512.properties"),
        ("source-mtls", "source-ssl.properties"),
    ] {
        ctl(
            &fleet,
            &[
                "cluster",
                "add",
                name,
                "--property-file",
                &path(&secure.file(file)),
            ],
        )
        .await
        .assert_success();
    }
    let source_password = format!(
        "sasl.password=@{}",
        path(&secure.password_file(Side::Source, KMIRROR_PRINCIPAL))
    );
    let dest_password = format!(
        "sasl.password=@{}",
        path(&secure.password_file(Side::Dest, KMIRROR_PRINCIPAL))
    );
    let ca = format!("ssl.ca.location={}", path(&secure.ca()));
    for (name, side, password) in [
        ("source-plain", Side::Source, &source_password),
        ("dest-plain", Side::Dest, &dest_password),
    ] {
        ctl(
            &fleet,
            &[
                "cluster",
                "add",
                name,
                "--bootstrap",
                &secure.sasl_ssl_bootstrap(side),
                "--property",
                "security.protocol=SASL_SSL",
                "--property",
                "sasl.mechanism=PLAIN",
                "--property",
                &format!("sasl.username={KMIRROR_PRINCIPAL}"),
                "--property",
                password,
                "--property",
                &ca,
            ],
        )
        .await
        .assert_success();
    }
    for (flow, source, dest, topic) in [
        (
            "scram256",
            "source-scram256",
            "dest-scram512",
            &scram256_topic,
        ),
        ("plain", "source-plain", "dest", &plain_topic),
        ("mtls", "source-mtls", "dest-plain", &certificate_topic),
    ] {
        ctl(
            &fleet,
            &[
                "flow",
                "create",
                flow,
                "--source",
                source,
                "--dest",
                dest,
                "--include",
                topic,
            ],
        )
        .await
        .assert_success();
    }

    fleet.wait_for_mirror(&main_topic, 20_000, TIMEOUT).await;
    fleet.wait_caught_up("main", &main_topic, 4, TIMEOUT).await;
    assert_mirrored_exactly(&secure, &main_topic).await;
    for (flow, topic) in [
        ("scram256", &scram256_topic),
        ("plain", &plain_topic),
        ("mtls", &certificate_topic),
    ] {
        fleet.wait_for_mirror(topic, 2_000, TIMEOUT).await;
        fleet.wait_caught_up(flow, topic, 2, TIMEOUT).await;
        assert_mirrored_exactly(&secure, topic).await;
    }

    // Secrets are shown masked and stored sealed.
    let shown = ctl(&fleet, &["config", "show", "-o", "json"])
        .await
        .assert_success();
    let secret = secure.password(Side::Source, KMIRROR_PRINCIPAL);
    assert!(!shown.stdout.contains(&secret), "{shown}");
    assert!(shown.stdout.contains("sasl.password"), "{shown}");
    let stored = etcd_values(&fleet).await;
    assert!(stored.contains("kmirror-sealed:v1:"), "{stored}");
    assert!(!stored.contains(&secret));
    Ok(())
}

/// Every value under the fleet's prefix in etcd, one per line (`key=value`).
async fn etcd_values(fleet: &Fleet) -> String {
    let mut etcd = fleet.etcd();
    let prefix = format!("/kmirror/{}/", fleet.name());
    let response = etcd
        .get(
            prefix.as_str(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("etcd read");
    response
        .kvs()
        .iter()
        .map(|kv| {
            format!(
                "{}={}",
                String::from_utf8_lossy(kv.key()),
                String::from_utf8_lossy(kv.value())
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_on_the_command_line_is_refused_and_a_bad_certificate_authority_named(
) -> Result<()> {
    let secure = SecureStack::start("refusals").await?;
    // The stack describes its secure endpoints.
    let env = secure.run(&["env"]).await?;
    for line in [
        format!(
            "KMIRROR_SOURCE_SSL_BOOTSTRAP={}",
            secure.ssl_bootstrap(Side::Source)
        ),
        format!(
            "KMIRROR_DEST_SASL_SSL_BOOTSTRAP={}",
            secure.sasl_ssl_bootstrap(Side::Dest)
        ),
        format!(
            "KMIRROR_SECURE_SOURCE_PROPERTIES={}",
            path(&secure.file("source.properties"))
        ),
    ] {
        assert!(env.contains(&line), "{line} missing from:\n{env}");
    }
    let fleet = secure_fleet(&secure, "secure-refusals", Vec::new()).await;
    let refused = ctl(
        &fleet,
        &[
            "cluster",
            "add",
            "source",
            "--bootstrap",
            &secure.sasl_ssl_bootstrap(Side::Source),
            "--property",
            "sasl.password=typed-in-clear",
        ],
    )
    .await;
    refused.assert_failure(
        1,
        &[
            "sasl.password is a secret",
            "--property sasl.password=@FILE",
        ],
    );
    assert!(
        !refused.stderr.contains("typed-in-clear") && !refused.stdout.contains("typed-in-clear"),
        "{refused}"
    );

    // A CA that did not sign the brokers' certificates: the cluster is not
    // stored, and the answer names the cluster and the cause, not the secret.
    let other_ca = secure.other_ca()?;
    let untrusted = ctl(
        &fleet,
        &[
            "cluster",
            "add",
            "source",
            "--property-file",
            &path(&secure.file("source.properties")),
            "--property",
            &format!("ssl.ca.location={}", path(&other_ca)),
        ],
    )
    .await;
    untrusted.assert_failure(1, &["cluster source", "certificate verify failed"]);
    let secret = secure.password(Side::Source, KMIRROR_PRINCIPAL);
    assert!(
        !untrusted.stderr.contains(&secret) && !untrusted.stdout.contains(&secret),
        "{untrusted}"
    );
    eprintln!("untrusted CA: {untrusted}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn kmirror_mirror_takes_the_java_properties_of_the_secured_clusters() -> Result<()> {
    let secure = SecureStack::start("mirror").await?;
    let topic = source_topic(&secure, "secure-mirror", 3_000, 3).await;
    let dir = MirrorDir::new(&unique_name("secure-mirror"));
    let consumer = dir.file(
        "consumer.properties",
        &format!(
            "{}group.id={}\n",
            std::fs::read_to_string(secure.file("source.properties"))?,
            unique_name("secure-mirror-group")
        ),
    );
    let args: Vec<String> = [
        "mirror",
        "--consumer.config",
        &path(&consumer),
        "--producer.config",
        &path(&secure.file("dest.properties")),
        "--whitelist",
        &topic,
        "--until-caught-up",
        "--etcd",
        &kmirror_tests::stack::stack().etcd_endpoint,
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let mut process = MirrorProcess::start(&args, &dir.log_path());
    let status = process.wait(TIMEOUT).await;
    assert!(
        status.success(),
        "kmirror exited with {status}:\n{}",
        process.log()
    );
    assert_mirrored_exactly(&secure, &topic).await;
    let secret = secure.password(Side::Source, KMIRROR_PRINCIPAL);
    assert!(!process.log().contains(&secret));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_shows_in_logs_outputs_or_etcd_at_debug_level() -> Result<()> {
    let secure = SecureStack::start("sweep").await?;
    let receiver = OtlpReceiver::start().await?;
    let fleet = secure_fleet(
        &secure,
        "secure-sweep",
        vec![
            ("RUST_LOG".to_string(), "debug".to_string()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
                receiver.endpoint.clone(),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "200".to_string()),
        ],
    )
    .await;
    let topic = source_topic(&secure, "secure-sweep", 500, 2).await;
    let source_secret = secure.password(Side::Source, KMIRROR_PRINCIPAL);
    let dest_secret = secure.password(Side::Dest, KMIRROR_PRINCIPAL);
    let client_key = std::fs::read_to_string(secure.file("kmirror.key"))?;
    let key_line = client_key
        .lines()
        .nth(1)
        .expect("a PEM body line")
        .to_string();
    // librdkafka's own debug output too.
    let debug = "--property=debug=security,broker,protocol,conf,generic";
    let source_password = format!(
        "sasl.password=@{}",
        path(&secure.password_file(Side::Source, KMIRROR_PRINCIPAL))
    );
    let dest_password = format!(
        "sasl.password=@{}",
        path(&secure.password_file(Side::Dest, KMIRROR_PRINCIPAL))
    );
    let client_key_pem = format!("ssl.key.pem=@{}", path(&secure.file("kmirror.key")));
    let mut outputs = Vec::new();
    outputs.push(
        ctl(
            &fleet,
            &[
                "cluster",
                "add",
                "source",
                "--property-file",
                &path(&secure.file("source.properties")),
                debug,
            ],
        )
        .await
        .assert_success(),
    );
    // The client key given inline (ssl.key.pem) rather than as a path.
    outputs.push(
        ctl(
            &fleet,
            &[
                "cluster",
                "add",
                "dest",
                "--bootstrap",
                &secure.ssl_bootstrap(Side::Dest),
                "--property=security.protocol=SSL",
                &format!("--property=ssl.ca.location={}", path(&secure.ca())),
                &format!(
                    "--property=ssl.certificate.location={}",
                    path(&secure.file("kmirror.crt"))
                ),
                "--property",
                &client_key_pem,
                debug,
            ],
        )
        .await
        .assert_success(),
    );
    outputs.push(
        ctl(
            &fleet,
            &[
                "cluster",
                "add",
                "dest-scram",
                "--property-file",
                &path(&secure.file("dest-scram-sha-512.properties")),
                "--property",
                &dest_password,
                debug,
            ],
        )
        .await
        .assert_success(),
    );
    // Stored again with --replace: the kept sealed values open.
    outputs.push(
        ctl(
            &fleet,
            &[
                "cluster",
                "add",
                "source",
                "--replace",
                "--property",
                &source_password,
            ],
        )
        .await
        .assert_success(),
    );
    outputs.push(
        ctl(
            &fleet,
            &[
                "flow",
                "create",
                "sweep",
                "--source",
                "source",
                "--dest",
                "dest",
                "--include",
                &topic,
            ],
        )
        .await
        .assert_success(),
    );
    fleet.wait_for_mirror(&topic, 500, TIMEOUT).await;
    fleet.wait_caught_up("sweep", &topic, 2, TIMEOUT).await;
    for args in [
        vec!["status"],
        vec!["status", "-o", "json"],
        vec!["status", "-o", "yaml"],
        vec!["config", "show"],
        vec!["config", "show", "-o", "json"],
        vec!["cluster", "list"],
        vec!["cluster", "list", "-o", "json"],
        vec!["flow", "list", "-o", "json"],
        vec!["members", "-o", "json"],
    ] {
        outputs.push(ctl(&fleet, &args).await);
    }
    // Every member's metrics (labels name clusters, flows and topics only).
    let mut scraped = Vec::new();
    for (id, member) in members(&fleet).await? {
        if let Some(address) = member.metrics_address {
            let (_, body) = http_get(&address, "/metrics").await?;
            scraped.push((id, body));
        }
    }
    assert!(!scraped.is_empty());
    fleet.sigterm_all().await;
    // The spans exported while mirroring (and flushed on stop).
    let spans = receiver.spans();
    assert!(!spans.is_empty(), "no span was exported");

    let secrets = [
        ("source password", source_secret.as_str()),
        ("destination password", dest_secret.as_str()),
        ("client private key", key_line.as_str()),
    ];
    let mut hits = Vec::new();
    let mut searched = 0;
    let mut log_bytes = 0;
    for dir in [fleet.log_dir().to_path_buf(), secure.log_dir()] {
        for entry in std::fs::read_dir(&dir)? {
            let file = entry?.path();
            // Logs and files; the fleet's own certificates sit in a folder.
            if file.is_dir() {
                continue;
            }
            let text = String::from_utf8_lossy(&std::fs::read(&file)?).into_owned();
            searched += 1;
            log_bytes += text.len();
            for (what, secret) in secrets {
                if text.contains(secret) {
                    hits.push(format!("{what} in {}", file.display()));
                }
            }
        }
    }
    for output in &outputs {
        for (what, secret) in secrets {
            if output.stdout.contains(secret) || output.stderr.contains(secret) {
                hits.push(format!(
                    "{what} in the output of kmirrorctl {}",
                    output.args.join(" ")
                ));
            }
        }
    }
    let stored = etcd_values(&fleet).await;
    for (what, secret) in secrets {
        if stored.contains(secret) {
            hits.push(format!("{what} in etcd"));
        }
        for (id, body) in &scraped {
            if body.contains(secret) {
                hits.push(format!("{what} in the metrics of {id}"));
            }
        }
        if spans
            .iter()
            .any(|span| format!("{:?}", span.span).contains(secret))
        {
            hits.push(format!("{what} in an exported span"));
        }
    }
    eprintln!(
        "secrets sweep: {searched} log files ({log_bytes} bytes), {} kmirrorctl outputs, {} etcd bytes, {} metrics pages, {} spans: {} hits",
        outputs.len(),
        stored.len(),
        scraped.len(),
        spans.len(),
        hits.len()
    );
    // librdkafka's configuration dump was on, and redacts what it knows is secret.
    let coordinator_log = std::fs::read_to_string(fleet.log_dir().join("coordinator-0.log"))?;
    assert!(
        coordinator_log.contains("sasl.password = [redacted]"),
        "librdkafka's debug output is missing from the coordinator's log"
    );
    assert!(log_bytes > 0);
    assert!(hits.is_empty(), "secrets found: {hits:#?}");
    Ok(())
}
