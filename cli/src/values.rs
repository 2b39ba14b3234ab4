//! Values the command line and the config files both take: where a flow starts,
//! `KEY=VALUE` client properties.

/// Where a new flow starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartArg {
    Earliest,
    Latest,
    Timestamp(i64),
}

pub fn parse_start(text: &str) -> Result<StartArg, String> {
    match text {
        "earliest" => Ok(StartArg::Earliest),
        "latest" => Ok(StartArg::Latest),
        digits if !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit()) => digits
            .parse()
            .map(StartArg::Timestamp)
            .map_err(|error| format!("{error}")),
        time => humantime::parse_rfc3339_weak(time)
            .map_err(|_| {
                format!(
                    "expected earliest, latest, an RFC 3339 time or milliseconds since the epoch, got {time:?}"
                )
            })
            .map(|at| {
                let since_epoch = at
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                StartArg::Timestamp(since_epoch.as_millis() as i64)
            }),
    }
}

pub fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}
