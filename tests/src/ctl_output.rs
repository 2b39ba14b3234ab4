//! What one `kmirrorctl` call of a test did, with the assertions tests make on it.

use std::fmt;

/// What one `kmirrorctl` call did.
#[derive(Debug, Clone)]
pub struct CtlOutput {
    pub args: Vec<String>,
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// `status` printed the status but exited 1 because the fleet is degraded (a
    /// partition stopped, a flow failing, no leader).
    pub fn is_degraded_status(&self) -> bool {
        self.code == Some(1)
            && !self.stdout.is_empty()
            && self.stderr.contains("the fleet is degraded")
    }

    /// Panics unless the call succeeded; returns the output for chaining.
    #[track_caller]
    pub fn assert_success(self) -> Self {
        assert!(self.success(), "kmirrorctl failed: {self}");
        self
    }

    /// Panics unless the call exited with `code` and its stderr contains every
    /// one of `needles`.
    #[track_caller]
    pub fn assert_failure(&self, code: i32, needles: &[&str]) {
        assert_eq!(self.code, Some(code), "unexpected exit code: {self}");
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "stderr does not name {needle:?}: {self}"
            );
        }
    }
}

impl fmt::Display for CtlOutput {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "`kmirrorctl {}` exited with {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.args.join(" "),
            self.code,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}
