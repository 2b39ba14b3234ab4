//! How a command prints its result: the `-o` formats, and a document rendered
//! as JSON or YAML or else as its text table.

use clap::ValueEnum;
use serde::Serialize;

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// Aligned table.
    #[default]
    Text,
    /// Aligned table with more columns.
    Wide,
    /// JSON document (stable shape).
    Json,
    /// YAML document (the same shape as JSON).
    Yaml,
}

impl OutputFormat {
    pub fn is_machine(self) -> bool {
        matches!(self, OutputFormat::Json | OutputFormat::Yaml)
    }
}

/// Renders `value` as JSON or YAML, or else as the text `table` makes (told
/// whether wide output was asked for).
pub fn render<T: Serialize>(
    format: OutputFormat,
    value: &T,
    table: impl FnOnce(bool) -> String,
) -> String {
    match format {
        OutputFormat::Text => table(false),
        OutputFormat::Wide => table(true),
        OutputFormat::Json => {
            let mut text = to_json(value);
            text.push('\n');
            text
        }
        OutputFormat::Yaml => to_yaml(value),
    }
}

pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("output values always serialize")
}

pub fn to_yaml<T: Serialize>(value: &T) -> String {
    let mut text = serde_saphyr::to_string(value).expect("output values always serialize");
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}
