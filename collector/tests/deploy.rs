//! The deployment files in `deploy/` are valid: the systemd unit verifies
//! with `systemd-analyze verify` (named by `QUERYPULSE_TEST_SYSTEMD_ANALYZE`),
//! the Kubernetes manifests validate offline against the API schemas with
//! `kubernetes-validate --strict` (named by
//! `QUERYPULSE_TEST_KUBERNETES_VALIDATE`), and the container file builds an
//! image that runs unprivileged, keeps its data on a volume and checks its
//! health. Without the variables, the tests that need the tools say they
//! skipped; set and missing, they fail.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn tool(variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(path) if !path.is_empty() => Some(path),
        _ => {
            eprintln!("skipped: set {variable} to the tool's path to run this test");
            None
        }
    }
}

#[test]
fn the_systemd_unit_verifies() {
    let Some(analyze) = tool("QUERYPULSE_TEST_SYSTEMD_ANALYZE") else {
        return;
    };
    let unit = std::fs::read_to_string(deploy().join("systemd/querypulse.service")).unwrap();
    for directive in [
        "DynamicUser=yes",
        "StateDirectory=querypulse",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "LimitNOFILE=",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(directive), "the unit sets {directive}");
    }
    // systemd-analyze checks that the command exists: point it at the
    // binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("querypulse.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/querypulse", env!("CARGO_BIN_EXE_querypulse")),
    )
    .unwrap();
    let output = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // It reports unknown keys and bad values as warnings, exiting 0.
    assert!(stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
}

#[test]
fn the_kubernetes_manifests_validate() {
    let Some(validate) = tool("QUERYPULSE_TEST_KUBERNETES_VALIDATE") else {
        return;
    };
    let manifests: Vec<PathBuf> = std::fs::read_dir(deploy().join("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(manifests.len() >= 3, "{manifests:?}");
    let output = Command::new(validate)
        .arg("--strict")
        .args(&manifests)
        .output()
        .expect("kubernetes-validate runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{report}");
    for kind in [
        "statefulset/querypulse",
        "service/querypulse",
        "secret/querypulse-tokens",
    ] {
        assert!(
            report.contains(&format!("passed for resource {kind}")),
            "{kind}: {report}"
        );
    }
    let statefulset = std::fs::read_to_string(deploy().join("kubernetes/statefulset.yaml")).unwrap();
    for wanted in [
        "volumeClaimTemplates",
        "readinessProbe",
        "livenessProbe",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "secretKeyRef",
        "resources:",
    ] {
        assert!(statefulset.contains(wanted), "the StatefulSet has {wanted}");
    }
}

#[test]
fn the_container_image_runs_unprivileged_with_a_volume_and_a_healthcheck() {
    let file = std::fs::read_to_string(deploy().join("container/Containerfile")).unwrap();
    let instructions: Vec<&str> = file
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    let stages = instructions.iter().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(stages, 2, "a build stage and a runtime stage");
    let runtime = &file[file.rfind("\nFROM ").unwrap()..];
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets a user");
    assert!(!user.starts_with("0") && !user.starts_with("root"), "USER {user}");
    for wanted in [
        "VOLUME [\"/var/lib/querypulse\"]",
        "HEALTHCHECK",
        "/healthz",
        "EXPOSE 7070 7171",
    ] {
        assert!(runtime.contains(wanted), "the runtime stage has {wanted}");
    }
    // What the image runs is a command the binary takes.
    let output = Command::new(env!("CARGO_BIN_EXE_querypulse"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--config") && help.contains("--data-dir"), "{help}");
}
