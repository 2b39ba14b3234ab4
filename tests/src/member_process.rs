//! One process of a test fleet: started with its arguments, its output
//! appended to its log file, signalled, reaped and killed; and the helpers that
//! start processes (free ports, durations as flags take them, log tails).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use kmirror_common::Role;
use rustix::process::{kill_process, Pid, Signal};

/// Lines of a member's log shown when it died unexpectedly.
const LOG_TAIL_LINES: usize = 40;

/// One process of the fleet.
pub(crate) struct Member {
    pub(crate) id: String,
    pub(crate) role: Role,
    pub(crate) binary: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) log_path: PathBuf,
    /// `None` while stopped.
    pub(crate) child: Mutex<Option<Child>>,
    /// When the process was last started (ms since the epoch).
    pub(crate) started_ms: AtomicI64,
    pub(crate) env: Vec<(String, String)>,
}

impl Member {
    pub(crate) fn start(&self) {
        let mut child = self.child.lock().expect("member lock");
        assert!(child.is_none(), "member {} is already running", self.id);
        let log = open_log(&self.log_path);
        let mut header = log.try_clone().expect("log file handle");
        let _ = writeln!(
            header,
            "--- kmirror-tests: starting {} {}",
            self.binary.display(),
            self.args.join(" ")
        );
        let mut command = Command::new(&self.binary);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log);
        if let Ok(filter) = std::env::var("KMIRROR_E2E_RUST_LOG") {
            command.env("RUST_LOG", filter);
        }
        command.envs(self.env.iter().map(|(name, value)| (name, value)));
        self.started_ms.store(crate::now_ms(), Ordering::SeqCst);
        let spawned = command.spawn().unwrap_or_else(|error| {
            panic!(
                "cannot start {} ({}): {error}",
                self.id,
                self.binary.display()
            )
        });
        *child = Some(spawned);
    }

    pub(crate) fn is_running(&self) -> bool {
        let mut child = self.child.lock().expect("member lock");
        matches!(child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// The exit status of a member that stopped without being told to.
    pub(crate) fn unexpected_exit(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().expect("member lock");
        child.as_mut()?.try_wait().ok().flatten()
    }

    pub(crate) fn signal(&self, signal: Signal) -> bool {
        let child = self.child.lock().expect("member lock");
        match child.as_ref() {
            Some(child) => kill_process(Pid::from_child(child), signal).is_ok(),
            None => false,
        }
    }

    /// Reaps the member if it exited: `Some(status)` once it has (it is then
    /// stopped), `None` while it runs or when it was not running.
    pub(crate) fn reap(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().expect("member lock");
        let status = child.as_mut()?.try_wait().ok().flatten()?;
        *child = None;
        Some(status)
    }

    pub(crate) fn kill_and_reap(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().expect("member lock");
        let mut running = child.take()?;
        let _ = running.kill();
        running.wait().ok()
    }
}

pub(crate) fn open_log(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|error| panic!("cannot open log file {}: {error}", path.display()))
}

/// A duration as the fleet's flags take it (humantime).
pub(crate) fn duration_arg(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// A free port whose `following` successors are free too (a Kafka broker's
/// controller and further listeners take the next ports).
pub(crate) fn free_port_run(following: u16) -> u16 {
    loop {
        let port = free_port();
        if (1..=following).all(|offset| TcpListener::bind(("127.0.0.1", port + offset)).is_ok()) {
            return port;
        }
    }
}

/// A free port for a coordinator's admin API, whose address the CLI must know in
/// advance and which must stay the same across restarts.
///
/// It is taken below the kernel's ephemeral range: a port from `bind(0)` would be
/// handed to the next process asking for any port (a restarted fetcher listening
/// on port 0, say) as soon as the coordinator let go of it.
pub(crate) fn free_port() -> u16 {
    let ephemeral_start = ephemeral_range_start();
    let span = u128::from(ephemeral_start - LOWEST);
    for _ in 0..1_000 {
        let random = uuid::Uuid::new_v4().as_u128();
        let port = LOWEST + u16::try_from(random % span).expect("below the ephemeral range");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOWEST} and {ephemeral_start}");
}

/// Lowest port tried for a coordinator.
const LOWEST: u16 = 10_000;

/// First port of the kernel's ephemeral range (Linux's default when unknown).
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|start| *start > LOWEST + 1_000)
        .unwrap_or(32_768)
}

pub(crate) fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(error) => format!("(cannot read: {error})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_ports_are_free_and_below_the_ephemeral_range() {
        for _ in 0..20 {
            let port = free_port();
            assert!((LOWEST..ephemeral_range_start()).contains(&port), "{port}");
            assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
        }
    }

    #[test]
    fn durations_are_written_for_humantime() {
        assert_eq!(duration_arg(Duration::from_millis(200)), "200ms");
        assert_eq!(duration_arg(Duration::from_secs(1)), "1000ms");
    }

    #[tokio::test]
    async fn members_are_signalled_reaped_and_killed_on_drop() {
        let log_dir = std::env::temp_dir().join(crate::unique_name("kmirror-tests-member"));
        std::fs::create_dir_all(&log_dir).unwrap();
        let member = Member {
            id: "sleeper".to_string(),
            role: Role::Fetcher,
            binary: PathBuf::from("sleep"),
            args: vec!["600".to_string()],
            log_path: log_dir.join("sleeper.log"),
            child: Mutex::new(None),
            started_ms: AtomicI64::new(0),
            env: Vec::new(),
        };
        member.start();
        assert!(member.is_running());
        assert!(member.unexpected_exit().is_none());
        assert!(member.signal(Signal::TERM));
        crate::wait_until(Duration::from_secs(10), "sleep to stop", || async {
            match member.reap() {
                Some(status) if !status.success() => Ok(()),
                Some(status) => Err(format!("exited with {status}")),
                None => Err("still running".to_string()),
            }
        })
        .await
        .unwrap();
        assert!(!member.is_running());
        member.start();
        assert!(member.kill_and_reap().is_some());
        assert!(member.kill_and_reap().is_none());
        let log = std::fs::read_to_string(&member.log_path).unwrap();
        assert_eq!(
            log.matches("--- kmirror-tests: starting sleep 600").count(),
            2
        );
        std::fs::remove_dir_all(&log_dir).unwrap();
    }
}
