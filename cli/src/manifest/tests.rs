use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::*;

const MM2: &str = "\
clusters = A, B
A.bootstrap.servers = a:9092
B.bootstrap.servers = b:9092
A.consumer.fetch.min.bytes = 1
B.producer.compression.type = lz4
A->B.enabled = true
A->B.topics = orders.*, payments
topics.exclude = .*-tmp
replication.factor = 3
tasks.max = 4
emit.checkpoints.enabled = true
";

#[test]
fn an_mm2_config_becomes_clusters_and_a_prefix_flow() {
    let plan = import_mm2(MM2).unwrap();
    let names: Vec<&str> = plan.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["A", "B"]);
    assert_eq!(plan.clusters[0].properties["fetch.min.bytes"], "1");
    assert_eq!(plan.clusters[1].properties["compression.type"], "lz4");
    assert_eq!(plan.flows.len(), 1);
    let flow = &plan.flows[0];
    assert_eq!(flow.name, "A-to-B");
    assert_eq!(flow.include, "(?:orders.*)|(?:payments)");
    assert_eq!(flow.exclude, ".*-tmp");
    assert_eq!(flow.rename_policy, "prefix");
    assert_eq!(flow.rename_prefix, "A");
    assert_eq!(flow.rename_separator, ".");
    let unmapped: Vec<&str> = plan.unmapped.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(
        unmapped,
        vec![
            "emit.checkpoints.enabled",
            "replication.factor",
            "tasks.max"
        ]
    );
    let text = plan_text(&plan, "would be created");
    assert!(
        text.contains("not mapped: emit.checkpoints.enabled: kmirror emits no checkpoints topic"),
        "{text}"
    );
}

#[test]
fn group_offset_sync_maps_to_the_flow_as_mirror_maker_2_turns_it_on() {
    let plan = import_mm2(
            "clusters=A,B\nA.bootstrap.servers=a:1\nB.bootstrap.servers=b:1\nA->B.enabled=true\nA->B.sync.group.offsets.enabled=true\ngroups=billing.*,shipping\ngroups.exclude=billing-test\nsync.group.offsets.interval.seconds=30\nrefresh.groups.enabled=true\n",
        )
        .unwrap();
    let flow = &plan.flows[0];
    assert_eq!(flow.sync_group_offsets, "(?:billing.*)|(?:shipping)");
    assert_eq!(flow.sync_group_offsets_exclude, vec!["billing-test"]);
    assert!(flow.sync_group_offsets_exclude_set);
    assert_eq!(flow.sync_group_offsets_interval_ms, 30_000);
    let unmapped: Vec<&str> = plan.unmapped.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(unmapped, vec!["refresh.groups.enabled"]);
    assert!(plan.notes.is_empty(), "{:?}", plan.notes);

    // Off unless enabled, as in MirrorMaker 2: groups alone sync nothing, and a
    // note says how offsets translate instead.
    let plan = import_mm2(
        "clusters=A,B\nA.bootstrap.servers=a:1\nB.bootstrap.servers=b:1\nA->B.enabled=true\ngroups=.*\n",
    )
    .unwrap();
    assert_eq!(plan.flows[0].sync_group_offsets, "");
    assert!(
        plan.notes
            .iter()
            .any(|note| note.contains("kmirrorctl offsets translate")),
        "{:?}",
        plan.notes
    );
    let error = import_mm2(
        "clusters=A,B\nA.bootstrap.servers=a:1\nB.bootstrap.servers=b:1\nA->B.enabled=true\nsync.group.offsets.enabled=true\nsync.group.offsets.interval.seconds=soon\n",
    )
    .unwrap_err();
    assert!(
        error.0.contains("sync.group.offsets.interval.seconds"),
        "{error}"
    );
}

/// An MM2 file with one flow A->B and the given extra lines.
fn mm2_with(lines: &str) -> Result<ImportPlan, ManifestError> {
    import_mm2(&format!(
        "clusters=A,B\nA.bootstrap.servers=a:1\nB.bootstrap.servers=b:1\nA->B.enabled=true\n{lines}"
    ))
}

#[test]
fn exactly_once_maps_from_mirror_maker_2_as_it_writes_in_transactions() {
    let exactly_once = |lines: &str| mm2_with(lines).unwrap().flows[0].exactly_once;
    // Off by default, as in MirrorMaker 2.
    assert!(!exactly_once(""));
    // The worker setting of the target cluster, as MirrorMaker 2 documents it.
    assert!(exactly_once("B.exactly.once.source.support=enabled\n"));
    assert!(exactly_once("B.exactly.once.source.support = Enabled \n"));
    assert!(!exactly_once("B.exactly.once.source.support=disabled\n"));
    // The first of the two restarts that turn it on: no transactions yet.
    assert!(!exactly_once("B.exactly.once.source.support=preparing\n"));
    // The source cluster's setting is not the target's workers'.
    let plan = mm2_with("A.exactly.once.source.support=enabled\n").unwrap();
    assert!(!plan.flows[0].exactly_once);
    assert_eq!(
        plan.unmapped,
        vec![(
            "A.exactly.once.source.support".to_string(),
            "cluster A is no flow's target".to_string()
        )]
    );
    assert!(plan.clusters[0].properties.is_empty());
    assert!(plan.clusters[1].properties.is_empty());
    // The connector's setting: `required` asks for transactions; `requested`
    // (its default) leaves it to the worker's setting.
    assert!(exactly_once("A->B.exactly.once.support=required\n"));
    assert!(!exactly_once("A->B.exactly.once.support=requested\n"));
    assert!(exactly_once(
        "A->B.exactly.once.support=requested\nB.exactly.once.source.support=enabled\n"
    ));
    // The flow's own setting wins over the cluster's.
    assert!(!exactly_once(
        "A->B.exactly.once.source.support=disabled\nB.exactly.once.source.support=enabled\n"
    ));
    let plan = mm2_with("A->B.exactly.once.source.support=enabled\n").unwrap();
    assert!(plan.flows[0].exactly_once);
    assert!(plan.unmapped.is_empty(), "{:?}", plan.unmapped);
}

#[test]
fn a_top_level_exactly_once_setting_applies_to_every_flow_with_a_note() {
    let plan = import_mm2(
        "clusters=A,B\nA.bootstrap.servers=a:1\nB.bootstrap.servers=b:1\nA->B.enabled=true\nB->A.enabled=true\nexactly.once.source.support=enabled\nB->A.exactly.once.source.support=disabled\n",
    )
    .unwrap();
    let modes: Vec<(&str, bool)> = plan
        .flows
        .iter()
        .map(|flow| (flow.name.as_str(), flow.exactly_once))
        .collect();
    assert_eq!(modes, vec![("A-to-B", true), ("B-to-A", false)]);
    assert!(plan.unmapped.is_empty(), "{:?}", plan.unmapped);
    assert!(
        plan.notes
            .iter()
            .any(|note| note.contains("<target>.exactly.once.source.support")),
        "{:?}",
        plan.notes
    );
    assert!(plan_text(&plan, "would be created").contains(", exactly-once\n"));
}

#[test]
fn an_exactly_once_setting_mirror_maker_2_would_refuse_is_an_error_naming_it() {
    let error = mm2_with("B.exactly.once.source.support=true\n").unwrap_err();
    assert!(
        error.0.contains("exactly.once.source.support \"true\""),
        "{error}"
    );
    let error = mm2_with("exactly.once.support=always\n").unwrap_err();
    assert!(
        error.0.contains("exactly.once.support \"always\""),
        "{error}"
    );
    // Connect's transaction boundaries have no counterpart: one per batch.
    let plan = mm2_with("A->B.transaction.boundary=poll\n").unwrap();
    assert_eq!(plan.unmapped[0].0, "A->B.transaction.boundary");
    assert!(plan.unmapped[0].1.contains("one transaction per batch"));
}

#[test]
fn identity_policy_and_default_excludes() {
    let plan = import_mm2(
            "clusters=A,B\nA.bootstrap.servers=a:1\nB.bootstrap.servers=b:1\nA->B.enabled=true\nreplication.policy.class=org.apache.kafka.connect.mirror.IdentityReplicationPolicy\nsync.topic.configs.enabled=false\n",
        )
        .unwrap();
    let flow = &plan.flows[0];
    assert_eq!(flow.rename_policy, "identity");
    assert_eq!(flow.include, ".*");
    assert_eq!(
        flow.exclude,
        r"(?:.*[\-\.]internal)|(?:.*\.replica)|(?:__.*)"
    );
    assert_eq!(flow.sync_topic_configs, Some(false));
}

#[test]
fn mm2_errors_name_the_setting() {
    let error = import_mm2("clusters=A\nA.bootstrap.servers=a:1\nA->C.enabled=true\n").unwrap_err();
    assert!(error.0.contains("cluster C is not in clusters"), "{error}");
    let error =
        import_mm2("clusters=A,B\nA->B.enabled=true\nB.bootstrap.servers=b:1\n").unwrap_err();
    assert!(error.0.contains("A.bootstrap.servers"), "{error}");
}

#[test]
fn a_strimzi_shaped_manifest_becomes_clusters_and_flows() {
    let yaml = "\
apiVersion: kmirror.io/v1
kind: KafkaMirrorMaker2
metadata:
  name: dr
spec:
  replicas: 3
  target:
    alias: central
    bootstrapServers: c:9092
    config:
      compression.type: lz4
  clusters:
    - alias: east
      bootstrapServers: e:9092
  mirrors:
    - sourceCluster: east
      topicsPattern: \"orders.*, payments\"
      topicsExcludePattern: \".*-tmp\"
      groupsPattern: \".*\"
      sourceConnector:
        config:
          replication.policy.class: org.apache.kafka.connect.mirror.IdentityReplicationPolicy
          replication.factor: 3
      startPosition: latest
";
    let manifest: Manifest = serde_saphyr::from_str(yaml).unwrap();
    let plan = plan_manifest(&manifest, Path::new(".")).unwrap();
    assert_eq!(plan.clusters.len(), 2);
    assert_eq!(plan.clusters[0].name, "central");
    assert_eq!(plan.clusters[0].properties["compression.type"], "lz4");
    let flow = &plan.flows[0];
    assert_eq!(flow.name, "east-to-central");
    assert_eq!(flow.dest_cluster, "central");
    assert_eq!(flow.rename_policy, "identity");
    assert_eq!(flow.start, "latest");
    let unmapped: Vec<&str> = plan.unmapped.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(
        unmapped,
        vec![
            "spec.replicas",
            "spec.mirrors[0].sourceConnector.config.replication.factor"
        ]
    );
}

#[test]
fn a_manifest_rejects_unknown_settings_and_undefined_clusters() {
    let yaml = "spec:\n  replicaz: 3\n  mirrors: []\n";
    let manifest: Manifest = serde_saphyr::from_str(yaml).unwrap();
    let error = plan_manifest(&manifest, Path::new(".")).unwrap_err();
    assert!(error.0.contains("spec.replicaz"), "{error}");
    let yaml = "spec:\n  clusters:\n    - alias: a\n      bootstrapServers: a:1\n  mirrors:\n    - sourceCluster: a\n      targetCluster: b\n";
    let manifest: Manifest = serde_saphyr::from_str(yaml).unwrap();
    let error = plan_manifest(&manifest, Path::new(".")).unwrap_err();
    assert!(error.0.contains("cluster b is not defined"), "{error}");
}

/// A `KafkaMirrorMaker2` as Strimzi's examples and users write them: read
/// back from Kubernetes (namespace, status), TLS and SCRAM through secrets,
/// Connect's storage settings in the target's config, a checkpoint connector
/// syncing group offsets.
const STRIMZI: &str = r#"
apiVersion: kafka.strimzi.io/v1beta2
kind: KafkaMirrorMaker2
metadata:
  name: dr-mirror
  namespace: kafka
  labels:
    app: dr
  annotations:
    strimzi.io/use-connector-resources: "true"
spec:
  version: 3.9.0
  replicas: 2
  connectCluster: "dc-b"
  clusters:
    - alias: "dc-a"
      bootstrapServers: dc-a-kafka-bootstrap.kafka.svc:9093
      tls:
        trustedCertificates:
          - secretName: dc-a-cluster-ca-cert
            certificate: ca.crt
      authentication:
        type: scram-sha-512
        username: mirror
        passwordSecret:
          secretName: mirror-user
          password: password
    - alias: "dc-b"
      bootstrapServers: dc-b-kafka-bootstrap.kafka.svc:9093
      config:
        config.storage.replication.factor: -1
        offset.storage.replication.factor: -1
        status.storage.replication.factor: -1
        compression.type: zstd
  mirrors:
    - sourceCluster: "dc-a"
      targetCluster: "dc-b"
      sourceConnector:
        tasksMax: 4
        config:
          replication.factor: -1
          offset-syncs.topic.replication.factor: -1
          sync.topic.acls.enabled: "false"
          replication.policy.class: org.apache.kafka.connect.mirror.IdentityReplicationPolicy
      checkpointConnector:
        tasksMax: 1
        config:
          checkpoints.topic.replication.factor: -1
          sync.group.offsets.enabled: "true"
      topicsPattern: "orders.*, payments"
      groupsPattern: ".*"
  resources:
    requests:
      cpu: "1"
      memory: 2Gi
  logging:
    type: inline
    loggers:
      connect.root.logger.level: INFO
status:
  replicas: 2
"#;

#[test]
fn a_strimzi_resource_applies_with_every_unused_field_listed_as_not_mapped() {
    let manifest: Manifest = serde_saphyr::from_str(STRIMZI).unwrap();
    let plan = plan_manifest(&manifest, Path::new(".")).unwrap();
    let names: Vec<&str> = plan.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["dc-a", "dc-b"]);
    assert_eq!(
        plan.clusters[1].properties,
        HashMap::from([("compression.type".to_string(), "zstd".to_string())])
    );
    let flow = &plan.flows[0];
    assert_eq!(flow.name, "dc-a-to-dc-b");
    assert_eq!(flow.dest_cluster, "dc-b");
    assert_eq!(flow.rename_policy, "identity");
    assert_eq!(flow.include, "(?:orders.*)|(?:payments)");
    // The checkpoint connector's group offset sync, for the groups of groupsPattern.
    assert_eq!(flow.sync_group_offsets, ".*");
    let unmapped: BTreeMap<&str, &str> = plan
        .unmapped
        .iter()
        .map(|(key, reason)| (key.as_str(), reason.as_str()))
        .collect();
    let keys: Vec<&str> = unmapped.keys().copied().collect();
    assert_eq!(
        keys,
        vec![
            "cluster dc-a: authentication",
            "cluster dc-a: tls",
            "cluster dc-b: config.config.storage.replication.factor",
            "cluster dc-b: config.offset.storage.replication.factor",
            "cluster dc-b: config.status.storage.replication.factor",
            "metadata.annotations",
            "metadata.namespace",
            "spec.logging",
            "spec.mirrors[0].checkpointConnector.config.checkpoints.topic.replication.factor",
            "spec.mirrors[0].checkpointConnector.tasksMax",
            "spec.mirrors[0].sourceConnector.config.offset-syncs.topic.replication.factor",
            "spec.mirrors[0].sourceConnector.config.replication.factor",
            "spec.mirrors[0].sourceConnector.config.sync.topic.acls.enabled",
            "spec.mirrors[0].sourceConnector.tasksMax",
            "spec.replicas",
            "spec.resources",
            "spec.version",
            "status",
        ]
    );
    assert!(unmapped["cluster dc-a: tls"].contains("ssl.ca.location"));
    assert!(unmapped["cluster dc-a: authentication"].contains("sasl.password"));
    assert_eq!(
        unmapped["spec.mirrors[0].checkpointConnector.config.checkpoints.topic.replication.factor"],
        "kmirror keeps checkpoints in etcd"
    );
    // Nothing of the secrets' names leaks into what is stored.
    assert!(plan.clusters[0].properties.is_empty());
}

#[test]
fn a_manifest_turns_exactly_once_on_per_mirror_or_as_mirror_maker_2_does() {
    let yaml = "\
spec:
  target:
    alias: central
    bootstrapServers: c:9092
    config:
      exactly.once.source.support: enabled
  clusters:
    - alias: east
      bootstrapServers: e:9092
      config:
        exactly.once.source.support: enabled
    - alias: west
      bootstrapServers: w:9092
  mirrors:
    - sourceCluster: east
    - sourceCluster: east
      name: opted-out
      exactlyOnce: false
    - sourceCluster: central
      targetCluster: west
      name: asked
      exactlyOnce: true
    - sourceCluster: central
      targetCluster: west
      name: required
      sourceConnector:
        config:
          exactly.once.support: required
    - sourceCluster: central
      targetCluster: west
      name: plain
";
    let manifest: Manifest = serde_saphyr::from_str(yaml).unwrap();
    let plan = plan_manifest(&manifest, Path::new(".")).unwrap();
    let modes: Vec<(&str, bool)> = plan
        .flows
        .iter()
        .map(|flow| (flow.name.as_str(), flow.exactly_once))
        .collect();
    assert_eq!(
        modes,
        vec![
            ("east-to-central", true),
            ("opted-out", false),
            ("asked", true),
            ("required", true),
            ("plain", false),
        ]
    );
    // The worker setting is no client property; on a cluster no mirror writes
    // to, it is listed as not mapped.
    assert!(plan
        .clusters
        .iter()
        .all(|cluster| cluster.properties.is_empty()));
    let unmapped: Vec<&str> = plan.unmapped.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(
        unmapped,
        vec!["cluster east: config.exactly.once.source.support"]
    );

    let yaml = "spec:\n  target:\n    alias: c\n    bootstrapServers: c:1\n    config:\n      exactly.once.source.support: preparing\n  clusters:\n    - alias: e\n      bootstrapServers: e:1\n  mirrors:\n    - sourceCluster: e\n";
    let manifest: Manifest = serde_saphyr::from_str(yaml).unwrap();
    assert!(!plan_manifest(&manifest, Path::new(".")).unwrap().flows[0].exactly_once);
    let yaml = "spec:\n  target:\n    alias: c\n    bootstrapServers: c:1\n  clusters:\n    - alias: e\n      bootstrapServers: e:1\n  mirrors:\n    - sourceCluster: e\n      exactlyOnce: maybe\n";
    assert!(serde_saphyr::from_str::<Manifest>(yaml).is_err());
}

#[test]
fn config_show_writes_exactly_once_only_for_the_flows_that_have_it() {
    let flows = [true, false].map(|exactly_once| Flow {
        name: format!("flow-{exactly_once}"),
        source_cluster: "east".to_string(),
        dest_cluster: "central".to_string(),
        include: "orders".to_string(),
        exactly_once,
        ..Flow::default()
    });
    let yaml = crate::output::to_yaml(&manifest_of(&[], &flows));
    assert_eq!(yaml.matches("exactlyOnce: true").count(), 1, "{yaml}");
    assert!(!yaml.contains("exactlyOnce: false"), "{yaml}");
    assert!(!yaml.contains("exactly.once"), "{yaml}");
}

#[test]
fn a_flow_shown_as_yaml_plans_back_unchanged_whatever_its_options() {
    let clusters = vec![
        Cluster {
            name: "east".to_string(),
            bootstrap_servers: "e:9092".to_string(),
            properties: HashMap::from([
                ("sasl.password".to_string(), "********".to_string()),
                ("client.id".to_string(), "k".to_string()),
            ]),
        },
        Cluster {
            name: "central".to_string(),
            bootstrap_servers: "c:9092".to_string(),
            properties: HashMap::new(),
        },
    ];
    let base = Flow {
        source_cluster: "east".to_string(),
        dest_cluster: "central".to_string(),
        include: "orders.*".to_string(),
        ..Flow::default()
    };
    let flows: Vec<Flow> = [
        Flow {
            name: "plain".to_string(),
            ..base.clone()
        },
        Flow {
            name: "prefixed".to_string(),
            exclude: regex_list(MM2_DEFAULT_TOPICS_EXCLUDE),
            rename_policy: "prefix".to_string(),
            rename_prefix: "dc1".to_string(),
            rename_separator: "_".to_string(),
            start: "latest".to_string(),
            sync_topic_configs: Some(false),
            ..base.clone()
        },
        Flow {
            name: "mapped".to_string(),
            rename_policy: "map".to_string(),
            rename_map: HashMap::from([("orders".to_string(), "orders-copy".to_string())]),
            start: "timestamp".to_string(),
            start_timestamp_ms: 1_714_521_600_000,
            until_caught_up: true,
            exactly_once: true,
            sync_topic_configs_exclude_set: true,
            sync_topic_configs_exclude: vec![r"retention\..*".to_string()],
            ..base.clone()
        },
    ]
    .iter()
    .map(|flow| {
        let spec = kmirror_coordinator::admin::flow_spec(flow.clone()).unwrap();
        kmirror_coordinator::admin::flow_message(&spec, None)
    })
    .collect();
    let yaml = crate::output::to_yaml(&manifest_of(&clusters, &flows));
    let parsed: Manifest = serde_saphyr::from_str(&yaml).unwrap();
    let plan = plan_manifest(&parsed, Path::new(".")).unwrap();
    let objects = crate::plan_diff::compare(&plan, &clusters, &flows);
    assert_eq!(objects.len(), 5);
    for object in &objects {
        assert_eq!(
            object.action,
            crate::plan_diff::Action::Unchanged,
            "{object:?}\n{yaml}"
        );
    }
}

#[test]
fn the_fleet_renders_back_as_a_manifest_that_plans_the_same_flows() {
    let plan = import_mm2(MM2).unwrap();
    let manifest = manifest_of(&plan.clusters, &plan.flows);
    let yaml = crate::output::to_yaml(&manifest);
    let parsed: Manifest = serde_saphyr::from_str(&yaml).unwrap();
    let again = plan_manifest(&parsed, Path::new(".")).unwrap();
    assert_eq!(again.flows[0].include, plan.flows[0].include);
    assert_eq!(again.flows[0].rename_policy, "prefix");
    assert_eq!(again.clusters.len(), 2);
}

mod generated {
    use proptest::prelude::*;

    use super::*;

    /// An MirrorMaker 2 file of known and unknown settings, right or wrong.
    fn mm2_text() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("clusters".to_string()),
            Just("A.bootstrap.servers".to_string()),
            Just("B.bootstrap.servers".to_string()),
            Just("A->B.enabled".to_string()),
            Just("B->A.enabled".to_string()),
            Just("A->C.enabled".to_string()),
            Just("A->B.topics".to_string()),
            Just("topics.exclude".to_string()),
            Just("replication.policy.class".to_string()),
            Just("A.consumer.fetch.min.bytes".to_string()),
            Just("B.producer.acks".to_string()),
            Just("tasks.max".to_string()),
            Just("B.exactly.once.source.support".to_string()),
            Just("A->B.exactly.once.support".to_string()),
            "[A-C]?(->[A-C])?\\.?[a-z.]{0,12}",
        ];
        let value = prop_oneof![
            Just("A, B".to_string()),
            Just("true".to_string()),
            Just("a:9092".to_string()),
            Just("orders.*, (unclosed".to_string()),
            Just("org.apache.kafka.connect.mirror.IdentityReplicationPolicy".to_string()),
            Just("enabled".to_string()),
            Just("required".to_string()),
            "[ -~]{0,12}",
        ];
        // A working file, some of its lines left out, then lines that may
        // override it.
        let base = [
            "clusters = A, B",
            "A.bootstrap.servers = a:9092",
            "B.bootstrap.servers = b:9092",
            "A->B.enabled = true",
        ];
        (
            prop::collection::vec(prop::bool::weighted(0.85), base.len()),
            prop::collection::vec((key, value), 0..6),
        )
            .prop_map(move |(kept, lines)| {
                let mut text = String::new();
                for (line, keep) in base.iter().zip(kept) {
                    if keep {
                        text.push_str(line);
                        text.push('\n');
                    }
                }
                for (key, value) in lines {
                    text.push_str(&format!("{key} = {value}\n"));
                }
                text
            })
    }

    /// A `kmirror.yaml` with fields that may be missing, misspelt or mistyped.
    fn manifest_text() -> impl Strategy<Value = String> {
        let mirror_field = prop_oneof![
            Just("sourceCluster: east".to_string()),
            Just("sourceCluster: nowhere".to_string()),
            Just("targetCluster: central".to_string()),
            Just("topicsPattern: \"orders.*, (\"".to_string()),
            Just("topicsPattern: [a, b]".to_string()),
            Just("startPosition: yesterday".to_string()),
            Just("startPosition: latest".to_string()),
            Just("renameMap: {orders: \"bad name\"}".to_string()),
            Just("untilCaughtUp: maybe".to_string()),
            Just("exactlyOnce: maybe".to_string()),
            Just("exactlyOnce: true".to_string()),
            "[a-zA-Z]{1,10}: [ -~]{0,10}",
        ];
        (
            prop_oneof![
                2 => Just("kind: KafkaMirrorMaker2\n"),
                1 => Just("kind: Kafka\n"),
                2 => Just(""),
            ],
            prop_oneof![
                4 => Just("  target:\n    alias: central\n    bootstrapServers: c:9092\n"),
                1 => Just("  target:\n    alias: central\n"),
                1 => Just("  target: central\n"),
                1 => Just(""),
            ],
            prop_oneof![
                4 => Just("  clusters:\n    - alias: east\n      bootstrapServers: e:9092\n"),
                1 => Just("  clusters:\n    - alias: east\n      bootstrapServers: e:9092\n      config:\n        no.such.thing: 1\n"),
                1 => Just("  clusters: east\n"),
                1 => Just("  replicaz: 3\n"),
                1 => Just(""),
            ],
            prop::collection::vec(
                (
                    prop_oneof![
                        4 => Just("sourceCluster: east".to_string()),
                        1 => Just("sourceCluster: nowhere".to_string()),
                        1 => Just("name: x".to_string()),
                    ],
                    prop::collection::vec(mirror_field, 0..3),
                )
                    .prop_map(|(source, mut fields)| {
                        fields.insert(0, source);
                        fields
                    }),
                0..3,
            ),
        )
            .prop_map(|(kind, target, clusters, mirrors)| {
                let mut text = format!("{kind}spec:\n{target}{clusters}  mirrors:");
                if mirrors.is_empty() {
                    text.push_str(" []\n");
                } else {
                    text.push('\n');
                }
                for fields in mirrors {
                    text.push_str("    - {");
                    text.push_str(&fields.join(", "));
                    text.push_str("}\n");
                }
                text
            })
    }

    /// What `apply` makes of a manifest's text (no client files involved).
    fn plan_of(text: &str) -> Result<ImportPlan, ManifestError> {
        let manifest: Manifest =
            serde_saphyr::from_str(text).map_err(|error| ManifestError(error.to_string()))?;
        plan_manifest(&manifest, Path::new("/nonexistent/kmirror"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text_never_panics_the_mm2_import(text in "\\PC{0,200}") {
            if let Err(error) = import_mm2(&text) {
                prop_assert!(!error.0.is_empty());
            }
        }

        #[test]
        fn wrong_mm2_files_are_errors_naming_the_setting(text in mm2_text()) {
            match import_mm2(&text) {
                Ok(plan) => {
                    prop_assert!(!plan.flows.is_empty());
                    for flow in &plan.flows {
                        prop_assert!(plan.clusters.iter().any(|c| c.name == flow.source_cluster));
                        prop_assert!(plan.clusters.iter().any(|c| c.name == flow.dest_cluster));
                    }
                }
                Err(error) => {
                    prop_assert!(
                        error.0.contains("cluster")
                            || error.0.contains("enabled")
                            || error.0.contains("bootstrap.servers")
                            || error.0.contains("regex")
                            || error.0.contains("exactly.once")
                            || error.0.starts_with("line "),
                        "{}", error
                    );
                }
            }
        }

        #[test]
        fn arbitrary_text_never_panics_the_manifest_reader(text in "\\PC{0,200}") {
            if let Err(error) = plan_of(&text) {
                prop_assert!(!error.0.is_empty());
            }
        }

        #[test]
        fn wrong_manifests_are_errors_naming_what_is_wrong(text in manifest_text()) {
            match plan_of(&text) {
                Ok(plan) => {
                    for flow in &plan.flows {
                        prop_assert!(plan.clusters.iter().any(|c| c.name == flow.source_cluster));
                        prop_assert!(plan.clusters.iter().any(|c| c.name == flow.dest_cluster));
                    }
                }
                Err(error) => prop_assert!(!error.0.is_empty()),
            }
        }
    }
}
