//! Domain identifiers, kept apart from wire types and converted once at the gRPC
//! boundary.

use std::fmt;

use kmirror_proto::v1::SourcePartition;
use serde::{Deserialize, Serialize};

/// Why a name cannot be used as a flow, cluster or member name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid {what} name {name:?}: use 1 to 200 characters of letters, digits, '.', '_' and '-'"
)]
pub struct InvalidName {
    pub what: &'static str,
    pub name: String,
}

/// Names become etcd key segments, so they are restricted to the characters Kafka
/// allows in topic names (no '/').
fn validate_name(what: &'static str, name: &str) -> Result<(), InvalidName> {
    let valid = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $type_name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $type_name(String);

        impl $type_name {
            pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
                let name = name.into();
                validate_name($what, &name)?;
                Ok(Self(name))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $type_name {
            type Error = InvalidName;
            fn try_from(name: String) -> Result<Self, InvalidName> {
                Self::new(name)
            }
        }

        impl From<$type_name> for String {
            fn from(name: $type_name) -> String {
                name.0
            }
        }

        impl fmt::Display for $type_name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// Name of a mirroring flow (what to mirror, from which cluster to which).
    FlowName,
    "flow"
);
name_type!(
    /// Name under which a Kafka cluster's connection settings are stored.
    ClusterName,
    "cluster"
);
name_type!(
    /// Identity of a fleet member (coordinator, fetcher or writer process).
    MemberId,
    "member"
);

impl MemberId {
    /// A fresh id for a process that was not given one: role plus a random suffix.
    pub fn generate(role: Role) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Self(format!("{}-{}", role.as_str(), &suffix[..8]))
    }
}

/// What a member does in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Coordinator,
    Fetcher,
    Writer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Fetcher => "fetcher",
            Role::Writer => "writer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Assignment epoch of a source partition. Grows on every reassignment across the
/// whole fleet (it is taken from the etcd revision), so a larger epoch is always
/// the newer owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

/// A source partition of a flow: the unit of assignment, checkpointing and ordering.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionKey {
    pub flow: FlowName,
    pub topic: String,
    pub partition: i32,
}

impl PartitionKey {
    pub fn new(flow: FlowName, topic: impl Into<String>, partition: i32) -> Self {
        Self {
            flow,
            topic: topic.into(),
            partition,
        }
    }

    /// The partition a batch or an ack names on the wire; None when it names
    /// none or its flow name is not valid.
    pub fn from_wire(source: Option<&SourcePartition>) -> Option<Self> {
        let source = source?;
        let flow = FlowName::new(source.flow.clone()).ok()?;
        Some(Self::new(flow, source.topic.clone(), source.partition))
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}/{}", self.flow, self.topic, self.partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reject_characters_that_would_break_etcd_keys() {
        assert!(FlowName::new("orders-dr.v1_x").is_ok());
        assert!(FlowName::new("").is_err());
        assert!(FlowName::new("a/b").is_err());
        assert!(ClusterName::new("with space").is_err());
        let error = FlowName::new("a/b").unwrap_err();
        assert!(error.to_string().contains("invalid flow name \"a/b\""));
    }

    #[test]
    fn names_deserialize_through_validation() {
        let parsed: Result<FlowName, _> = serde_json::from_str("\"bad/name\"");
        assert!(parsed.is_err());
        let parsed: FlowName = serde_json::from_str("\"good\"").unwrap();
        assert_eq!(parsed.as_str(), "good");
    }

    mod generated {
        use proptest::prelude::*;

        use super::*;

        fn is_name_byte(byte: u8) -> bool {
            byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn arbitrary_strings_are_names_exactly_when_the_rules_allow(
                name in prop_oneof![".{0,40}", "[a-zA-Z0-9._-]{0,210}", "[a-z/ é\\x00-]{1,8}"],
            ) {
                let allowed = !name.is_empty() && name.len() <= 200 && name.bytes().all(is_name_byte);
                match FlowName::new(name.clone()) {
                    Ok(flow) => {
                        prop_assert!(allowed);
                        prop_assert_eq!(flow.as_str(), name.as_str());
                    }
                    Err(error) => {
                        prop_assert!(!allowed);
                        prop_assert_eq!(&error, &InvalidName { what: "flow", name: name.clone() });
                        prop_assert!(error.to_string().starts_with("invalid flow name"));
                    }
                }
                prop_assert_eq!(ClusterName::new(name.clone()).is_ok(), allowed);
                prop_assert_eq!(MemberId::new(name.clone()).is_ok(), allowed);
                let json = serde_json::to_string(&name).unwrap();
                prop_assert_eq!(serde_json::from_str::<FlowName>(&json).is_ok(), allowed);
            }
        }
    }
}
