//! The real-cluster smoke workflow cannot run here; these checks keep it correct anyway: valid YAML
//! with the steps it needs, a script that parses, and every `meshctl` command line in the script
//! accepted by the real argument parser. (shellcheck runs on it in .ci/run.)

mod support;

use std::path::Path;

fn repo(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn workflow_is_valid_yaml_that_runs_the_smoke_script_and_uploads_diagnostics_on_failure() {
    let doc: serde_json::Value = serde_saphyr::from_str(&repo(".github/workflows/smoke.yml")).unwrap();
    let steps = doc["jobs"]["kind-mesh"]["steps"]
        .as_array()
        .expect("job kind-mesh has steps");
    assert_eq!(doc["jobs"]["kind-mesh"]["runs-on"], "ubuntu-latest");
    assert!(steps.iter().any(|s| s["run"] == "scripts/smoke.sh"));
    let upload = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
        })
        .unwrap();
    assert_eq!(upload["if"], "failure()");
    assert_eq!(upload["with"]["path"], "smoke-artifacts");
    // One run per model; every topology file it names exists and is a valid topology.
    let include = doc["jobs"]["kind-mesh"]["strategy"]["matrix"]["include"]
        .as_array()
        .expect("a model matrix");
    assert!(
        include.iter().any(|m| m["topology"] == ""),
        "the default mesh is smoked"
    );
    // The ambient mesh has a job of its own, built from a topology that says so.
    let ambient = include
        .iter()
        .find(|m| m["model"] == "ambient")
        .expect("an ambient job");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(ambient["topology"].as_str().unwrap());
    let mesh = meshctl::topology::Mesh::from_file(&file, None).unwrap();
    assert_eq!(mesh.dataplane, meshctl::topology::Dataplane::Ambient);
    for m in include {
        let file = m["topology"].as_str().unwrap();
        if !file.is_empty() {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            let mesh =
                meshctl::topology::Mesh::from_file(&path, None).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(
                mesh.provider,
                meshctl::topology::Provider::Kind,
                "{file}: smoke runs on kind"
            );
            // scripts/smoke.sh counts the clusters (for the diagnostics of each) by their
            // one-line entries.
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(
                text.lines().filter(|l| l.contains("- {name:")).count(),
                mesh.clusters.len(),
                "{file}: one `- {{name: ...}}` line per cluster"
            );
        }
    }
}

#[test]
fn smoke_script_parses_and_its_meshctl_command_lines_are_accepted() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/smoke.sh");
    let status = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success(), "bash -n scripts/smoke.sh");
    let script = repo("scripts/smoke.sh");
    let mut checked = 0;
    for line in script
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("\"$meshctl\" ") || l.starts_with("versions=$(\"$meshctl\""))
    {
        let command = line.trim_start_matches("versions=$(").replace("2>&1", "");
        let command = command.split(['|', '>', ')']).next().unwrap().trim();
        // The default topology of the script; TOPOLOGY puts `--config FILE` there instead.
        let command = command
            .replace("\"${topology[@]}\"", "--clusters \"$clusters\"")
            .replace("\"${from[@]}\"", "--istio-version 1.30.3")
            .replace("\"${checks[@]}\"", "--failover --locality distribute");
        let args: Vec<String> = command
            .split_whitespace()
            .skip(1)
            .map(|a| {
                a.replace("\"$clusters\"", "2")
                    .replace("\"$artifacts/verify.xml\"", "verify.xml")
                    .replace("\"$artifacts/verify-upgraded.xml\"", "verify.xml")
                    .replace("\"$istio_version\"", meshctl::versions::ISTIO_VERSION)
            })
            .chain(["--help".to_string()])
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = support::meshctl(&args);
        assert!(
            out.status.success(),
            "`meshctl {}` is rejected: {}",
            args.join(" "),
            support::stderr(&out)
        );
        checked += 1;
    }
    assert!(checked >= 10, "found only {checked} meshctl command lines");
    // The script reads these keys of `meshctl version -o json`.
    let versions: serde_json::Value =
        serde_json::from_str(support::ok(support::meshctl(&["version", "-o", "json"])).trim()).unwrap();
    assert_eq!(versions["kind"], meshctl::versions::KIND_VERSION);
    assert_eq!(versions["istio"], meshctl::versions::ISTIO_VERSION);
}
