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

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{ArgAction, Command};
use serde_json::Value;

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "KMIRROR_CONFIG";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigFileError {
    #[error("cannot read config file {path}: {cause}")]
    Read { path: PathBuf, cause: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
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

/// The value of `--config` on the command line, or of `KMIRROR_CONFIG`.
fn config_path(args: &[OsString], env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let arg = arg.to_string_lossy();
        if arg == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    env(CONFIG_ENV)
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

fn given_on_command_line(args: &[OsString], long: &str) -> bool {
    let flag = format!("--{long}");
    let with_value = format!("--{long}=");
    args.iter().skip(1).any(|arg| {
        let arg = arg.to_string_lossy();
        arg == flag || arg.starts_with(&with_value)
    })
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// The command line with the config file's settings put in front of the user's
/// arguments, for every flag neither given on the command line nor set through
/// its environment variable. Returns `args` unchanged without a config file.
pub fn merge_config_file(
    command: &Command,
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<OsString>, ConfigFileError> {
    let Some(path) = config_path(&args, env) else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path).map_err(|error| ConfigFileError::Read {
        path: path.clone(),
        cause: error.to_string(),
    })?;
    let injected = settings_as_args(command, &args, &path, &text, env)?;
    let mut merged = Vec::with_capacity(args.len() + injected.len());
    merged.extend(args.first().cloned());
    merged.extend(injected);
    merged.extend(args.into_iter().skip(1));
    Ok(merged)
}

fn settings_as_args(
    command: &Command,
    args: &[OsString],
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<OsString>, ConfigFileError> {
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
    let mut injected = Vec::new();
    for (key, value) in &settings {
        // By the flag's long name (`leaseTtl`, `lease-ttl`) or its field name
        // (`producerProperties` for `--producer-property`).
        let wanted = flag_name(key);
        let field = wanted.replace('-', "_");
        let Some(arg) = command.get_arguments().find(|arg| {
            arg.get_id().as_str() != "config"
                && (arg.get_long() == Some(wanted.as_str()) || arg.get_id().as_str() == field)
        }) else {
            return Err(invalid(format!(
                "unknown setting {key} (settings are the flags of {}, without --)",
                command.get_name()
            )));
        };
        let long = arg.get_long().unwrap_or(wanted.as_str()).to_string();
        if given_on_command_line(args, &long) {
            continue;
        }
        let env_set = arg
            .get_env()
            .and_then(|name| name.to_str())
            .is_some_and(|name| env(name).is_some());
        if env_set {
            continue;
        }
        let flag = OsString::from(format!("--{long}"));
        match (arg.get_action(), value) {
            (ArgAction::SetTrue, Value::Bool(true)) => injected.push(flag),
            (ArgAction::SetTrue, Value::Bool(false)) => {}
            (ArgAction::SetTrue, other) => {
                return Err(invalid(format!(
                    "{key}: expected true or false, got {other}"
                )))
            }
            (_, Value::Array(items)) => {
                let items: Vec<String> = items
                    .iter()
                    .map(|item| {
                        scalar(item)
                            .ok_or_else(|| invalid(format!("{key}: expected a list of values")))
                    })
                    .collect::<Result<_, _>>()?;
                if matches!(arg.get_action(), ArgAction::Append) {
                    for item in items {
                        injected.push(flag.clone());
                        injected.push(item.into());
                    }
                } else {
                    injected.push(flag);
                    injected.push(items.join(",").into());
                }
            }
            (_, Value::Object(entries)) => {
                for (name, entry) in entries {
                    let entry = scalar(entry)
                        .ok_or_else(|| invalid(format!("{key}.{name}: expected a value")))?;
                    injected.push(flag.clone());
                    injected.push(format!("{name}={entry}").into());
                }
            }
            (_, value) => {
                let value =
                    scalar(value).ok_or_else(|| invalid(format!("{key}: expected a value")))?;
                injected.push(flag);
                injected.push(value.into());
            }
        }
    }
    Ok(injected)
}

/// Parses a service's command line with its config file merged in (flags, then
/// `KMIRROR_*` environment variables, then the file, then the defaults). A config
/// file that cannot be used is reported and the process exits with code 2.
pub fn parse_service_args<Args: clap::Parser>() -> Args {
    let environment = |name: &str| std::env::var(name).ok();
    match merge_config_file(
        &Args::command(),
        std::env::args_os().collect(),
        &environment,
    ) {
        Ok(args) => Args::parse_from(args),
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Parser};

    #[derive(Debug, Parser)]
    #[command(name = "kmirror-writer")]
    struct Flags {
        #[arg(long, env = "KMIRROR_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "KMIRROR_FLEET", default_value = "local")]
        fleet: String,
        #[arg(long, env = "KMIRROR_LEASE_TTL", default_value = "6s")]
        lease_ttl: String,
        #[arg(long, value_delimiter = ',')]
        etcd: Vec<String>,
        #[arg(long = "producer-property")]
        producer_properties: Vec<String>,
        #[arg(long)]
        verbose: bool,
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

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Flags, ConfigFileError> {
        use clap::CommandFactory;
        let env_map: std::collections::HashMap<String, String> = env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let lookup = |name: &str| env_map.get(name).cloned();
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let merged = merge_config_file(&Flags::command(), args, &lookup)?;
        Ok(Flags::try_parse_from(merged).unwrap())
    }

    #[test]
    fn flags_win_over_the_environment_which_wins_over_the_file() {
        let path = write(
            "apiVersion: kmirror.io/v1\nkind: Writer\nspec:\n  fleet: from-file\n  leaseTtl: 9s\n  etcd: [http://a:2379, http://b:2379]\n  producerProperties:\n    linger.ms: 10\n  verbose: true\n",
        );
        let path_text = path.display().to_string();
        let flags = parse(&["kmirror-writer", "--config", &path_text], &[]).unwrap();
        assert_eq!(flags.fleet, "from-file");
        assert_eq!(flags.lease_ttl, "9s");
        assert_eq!(flags.etcd, vec!["http://a:2379", "http://b:2379"]);
        assert_eq!(flags.producer_properties, vec!["linger.ms=10"]);
        assert!(flags.verbose);
        let flags = parse(
            &[
                "kmirror-writer",
                "--config",
                &path_text,
                "--fleet",
                "from-flag",
            ],
            &[("KMIRROR_LEASE_TTL", "3s")],
        )
        .unwrap();
        assert_eq!(flags.fleet, "from-flag");
        // The real environment is not consulted by the test's parse, so clap's own
        // env lookup sees no KMIRROR_LEASE_TTL: the file value was left out and
        // the default applies.
        assert_eq!(flags.lease_ttl, "6s");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn the_config_file_can_come_from_the_environment() {
        let path = write("fleet: flat\n");
        let flags = parse(
            &["kmirror-writer"],
            &[(CONFIG_ENV, &path.display().to_string())],
        )
        .unwrap();
        assert_eq!(flags.fleet, "flat");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn unknown_settings_and_wrong_kinds_are_errors() {
        let path = write("spec:\n  fleeet: typo\n");
        let error = parse(
            &["kmirror-writer", "--config", &path.display().to_string()],
            &[],
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("unknown setting fleeet"),
            "{error}"
        );
        std::fs::remove_file(path).unwrap();
        let path = write("kind: Fetcher\nspec:\n  fleet: x\n");
        let error = parse(
            &["kmirror-writer", "--config", &path.display().to_string()],
            &[],
        )
        .unwrap_err();
        assert!(error.to_string().contains("Writer"), "{error}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn without_a_config_file_the_arguments_are_unchanged() {
        let command = Command::new("x").arg(Arg::new("config").long("config"));
        let args = vec![OsString::from("x"), OsString::from("--other")];
        assert_eq!(
            merge_config_file(&command, args.clone(), &|_| None),
            Ok(args)
        );
    }
}
