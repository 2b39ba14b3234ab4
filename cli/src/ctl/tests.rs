use super::clusters::cluster_stored_action;
use super::status::watch_document;
use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("kmirrorctl").chain(args.iter().copied()))
}

#[test]
fn the_command_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn cluster_add_collects_repeated_properties() {
    let cli = parse(&[
        "cluster",
        "add",
        "source",
        "--bootstrap",
        "127.0.0.1:19092",
        "--property",
        "security.protocol=SASL_SSL",
        "--property",
        "sasl.password=a=b",
    ])
    .unwrap();
    let Command::Cluster(ClusterCommand::Add {
        name,
        bootstrap,
        properties,
        replace,
        ..
    }) = cli.command
    else {
        panic!("parsed as another command");
    };
    assert_eq!(name, "source");
    assert_eq!(bootstrap.as_deref(), Some("127.0.0.1:19092"));
    assert!(!replace);
    assert_eq!(
        properties,
        vec![
            ("security.protocol".to_string(), "SASL_SSL".to_string()),
            ("sasl.password".to_string(), "a=b".to_string()),
        ]
    );
}

#[test]
fn a_property_without_equals_is_a_usage_error() {
    let error = parse(&[
        "cluster",
        "add",
        "s",
        "--bootstrap",
        "h:1",
        "--property",
        "novalue",
    ])
    .unwrap_err();
    assert_eq!(error.exit_code(), 2);
    assert!(error.to_string().contains("expected KEY=VALUE"));
}

#[test]
fn flow_create_requires_source_dest_and_include() {
    let error = parse(&["flow", "create", "dr", "--source", "a", "--dest", "b"]).unwrap_err();
    assert_eq!(error.exit_code(), 2);
    let cli = parse(&[
        "flow",
        "create",
        "dr",
        "--source",
        "a",
        "--dest",
        "b",
        "--include",
        "x.*",
    ])
    .unwrap();
    assert!(matches!(
        cli.command,
        Command::Flow(FlowCommand::Create {
            exclude: None,
            start: StartArg::Earliest,
            until_caught_up: false,
            ..
        })
    ));
}

#[test]
fn flow_create_takes_rename_start_and_migration_options() {
    let cli = parse(&[
        "flow",
        "create",
        "move",
        "--source",
        "a",
        "--dest",
        "b",
        "--include",
        ".*",
        "--prefix",
        "east",
        "--start",
        "2024-05-01T00:00:00Z",
        "--until-caught-up",
        "--config-exclude",
        "retention\\..*",
    ])
    .unwrap();
    let Command::Flow(FlowCommand::Create {
        prefix,
        start,
        until_caught_up,
        config_exclude,
        ..
    }) = cli.command
    else {
        panic!("parsed as another command");
    };
    assert_eq!(prefix.as_deref(), Some("east"));
    assert_eq!(start, StartArg::Timestamp(1_714_521_600_000));
    assert!(until_caught_up);
    assert_eq!(config_exclude, vec!["retention\\..*"]);
}

#[test]
fn flow_create_exactly_once_is_off_unless_asked_for() {
    let base = [
        "flow",
        "create",
        "ledger",
        "--source",
        "a",
        "--dest",
        "b",
        "--include",
        "x",
    ];
    let exactly_once_of = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        match parse(&args).unwrap().command {
            Command::Flow(FlowCommand::Create { exactly_once, .. }) => exactly_once,
            _ => panic!("parsed as another command"),
        }
    };
    assert!(!exactly_once_of(&[]));
    assert!(exactly_once_of(&["--exactly-once"]));
    // A switch: it takes no value.
    let args: Vec<&str> = base
        .iter()
        .chain(&["--exactly-once", "false"])
        .copied()
        .collect();
    assert_eq!(parse(&args).unwrap_err().exit_code(), 2);
}

#[test]
fn exactly_once_help_says_what_it_guarantees_and_what_it_costs() {
    let mut command = Cli::command();
    let create = command
        .find_subcommand_mut("flow")
        .and_then(|flow| flow.find_subcommand_mut("create"))
        .unwrap();
    let help = create.render_long_help().to_string();
    for words in [
        "--exactly-once",
        "isolation.level=read_committed",
        "exactly once",
        "one transaction per batch",
        "bench/README.md",
        "aborted transactions",
    ] {
        assert!(help.contains(words), "{words:?} missing from:\n{help}");
    }
}

#[test]
fn start_positions_parse() {
    assert_eq!(parse_start("latest"), Ok(StartArg::Latest));
    assert_eq!(
        parse_start("1700000000000"),
        Ok(StartArg::Timestamp(1_700_000_000_000))
    );
    assert!(parse_start("yesterday").unwrap_err().contains("RFC 3339"));
}

#[test]
fn every_command_takes_every_output_format() {
    for format in ["text", "wide", "json", "yaml"] {
        let cli = parse(&["status", "--flow", "dr", "-o", format]).unwrap();
        assert!(
            matches!(cli.command, Command::Status { flow: Some(ref flow), .. } if flow == "dr")
        );
        parse(&["flow", "list", "-o", format]).unwrap();
        parse(&["-o", format, "members"]).unwrap();
        parse(&["cluster", "list", "--output", format]).unwrap();
    }
    let error = parse(&["status", "-o", "xml"]).unwrap_err();
    assert_eq!(error.exit_code(), 2);
}

#[test]
fn the_coordinator_flag_works_before_or_after_the_command() {
    let cli = parse(&["members", "--coordinator", "10.0.0.1:7070"]).unwrap();
    assert_eq!(cli.connection.coordinator.as_deref(), Some("10.0.0.1:7070"));
    let cli = parse(&["--coordinator", "http://c:1", "flow", "list"]).unwrap();
    assert_eq!(cli.connection.coordinator.as_deref(), Some("http://c:1"));
    let cli = parse(&["status", "--context", "lab", "--tls-ca", "ca.pem"]).unwrap();
    assert_eq!(cli.connection.context.as_deref(), Some("lab"));
    assert_eq!(
        cli.connection.tls_ca,
        Some(std::path::PathBuf::from("ca.pem"))
    );
}

#[test]
fn a_bare_host_and_port_gets_a_scheme() {
    assert_eq!(coordinator_uri("127.0.0.1:7070"), "http://127.0.0.1:7070");
    assert_eq!(coordinator_uri("http://c:7070"), "http://c:7070");
    assert_eq!(coordinator_uri("https://c:7070"), "https://c:7070");
}

#[test]
fn failures_print_what_and_cause_on_one_line() {
    let status = Status::already_exists("flow dr already exists");
    let failure = Failure {
        what: "cannot create flow dr".to_string(),
        cause: status_cause(&status, "http://127.0.0.1:7070"),
    };
    assert_eq!(
        failure.to_string(),
        "error: cannot create flow dr: flow dr already exists"
    );
}

#[test]
fn a_coordinator_unavailable_answer_is_not_a_connection_failure() {
    let status = Status::unavailable("cannot reach cluster src at 127.0.0.1:1: timed out");
    assert_eq!(
        status_cause(&status, "http://127.0.0.1:7070"),
        "cannot reach cluster src at 127.0.0.1:1: timed out"
    );
}

#[test]
fn every_subcommand_has_examples() {
    let command = Cli::command();
    let mut missing = Vec::new();
    for group in command.get_subcommands() {
        let leaves: Vec<&clap::Command> = if group.has_subcommands() {
            group.get_subcommands().collect()
        } else {
            vec![group]
        };
        for leaf in leaves {
            let examples = leaf
                .get_after_help()
                .map(|help| help.to_string().contains("Examples:"))
                .unwrap_or(false);
            if !examples {
                missing.push(leaf.get_name().to_string());
            }
        }
    }
    assert!(missing.is_empty(), "no examples for {missing:?}");
}

#[test]
fn completion_scripts_name_the_commands() {
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "kmirrorctl", &mut script);
        let script = String::from_utf8(script).unwrap();
        assert!(script.contains("rebalance"), "{shell}");
    }
}

#[test]
fn remove_property_needs_replace() {
    let error = parse(&[
        "cluster",
        "add",
        "s",
        "--bootstrap",
        "h:1",
        "--remove-property",
        "compression.type",
    ])
    .unwrap_err();
    assert_eq!(error.exit_code(), 2);
    assert!(error.to_string().contains("--replace"), "{error}");
}

#[test]
fn a_replaced_cluster_says_which_properties_it_kept_and_removed() {
    assert_eq!(cluster_stored_action(false, &[], &[]), "added");
    assert_eq!(cluster_stored_action(true, &[], &[]), "stored");
    assert_eq!(
        cluster_stored_action(
            true,
            &["security.protocol".to_string(), "sasl.username".to_string()],
            &["compression.type".to_string()]
        ),
        "stored (kept properties: security.protocol, sasl.username; removed properties: compression.type)"
    );
}

#[test]
fn several_coordinators_are_tried_in_the_order_given() {
    assert_eq!(
        coordinator_addresses(" 10.0.0.5:7070, http://10.0.0.6:7070,,"),
        vec![
            "10.0.0.5:7070".to_string(),
            "http://10.0.0.6:7070".to_string()
        ]
    );
    assert!(coordinator_addresses(" , ").is_empty());
}

#[tokio::test]
async fn the_next_coordinator_is_used_when_the_first_is_unreachable() {
    // A port nothing listens on: bind one, then free it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_address = closed.local_addr().unwrap().to_string();
    drop(closed);
    let failure = Ctl::connect(
        &format!("{closed_address},{closed_address}"),
        &Transport::Insecure,
        BearerToken::default(),
        OutputFormat::Text,
    )
    .await
    .err()
    .expect("nothing answers");
    assert_eq!(failure.what, "cannot reach the coordinator at any address");
    assert!(failure.cause.contains(&closed_address), "{failure}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open_address = listener.local_addr().unwrap().to_string();
    let ctl = Ctl::connect(
        &format!("{closed_address},{open_address}"),
        &Transport::Insecure,
        BearerToken::default(),
        OutputFormat::Text,
    )
    .await
    .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(ctl.coordinator, open_address);
}

#[test]
fn watched_json_is_one_document_per_line() {
    let first = watch_document(
        OutputFormat::Json,
        &serde_json::json!({"flows": [{"name": "dr"}]}),
    );
    let second = watch_document(OutputFormat::Json, &serde_json::json!({"flows": []}));
    let stream = format!("{first}{second}");
    let documents: Vec<serde_json::Value> = stream
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(documents.len(), 2);
    assert_eq!(documents[0]["flows"][0]["name"], "dr");
    let yaml = watch_document(OutputFormat::Yaml, &serde_json::json!({"flows": []}));
    assert!(yaml.starts_with("---\n"), "{yaml}");
}
