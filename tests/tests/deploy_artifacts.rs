//! What an operator installs: the release artefacts for VMs (`deploy/package`: a
//! tarball and a Debian package with the binaries, the systemd units, the example
//! configs and the completions) and the Kubernetes manifests (`deploy/kubernetes/`).
//!
//! The package is built from the debug binaries (`deploy/package --profile dev
//! --no-build`, after `cargo build --workspace --bins` as for every end-to-end
//! test). The units are checked with `systemd-analyze verify` (which reports
//! problems on its output and still exits 0, so any output fails) and `systemd-analyze
//! security --offline=true` under an exposure threshold; the package is installed
//! with `dpkg -i`, run, and purged again (root only: skipped, with a message,
//! elsewhere). The manifests are validated offline against the Kubernetes schemas,
//! and checked for what the schemas cannot see (probes, graceful stop, memory,
//! disruption budgets, network policies), by `deploy/kubernetes/check`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const ROLES: [&str; 3] = ["coordinator", "fetcher", "writer"];
const BINARIES: [&str; 5] = [
    "kmirror-coordinator",
    "kmirror-fetcher",
    "kmirror-writer",
    "kmirrorctl",
    "kmirror",
];

/// Highest overall exposure `systemd-analyze security` may give a unit, in its own
/// tenths (20 is "2.0"; 0 is fully locked down, 10.0 fully exposed).
const MAX_UNIT_EXPOSURE: &str = "20";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn run(command: &mut Command) -> Output {
    let description = format!("{command:?}");
    command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {description}: {error}"))
}

fn run_ok(command: &mut Command) -> String {
    let description = format!("{command:?}");
    let output = run(command);
    assert!(
        output.status.success(),
        "{description} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The tarball and the package, built once per test process.
struct Artefacts {
    tarball: PathBuf,
    package: PathBuf,
}

fn artefacts() -> &'static Artefacts {
    static ARTEFACTS: OnceLock<Artefacts> = OnceLock::new();
    ARTEFACTS.get_or_init(|| {
        let root = workspace_root();
        let printed = run_ok(
            Command::new(root.join("deploy/package"))
                .args(["--profile", "dev", "--no-build"])
                .current_dir(&root),
        );
        let paths: Vec<PathBuf> = printed.lines().map(PathBuf::from).collect();
        let find = |suffix: &str| {
            paths
                .iter()
                .find(|path| path.to_string_lossy().ends_with(suffix))
                .unwrap_or_else(|| panic!("deploy/package printed no *{suffix}: {printed}"))
                .clone()
        };
        Artefacts {
            tarball: find(".tar.gz"),
            package: find(".deb"),
        }
    })
}

/// Paths every artefact holds, relative to the root it installs into.
fn expected_files() -> Vec<String> {
    let mut files: Vec<String> = BINARIES
        .iter()
        .map(|binary| format!("usr/bin/{binary}"))
        .collect();
    for role in ROLES {
        files.push(format!("usr/lib/systemd/system/kmirror-{role}.service"));
        files.push(format!("etc/kmirror/{role}.yaml"));
    }
    files.extend(
        [
            "usr/share/kmirror/systemd/tls.conf",
            "usr/share/bash-completion/completions/kmirrorctl",
            "usr/share/zsh/vendor-completions/_kmirrorctl",
            "usr/share/fish/vendor_completions.d/kmirrorctl.fish",
            "usr/share/doc/kmirror/install.md",
        ]
        .map(String::from),
    );
    files
}

fn missing_from(listing: &str, prefix: &str) -> Vec<String> {
    expected_files()
        .into_iter()
        .filter(|file| {
            !listing
                .lines()
                .any(|line| line.trim_end().ends_with(&format!("{prefix}{file}")))
        })
        .collect()
}

#[test]
fn the_tarball_and_the_package_hold_binaries_units_configs_and_completions() {
    let artefacts = artefacts();

    let tar_listing = run_ok(Command::new("tar").arg("-tzf").arg(&artefacts.tarball));
    let top = artefacts
        .tarball
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".tar.gz")
        .to_string();
    let missing = missing_from(&tar_listing, &format!("{top}/"));
    assert!(
        missing.is_empty(),
        "tarball misses {missing:?}:\n{tar_listing}"
    );

    let deb_listing = run_ok(Command::new("dpkg-deb").arg("-c").arg(&artefacts.package));
    let missing = missing_from(&deb_listing, "./");
    assert!(
        missing.is_empty(),
        "package misses {missing:?}:\n{deb_listing}"
    );

    let conffiles = run_ok(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&artefacts.package)
            .arg("conffiles"),
    );
    for role in ROLES {
        assert!(
            conffiles.contains(&format!("/etc/kmirror/{role}.yaml")),
            "the example configs are conffiles (an upgrade keeps the operator's): {conffiles}"
        );
    }
}

#[test]
fn every_unit_is_hardened_below_the_exposure_threshold() {
    let units = workspace_root().join("deploy/systemd");
    for role in ROLES {
        let unit = units.join(format!("kmirror-{role}.service"));
        let output = run(Command::new("systemd-analyze")
            .args([
                "security",
                "--offline=true",
                &format!("--threshold={MAX_UNIT_EXPOSURE}"),
            ])
            .arg(&unit));
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "kmirror-{role}.service is more exposed than {MAX_UNIT_EXPOSURE} tenths:\n{report}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            report.contains("Overall exposure level"),
            "no exposure level: {report}"
        );
    }
}

/// Removes the package however the test ends, so a failure leaves nothing installed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "kmirror"]).output();
    }
}

fn package_installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "kmirror"])
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains("ok installed"))
}

/// `systemd-analyze verify` of `units` (it exits 0 on most problems: they are
/// only printed, so the check is that it prints nothing).
fn assert_verifies(units: &[PathBuf]) {
    let output = run(Command::new("systemd-analyze").arg("verify").args(units));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && printed.trim().is_empty(),
        "systemd-analyze verify {units:?} ({}):\n{printed}",
        output.status
    );
}

#[test]
fn the_package_installs_its_units_verify_its_binaries_run_and_it_removes_cleanly() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: installing the package with dpkg -i needs root (CI runs as root)");
        return;
    }
    if package_installed() {
        eprintln!(
            "skipping: a kmirror package is already installed here, and this test would remove it"
        );
        return;
    }
    let artefacts = artefacts();
    let installed = Installed;
    run_ok(Command::new("dpkg").arg("-i").arg(&artefacts.package));

    let version = run_ok(Command::new("/usr/bin/kmirrorctl").arg("--version"));
    assert!(version.starts_with("kmirrorctl "), "{version}");
    for role in ROLES {
        // --version reads the config file first: the installed example is accepted.
        run_ok(Command::new(format!("/usr/bin/kmirror-{role}")).args([
            "--config",
            &format!("/etc/kmirror/{role}.yaml"),
            "--version",
        ]));
    }

    let installed_units: Vec<PathBuf> = ROLES
        .iter()
        .map(|role| PathBuf::from(format!("/usr/lib/systemd/system/kmirror-{role}.service")))
        .collect();
    assert_verifies(&installed_units);

    // With the TLS drop-in as docs/install.md installs it (kmirror-.service.d applies
    // to every kmirror unit), in a directory of its own rather than under /etc.
    let with_tls = std::env::temp_dir().join(kmirror_tests::unique_name("kmirror-units-tls"));
    std::fs::create_dir_all(with_tls.join("kmirror-.service.d")).unwrap();
    std::fs::copy(
        "/usr/share/kmirror/systemd/tls.conf",
        with_tls.join("kmirror-.service.d/tls.conf"),
    )
    .unwrap();
    let mut units_with_tls = Vec::new();
    for unit in &installed_units {
        let copy = with_tls.join(unit.file_name().unwrap());
        std::fs::copy(unit, &copy).unwrap();
        units_with_tls.push(copy);
    }
    assert_verifies(&units_with_tls);
    std::fs::remove_dir_all(&with_tls).unwrap();

    run_ok(Command::new("dpkg").args(["-r", "kmirror"]));
    for binary in BINARIES {
        let path = Path::new("/usr/bin").join(binary);
        assert!(!path.exists(), "{} is left after dpkg -r", path.display());
    }
    assert!(
        Path::new("/etc/kmirror/fetcher.yaml").exists(),
        "dpkg -r keeps the configs (conffiles), only --purge removes them"
    );
    run_ok(Command::new("dpkg").args(["--purge", "kmirror"]));
    assert!(
        !Path::new("/etc/kmirror").exists(),
        "/etc/kmirror is left after dpkg --purge"
    );
    drop(installed);
}

#[test]
fn the_kubernetes_manifests_validate_against_the_schemas_and_keep_their_rules() {
    let root = workspace_root();
    let report = run_ok(Command::new(root.join("deploy/kubernetes/check")).current_dir(&root));
    // The check names every document it validated: the base's files one by one,
    // then the rendered overlays.
    for resource in [
        "deployment/kmirror-coordinator",
        "deployment/kmirror-fetcher",
        "deployment/kmirror-writer",
        "service/kmirror-coordinator",
        "poddisruptionbudget/kmirror-writer",
        "networkpolicy/kmirror-default-deny",
        "configmap/kmirror-fleet",
    ] {
        assert!(
            report.contains(&format!(
                "overlays/tls (rendered) passed for resource {resource}"
            )),
            "{resource} not validated in the TLS overlay:\n{report}"
        );
    }
    // deploy/kubernetes/rules.py: probes, graceful stop, memory, budgets, policies.
    for rule in [
        "kmirror-fetcher: readinessProbe on /readyz",
        "kmirror-writer: the member's shutdown grace (20s) ends before the pod's (30s)",
        "kmirror-writer: the memory request covers the measured bound",
        "kmirror-coordinator: two coordinators",
        "kmirror-fetcher: a NetworkPolicy denies what no other allows",
    ] {
        assert!(
            report.contains(&format!("RULE overlays/tls (rendered): ok {rule}")),
            "rule not kept in the TLS overlay: {rule}\n{report}"
        );
    }
    assert!(!report.contains("BROKEN"), "{report}");
}
