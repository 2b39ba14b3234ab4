//! `kmirror mirror` (the one-process MirrorMaker-compatible entry point) run as a
//! child process, its output in a log file under `target/e2e-logs/<name>/`, and
//! the Java-properties client configs it reads.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{kill_process, Pid, Signal};

use crate::stack::stack;

/// The binary, as `cargo build --workspace --bins` leaves it.
pub const KMIRROR_BINARY: &str = "kmirror";

/// A folder of its own for one test: config files, the private etcd's state, logs.
pub struct MirrorDir {
    pub path: PathBuf,
}

impl MirrorDir {
    pub fn new(name: &str) -> Self {
        let path = stack().logs_dir.join(name);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
        Self { path }
    }

    /// Writes a `.properties` file and returns its path.
    pub fn properties(&self, file: &str, lines: &[(&str, &str)]) -> PathBuf {
        let text: String = lines
            .iter()
            .map(|(key, value)| format!("{key}={value}\n"))
            .collect();
        self.file(file, &text)
    }

    /// Writes a file and returns its path.
    pub fn file(&self, file: &str, text: &str) -> PathBuf {
        let path = self.path.join(file);
        std::fs::write(&path, text)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        path
    }

    pub fn log_path(&self) -> PathBuf {
        self.path.join("kmirror.log")
    }
}

/// A running `kmirror` process (killed when dropped).
pub struct MirrorProcess {
    child: tokio::process::Child,
    log_path: PathBuf,
}

impl MirrorProcess {
    /// Starts `kmirror ARGS`, appending its stdout and stderr to `log_path`.
    pub fn start(args: &[String], log_path: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap_or_else(|error| panic!("cannot open {}: {error}", log_path.display()));
        let log_err = log.try_clone().expect("log file handle clones");
        let child = tokio::process::Command::new(stack().binary(KMIRROR_BINARY))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start kmirror: {error}"));
        Self {
            child,
            log_path: log_path.to_path_buf(),
        }
    }

    /// Starts `kmirror ARGS` as [`MirrorProcess::start`] does, in a process group
    /// of its own, so that [`MirrorProcess::interrupt_group`] can signal it the way
    /// a terminal's Ctrl-C does.
    pub fn start_in_own_group(args: &[String], log_path: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap_or_else(|error| panic!("cannot open {}: {error}", log_path.display()));
        let log_err = log.try_clone().expect("log file handle clones");
        let child = tokio::process::Command::new(stack().binary(KMIRROR_BINARY))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start kmirror: {error}"));
        Self {
            child,
            log_path: log_path.to_path_buf(),
        }
    }

    /// SIGINT to every process of kmirror's group, as Ctrl-C on a terminal sends
    /// it to the foreground group; then waits for the graceful stop.
    pub async fn interrupt_group(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(pid) = self.child.id().and_then(|pid| Pid::from_raw(pid as i32)) {
            let _ = rustix::process::kill_process_group(pid, Signal::INT);
        }
        self.wait(timeout).await
    }

    /// Waits for the process to exit by itself.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(error)) => panic!("cannot wait for kmirror: {error}"),
            Err(_) => panic!(
                "kmirror did not exit within {timeout:?}; its log:\n{}",
                self.log()
            ),
        }
    }

    /// SIGTERM, then waits for the graceful stop.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(pid) = self.child.id().and_then(|pid| Pid::from_raw(pid as i32)) {
            let _ = kill_process(pid, Signal::TERM);
        }
        self.wait(timeout).await
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// Runs `kmirror ARGS` to its end; returns (exit code, stdout, stderr).
pub async fn run_kmirror(args: &[&str], timeout: Duration) -> (Option<i32>, String, String) {
    let mut command = tokio::process::Command::new(stack().binary(KMIRROR_BINARY));
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "kmirror {} did not finish within {timeout:?}",
                args.join(" ")
            )
        })
        .unwrap_or_else(|error| panic!("cannot run kmirror: {error}"));
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
