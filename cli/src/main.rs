//! `kmirrorctl`: manage a kmirror fleet through its coordinator's admin API.
//!
//! Exit codes: 0 when the operation succeeded, 1 when it failed (the message names
//! the object and the cause) or the fleet is degraded (`status`), 2 for a usage
//! error.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    kmirror_cli::ctl::main()
}
