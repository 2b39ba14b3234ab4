//! Simulated hosts on one machine: each host is a Linux network namespace with one
//! address on a bridge, and the bridge lives in a namespace of its own, so nothing
//! of the test's network touches the root namespace.
//!
//! ```text
//!  host namespace "etcd"     host namespace "fetcher-0"   ...
//!    eth0 10.213.7.11          eth0 10.213.7.15
//!      |                          |
//!  ----+--------------------------+------ br0 in the bridge namespace
//!                                         (nftables table `bridge kmirror_faults`)
//! ```
//!
//! Processes run inside a host with `ip netns exec NS setpriv --pdeathsig KILL`:
//! they die with the thread that started them even when the test process is killed
//! outright. The test process itself never opens a socket to a host address (the
//! root namespace has no route to the bridge: a packet would leave the machine by
//! the default route); clients run as processes inside a host too.
//!
//! Faults are nftables rules on the bridge's forward hook: a cut drops every frame
//! between two sets of addresses, packet loss drops a share of them with `numgen
//! random` (this kernel has no `netem`). [`Network`] removes every process,
//! namespace and rule it made when dropped, even after a failed test, and removes
//! leftovers of test processes that were killed before they could (namespace
//! names start with [`NAME_PREFIX`] and the owning process id).

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

/// Every namespace a test makes is named `kmh<pid>-<run>-<host>`.
pub const NAME_PREFIX: &str = "kmh";
/// The hosts' subnet. It is only ever routed inside the bridge namespace's
/// bridge: the hosts have no default route.
const SUBNET: [u8; 3] = [10, 213, 7];
/// First host address: 10.213.7.10, then one up per host.
const FIRST_HOST: u8 = 10;
const BRIDGE: &str = "br0";
const FAULT_TABLE: &str = "kmirror_faults";
/// How long a client command run inside a host may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

static RUNS: AtomicU32 = AtomicU32::new(0);

/// Why a test cannot build simulated hosts here, if it cannot: `None` when it runs
/// as root with `ip`, `nft` and `setpriv` at hand.
pub fn unavailable_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("simulated hosts need root (network namespaces, nftables)".to_string());
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("setpriv", "util-linux"),
    ] {
        let found = Command::new(tool)
            .arg(if tool == "setpriv" { "--version" } else { "-V" })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!(
                "`{tool}` is missing: install the Debian package {package}"
            ));
        }
    }
    None
}

/// One simulated host.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub namespace: String,
    pub address: Ipv4Addr,
}

/// The bridge and every host of one test, and the processes started in them.
pub struct Network {
    prefix: String,
    bridge_namespace: String,
    hosts: BTreeMap<String, Host>,
    processes: Mutex<Vec<(String, Child)>>,
}

impl Network {
    /// Builds one host per name on a fresh bridge, after removing what killed test
    /// processes left behind.
    pub fn create(host_names: &[&str]) -> Result<Network> {
        remove_leftovers();
        let run_number = RUNS.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{NAME_PREFIX}{}-{run_number}-", std::process::id());
        let mut network = Network {
            bridge_namespace: format!("{prefix}bridge"),
            prefix,
            hosts: BTreeMap::new(),
            processes: Mutex::new(Vec::new()),
        };
        // From here on, Drop removes whatever was made, should a step fail.
        let bridge = network.bridge_namespace.clone();
        run(&["ip", "netns", "add", &bridge])?;
        run(&["ip", "-n", &bridge, "link", "add", BRIDGE, "type", "bridge"])?;
        run(&["ip", "-n", &bridge, "link", "set", BRIDGE, "up"])?;
        nft(&bridge, &format!("add table bridge {FAULT_TABLE}"))?;
        nft(
            &bridge,
            &format!(
                "add chain bridge {FAULT_TABLE} forward {{ type filter hook forward priority 0 ; policy accept ; }}"
            ),
        )?;
        for (index, name) in host_names.iter().enumerate() {
            let index = u8::try_from(index).context("too many hosts")?;
            let address = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], FIRST_HOST + index);
            let namespace = format!("{}{name}", network.prefix);
            let port = format!("veth{index}");
            run(&["ip", "netns", "add", &namespace])?;
            network.hosts.insert(
                name.to_string(),
                Host {
                    name: name.to_string(),
                    namespace: namespace.clone(),
                    address,
                },
            );
            // Both ends are made directly in their namespaces: no interface of the
            // test ever exists in the root namespace, not even for a moment.
            run(&[
                "ip", "link", "add", "name", &port, "netns", &bridge, "type", "veth", "peer",
                "name", "eth0", "netns", &namespace,
            ])?;
            run(&[
                "ip", "-n", &bridge, "link", "set", &port, "master", BRIDGE, "up",
            ])?;
            run(&[
                "ip",
                "-n",
                &namespace,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ])?;
            run(&["ip", "-n", &namespace, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &namespace, "link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .get(name)
            .unwrap_or_else(|| panic!("no simulated host named {name}"))
    }

    /// `program ARGS` run inside `host`, killed when the thread that spawns it
    /// ends.
    pub fn command(&self, host: &str, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.host(host).namespace])
            .args(["setpriv", "--pdeathsig", "KILL", "--"])
            .arg(program);
        command
    }

    /// The same as [`Network::command`], for tokio: killed when dropped.
    pub fn async_command(&self, host: &str, program: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::from(self.command(host, program));
        command.kill_on_drop(true);
        command
    }

    /// Starts a long-running process inside `host`, its output appended to
    /// `log_path`, under `id` (for [`Network::stop`]).
    pub fn spawn(&self, id: &str, host: &str, mut command: Command, log_path: &Path) -> Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {id} on host {host}"))?;
        self.processes
            .lock()
            .expect("process list")
            .push((id.to_string(), child));
        Ok(())
    }

    /// Whether the process started as `id` has exited (with its status).
    pub fn exited(&self, id: &str) -> Option<std::process::ExitStatus> {
        let mut processes = self.processes.lock().expect("process list");
        let (_, child) = processes.iter_mut().find(|(name, _)| name == id)?;
        child.try_wait().ok().flatten()
    }

    /// Runs a client command inside `host` to its end (bounded).
    pub async fn output(&self, host: &str, program: &Path, args: &[String]) -> Result<Output> {
        let mut command = self.async_command(host, program);
        command.args(args).stdin(Stdio::null());
        let description = format!("{} {} on host {host}", program.display(), args.join(" "));
        tokio::time::timeout(COMMAND_TIMEOUT, command.output())
            .await
            .with_context(|| format!("`{description}` did not finish within {COMMAND_TIMEOUT:?}"))?
            .with_context(|| format!("cannot run `{description}`"))
    }

    /// Drops every frame between any of `these` hosts and any of `those`, both ways.
    pub fn cut(&self, these: &[&str], those: &[&str]) -> Result<()> {
        self.add_fault(these, those, "drop")
    }

    /// Drops `percent` % of the frames between any of `these` hosts and any of
    /// `those`, both ways, at random.
    pub fn lose(&self, these: &[&str], those: &[&str], percent: u8) -> Result<()> {
        self.add_fault(
            these,
            those,
            &format!("numgen random mod 100 < {percent} drop"),
        )
    }

    /// Removes every fault: the bridge forwards everything again.
    pub fn heal(&self) -> Result<()> {
        nft(
            &self.bridge_namespace,
            &format!("flush chain bridge {FAULT_TABLE} forward"),
        )
    }

    fn add_fault(&self, these: &[&str], those: &[&str], verdict: &str) -> Result<()> {
        let these = self.address_set(these);
        let those = self.address_set(those);
        for (from, to) in [(&these, &those), (&those, &these)] {
            nft(
                &self.bridge_namespace,
                &format!(
                    "add rule bridge {FAULT_TABLE} forward ip saddr {from} ip daddr {to} {verdict}"
                ),
            )?;
        }
        Ok(())
    }

    fn address_set(&self, hosts: &[&str]) -> String {
        let addresses: Vec<String> = hosts
            .iter()
            .map(|host| self.host(host).address.to_string())
            .collect();
        format!("{{ {} }}", addresses.join(", "))
    }

    /// SIGKILL to the process started as `id`, then reaps it.
    pub fn kill(&self, id: &str) {
        let mut processes = self.processes.lock().expect("process list");
        if let Some(index) = processes.iter().position(|(name, _)| name == id) {
            let (_, mut child) = processes.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let processes = std::mem::take(&mut *self.processes.lock().expect("process list"));
        for (_, mut child) in processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut namespaces: Vec<String> = self
            .hosts
            .values()
            .map(|host| host.namespace.clone())
            .collect();
        namespaces.push(self.bridge_namespace.clone());
        for namespace in namespaces {
            remove_namespace(&namespace);
        }
        // Namespaces made before a failed step are not in `hosts` yet.
        for namespace in list_namespaces() {
            if namespace.starts_with(&self.prefix) {
                remove_namespace(&namespace);
            }
        }
    }
}

/// Removes the namespaces of test processes that no longer run.
fn remove_leftovers() {
    for namespace in list_namespaces() {
        let Some(rest) = namespace.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        let Some(pid) = rest
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing namespace {namespace} left by test process {pid}");
            remove_namespace(&namespace);
        }
    }
}

fn list_namespaces() -> Vec<String> {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Kills every process still inside `namespace` (by process id), then deletes
/// it, which deletes its interfaces and, for the bridge, its rules.
fn remove_namespace(namespace: &str) {
    if let Ok(output) = Command::new("ip")
        .args(["netns", "pids", namespace])
        .output()
    {
        for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            if let Some(pid) = pid
                .parse::<i32>()
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "delete", namespace])
        .stderr(Stdio::null())
        .status();
}

fn run(args: &[&str]) -> Result<()> {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("cannot run {}", args[0]))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn nft(namespace: &str, rule: &str) -> Result<()> {
    run(&["ip", "netns", "exec", namespace, "nft", rule])
}
