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
    let listing = ok(meshctl(&[
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
        listing.contains("07-remote-secrets") && listing.contains("nothing was changed"),
        "{listing}"
    );

    for c in ["cluster1", "cluster2", "cluster3"] {
        for f in [
            "01-clusters/kind-config.yaml",
            "02-metallb/address-pool.yaml",
            "03-certs/istio-system.yaml",
            "03-certs/cacerts.yaml",
            "04-istio/control-plane.yaml",
            "05-eastwest/eastwest-gateway.yaml",
            "06-expose/cross-network-gateway.yaml",
            "verify/helloworld.yaml",
        ] {
            assert!(out.join(c).join(f).is_file(), "{c}/{f} missing");
        }
        let mode = fs::metadata(out.join(c).join("03-certs/cacerts.yaml"))
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

    // A second run reuses the CA in OUT/certs, so every manifest comes out byte for byte the same.
    let before = fs::read(out.join("cluster2/03-certs/cacerts.yaml")).unwrap();
    let root = fs::read(out.join("certs/root-key.pem")).unwrap();
    ok(meshctl(&[
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
        fs::read(out.join("cluster2/03-certs/cacerts.yaml")).unwrap(),
        before
    );
    assert_eq!(fs::read(out.join("certs/root-key.pem")).unwrap(), root);
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
    let text = ok(meshctl(&[
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
        text.contains("04-istio") && text.contains("05-eastwest") && !text.contains("03-certs"),
        "{text}"
    );
    assert!(
        !out.join("certs").exists(),
        "no certificate work when the certs phase is not selected"
    );
    let iop = fs::read_to_string(out.join("east/04-istio/control-plane.yaml")).unwrap();
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
    assert_eq!(plan["phases"][0]["clusters"][0]["steps"][0]["tool"], "kind");
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
    assert_eq!(r.status.code(), Some(1));
    assert!(
        stderr(&r).contains("phase metallb") && stderr(&r).contains("at most 4"),
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
    assert_eq!(r.status.code(), Some(1));
    assert!(stderr(&r).contains("already exist"), "{}", stderr(&r));
    let r = meshctl(&[
        "up",
        "--clusters",
        "2",
        "--timeout",
        "soon",
        "--dry-run",
        "--out",
        o,
    ]);
    assert!(stderr(&r).contains("--timeout `soon`"), "{}", stderr(&r));
    assert!(!out.exists());
}

#[test]
fn version_and_completions_work() {
    let text = ok(meshctl(&["version"]));
    assert!(
        text.contains(meshctl::versions::ISTIO_VERSION) && text.contains(meshctl::versions::METALLB_VERSION)
    );
    let json: serde_json::Value =
        serde_json::from_str(ok(meshctl(&["version", "-o", "json"])).trim()).unwrap();
    assert_eq!(json["kind_node_image"], meshctl::versions::KIND_NODE_IMAGE);
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(meshctl(&["completions", shell]));
        assert!(
            script.contains("remote-secret"),
            "{shell} completion covers every command"
        );
    }
}
