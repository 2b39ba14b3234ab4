//! Config files into a running fleet: a MirrorMaker 2 config imported with
//! `kmirrorctl import mm2` mirrors to `A.<topic>`, and a Strimzi-shaped
//! `kmirror.yaml` is validated, shown (secrets masked) and applied.

use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{
    assert_same_partitions, create_topic, partition_count, produce, read_all, Cluster,
};
use kmirror_tests::mirror_process::MirrorDir;
use kmirror_tests::{stack, unique_name, Fleet, FleetOptions};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread")]
async fn an_mm2_config_imports_into_flows_that_mirror_to_prefixed_topics() -> Result<()> {
    let stack = stack();
    let prefix = unique_name("mm2");
    let topic = format!("{prefix}-orders");
    let excluded = format!("{prefix}-excluded");
    create_topic(Cluster::Source, &topic, 3, &[]).await?;
    create_topic(Cluster::Source, &excluded, 1, &[]).await?;
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords::new(3_000, 3).generate(),
    )
    .await?;
    produce(
        Cluster::Source,
        &excluded,
        KeyedRecords::new(100, 1).generate(),
    )
    .await?;

    let dir = MirrorDir::new(&unique_name("mm2-import"));
    let mm2 = dir.file(
        "mm2.properties",
        &format!(
            "clusters = A, B\n\
             A.bootstrap.servers = {}\n\
             B.bootstrap.servers = {}\n\
             B.producer.compression.type = lz4\n\
             A->B.enabled = true\n\
             A->B.topics = {prefix}-.*\n\
             topics.exclude = {excluded}\n\
             tasks.max = 8\n\
             sync.group.offsets.enabled = true\n",
            stack.source_bootstrap, stack.dest_bootstrap
        ),
    );
    let fleet = Fleet::start(FleetOptions::new("mm2-import")).await;
    let mm2_path = mm2.display().to_string();

    // A dry run stores nothing.
    let dry_run = fleet
        .ctl(["import", "mm2", &mm2_path, "--dry-run"])
        .await
        .assert_success();
    assert!(
        dry_run.stdout.contains("flow A-to-B created (dry run)"),
        "{dry_run}"
    );
    let flows = fleet
        .ctl(["flow", "list", "-o", "json"])
        .await
        .assert_success();
    let flows: Value = serde_json::from_str(&flows.stdout)?;
    assert_eq!(flows["flows"].as_array().map(Vec::len), Some(0));

    let import = fleet
        .ctl(["import", "mm2", &mm2_path])
        .await
        .assert_success();
    assert!(import.stdout.contains("cluster A created"), "{import}");
    assert!(import.stdout.contains("flow A-to-B created"), "{import}");
    assert!(import.stdout.contains("not mapped: tasks.max"), "{import}");
    assert!(
        !import.stdout.contains("not mapped: sync.group.offsets"),
        "{import}"
    );
    // MirrorMaker 2's group offset sync becomes the flow's, for its default groups.
    let flows = fleet
        .ctl(["flow", "list", "-o", "json"])
        .await
        .assert_success();
    let flows: Value = serde_json::from_str(&flows.stdout)?;
    assert_eq!(flows["flows"][0]["sync_group_offsets"], ".*", "{flows}");

    let dest_topic = format!("A.{topic}");
    fleet.wait_for_mirror(&dest_topic, 3_000, TIMEOUT).await;
    fleet.wait_caught_up("A-to-B", &topic, 3, TIMEOUT).await;
    assert_same_partitions(
        &read_all(Cluster::Source, &topic).await?,
        &read_all(Cluster::Dest, &dest_topic).await?,
    );
    assert_eq!(
        partition_count(Cluster::Dest, &format!("A.{excluded}")).await?,
        None,
        "the excluded topic was mirrored"
    );
    assert_eq!(partition_count(Cluster::Dest, &topic).await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kmirror_yaml_is_validated_shown_masked_and_applied() -> Result<()> {
    let stack = stack();
    let topic = unique_name("apply");
    create_topic(Cluster::Source, &topic, 2, &[]).await?;
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords::new(1_000, 2).generate(),
    )
    .await?;

    let dir = MirrorDir::new(&unique_name("apply"));
    dir.properties(
        "east.properties",
        &[
            ("client.id", "kmirror-east"),
            ("sasl.password", "not-a-real-secret"),
            ("security.protocol", "plaintext"),
        ],
    );
    let manifest = dir.file(
        "kmirror.yaml",
        &format!(
            "apiVersion: kmirror.io/v1\n\
             kind: KafkaMirrorMaker2\n\
             metadata:\n  name: dr\n\
             spec:\n\
             \x20 replicas: 2\n\
             \x20 target:\n\
             \x20   alias: central\n\
             \x20   bootstrapServers: {}\n\
             \x20 clusters:\n\
             \x20   - alias: east\n\
             \x20     bootstrapServers: {}\n\
             \x20     configFile: east.properties\n\
             \x20 mirrors:\n\
             \x20   - sourceCluster: east\n\
             \x20     name: east-dr\n\
             \x20     topicsPattern: \"{topic}\"\n\
             \x20     sourceConnector:\n\
             \x20       config:\n\
             \x20         replication.policy.class: org.apache.kafka.connect.mirror.IdentityReplicationPolicy\n",
            stack.dest_bootstrap, stack.source_bootstrap
        ),
    );
    let manifest_path = manifest.display().to_string();
    let fleet = Fleet::start(FleetOptions::new("apply")).await;

    let valid = fleet
        .ctl(["config", "validate", &manifest_path])
        .await
        .assert_success();
    assert!(
        valid.stdout.contains("is valid: 2 cluster(s), 1 flow(s)"),
        "{valid}"
    );
    assert!(
        valid.stdout.contains("not mapped: spec.replicas"),
        "{valid}"
    );
    let shown = fleet
        .ctl(["config", "show", "-f", &manifest_path])
        .await
        .assert_success();
    assert!(!shown.stdout.contains("not-a-real-secret"), "{shown}");
    assert!(shown.stdout.contains("sasl.password"), "{shown}");

    let broken = dir.file(
        "broken.yaml",
        "spec:\n  mirrors:\n    - sourceCluster: nowhere\n      targetCluster: central\n",
    );
    fleet
        .ctl(["config", "validate", &broken.display().to_string()])
        .await
        .assert_failure(1, &["broken.yaml", "nowhere"]);

    fleet
        .ctl(["apply", "-f", &manifest_path])
        .await
        .assert_success();
    fleet.wait_for_mirror(&topic, 1_000, TIMEOUT).await;
    fleet.wait_caught_up("east-dr", &topic, 2, TIMEOUT).await;
    assert_same_partitions(
        &read_all(Cluster::Source, &topic).await?,
        &read_all(Cluster::Dest, &topic).await?,
    );

    // The fleet's config reads back as a kmirror.yaml, secrets masked.
    let fleet_config = fleet.ctl(["config", "show"]).await.assert_success();
    assert!(fleet_config.stdout.contains("east-dr"), "{fleet_config}");
    assert!(
        !fleet_config.stdout.contains("not-a-real-secret"),
        "{fleet_config}"
    );
    // Applying again changes nothing and succeeds.
    fleet
        .ctl(["apply", "-f", &manifest_path])
        .await
        .assert_success();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleets_config_shown_and_applied_again_is_unchanged() -> Result<()> {
    let stack = stack();
    let prefix = unique_name("roundtrip");
    let fleet = Fleet::start(FleetOptions::new("roundtrip")).await;
    let ctl = |args: Vec<String>| {
        let fleet = &fleet;
        async move { fleet.ctl(&args).await.assert_success() }
    };
    let args = |line: &str| -> Vec<String> { line.split(' ').map(String::from).collect() };

    // Clusters and flows made with the command line, with defaults and without
    // (a secret from a file: on the command line it would be refused).
    let secret_dir = MirrorDir::new(&unique_name("roundtrip-secret"));
    let secret_file = secret_dir.file("east.password", "not-a-real-secret\n");
    ctl(args(&format!(
        "cluster add east --bootstrap {} --property client.id=kmirror-east --property sasl.password=@{}",
        stack.source_bootstrap,
        secret_file.display()
    )))
    .await;
    ctl(args(&format!(
        "cluster add central --bootstrap {}",
        stack.dest_bootstrap
    )))
    .await;
    ctl(args(&format!(
        "flow create plain --source east --dest central --include {prefix}-plain.*"
    )))
    .await;
    ctl(args(&format!(
        "flow create prefixed --source east --dest central --include {prefix}-prefixed.* --rename prefix --prefix dc1 --separator _ --start latest --no-sync-topic-configs"
    )))
    .await;
    let mut mapped = args(&format!(
        "flow create mapped --source east --dest central --include {prefix}-mapped --map {prefix}-mapped={prefix}-copy --start 2024-05-01T00:00:00Z --until-caught-up --config-exclude retention\\..*"
    ));
    mapped.extend(["--exclude".to_string(), String::new()]);
    ctl(mapped).await;

    let dir = MirrorDir::new(&prefix);
    let shown = ctl(args("config show")).await;
    assert!(!shown.stdout.contains("not-a-real-secret"), "{shown}");
    let file = dir.file("fleet.yaml", &shown.stdout).display().to_string();

    // Every object is reported unchanged, in words and in JSON.
    let dry_run = ctl(args(&format!("apply -f {file} --dry-run"))).await;
    for object in [
        "cluster east",
        "cluster central",
        "flow plain",
        "flow prefixed",
        "flow mapped",
    ] {
        assert!(
            dry_run.stdout.contains(&format!("{object} unchanged\n")),
            "{object}: {dry_run}"
        );
    }
    assert!(!dry_run.stdout.contains("configured"), "{dry_run}");
    assert!(!dry_run.stdout.contains("created"), "{dry_run}");
    let json: Value = serde_json::from_str(
        &ctl(args(&format!("apply -f {file} --dry-run -o json")))
            .await
            .stdout,
    )?;
    let actions: Vec<&str> = json["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|object| object["action"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(actions, vec!["unchanged"; 5], "{json}");

    // Applying it for real stores nothing: the fleet reads back the same.
    let applied = ctl(args(&format!("apply -f {file}"))).await;
    assert!(!applied.stdout.contains("configured"), "{applied}");
    let again = ctl(args("config show")).await;
    assert_eq!(again.stdout, shown.stdout);

    // A change is reported as configured, with the field that changes.
    let changed = shown.stdout.replace(
        &format!("topicsPattern: {prefix}-plain.*"),
        &format!("topicsPattern: {prefix}-other.*"),
    );
    assert_ne!(changed, shown.stdout, "{}", shown.stdout);
    let changed_file = dir.file("changed.yaml", &changed).display().to_string();
    let dry_run = ctl(args(&format!("apply -f {changed_file} --dry-run"))).await;
    assert!(
        dry_run.stdout.contains(&format!(
            "flow plain configured (dry run)\n  include: \"{prefix}-plain.*\" -> \"{prefix}-other.*\"\n"
        )),
        "{dry_run}"
    );
    assert!(
        dry_run.stdout.contains("flow mapped unchanged"),
        "{dry_run}"
    );
    Ok(())
}
