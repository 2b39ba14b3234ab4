//! A private etcd secured as production runs it, for the tests of etcd security:
//! TLS on its own ports with client certificates required (`--client-cert-auth`),
//! certificates generated for the run with `openssl` (as `deploy/local/stack up
//! --secure` makes the Kafka ones), JWT auth tokens that expire after a few seconds,
//! and etcd's RBAC set up with `etcdctl` as an operator would: a `root` user,
//! `auth enable`, and per fleet one user per role whose role grants readwrite on
//! the fleet's prefix `/kmirror/<fleet>/` only.
//!
//! The folder (certificates, passwords, data, log) is removed and etcd killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kmirror_common::types::Role;

use crate::member_process::free_port;

/// How long an auth token lives: short, so a test sees many expire.
pub const AUTH_TOKEN_TTL: Duration = Duration::from_secs(5);

pub struct SecureEtcd {
    dir: PathBuf,
    pub endpoint: String,
    child: Option<Child>,
    root_password: String,
}

/// What one member needs to reach the secure etcd: the values of its
/// `KMIRROR_ETCD_*` variables.
#[derive(Debug, Clone)]
pub struct EtcdIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub user: String,
    pub password_file: PathBuf,
}

impl EtcdIdentity {
    /// The member's environment, as an operator's unit file would set it.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("KMIRROR_ETCD_CERT".into(), self.cert.display().to_string()),
            ("KMIRROR_ETCD_KEY".into(), self.key.display().to_string()),
            ("KMIRROR_ETCD_CA".into(), self.ca.display().to_string()),
            ("KMIRROR_ETCD_USER".into(), self.user.clone()),
            (
                "KMIRROR_ETCD_PASSWORD_FILE".into(),
                self.password_file.display().to_string(),
            ),
        ]
    }
}

fn run(command: &mut Command) -> Result<String> {
    let description = format!("{command:?}");
    let output = command
        .output()
        .with_context(|| format!("cannot run {description}"))?;
    if !output.status.success() {
        bail!(
            "{description} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn random_password() -> String {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").expect("/dev/urandom"),
        &mut bytes,
    )
    .expect("random bytes");
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl SecureEtcd {
    /// Generates the certificates and starts etcd; RBAC is not enabled yet
    /// (see [`SecureEtcd::enable_auth`]).
    pub async fn start(name: &str) -> Result<Self> {
        let dir = crate::stack::logs_dir().join(crate::unique_name(&format!("etcd-{name}")));
        std::fs::create_dir_all(&dir)?;
        let port = free_port();
        let peer_port = free_port();
        let endpoint = format!("https://127.0.0.1:{port}");
        let mut etcd = Self {
            endpoint: endpoint.clone(),
            child: None,
            root_password: random_password(),
            dir,
        };
        etcd.make_ca("ca")?;
        etcd.make_ca("other-ca")?;
        etcd.issue(
            "ca",
            "server",
            "etcd",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth",
        )?;
        etcd.issue("ca", "root", "root", "extendedKeyUsage=clientAuth")?;
        let dir = etcd.dir.clone();
        run(Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(dir.join("jwt.key"))
            .arg("2048")
            .stderr(Stdio::null()))?;
        run(Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(dir.join("jwt.key"))
            .arg("-out")
            .arg(dir.join("jwt.pub"))
            .stderr(Stdio::null()))?;
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.join("etcd.log"))?;
        let child = Command::new("etcd")
            .args(["--name", "secure"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("secure={peer_url}")])
            .arg("--cert-file")
            .arg(dir.join("server.crt"))
            .arg("--key-file")
            .arg(dir.join("server.key"))
            .arg("--trusted-ca-file")
            .arg(dir.join("ca.pem"))
            .arg("--client-cert-auth")
            .arg(format!(
                "--auth-token=jwt,pub-key={},priv-key={},sign-method=RS256,ttl={}s",
                dir.join("jwt.pub").display(),
                dir.join("jwt.key").display(),
                AUTH_TOKEN_TTL.as_secs()
            ))
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start etcd (install the Debian package etcd-server)")?;
        etcd.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match etcd.etcdctl(false, &["endpoint", "health"]) {
                Ok(_) => break,
                Err(error) if Instant::now() >= deadline => {
                    bail!(
                        "secure etcd not healthy: {error}; see {}",
                        dir.join("etcd.log").display()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        Ok(etcd)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn make_ca(&self, name: &str) -> Result<()> {
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout",
            ])
            .arg(self.dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(self.dir.join(format!("{name}.pem")))
            .args(["-days", "1", "-sha256", "-subj"])
            .arg(format!("/O=kmirror-tests/CN={name}"))
            .stderr(Stdio::null()))?;
        Ok(())
    }

    /// `name.crt` and `name.key`, signed by the CA `ca`.
    fn issue(&self, ca: &str, name: &str, common_name: &str, extensions: &str) -> Result<()> {
        let dir = &self.dir;
        run(Command::new("openssl")
            .args(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout"])
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(dir.join(format!("{name}.csr")))
            .arg("-subj")
            .arg(format!("/O=kmirror-tests/CN={common_name}"))
            .stderr(Stdio::null()))?;
        std::fs::write(dir.join(format!("{name}.ext")), extensions)?;
        run(Command::new("openssl")
            .args(["x509", "-req", "-in"])
            .arg(dir.join(format!("{name}.csr")))
            .arg("-CA")
            .arg(dir.join(format!("{ca}.pem")))
            .arg("-CAkey")
            .arg(dir.join(format!("{ca}.key")))
            .args(["-CAcreateserial", "-days", "1", "-sha256", "-extfile"])
            .arg(dir.join(format!("{name}.ext")))
            .arg("-out")
            .arg(dir.join(format!("{name}.crt")))
            .stderr(Stdio::null()))?;
        Ok(())
    }

    /// Runs `etcdctl` as root (with its password once auth is on).
    pub fn etcdctl(&self, as_root: bool, args: &[&str]) -> Result<String> {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint])
            .arg(format!("--cacert={}", self.ca().display()))
            .arg(format!("--cert={}", self.dir.join("root.crt").display()))
            .arg(format!("--key={}", self.dir.join("root.key").display()));
        if as_root {
            command.arg(format!("--user=root:{}", self.root_password));
        }
        run(command.args(args))
    }

    /// What an operator runs once: a root user, then `auth enable`.
    pub fn enable_auth(&self) -> Result<()> {
        self.etcdctl(
            false,
            &["user", "add", &format!("root:{}", self.root_password)],
        )?;
        self.etcdctl(false, &["auth", "enable"])?;
        Ok(())
    }

    /// A role granting readwrite on `/kmirror/<fleet>/`, and a user holding it
    /// (`user`), with a client certificate of CN `user` signed by `ca`.
    pub fn add_user(&self, fleet: &str, user: &str, ca: &str) -> Result<EtcdIdentity> {
        let role = format!("kmirror-{fleet}");
        let prefix = kmirror_common::Keys::new(fleet).root().to_string();
        if self.etcdctl(true, &["role", "get", &role]).is_err() {
            self.etcdctl(true, &["role", "add", &role])?;
            self.etcdctl(
                true,
                &[
                    "role",
                    "grant-permission",
                    "--prefix=true",
                    &role,
                    "readwrite",
                    &prefix,
                ],
            )?;
        }
        let password = random_password();
        self.etcdctl(true, &["user", "add", &format!("{user}:{password}")])?;
        self.etcdctl(true, &["user", "grant-role", user, &role])?;
        let password_file = self.dir.join(format!("{user}.password"));
        std::fs::write(&password_file, format!("{password}\n"))?;
        self.issue(ca, user, user, "extendedKeyUsage=clientAuth")?;
        Ok(EtcdIdentity {
            cert: self.dir.join(format!("{user}.crt")),
            key: self.dir.join(format!("{user}.key")),
            ca: self.ca(),
            user: user.to_string(),
            password_file,
        })
    }

    /// One user per role of `fleet`, named `<fleet>-<role>`, as the role env of a fleet.
    pub fn fleet_users(&self, fleet: &str) -> Result<Vec<(Role, String, String)>> {
        let mut role_env = Vec::new();
        for role in [Role::Coordinator, Role::Fetcher, Role::Writer] {
            let identity = self.add_user(fleet, &format!("{fleet}-{role}"), "ca")?;
            for (name, value) in identity.env() {
                role_env.push((role, name, value));
            }
        }
        Ok(role_env)
    }

    /// How the test itself reaches etcd: as root.
    pub fn root_options(&self) -> Result<etcd_client::ConnectOptions> {
        let tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(
                self.ca(),
            )?))
            .identity(etcd_client::Identity::from_pem(
                std::fs::read(self.dir.join("root.crt"))?,
                std::fs::read(self.dir.join("root.key"))?,
            ));
        Ok(etcd_client::ConnectOptions::new()
            .with_tls(tls)
            .with_user("root", self.root_password.clone())
            .with_auto_token_refresh(true)
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10)))
    }
}

impl Drop for SecureEtcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::env::var_os("KMIRROR_E2E_KEEP_SECURE_ETCD").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
