//! systemd's service notification protocol (`sd_notify(3)`), for members run by a
//! `Type=notify` unit with a watchdog (`deploy/systemd/`).
//!
//! systemd passes the unit's notification socket in `NOTIFY_SOCKET`: a path, or an
//! abstract socket name written with a leading `@`. A notification is one datagram
//! of `KEY=VALUE` lines. Outside systemd the variable is unset and every function
//! here does nothing, so members call them unconditionally:
//!
//! - [`notify_ready`] once the member registered in etcd (systemd reports the unit
//!   started only then, so `systemctl start` waits for it);
//! - [`notify_watchdog`] every [`watchdog_interval`] while the member is healthy;
//! - [`notify_stopping`] when a graceful stop begins (systemd then waits up to the
//!   unit's `TimeoutStopSec` instead of taking the member for hung).
//!
//! Sending is one non-blocking `sendto` on a local datagram socket: cheap enough to
//! call from async code.

use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Environment variable holding the notification socket's address.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// Environment variable holding the watchdog timeout in microseconds.
pub const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
/// Environment variable naming the process the watchdog timeout is meant for.
pub const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";

/// A notification systemd's socket did not take.
#[derive(Debug, thiserror::Error)]
#[error("cannot notify systemd at {socket:?}: {source}")]
pub struct NotifyError {
    pub socket: OsString,
    #[source]
    pub source: std::io::Error,
}

/// Tells systemd the member is up (it registered in the fleet). Returns whether a
/// notification was sent (`false` outside systemd).
pub fn notify_ready() -> Result<bool, NotifyError> {
    notify("READY=1\n")
}

/// Tells systemd's watchdog the member is alive and healthy.
pub fn notify_watchdog() -> Result<bool, NotifyError> {
    notify("WATCHDOG=1\n")
}

/// Tells systemd the member began a graceful stop.
pub fn notify_stopping() -> Result<bool, NotifyError> {
    notify("STOPPING=1\n")
}

/// How often to call [`notify_watchdog`]: half the unit's `WatchdogSec`, as
/// `sd_watchdog_enabled(3)` advises, so one late ping does not kill the member.
/// `None` when the unit has no watchdog, or its watchdog watches another process.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var(WATCHDOG_USEC_ENV).ok().as_deref(),
        std::env::var(WATCHDOG_PID_ENV).ok().as_deref(),
        std::process::id(),
    )
}

/// Sends `state` (newline-separated `KEY=VALUE` assignments) to the socket in
/// `NOTIFY_SOCKET`. Returns `false` when the variable is unset or empty.
pub fn notify(state: &str) -> Result<bool, NotifyError> {
    match std::env::var_os(NOTIFY_SOCKET_ENV) {
        Some(socket) if !socket.is_empty() => send(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Tells systemd what the member's lease says, until `stop`: ready at its first
/// registration, stopping when a graceful stop begins, and a watchdog ping every
/// [`watchdog_interval`] while the process serves (tied to the process, not to
/// the lease: a member that lost its lease stays up to register again, and a
/// restart would not help it). Does nothing outside systemd.
pub async fn report(
    mut lease_rx: tokio::sync::watch::Receiver<crate::lease_keeper::LeaseState>,
    stop: tokio_util::sync::CancellationToken,
) {
    use crate::lease_keeper::LeaseState;
    if std::env::var_os(NOTIFY_SOCKET_ENV).is_none_or(|socket| socket.is_empty()) {
        return;
    }
    let warn_once = |error: NotifyError, warned: &mut bool| {
        if !std::mem::replace(warned, true) {
            tracing::warn!(%error, "cannot notify systemd");
        }
    };
    let mut warned = false;
    let (mut ready_sent, mut stopping_sent) = (false, false);
    let mut watchdog_opt = watchdog_interval().map(tokio::time::interval);
    let mut keeper_gone = false;
    loop {
        let state = lease_rx.borrow_and_update().clone();
        if !ready_sent && state.is_live() {
            ready_sent = true;
            if let Err(error) = notify_ready() {
                warn_once(error, &mut warned);
            }
        }
        if !stopping_sent && matches!(state, LeaseState::Stopping(_)) {
            stopping_sent = true;
            if let Err(error) = notify_stopping() {
                warn_once(error, &mut warned);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = lease_rx.changed(), if !keeper_gone => {
                // The keeper is gone: only the watchdog is left to serve.
                keeper_gone = changed.is_err();
            }
            _ = async {
                match watchdog_opt.as_mut() {
                    Some(watchdog) => watchdog.tick().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Err(error) = notify_watchdog() {
                    warn_once(error, &mut warned);
                }
            }
        }
    }
}

fn send(socket: &OsString, state: &str) -> Result<(), NotifyError> {
    let error = |source| NotifyError {
        socket: socket.clone(),
        source,
    };
    let sender = UnixDatagram::unbound().map_err(error)?;
    sender.set_nonblocking(true).map_err(error)?;
    let sent = match abstract_name(socket) {
        Some(name) => send_to_abstract(&sender, name, state.as_bytes()),
        None => sender.send_to(state.as_bytes(), socket),
    }
    .map_err(error)?;
    if sent != state.len() {
        return Err(error(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", state.len()),
        )));
    }
    Ok(())
}

/// The name of an abstract socket (`@name`), without its `@`.
fn abstract_name(socket: &OsString) -> Option<&[u8]> {
    use std::os::unix::ffi::OsStrExt;
    socket.as_bytes().strip_prefix(b"@")
}

#[cfg(target_os = "linux")]
fn send_to_abstract(sender: &UnixDatagram, name: &[u8], data: &[u8]) -> std::io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sender.send_to_addr(data, &address)
}

#[cfg(not(target_os = "linux"))]
fn send_to_abstract(_sender: &UnixDatagram, _name: &[u8], _data: &[u8]) -> std::io::Result<usize> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract unix sockets exist only on Linux",
    ))
}

fn watchdog_interval_from(
    usec_opt: Option<&str>,
    pid_opt: Option<&str>,
    own_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec_opt?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    // Set by systemd for the main process; a child that inherited the variables
    // must not ping on its behalf.
    if let Some(pid) = pid_opt {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kmirror-systemd-test-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn received(receiver: &UnixDatagram) -> String {
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buffer = [0u8; 256];
        let length = receiver.recv(&mut buffer).unwrap();
        String::from_utf8(buffer[..length].to_vec()).unwrap()
    }

    #[test]
    fn a_notification_reaches_a_socket_named_by_its_path() {
        let dir = socket_dir();
        let path = dir.join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();

        send(&path.clone().into_os_string(), "READY=1\n").unwrap();

        assert_eq!(received(&receiver), "READY=1\n");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_notification_reaches_an_abstract_socket_named_with_an_at_sign() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("kmirror-systemd-test-{}", uuid::Uuid::new_v4().simple());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();

        send(&OsString::from(format!("@{name}")), "WATCHDOG=1\n").unwrap();

        assert_eq!(received(&receiver), "WATCHDOG=1\n");
    }

    #[test]
    fn a_missing_socket_is_an_error_that_names_it() {
        let dir = socket_dir();
        let path = dir.join("nobody-listens");

        let error = send(&path.clone().into_os_string(), "READY=1\n").unwrap_err();

        assert!(error.to_string().contains("nobody-listens"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The only test that touches the process environment: the others pass the
    /// socket explicitly, so they can run in parallel with it.
    #[test]
    fn the_public_calls_send_their_state_to_notify_socket_and_do_nothing_without_it() {
        let dir = socket_dir();
        let path = dir.join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();

        std::env::remove_var(NOTIFY_SOCKET_ENV);
        assert!(!notify_ready().unwrap());

        std::env::set_var(NOTIFY_SOCKET_ENV, &path);
        assert!(notify_ready().unwrap());
        assert_eq!(received(&receiver), "READY=1\n");
        assert!(notify_watchdog().unwrap());
        assert_eq!(received(&receiver), "WATCHDOG=1\n");
        assert!(notify_stopping().unwrap());
        assert_eq!(received(&receiver), "STOPPING=1\n");

        // A member's lease channel drives them: ready at the first registration
        // (once), stopping when a graceful stop begins.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            use crate::lease_keeper::{Lease, LeaseState};
            use crate::membership::Registration;
            let lease = || {
                let (registration, lost) = Registration::detached(7, Duration::from_secs(6));
                Lease {
                    id: registration.lease_id,
                    guard: registration.guard(),
                    lost,
                }
            };
            let (lease_tx, lease_rx) = tokio::sync::watch::channel(LeaseState::Registering);
            let stop = tokio_util::sync::CancellationToken::new();
            let reporter = tokio::spawn(report(lease_rx, stop.clone()));
            lease_tx.send(LeaseState::Live(lease())).unwrap();
            let receiver = tokio::net::UnixDatagram::from_std({
                receiver.set_nonblocking(true).unwrap();
                receiver.try_clone().unwrap()
            })
            .unwrap();
            let mut buffer = [0u8; 64];
            let length = receiver.recv(&mut buffer).await.unwrap();
            assert_eq!(&buffer[..length], b"READY=1\n");
            lease_tx.send(LeaseState::Lost).unwrap();
            lease_tx.send(LeaseState::Live(lease())).unwrap();
            lease_tx.send(LeaseState::Stopping(None)).unwrap();
            let length = receiver.recv(&mut buffer).await.unwrap();
            assert_eq!(&buffer[..length], b"STOPPING=1\n");
            stop.cancel();
            reporter.await.unwrap();
        });
        std::env::remove_var(NOTIFY_SOCKET_ENV);

        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_watchdog_is_pinged_at_half_its_timeout() {
        assert_eq!(
            watchdog_interval_from(Some("20000000"), None, 42),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            watchdog_interval_from(Some("20000000"), Some("42"), 42),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn no_watchdog_without_a_timeout_or_for_another_process() {
        assert_eq!(watchdog_interval_from(None, None, 42), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 42), None);
        assert_eq!(
            watchdog_interval_from(Some("20000000"), Some("7"), 42),
            None
        );
    }
}
