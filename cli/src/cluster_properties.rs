//! The properties of `kmirrorctl cluster add`, and where secrets may come from.
//!
//! - `--property KEY=VALUE`: a property as it is;
//! - `--property KEY=@FILE`: the value is the file's content (one trailing
//!   newline dropped), e.g. `--property sasl.password=@/etc/kmirror/source.password`;
//! - `--property-file FILE`: a client `.properties` file, Java's (what
//!   MirrorMaker is given: `sasl.jaas.config`, PEM stores) or librdkafka's,
//!   translated as `kmirror mirror` does; its `bootstrap.servers` stands in for
//!   `--bootstrap`. `--property` wins over the file.
//!
//! A secret property (password, private key, JAAS line, token) given as a value
//! on the command line is refused: every user of the machine can read a
//! process's arguments (`ps`, `/proc/<pid>/cmdline`) and shells keep them in
//! their history. The refusal names the property, never the value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kmirror_common::kafka::is_secret_property;

use crate::properties::{load_client_config, ClientRole};

/// The bootstrap address and the properties a `cluster add` stores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterProperties {
    pub bootstrap_opt: Option<String>,
    pub properties: BTreeMap<String, String>,
}

/// Resolves `--property-file` files and `--property` values (see the module
/// documentation).
pub fn resolve(
    given: &[(String, String)],
    property_files: &[PathBuf],
) -> Result<ClusterProperties, String> {
    let mut resolved = ClusterProperties::default();
    for path in property_files {
        let settings =
            load_client_config(path, ClientRole::Any).map_err(|errors| errors.to_string())?;
        if settings.bootstrap_opt.is_some() {
            resolved.bootstrap_opt = settings.bootstrap_opt;
        }
        resolved.properties.extend(settings.properties);
    }
    for (key, value) in given {
        let value = match value.strip_prefix('@') {
            Some(path) => read_value_file(key, Path::new(path))?,
            None if is_secret_property(key) => return Err(refusal(key)),
            None => value.clone(),
        };
        resolved.properties.insert(key.clone(), value);
    }
    Ok(resolved)
}

/// Why a secret given on the command line is refused, and what to use instead.
pub fn refusal(key: &str) -> String {
    format!(
        "property {key} is a secret and was given on the command line, where every user of this machine can read it (ps, /proc) and the shell keeps it in its history: give it from a file instead, --property {key}=@FILE (the file holds the value) or --property-file FILE (a client .properties file)"
    )
}

fn read_value_file(key: &str, path: &Path) -> Result<String, String> {
    if path.as_os_str().is_empty() {
        return Err(format!("property {key}: expected a file after @"));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("property {key}: cannot read {}: {error}", path.display()))?;
    let value = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("kmirror-props-{}-{unique}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_secret_given_on_the_command_line_is_refused_without_showing_it() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.key.pem",
            "sasl.jaas.config",
            "sasl.oauthbearer.client.secret",
        ] {
            let error = resolve(&given(&[(key, "hunter2")]), &[]).unwrap_err();
            assert!(error.contains(key), "{error}");
            assert!(
                error.contains(&format!("--property {key}=@FILE")),
                "{error}"
            );
            assert!(error.contains("--property-file"), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
        // Other properties are taken as they are.
        let resolved = resolve(&given(&[("sasl.username", "kmirror")]), &[]).unwrap();
        assert_eq!(resolved.properties["sasl.username"], "kmirror");
    }

    #[test]
    fn a_value_from_a_file_drops_one_trailing_newline() {
        let path = temp_file("password", "s3cret\n");
        let resolved = resolve(
            &given(&[("sasl.password", &format!("@{}", path.display()))]),
            &[],
        )
        .unwrap();
        assert_eq!(resolved.properties["sasl.password"], "s3cret");
        let error = resolve(&given(&[("sasl.password", "@/nonexistent/pw")]), &[]).unwrap_err();
        assert!(error.contains("cannot read /nonexistent/pw"), "{error}");
    }

    #[test]
    fn a_java_properties_file_gives_bootstrap_and_translated_properties() {
        let path = temp_file(
            "source.properties",
            "bootstrap.servers=127.0.0.1:9093\nsecurity.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"kmirror\" password=\"pw\";\nssl.truststore.type=PEM\nssl.truststore.location=/s/ca.pem\n",
        );
        let resolved = resolve(&given(&[("client.id", "kmirror-src")]), &[path]).unwrap();
        assert_eq!(resolved.bootstrap_opt.as_deref(), Some("127.0.0.1:9093"));
        assert_eq!(resolved.properties["sasl.password"], "pw");
        assert_eq!(resolved.properties["ssl.ca.location"], "/s/ca.pem");
        assert_eq!(resolved.properties["client.id"], "kmirror-src");
    }

    mod generated {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            #[test]
            fn arbitrary_property_files_never_panic_and_errors_name_the_file(
                text in "\\PC{0,160}",
            ) {
                let path = temp_file("arbitrary.properties", &text);
                if let Err(error) = resolve(&[], std::slice::from_ref(&path)) {
                    prop_assert!(error.contains(&path.display().to_string()), "{}", error);
                }
                std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
            }

            #[test]
            fn command_line_properties_are_taken_or_refused_by_key_never_echoing_secrets(
                key in prop_oneof![".{0,16}", Just("sasl.password".to_string()), Just("ssl.key.pem".to_string())],
                value in "\\PC{0,16}",
            ) {
                // Marked so that it cannot be a piece of the refusal's text.
                let value = format!("Zq9-{value}");
                match resolve(&given(&[(&key, &value)]), &[]) {
                    Ok(resolved) => {
                        prop_assert!(!is_secret_property(&key));
                        prop_assert_eq!(&resolved.properties[&key], &value);
                    }
                    Err(error) => {
                        prop_assert!(is_secret_property(&key));
                        let named = format!("property {key} is a secret");
                        prop_assert!(error.contains(&named), "{}", error);
                        prop_assert!(!error.contains(&value), "{}", error);
                    }
                }
            }
        }
    }
}
