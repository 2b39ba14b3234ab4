//! Secured Kafka clusters a test starts for itself: `deploy/local/stack up
//! --secure` with a private state folder and private ports (SASL_SSL on the
//! cluster's port, the controller on the next, SSL with client certificates on
//! the one after), and what a test needs of them: the generated certificates,
//! passwords and client properties, the tools' super user as test client,
//! kmirror's ACLs to take away and give back, topics with records to mirror and
//! the check that they were mirrored exactly.
//!
//! Dropping the stack stops its brokers and deletes its state, so a failing
//! test leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::data::KeyedRecords;
use crate::kafka::{
    assert_same_partitions, create_topic, produce, read_all, Cluster, SecuredCluster,
};
use crate::stack::stack;

/// Which of the two clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Dest,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Dest => "dest",
        }
    }
}

/// kmirror's principal on both clusters (SCRAM and PLAIN user, certificate CN).
pub const KMIRROR_PRINCIPAL: &str = "kmirror";

pub struct SecureStack {
    state_dir: PathBuf,
    script: PathBuf,
    source_port: u16,
    dest_port: u16,
    source_admin: Cluster,
    dest_admin: Cluster,
}

impl SecureStack {
    /// Starts the secured source and destination clusters (etcd stays the
    /// shared stack's) and waits until they answer.
    pub async fn start(name: &str) -> Result<Self> {
        let stack = stack();
        let state_dir = stack
            .logs_dir
            .join(crate::unique_name(&format!("secure-{name}")));
        let source_port = crate::member_process::free_port_run(2);
        let dest_port = crate::member_process::free_port_run(2);
        let admin = |port: u16| -> Cluster {
            let secure_dir = state_dir.join("secure");
            let file = |name: &str| secure_dir.join(name).display().to_string();
            Cluster::Secured(Box::leak(Box::new(SecuredCluster {
                bootstrap: format!("127.0.0.1:{}", port + 2),
                properties: vec![
                    ("security.protocol".into(), "SSL".into()),
                    ("ssl.ca.location".into(), file("ca.pem")),
                    ("ssl.certificate.location".into(), file("admin.crt")),
                    ("ssl.key.location".into(), file("admin.key")),
                ],
            })))
        };
        let secure = Self {
            source_admin: admin(source_port),
            dest_admin: admin(dest_port),
            state_dir,
            script: stack.workspace_dir.join("deploy/local/stack"),
            source_port,
            dest_port,
        };
        secure.run(&["up", "--secure", "source", "dest"]).await?;
        Ok(secure)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.script);
        command
            .args(args)
            .env("KMIRROR_STATE_DIR", &self.state_dir)
            .env("KMIRROR_SOURCE_PORT", self.source_port.to_string())
            .env("KMIRROR_DEST_PORT", self.dest_port.to_string())
            .env("KMIRROR_KAFKA_HEAP_OPTS", "-Xms256m -Xmx512m");
        command
    }

    /// Runs `deploy/local/stack ARGS` against this stack's state and ports.
    pub async fn run(&self, args: &[&str]) -> Result<String> {
        let mut command = self.command(args);
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
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Where the certificates, passwords and client properties are.
    pub fn secure_dir(&self) -> PathBuf {
        self.state_dir.join("secure")
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.secure_dir().join(name)
    }

    pub fn log_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// The CA that signed the brokers' and clients' certificates.
    pub fn ca(&self) -> PathBuf {
        self.file("ca.pem")
    }

    /// The file holding `user`'s password on `side`.
    pub fn password_file(&self, side: Side, user: &str) -> PathBuf {
        self.file(&format!("{}-{user}.password", side.name()))
    }

    pub fn password(&self, side: Side, user: &str) -> String {
        std::fs::read_to_string(self.password_file(side, user))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The SASL_SSL listener.
    pub fn sasl_ssl_bootstrap(&self, side: Side) -> String {
        format!("127.0.0.1:{}", self.port(side))
    }

    /// The SSL listener that requires client certificates.
    pub fn ssl_bootstrap(&self, side: Side) -> String {
        format!("127.0.0.1:{}", self.port(side) + 2)
    }

    fn port(&self, side: Side) -> u16 {
        match side {
            Side::Source => self.source_port,
            Side::Dest => self.dest_port,
        }
    }

    /// The tools' super user as a test client (produce, read back, topics).
    pub fn admin(&self, side: Side) -> Cluster {
        match side {
            Side::Source => self.source_admin,
            Side::Dest => self.dest_admin,
        }
    }

    /// A new topic in the source with `count` keyed records (headers,
    /// timestamps) over `partitions` partitions.
    pub async fn source_topic(&self, prefix: &str, count: u64, partitions: i32) -> Result<String> {
        let topic = crate::unique_name(prefix);
        create_topic(self.admin(Side::Source), &topic, partitions, &[]).await?;
        produce(
            self.admin(Side::Source),
            &topic,
            KeyedRecords::new(count, partitions).generate(),
        )
        .await
        .context("records produced into the secured source")?;
        Ok(topic)
    }

    /// Asserts that every partition of the destination copy of `topic` holds
    /// exactly the source's records (key, value, headers, timestamp, order).
    pub async fn assert_mirrored_exactly(&self, topic: &str) -> Result<()> {
        let source = read_all(self.admin(Side::Source), topic).await?;
        let dest = read_all(self.admin(Side::Dest), topic).await?;
        assert_same_partitions(&source, &dest);
        Ok(())
    }

    /// A CA that signed none of the stack's certificates.
    pub fn other_ca(&self) -> Result<PathBuf> {
        let other_ca = self.state_dir.join("other-ca.pem");
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=other CA", "-keyout"])
            .arg(self.state_dir.join("other-ca.key"))
            .arg("-out")
            .arg(&other_ca)
            .output()?;
        anyhow::ensure!(made.status.success(), "openssl failed: {made:?}");
        Ok(other_ca)
    }

    /// Runs Kafka's ACL tool as the super user, e.g. `--remove --allow-principal
    /// User:kmirror --operation Write --topic *`.
    pub async fn acls(&self, side: Side, args: &[&str]) -> Result<String> {
        let bootstrap = self.ssl_bootstrap(side);
        let command_config = self
            .file(&format!("admin-{}.properties", side.name()))
            .display()
            .to_string();
        let mut full = vec![
            "tool",
            "org.apache.kafka.tools.AclCommand",
            "--bootstrap-server",
            &bootstrap,
            "--command-config",
            &command_config,
            "--force",
        ];
        full.extend_from_slice(args);
        self.run(&full).await
    }
}

impl Drop for SecureStack {
    fn drop(&mut self) {
        let _ = self.command(&["down", "--purge"]).output();
    }
}
