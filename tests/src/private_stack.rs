//! Servers a test starts for itself, to stop and restart them without disturbing
//! the tests that share the local stack: its own etcd and Kafka clusters, run by
//! `deploy/local/stack` with a private state folder and private ports.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::kafka::Cluster;
use crate::stack::stack;

pub struct PrivateStack {
    state_dir: PathBuf,
    script: PathBuf,
    source_port: u16,
    dest_port: u16,
    etcd_port: u16,
    etcd_peer_port: u16,
}

impl PrivateStack {
    pub fn new(name: &str) -> Self {
        let stack = stack();
        Self {
            state_dir: stack
                .logs_dir
                .join(crate::unique_name(&format!("stack-{name}"))),
            script: stack.workspace_dir.join("deploy/local/stack"),
            source_port: crate::member_process::free_port_run(1),
            dest_port: crate::member_process::free_port_run(1),
            etcd_port: crate::member_process::free_port_run(1),
            etcd_peer_port: crate::member_process::free_port_run(1),
        }
    }

    /// Runs `deploy/local/stack ARGS` against this stack's state and ports.
    pub async fn run(&self, args: &[&str]) -> Result<()> {
        let mut command = Command::new(&self.script);
        command
            .args(args)
            .env("KMIRROR_STATE_DIR", &self.state_dir)
            .env("KMIRROR_SOURCE_PORT", self.source_port.to_string())
            .env("KMIRROR_DEST_PORT", self.dest_port.to_string())
            .env("KMIRROR_ETCD_PORT", self.etcd_port.to_string())
            .env("KMIRROR_ETCD_PEER_PORT", self.etcd_peer_port.to_string())
            .env("KMIRROR_KAFKA_HEAP_OPTS", "-Xms128m -Xmx512m");
        let description = format!("deploy/local/stack {}", args.join(" "));
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .context("stack command task")?
            .with_context(|| format!("cannot run {description}"))?;
        if !output.status.success() {
            bail!(
                "{description} failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    pub async fn up(&self, servers: &[&str]) -> Result<()> {
        let mut args = vec!["up"];
        args.extend_from_slice(servers);
        self.run(&args).await
    }

    pub async fn down(&self, servers: &[&str]) -> Result<()> {
        let mut args = vec!["down"];
        args.extend_from_slice(servers);
        self.run(&args).await
    }

    pub fn source(&self) -> Cluster {
        Cluster::Custom(Box::leak(
            format!("127.0.0.1:{}", self.source_port).into_boxed_str(),
        ))
    }

    pub fn dest(&self) -> Cluster {
        Cluster::Custom(Box::leak(
            format!("127.0.0.1:{}", self.dest_port).into_boxed_str(),
        ))
    }

    pub fn etcd_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_port)
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .args(["down", "--purge"])
            .env("KMIRROR_STATE_DIR", &self.state_dir)
            .env("KMIRROR_SOURCE_PORT", self.source_port.to_string())
            .env("KMIRROR_DEST_PORT", self.dest_port.to_string())
            .env("KMIRROR_ETCD_PORT", self.etcd_port.to_string())
            .env("KMIRROR_ETCD_PEER_PORT", self.etcd_peer_port.to_string())
            .output();
    }
}
