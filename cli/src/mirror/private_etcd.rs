//! A private etcd run as a child process, for `kmirror mirror` without `--etcd`:
//! its data under the state folder, on the ports of its last run when they are
//! free, and a server a killed run left behind stopped first.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kmirror_common::etcd::EtcdSettings;
use tracing::{info, warn};

use super::args::MirrorError;

const ETCD_START_TIMEOUT: Duration = Duration::from_secs(30);
const ETCD_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A private etcd server run as a child process.
pub struct PrivateEtcd {
    child: tokio::process::Child,
    pub endpoint: String,
    pid_file: PathBuf,
}

impl PrivateEtcd {
    /// Starts etcd with its data in `dir/etcd`, on the ports of its last run when
    /// they are free, and waits until it answers.
    pub async fn start(dir: &Path, binary: &Path) -> Result<Self, MirrorError> {
        let failed = |what: String| {
            MirrorError::Failed(format!("private etcd in {}: {what}", dir.display()))
        };
        std::fs::create_dir_all(dir)
            .map_err(|error| failed(format!("cannot create the folder: {error}")))?;
        let data_dir = dir.join("etcd");
        let pid_file = dir.join("etcd.pid");
        let ports_file = dir.join("etcd.ports");
        let log_path = dir.join("etcd.log");
        stop_leftover(&pid_file, &data_dir).await;

        let stored: Option<(u16, u16)> = std::fs::read_to_string(&ports_file)
            .ok()
            .and_then(|text| {
                let mut ports = text.split_whitespace().map(|port| port.parse::<u16>().ok());
                Some((ports.next()??, ports.next()??))
            })
            .filter(|(client, peer)| port_is_free(*client) && port_is_free(*peer));
        let (client_port, peer_port) = match stored {
            Some(ports) => ports,
            None => (
                free_port().map_err(|error| failed(format!("no free port: {error}")))?,
                free_port().map_err(|error| failed(format!("no free port: {error}")))?,
            ),
        };
        let _ = std::fs::write(&ports_file, format!("{client_port} {peer_port}\n"));
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|error| failed(format!("cannot open {}: {error}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(|error| failed(format!("cannot open {}: {error}", log_path.display())))?;
        let child = tokio::process::Command::new(binary)
            .arg("--name")
            .arg("kmirror")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("kmirror={peer_url}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // A process group of its own: Ctrl-C on a terminal signals the whole
            // foreground group, and etcd must outlive the members, which still
            // write their final checkpoints to it while they stop. `run` stops
            // it last.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                failed(format!(
                    "cannot run {} ({error}): install etcd (Debian: apt-get install etcd-server) or give --etcd",
                    binary.display()
                ))
            })?;
        if let Some(pid) = child.id() {
            let _ = std::fs::write(&pid_file, format!("{pid}\n"));
        }
        let mut etcd = Self {
            child,
            endpoint: client_url,
            pid_file,
        };
        let deadline = Instant::now() + ETCD_START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = etcd.child.try_wait() {
                return Err(failed(format!(
                    "etcd exited ({status}) while starting; see {}",
                    log_path.display()
                )));
            }
            let settings = EtcdSettings::plain(vec![etcd.endpoint.clone()], "");
            if kmirror_common::etcd::connect(&settings).await.is_ok() {
                info!(endpoint = %etcd.endpoint, data = %data_dir.display(), "private etcd ready");
                return Ok(etcd);
            }
            if Instant::now() >= deadline {
                etcd.stop().await;
                return Err(failed(format!(
                    "etcd did not answer within {}s; see {}",
                    ETCD_START_TIMEOUT.as_secs(),
                    log_path.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM, then SIGKILL after a grace.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        if tokio::time::timeout(ETCD_STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            warn!("private etcd did not stop in time, killing it");
            let _ = self.child.kill().await;
        }
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// An etcd left running on the same data by a run that was killed holds the
/// data folder's lock: stop it first.
async fn stop_leftover(pid_file: &Path, data_dir: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
    else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let ours = String::from_utf8_lossy(&cmdline).contains(&*data_dir.to_string_lossy());
    let Some(process) = rustix::process::Pid::from_raw(pid) else {
        return;
    };
    if !ours {
        return;
    }
    warn!(pid, "stopping the private etcd a previous run left behind");
    let _ = rustix::process::kill_process(process, rustix::process::Signal::TERM);
    let deadline = Instant::now() + ETCD_STOP_TIMEOUT;
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() >= deadline {
            let _ = rustix::process::kill_process(process, rustix::process::Signal::KILL);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}
