//! `meshctl up --dry-run --out DIR`, run as a user would: the real binary, no docker, no cluster.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use support::{meshctl, ok, stderr};

fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn three_cluster_plan_is_written_with_phase_ordered_folders_and_converges() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plan");
    let o = out.to_str().unwrap();
    let work = dir.path().join("work");
    let w = work.to_str().unwrap();
    let listing = ok(meshctl(&[
        "--workdir",
        w,
        "up",
        "--clusters",
        "3",
        "--dry-run",
        "--out",
        o,
        "--key-type",
        "ecdsa-p256",
    ]));
    assert!(
        listing.contains("08-remote-secrets") && listing.contains("no cluster was touched"),
        "{listing}"
    );
    // The plan shows the CA the real `up` will use: the work dir's, not a throwaway one in OUT.
    let certs = work.join("mesh1/certs");
    assert!(
        listing.contains(&format!("certificates: `{}`", certs.display())),
        "{listing}"
    );
    assert!(!out.join("certs").exists());
    let cacerts = fs::read_to_string(out.join("cluster1/04-certs/cacerts.yaml")).unwrap();
    let intermediate = fs::read_to_string(certs.join("cluster1/ca-cert.pem")).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&intermediate);
    assert!(
        cacerts.contains(&format!("ca-cert.pem: \"{b64}\"")),
        "cacerts carries the work dir's intermediate"
    );

    for c in ["cluster1", "cluster2", "cluster3"] {
        for f in [
            "01-clusters/kind-config.yaml",
            "02-metallb/address-pool.yaml",
            "04-certs/istio-system.yaml",
            "04-certs/cacerts.yaml",
            "05-istio/control-plane.yaml",
            "06-eastwest/eastwest-gateway.yaml",
            "07-expose/cross-network-gateway.yaml",
            "verify/helloworld.yaml",
        ] {
            assert!(out.join(c).join(f).is_file(), "{c}/{f} missing");
        }
        let mode = fs::metadata(out.join(c).join("04-certs/cacerts.yaml"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "a manifest holding a private key is private");
    }
    let plan = read_json(&out.join("plan.json"));
    assert_eq!(plan["meshID"], "mesh1");
    assert_eq!(plan["phases"].as_array().unwrap().len(), 7);
    assert_eq!(plan["clusters"][2]["metallbPool"], "172.18.253.1-172.18.253.254");
    assert!(
        plan["artifacts"][0].get("content").is_none(),
        "plan.json lists files, not their text"
    );
    assert!(out.join("plan.yaml").is_file());

    // A second run reuses the work dir's CA, so every manifest comes out byte for byte the same.
    let before = fs::read(out.join("cluster2/04-certs/cacerts.yaml")).unwrap();
    let root = fs::read(certs.join("root-key.pem")).unwrap();
    ok(meshctl(&[
        "--workdir",
        w,
        "up",
        "--clusters",
        "3",
        "--dry-run",
        "--out",
        o,
        "--key-type",
        "ecdsa-p256",
    ]));
    assert_eq!(
        fs::read(out.join("cluster2/04-certs/cacerts.yaml")).unwrap(),
        before
    );
    assert_eq!(fs::read(certs.join("root-key.pem")).unwrap(), root);

    // Planning two clusters into the same folder leaves no stale cluster3 behind, and keeps what
    // the user put there.
    fs::write(out.join("cluster3/NOTES.txt"), "mine").unwrap();
    ok(meshctl(&[
        "--workdir",
        w,
        "up",
        "--clusters",
        "2",
        "--dry-run",
        "--out",
        o,
        "--key-type",
        "ecdsa-p256",
    ]));
    assert!(
        !out.join("cluster3/04-certs").exists(),
        "stale cluster3 plan removed"
    );
    assert_eq!(
        fs::read_to_string(out.join("cluster3/NOTES.txt")).unwrap(),
        "mine"
    );
    assert!(out.join("cluster2/04-certs/cacerts.yaml").is_file());
}

#[test]
fn a_folder_that_is_not_a_plan_is_never_written_into_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("project");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("main.tf"), "terraform").unwrap();
    let o = out.to_str().unwrap();
    let args = [
        "up",
        "--clusters",
        "1",
        "--dry-run",
        "--out",
        o,
        "--key-type",
        "ecdsa-p256",
    ];
    let r = meshctl(&args);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(
        stderr(&r).contains("holds no meshctl plan") && stderr(&r).contains("`main.tf`"),
        "{}",
        stderr(&r)
    );
    assert_eq!(fs::read_dir(&out).unwrap().count(), 1, "nothing written");
    let mut forced = args.to_vec();
    forced.push("--overwrite");
    ok(meshctl(&forced));
    assert!(out.join("plan.json").is_file());
    assert_eq!(fs::read_to_string(out.join("main.tf")).unwrap(), "terraform");

    // Somebody else's plan.json (Terraform's `show -json` writes one) is not an earlier plan of
    // meshctl's: what it lists is never removed, nor is it replaced without --overwrite.
    let other = dir.path().join("terraform");
    fs::create_dir_all(&other).unwrap();
    let theirs = r#"{"format_version": "1.2", "artifacts": [{"path": "main.tf"}]}"#;
    fs::write(other.join("plan.json"), theirs).unwrap();
    fs::write(other.join("main.tf"), "terraform").unwrap();
    let mut into_other = args.to_vec();
    into_other[5] = other.to_str().unwrap();
    let r = meshctl(&into_other);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(stderr(&r).contains("holds no meshctl plan"), "{}", stderr(&r));
    assert_eq!(fs::read_to_string(other.join("plan.json")).unwrap(), theirs);
    assert_eq!(fs::read_to_string(other.join("main.tf")).unwrap(), "terraform");
}

#[test]
fn existing_contexts_skip_cluster_creation_and_metallb() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().to_str().unwrap();
    let listing = ok(meshctl(&[
        "up",
        "--contexts",
        "kind-east,kind-west",
        "--mesh-id",
        "corp",
        "--dry-run",
        "--out",
        o,
        "--key-type",
        "ecdsa-p256",
    ]));
    assert!(
        !listing.contains("01-clusters") && !listing.contains("02-metallb"),
        "{listing}"
    );
    assert!(
        listing.contains("istioctl install -y --context kind-west"),
        "{listing}"
    );
    let plan = read_json(&dir.path().join("plan.json"));
    assert_eq!(plan["provider"], "existing");
    assert_eq!(plan["meshID"], "corp");
    assert!(!dir.path().join("cluster1/01-clusters").exists());
}

#[test]
fn config_file_topology_and_phase_selection() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("meshctl.yaml");
    fs::write(
        &cfg,
        "meshID: lab\nclusters:\n  - name: east\n    region: eu-west\n  - name: west\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let work = dir.path().join("work");
    let text = ok(meshctl(&[
        "--workdir",
        work.to_str().unwrap(),
        "up",
        "--config",
        cfg.to_str().unwrap(),
        "--only",
        "istio,eastwest",
        "--dry-run",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(
        text.contains("05-istio") && text.contains("06-eastwest") && !text.contains("04-certs"),
        "{text}"
    );
    assert!(
        !work.join("lab/certs").exists(),
        "no certificate work when the certs phase is not selected"
    );
    let iop = fs::read_to_string(out.join("east/05-istio/control-plane.yaml")).unwrap();
    assert!(
        iop.contains("meshID: \"lab\"") && iop.contains("clusterName: \"east\""),
        "{iop}"
    );
}

#[test]
fn json_output_is_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let text = ok(meshctl(&[
        "up",
        "--clusters",
        "1",
        "--dry-run",
        "--out",
        dir.path().to_str().unwrap(),
        "-o",
        "json",
        "--key-type",
        "ecdsa-p256",
    ]));
    let plan: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let first = &plan["phases"][0]["clusters"][0]["steps"][0];
    assert_eq!(first["do"], "create-kind-cluster");
    assert_eq!(first["name"], "cluster1");
}

#[test]
fn bad_input_is_refused_with_the_field_named_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    let r = meshctl(&[
        "up",
        "--clusters",
        "5",
        "--lb-subnet",
        "10.0.0.0/24",
        "--dry-run",
        "--out",
        o,
        "--skip",
        "certs",
    ]);
    // A subnet too small for the clusters is a mistake on the command line: exit 2.
    assert_eq!(r.status.code(), Some(2));
    assert!(
        stderr(&r).contains("--lb-subnet 10.0.0.0/24") && stderr(&r).contains("at most 4"),
        "{}",
        stderr(&r)
    );
    assert!(!out.exists());

    let r = meshctl(&[
        "up",
        "--clusters",
        "2",
        "--only",
        "bogus",
        "--dry-run",
        "--out",
        o,
    ]);
    assert_eq!(r.status.code(), Some(2), "usage error");
    let r = meshctl(&[
        "up",
        "--contexts",
        "a",
        "--only",
        "clusters",
        "--dry-run",
        "--out",
        o,
    ]);
    assert_eq!(r.status.code(), Some(2), "a usage error: {}", stderr(&r));
    assert!(stderr(&r).contains("already exist"), "{}", stderr(&r));
    // Every command-line mistake exits 2 (docs/exit-codes.md), with the flag and value named.
    for (flag, value, says) in [
        ("--timeout", "soon", "not a duration"),
        ("--timeout", "0s", "shorter than 1s"),
        ("--timeout", "400d", "longer than 24h"),
        ("--lb-subnet", "300.1.2.3/40", "not an IPv4 CIDR"),
    ] {
        let r = meshctl(&["up", "--clusters", "2", flag, value, "--dry-run", "--out", o]);
        assert_eq!(r.status.code(), Some(2), "{flag} {value}: {}", stderr(&r));
        assert!(
            stderr(&r).contains(flag) && stderr(&r).contains(says),
            "{flag} {value}: {}",
            stderr(&r)
        );
    }
    let r = meshctl(&[
        "up",
        "--only",
        "certs",
        "--skip",
        "certs",
        "--dry-run",
        "--out",
        o,
    ]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(stderr(&r).contains("no phase to run"), "{}", stderr(&r));
    // --out alone would have started a real `up`.
    let r = meshctl(&["up", "--clusters", "2", "--out", o]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(stderr(&r).contains("--dry-run"), "{}", stderr(&r));
    assert!(!out.exists());
}

#[test]
fn down_refuses_a_mesh_id_that_is_not_a_label_and_deletes_only_its_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let victim = dir.path().join("x");
    fs::create_dir_all(&victim).unwrap();
    fs::write(victim.join("precious.txt"), "keep").unwrap();
    let w = work.to_str().unwrap();
    let r = meshctl(&["--workdir", w, "down", "--purge", "--mesh-id", "../x"]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(stderr(&r).contains("DNS-1123"), "{}", stderr(&r));
    assert!(victim.join("precious.txt").exists());

    // A real mesh folder: `down --purge` removes meshctl's files and keeps the user's.
    ok(meshctl(&[
        "--workdir",
        w,
        "up",
        "--clusters",
        "1",
        "--dry-run",
        "--out",
        dir.path().join("plan").to_str().unwrap(),
        "--key-type",
        "ecdsa-p256",
    ]));
    let mesh = work.join("mesh1");
    assert!(mesh.join("certs/root-key.pem").is_file());
    fs::write(mesh.join("notes.md"), "mine").unwrap();
    let r = meshctl(&["--workdir", w, "down", "--purge"]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(!mesh.join("certs").exists(), "the CA meshctl wrote is gone");
    assert_eq!(fs::read_to_string(mesh.join("notes.md")).unwrap(), "mine");
    assert!(stderr(&r).contains("`notes.md`"), "{}", stderr(&r));
}

#[test]
fn version_and_completions_work() {
    let text = ok(meshctl(&["version"]));
    assert!(
        text.contains(meshctl::versions::ISTIO_VERSION) && text.contains(meshctl::versions::METALLB_VERSION)
    );
    let json: serde_json::Value =
        serde_json::from_str(ok(meshctl(&["version", "-o", "json"])).trim()).unwrap();
    assert_eq!(json["kindNodeImage"], meshctl::versions::KIND_NODE_IMAGE);
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(meshctl(&["completions", shell]));
        assert!(
            script.contains("remote-secret"),
            "{shell} completion covers every command"
        );
    }
}

/// A re-plan never follows a link out of `--out`: `plan/cluster1` made a link to a folder
/// elsewhere is refused, and nothing is written or removed there.
#[test]
fn a_link_inside_the_plan_folder_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plan");
    let out_s = out.to_str().unwrap();
    ok(meshctl(&["up", "--clusters", "2", "--dry-run", "--out", out_s]));
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::write(elsewhere.join("keep.txt"), "mine").unwrap();
    fs::remove_dir_all(out.join("cluster1")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("cluster1")).unwrap();

    let again = meshctl(&["up", "--clusters", "2", "--dry-run", "--out", out_s]);
    assert_ne!(again.status.code(), Some(0));
    assert!(
        stderr(&again).contains("is a symbolic link") && stderr(&again).contains("cluster1"),
        "{}",
        stderr(&again)
    );
    let there: Vec<String> = fs::read_dir(&elsewhere)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(there, ["keep.txt"], "nothing written or removed through the link");
}

/// Every key meshctl writes as JSON is camelCase, Kubernetes' own style: `plan.json` (steps
/// included) and `version -o json`.
#[test]
fn json_keys_are_camel_case_everywhere() {
    fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    out.push(k.clone());
                    keys(child, out);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| keys(i, out)),
            _ => {}
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plan");
    ok(meshctl(&[
        "up",
        "--config",
        "docs/examples/primary-remote.yaml",
        "--dry-run",
        "--out",
        out.to_str().unwrap(),
    ]));
    let version: serde_json::Value = serde_json::from_str(&ok(meshctl(&["version", "-o", "json"]))).unwrap();
    for doc in [read_json(&out.join("plan.json")), version] {
        let mut all = Vec::new();
        keys(&doc, &mut all);
        let snake: Vec<&String> = all
            .iter()
            .filter(|k| k.contains('_') && !k.contains('/'))
            .collect();
        assert!(snake.is_empty(), "{snake:?}");
    }
}
