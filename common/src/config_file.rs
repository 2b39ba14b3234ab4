//! Service config files: a YAML file of the same family as `kmirror.yaml`, whose
//! settings are the service's flags by their long names (camelCase or kebab-case):
//!
//! ```yaml
//! apiVersion: kmirror.io/v1
//! kind: Coordinator            # Fetcher, Writer
//! spec:
//!   etcd: [http://10.0.0.5:2379]
//!   fleet: prod
//!   leaseTtl: 6s
//!   refreshInterval: 5s
//! ```
//!
//! Precedence: flags, then `KMIRROR_*` environment variables, then the file, then
//! the defaults. The file is found with `--config FILE` or `KMIRROR_CONFIG`. A
//! setting that names no flag is an error, never silently ignored.
//!
//! Both sources convert into the role's config (plain serde data, see
//! [`crate::member_config`]): the file's settings, then the flags and variables
//! clap found given, as text under the same camelCase names, deserialized once.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::member_config::MemberConfig;

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "KMIRROR_CONFIG";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigFileError {
    #[error("cannot read config file {path}: {cause}")]
    Read { path: PathBuf, cause: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("invalid settings: {message}")]
    Settings { message: String },
}

/// `leaseTtl` and `lease_ttl` as the flag `lease-ttl`.
fn flag_name(key: &str) -> String {
    let mut name = String::with_capacity(key.len() + 4);
    for character in key.chars() {
        if character.is_ascii_uppercase() {
            name.push('-');
            name.push(character.to_ascii_lowercase());
        } else if character == '_' {
            name.push('-');
        } else {
            name.push(character);
        }
    }
    name
}

/// `lease_ttl` (a flag's id, its field's name) as the config's `leaseTtl`.
fn camel_case(id: &str) -> String {
    let mut name = String::with_capacity(id.len());
    let mut upper = false;
    for character in id.chars() {
        if character == '_' || character == '-' {
            upper = true;
        } else if upper {
            name.push(character.to_ascii_uppercase());
            upper = false;
        } else {
            name.push(character);
        }
    }
    name
}

/// `Coordinator` for `kmirror-coordinator`.
fn expected_kind(command: &Command) -> String {
    let role = command
        .get_name()
        .strip_prefix("kmirror-")
        .unwrap_or(command.get_name());
    let mut kind = String::new();
    let mut chars = role.chars();
    if let Some(first) = chars.next() {
        kind.push(first.to_ascii_uppercase());
        kind.extend(chars);
    }
    kind
}

/// The id of the `--config` flag, which names the file and is no setting.
fn config_arg_id(command: &Command) -> Option<String> {
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some("config"))
        .map(|arg| arg.get_id().to_string())
}

fn is_setting(arg: &clap::Arg, config_id_opt: Option<&str>) -> bool {
    Some(arg.get_id().as_str()) != config_id_opt
        && !matches!(arg.get_action(), ArgAction::Help | ArgAction::Version)
        && arg.get_long().is_some()
}

/// Reads the role's config from what clap parsed (`matches` of `command`) and
/// the config file it names, if any.
pub fn service_config<C: DeserializeOwned>(
    command: &Command,
    matches: &ArgMatches,
) -> Result<C, ConfigFileError> {
    config_from(command, matches, false)
}

/// What the flags' defaults come to: tests keep each config's `Default` equal.
pub fn flag_defaults<C: DeserializeOwned>(command: &Command) -> Result<C, ConfigFileError> {
    let matches = command
        .clone()
        .no_binary_name(true)
        .try_get_matches_from(Vec::<String>::new())
        .map_err(|error| ConfigFileError::Settings {
            message: error.to_string(),
        })?;
    config_from(command, &matches, true)
}

fn config_from<C: DeserializeOwned>(
    command: &Command,
    matches: &ArgMatches,
    with_defaults: bool,
) -> Result<C, ConfigFileError> {
    let config_id_opt = config_arg_id(command);
    let path_opt = config_id_opt
        .as_deref()
        .and_then(|id| matches.get_raw(id))
        .and_then(|mut raw| raw.next())
        .map(PathBuf::from)
        .filter(|path| !path.as_os_str().is_empty());
    let mut settings = match &path_opt {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| ConfigFileError::Read {
                path: path.clone(),
                cause: error.to_string(),
            })?;
            file_settings(command, path, &text)?
        }
        None => Map::new(),
    };
    for arg in command.get_arguments() {
        if !is_setting(arg, config_id_opt.as_deref()) {
            continue;
        }
        let id = arg.get_id().as_str();
        let given = match matches.value_source(id) {
            Some(ValueSource::CommandLine | ValueSource::EnvVariable) => true,
            Some(ValueSource::DefaultValue) => with_defaults,
            _ => false,
        };
        if !given {
            continue;
        }
        let Some(raw) = matches.get_raw(id) else {
            continue;
        };
        let mut texts: Vec<Value> = raw
            .map(|text| Value::String(text.to_string_lossy().into_owned()))
            .collect();
        let value = if texts.len() == 1 && !matches!(arg.get_action(), ArgAction::Append) {
            texts.remove(0)
        } else {
            Value::Array(texts)
        };
        settings.insert(camel_case(id), value);
    }
    let invalid = |message: String| match &path_opt {
        Some(path) => ConfigFileError::Invalid {
            path: path.clone(),
            message,
        },
        None => ConfigFileError::Settings { message },
    };
    serde_json::from_value(Value::Object(nest(settings)))
        .map_err(|error| invalid(error.to_string()))
}

/// Flat settings (as files and flags name them) in the config's shape: the
/// settings every role has under `member`.
fn nest(settings: Map<String, Value>) -> Map<String, Value> {
    let mut member = Map::new();
    let mut nested = Map::new();
    for (key, value) in settings {
        if MemberConfig::FIELDS.contains(&key.as_str()) {
            member.insert(key, value);
        } else {
            nested.insert(key, value);
        }
    }
    nested.insert("member".to_string(), Value::Object(member));
    nested
}

/// Reads a config written with the config's own names (camelCase, the member
/// part flat beside the role's settings), without flags: for tests and tools.
pub fn from_yaml<C: DeserializeOwned>(text: &str) -> Result<C, String> {
    let document: Value = serde_saphyr::from_str(text).map_err(|error| error.to_string())?;
    let Value::Object(settings) = document else {
        return Err("expected a mapping of settings".to_string());
    };
    serde_json::from_value(Value::Object(nest(settings))).map_err(|error| error.to_string())
}

/// The file's settings under the config's names: `leaseTtl`, `lease-ttl` and
/// `lease_ttl` are one setting, and so are a flag's long name and its field's
/// (`producerProperty`, `producerProperties`).
fn file_settings(
    command: &Command,
    path: &Path,
    text: &str,
) -> Result<Map<String, Value>, ConfigFileError> {
    let invalid = |message: String| ConfigFileError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let document: Value =
        serde_saphyr::from_str(text).map_err(|error| invalid(error.to_string()))?;
    let Value::Object(mut top) = document else {
        return Err(invalid("expected a mapping of settings".to_string()));
    };
    if let Some(kind) = top.remove("kind") {
        let expected = expected_kind(command);
        if kind.as_str() != Some(expected.as_str()) {
            return Err(invalid(format!("kind {kind}: this is the {expected}'s")));
        }
    }
    top.remove("apiVersion");
    top.remove("metadata");
    let settings = match top.remove("spec") {
        Some(Value::Object(spec)) if top.is_empty() => spec,
        Some(_) if !top.is_empty() => {
            let keys: Vec<&String> = top.keys().collect();
            return Err(invalid(format!("unknown top-level settings {keys:?}")));
        }
        Some(_) => return Err(invalid("spec: expected a mapping".to_string())),
        None => top,
    };
    let config_id_opt = config_arg_id(command);
    let mut named = Map::new();
    for (key, value) in settings {
        let wanted = flag_name(&key);
        let field = wanted.replace('-', "_");
        let Some(arg) = command.get_arguments().find(|arg| {
            is_setting(arg, config_id_opt.as_deref())
                && (arg.get_long() == Some(wanted.as_str()) || arg.get_id().as_str() == field)
        }) else {
            return Err(invalid(format!(
                "unknown setting {key} (settings are the flags of {}, without --)",
                command.get_name()
            )));
        };
        if matches!(arg.get_action(), ArgAction::SetTrue) && !value.is_boolean() {
            return Err(invalid(format!(
                "{key}: expected true or false, got {value}"
            )));
        }
        named.insert(camel_case(arg.get_id().as_str()), value);
    }
    Ok(named)
}

/// Parses a service's command line and reads its config (flags, then
/// `KMIRROR_*` environment variables, then the config file, then the defaults).
/// A config that cannot be used is reported and the process exits with code 2.
pub fn parse_service_args<Args: clap::Parser, C: DeserializeOwned>() -> (Args, C) {
    let command = Args::command();
    let matches = command.clone().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(error) => error.exit(),
    };
    match service_config(&command, &matches) {
        Ok(config) => (args, config),
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args as _, CommandFactory, Parser};
    use serde::Deserialize;
    use std::time::Duration;

    use crate::member_config::text;
    use crate::service::MemberArgs;

    /// A role of two settings beside the member part, as each role's crate has.
    #[derive(Debug, Parser)]
    #[command(name = "kmirror-writer")]
    struct Flags {
        #[arg(long, env = "KMIRROR_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        member: MemberArgs,
        #[arg(long = "producer-property")]
        producer_properties: Vec<String>,
        #[arg(long, default_value = "1s")]
        retry_backoff: String,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields, default)]
    struct Config {
        member: MemberConfig,
        #[serde(deserialize_with = "text::properties")]
        producer_properties: Vec<(String, String)>,
        #[serde(deserialize_with = "text::duration")]
        retry_backoff: Duration,
    }

    impl Default for Config {
        fn default() -> Self {
            Self {
                member: MemberConfig::default(),
                producer_properties: Vec::new(),
                retry_backoff: Duration::from_secs(1),
            }
        }
    }

    fn write(text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "kmirror-config-{}-{}.yaml",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn parse(args: &[&str]) -> Result<Config, ConfigFileError> {
        let command = Flags::command();
        let matches = command.clone().try_get_matches_from(args).unwrap();
        service_config(&command, &matches)
    }

    #[test]
    fn the_defaults_are_the_flags_defaults() {
        let command = MemberArgs::augment_args(Command::new("kmirror-fetcher"));
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct OnlyMember {
            member: MemberConfig,
        }
        let from_flags: OnlyMember = flag_defaults(&command).unwrap();
        assert_eq!(from_flags.member, MemberConfig::default());
    }

    #[test]
    fn flags_convert_into_the_config() {
        let config = parse(&[
            "kmirror-writer",
            "--etcd",
            "http://a:2379,http://b:2379",
            "--lease-ttl",
            "3s",
            "--worker-threads",
            "2",
            "--metrics-listen",
            "off",
            "--producer-property",
            "linger.ms=10",
            "--producer-property",
            "acks=all",
        ])
        .unwrap();
        assert_eq!(config.member.etcd, ["http://a:2379", "http://b:2379"]);
        assert_eq!(config.member.lease_ttl, Duration::from_secs(3));
        assert_eq!(config.member.worker_threads, 2);
        assert_eq!(config.member.metrics_listen.0, None);
        assert_eq!(
            config.producer_properties,
            [
                ("linger.ms".to_string(), "10".to_string()),
                ("acks".to_string(), "all".to_string())
            ]
        );
        assert_eq!(config.retry_backoff, Duration::from_secs(1));
    }

    #[test]
    fn tls_settings_come_from_the_file_and_the_flags_alike() {
        let path = write(
            "apiVersion: kmirror.io/v1\nkind: Writer\nspec:\n  tlsCert: /etc/kmirror/tls/writer.pem\n  tlsKey: /etc/kmirror/tls/writer.key\n  tlsCa: /etc/kmirror/tls/ca.pem\n",
        );
        let path_text = path.display().to_string();
        let config = parse(&["kmirror-writer", "--config", &path_text]).unwrap();
        let settings = config.member.transport_settings();
        assert_eq!(
            settings.tls_cert.as_deref(),
            Some(std::path::Path::new("/etc/kmirror/tls/writer.pem"))
        );
        assert_eq!(
            settings.tls_ca.as_deref(),
            Some(std::path::Path::new("/etc/kmirror/tls/ca.pem"))
        );
        assert!(!settings.insecure);
        assert!(settings.paths().unwrap().is_some());

        let config = parse(&["kmirror-writer", "--insecure"]).unwrap();
        assert!(config.member.insecure);
        assert!(config
            .member
            .transport_settings()
            .paths()
            .unwrap()
            .is_none());
        let path = write("apiVersion: kmirror.io/v1\nkind: Writer\nspec:\n  insecure: yes\n");
        let path_text = path.display().to_string();
        let config = parse(&["kmirror-writer", "--config", &path_text]).unwrap();
        assert!(config.member.insecure);
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_the_defaults() {
        let path = write(
            "apiVersion: kmirror.io/v1\nkind: Writer\nspec:\n  fleet: from-file\n  leaseTtl: 9s\n  worker-threads: 3\n  etcd: [http://a:2379, http://b:2379]\n  producerProperties:\n    linger.ms: 10\n",
        );
        let path_text = path.display().to_string();
        let config = parse(&["kmirror-writer", "--config", &path_text]).unwrap();
        assert_eq!(config.member.fleet, "from-file");
        assert_eq!(config.member.lease_ttl, Duration::from_secs(9));
        assert_eq!(config.member.worker_threads, 3);
        assert_eq!(config.member.etcd, ["http://a:2379", "http://b:2379"]);
        assert_eq!(
            config.producer_properties,
            [("linger.ms".to_string(), "10".to_string())]
        );
        assert_eq!(config.member.shutdown_grace, Duration::from_secs(20));
        let config = parse(&[
            "kmirror-writer",
            "--config",
            &path_text,
            "--fleet",
            "from-flag",
        ])
        .unwrap();
        assert_eq!(config.member.fleet, "from-flag");
        assert_eq!(config.member.lease_ttl, Duration::from_secs(9));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_flat_file_and_the_flags_long_names_are_read_too() {
        let path = write("fleet: flat\nproducer-property: [acks=all]\nlease_ttl: 2s\n");
        let config = parse(&["kmirror-writer", "--config", &path.display().to_string()]).unwrap();
        assert_eq!(config.member.fleet, "flat");
        assert_eq!(config.member.lease_ttl, Duration::from_secs(2));
        assert_eq!(
            config.producer_properties,
            [("acks".to_string(), "all".to_string())]
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn unknown_settings_bad_values_and_wrong_kinds_are_errors() {
        let path = write("spec:\n  fleeet: typo\n");
        let error =
            parse(&["kmirror-writer", "--config", &path.display().to_string()]).unwrap_err();
        assert!(
            error.to_string().contains("unknown setting fleeet"),
            "{error}"
        );
        std::fs::remove_file(path).unwrap();
        let path = write("kind: Fetcher\nspec:\n  fleet: x\n");
        let error =
            parse(&["kmirror-writer", "--config", &path.display().to_string()]).unwrap_err();
        assert!(error.to_string().contains("Writer"), "{error}");
        std::fs::remove_file(path).unwrap();
        let path = write("leaseTtl: 6\nworkerThreads: 0\n");
        let error =
            parse(&["kmirror-writer", "--config", &path.display().to_string()]).unwrap_err();
        assert!(error.to_string().contains("6"), "{error}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn yaml_converts_into_the_config_and_unknown_keys_are_refused() {
        let config: Config =
            from_yaml("fleet: prod\nleaseTtl: 4s\nretryBackoff: 250ms\nmetricsLabels: topic\n")
                .unwrap();
        assert_eq!(config.member.fleet, "prod");
        assert_eq!(config.member.lease_ttl, Duration::from_secs(4));
        assert_eq!(config.retry_backoff, Duration::from_millis(250));
        assert_eq!(
            config.member.metrics_labels,
            crate::metrics::Granularity::Topic
        );
        let error = from_yaml::<Config>("fleet: prod\nretryBackof: 1s\n").unwrap_err();
        assert!(error.contains("unknown field `retryBackof`"), "{error}");
    }

    #[test]
    fn the_secrets_key_file_comes_from_the_file_or_the_flag() {
        let file = write("apiVersion: kmirror.io/v1\nkind: Writer\nspec:\n  secretsKeyFile: /etc/kmirror/secrets.key\n");
        let from_file = parse(&["kmirror-writer", "--config", file.to_str().unwrap()]).unwrap();
        assert_eq!(
            from_file.member.secrets_key_file.as_deref(),
            Some(std::path::Path::new("/etc/kmirror/secrets.key"))
        );
        let from_flag = parse(&[
            "kmirror-writer",
            "--config",
            file.to_str().unwrap(),
            "--secrets-key-file",
            "/run/secrets/fleet.key",
        ])
        .unwrap();
        assert_eq!(
            from_flag.member.secrets_key_file.as_deref(),
            Some(std::path::Path::new("/run/secrets/fleet.key"))
        );
        assert_eq!(
            parse(&["kmirror-writer"]).unwrap().member.secrets_key_file,
            None
        );
    }

    #[test]
    fn the_etcd_security_settings_come_from_the_file_or_the_flags() {
        let file = write("apiVersion: kmirror.io/v1\nkind: Writer\nspec:\n  etcd: https://etcd:2379\n  etcdCa: /etc/kmirror/etcd-ca.pem\n  etcdCert: /etc/kmirror/etcd.crt\n  etcdKey: /etc/kmirror/etcd.key\n  etcdUser: prod-writer\n  etcdPasswordFile: /etc/kmirror/etcd.password\n");
        let config = parse(&[
            "kmirror-writer",
            "--config",
            file.to_str().unwrap(),
            "--etcd-user",
            "other-writer",
        ])
        .unwrap();
        let security = config.member.etcd_settings().security;
        assert_eq!(security.user.as_deref(), Some("other-writer"));
        assert_eq!(
            security.ca.as_deref(),
            Some(std::path::Path::new("/etc/kmirror/etcd-ca.pem"))
        );
        assert_eq!(
            security.cert.as_deref(),
            Some(std::path::Path::new("/etc/kmirror/etcd.crt"))
        );
        assert_eq!(
            security.key.as_deref(),
            Some(std::path::Path::new("/etc/kmirror/etcd.key"))
        );
        assert_eq!(
            security.password_file.as_deref(),
            Some(std::path::Path::new("/etc/kmirror/etcd.password"))
        );
    }

    #[test]
    fn an_etcd_password_on_the_command_line_is_refused_without_echoing_it() {
        let error = Flags::command()
            .try_get_matches_from(["kmirror-writer", "--etcd-password", "hunter2"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--etcd-password-file"), "{error}");
        assert!(error.contains("readable by other users"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    mod generated {
        use proptest::prelude::*;

        use super::*;

        /// What `--config FILE` makes of a file's text (without the flags).
        fn config_of_file(text: &str) -> Result<Config, ConfigFileError> {
            let command = Flags::command();
            let path = Path::new("/etc/kmirror/writer.yaml");
            let settings = file_settings(&command, path, text)?;
            serde_json::from_value(Value::Object(nest(settings))).map_err(|error| {
                ConfigFileError::Invalid {
                    path: path.to_path_buf(),
                    message: error.to_string(),
                }
            })
        }

        /// YAML shaped like a member config, with names and values that may be wrong.
        fn yaml_strategy() -> impl Strategy<Value = String> {
            let key = prop_oneof![
                Just("fleet".to_string()),
                Just("leaseTtl".to_string()),
                Just("worker-threads".to_string()),
                Just("etcd".to_string()),
                Just("producerProperties".to_string()),
                Just("insecure".to_string()),
                Just("retry_backoff".to_string()),
                "[a-zA-Z_-]{1,12}",
            ];
            let value = prop_oneof![
                Just("3s".to_string()),
                Just("0".to_string()),
                Just("-1".to_string()),
                Just("yes".to_string()),
                Just("[a, b]".to_string()),
                Just("{linger.ms: 10}".to_string()),
                Just("~".to_string()),
                Just("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]".to_string()),
                "[ -~]{0,16}",
            ];
            (
                prop_oneof![
                    Just(""),
                    Just("kind: Writer\n"),
                    Just("kind: Fetcher\n"),
                    Just("apiVersion: kmirror.io/v1\n")
                ],
                any::<bool>(),
                prop::collection::vec((key, value), 0..6),
            )
                .prop_map(|(head, nested, settings)| {
                    let indent = if nested { "  " } else { "" };
                    let mut text = head.to_string();
                    if nested {
                        text.push_str("spec:\n");
                    }
                    for (key, value) in settings {
                        text.push_str(&format!("{indent}{key}: {value}\n"));
                    }
                    text
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn arbitrary_text_never_panics_the_member_config_files(text in "\\PC{0,200}") {
                if let Err(error) = config_of_file(&text) {
                    prop_assert!(
                        error.to_string().starts_with("config file /etc/kmirror/writer.yaml: "),
                        "{}", error
                    );
                }
                let _ = from_yaml::<Config>(&text);
            }

            #[test]
            fn wrong_member_config_files_are_errors_naming_the_file(text in yaml_strategy()) {
                match config_of_file(&text) {
                    Ok(_) => {}
                    Err(ConfigFileError::Invalid { path, message }) => {
                        prop_assert_eq!(path, Path::new("/etc/kmirror/writer.yaml"));
                        prop_assert!(!message.is_empty());
                    }
                    Err(other) => prop_assert!(false, "unexpected {:?}", other),
                }
                let _ = from_yaml::<Config>(&text);
            }
        }

        #[test]
        fn an_unknown_setting_is_named_in_the_error() {
            let error = config_of_file("spec:\n  leaseTtl: 3s\n  fleeet: typo\n").unwrap_err();
            assert!(
                error.to_string().contains("unknown setting fleeet"),
                "{error}"
            );
        }
    }
}
