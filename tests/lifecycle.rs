//! The rest of a mesh's life: `status`, `down`, `doctor`, an interrupted `up` resumed, and the pinned
//! MetalLB manifest downloaded once and checksum-verified; on real apiservers (see
//! tests/support/envtest/kind.rs).

mod support;

use std::time::{Duration, Instant};

use kube::api::Api;
use support::envtest::block_on;
use support::envtest::kind::KindLab;
use support::fake_tools::FakeToolOptions;
use support::{stderr, stdout};

#[test]
fn status_says_what_is_missing_before_up_and_ready_after() {
    let Some(lab) = KindLab::new(2, FakeToolOptions::default()) else {
        return;
    };
    let before = lab.run(&["status", "--clusters", "2"]);
    assert_eq!(before.status.code(), Some(3), "not ready");
    let text = stdout(&before);
    assert!(
        text.contains("cluster1   clusters        missing")
            && text.contains("cluster2   clusters        missing"),
        "one line per cluster that is not there: {text}"
    );
    let fixes = support::fixes(&before);
    assert_eq!(fixes.len(), 1, "{text}");
    assert_eq!(&fixes[0][fixes[0].len() - 3..], ["up", "--clusters", "2"]);
    // Followed as printed (default key type and timeout; MetalLB's manifest downloaded, as for a
    // user), it builds the mesh.
    let manifest = std::fs::read(lab.work.path().join("metallb-native.yaml")).unwrap();
    lab.tools.set_download(&manifest);
    let words: Vec<&str> = fixes[0].iter().map(String::as_str).collect();
    let built = lab.run_as_printed(&words);
    assert!(built.status.success(), "{}", stderr(&built));
    let after = lab.run(&["status", "--clusters", "2", "-o", "json"]);
    assert_eq!(after.status.code(), Some(0), "{}", stdout(&after));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&after)).unwrap();
    let checks = doc["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2 * 7);
    assert!(checks.iter().all(|c| c["state"] == "ok"), "{checks:?}");
    assert!(
        checks.iter().any(|c| c["detail"]
            .as_str()
            .unwrap()
            .contains("LoadBalancer IP 172.18.254.1")),
        "{checks:?}"
    );

    // Take the gateway's IP away (MetalLB lost its pool): status names both phases, and the
    // commands it prints, followed as printed, bring the mesh back.
    lab.take_gateway_ip(1);
    let broken = lab.run(&["status", "--clusters", "2"]);
    assert_eq!(broken.status.code(), Some(3), "{}", stderr(&broken));
    let text = stdout(&broken);
    assert!(
        text.contains("cluster2   metallb         missing")
            && text.contains("IPAddressPool metallb-system/meshctl-pool: missing")
            && text.contains("cluster2   eastwest        missing")
            && text.contains("no LoadBalancer IP"),
        "{text}"
    );
    let fixes = support::fixes(&broken);
    let only: Vec<&str> = fixes.iter().map(|f| f.last().unwrap().as_str()).collect();
    assert_eq!(only, ["metallb", "eastwest"], "{text}");
    for fix in &fixes {
        let words: Vec<&str> = fix.iter().map(String::as_str).collect();
        let out = lab.run_as_printed(&words);
        assert!(out.status.success(), "{fix:?}: {}", stderr(&out));
    }
    let healed = lab.run(&["status", "--clusters", "2"]);
    assert_eq!(healed.status.code(), Some(0), "{}", stdout(&healed));
}

#[test]
fn down_deletes_only_the_clusters_up_created_and_keeps_the_ca_unless_purged() {
    let Some(lab) = KindLab::new(2, FakeToolOptions::default()) else {
        return;
    };
    lab.create("cluster1");
    assert!(lab.run(&["up", "--clusters", "2"]).status.success());
    let certs = lab.work.path().join("state/mesh1/certs/root-key.pem");
    assert!(certs.exists());

    let out = lab.run(&["down"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let deletes: Vec<String> = lab
        .tools
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("kind delete"))
        .collect();
    assert_eq!(
        deletes,
        ["kind delete cluster --name cluster2"],
        "cluster1 existed before `up`"
    );
    assert!(lab.tools.kind_cluster_exists("cluster1") && !lab.tools.kind_cluster_exists("cluster2"));
    let left: Vec<String> = lab.planes().iter().map(|p| p.name.clone()).collect();
    assert_eq!(
        left,
        ["cluster1"],
        "`kind delete` stopped cluster2's control plane"
    );
    let kc = std::fs::read_to_string(lab.kubeconfig()).unwrap();
    assert!(
        !kc.contains("name: cluster2") && kc.contains("name: cluster1"),
        "{kc}"
    );
    assert!(certs.exists(), "the root CA is kept");
    assert!(stderr(&out).contains("--purge"), "{}", stderr(&out));

    let again = lab.run(&["down"]);
    assert!(again.status.success());
    assert_eq!(
        lab.tools
            .calls()
            .iter()
            .filter(|c| c.starts_with("kind delete"))
            .count(),
        1,
        "nothing left to delete"
    );
    let purged = lab.run(&["down", "--purge"]);
    assert!(purged.status.success());
    assert!(
        !lab.work.path().join("state/mesh1").exists(),
        "{}",
        stderr(&purged)
    );
}

#[test]
fn doctor_reports_tools_limits_memory_and_subnet_clashes() {
    let Some(lab) = KindLab::new(1, FakeToolOptions::default()) else {
        return;
    };
    let proc_dir = lab.work.path().join("proc");
    std::fs::create_dir_all(proc_dir.join("sys/fs/inotify")).unwrap();
    std::fs::write(proc_dir.join("sys/fs/inotify/max_user_watches"), "8192\n").unwrap();
    std::fs::write(proc_dir.join("sys/fs/inotify/max_user_instances"), "1024\n").unwrap();
    std::fs::write(
        proc_dir.join("meminfo"),
        "MemTotal: 32000000 kB\nMemAvailable: 16000000 kB\n",
    )
    .unwrap();
    let root = proc_dir.to_str().unwrap();
    let out = lab.run_with(
        &["doctor", "--clusters", "2"],
        false,
        &[("MESHCTL_PROC_ROOT", root)],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "warnings do not fail: {text}");
    assert!(
        text.contains("✓ docker") && text.contains("✓ kind") && text.contains("✓ istioctl"),
        "{text}"
    );
    assert!(
        text.contains("! inotify max_user_watches")
            && text.contains("sysctl fs.inotify.max_user_watches=524288"),
        "{text}"
    );
    assert!(
        text.contains("✓ inotify max_user_instances") && text.contains("✓ memory"),
        "{text}"
    );

    // With a kind network in place, a pod subnet inside it is a clash.
    assert!(
        lab.run(&["up", "--clusters", "1", "--only", "clusters"])
            .status
            .success()
    );
    let cfg = lab.work.path().join("clash.yaml");
    std::fs::write(&cfg, "clusters:\n  - podSubnet: 172.18.0.0/16\n").unwrap();
    let json = lab.run_with(&["doctor", "-o", "json"], false, &[("MESHCTL_PROC_ROOT", root)]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert!(
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["check"] == "subnets" && c["state"] == "ok")
    );
    let clash = lab.run_with(
        &["doctor", "--config", cfg.to_str().unwrap()],
        false,
        &[("MESHCTL_PROC_ROOT", root)],
    );
    assert_eq!(clash.status.code(), Some(1));
    assert!(
        stdout(&clash).contains("✗ subnets")
            && stdout(&clash).contains("overlaps cluster subnet 172.18.0.0/16"),
        "{}",
        stdout(&clash)
    );

    let Some(old) = KindLab::new(
        1,
        FakeToolOptions {
            istioctl_version: "1.28.2".into(),
            ..Default::default()
        },
    ) else {
        return;
    };
    let out = old.run_with(&["doctor"], false, &[("MESHCTL_PROC_ROOT", root)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("✗ istioctl") && stdout(&out).contains("1.28.2 does not match"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_interrupted_up_stops_cleanly_and_the_next_up_resumes() {
    let Some(lab) = KindLab::new(
        2,
        FakeToolOptions {
            istioctl_install_secs: 3.0,
            ..Default::default()
        },
    ) else {
        return;
    };
    let kc = lab.kubeconfig();
    let state = lab.work.path().join("state");
    let manifest = lab.work.path().join("metallb-native.yaml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args([
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--workdir",
            state.to_str().unwrap(),
            "up",
            "--clusters",
            "2",
            "--key-type",
            "ecdsa-p256",
            "--timeout",
            "60s",
            "--metallb-manifest",
            manifest.to_str().unwrap(),
        ])
        .env("PATH", lab.tools.path_env())
        .env("CI", "true")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt while istioctl runs (after the certs phase is recorded).
    let state_file = state.join("mesh1/state.json");
    let started = Instant::now();
    while !std::fs::read_to_string(&state_file)
        .unwrap_or_default()
        .contains("\"certs\"")
        || !lab
            .tools
            .calls()
            .iter()
            .any(|c| c.starts_with("istioctl install"))
    {
        // An `up` that ended early fails here with what it said, and one still running past the
        // bound is ended, not left behind. The bound allows for control planes started one at a
        // time across the test binary (tests/support/envtest/mod.rs).
        if let Some(status) = child.try_wait().unwrap() {
            let mut said = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut said).unwrap();
            panic!("up ended ({status}) before the istio phase:\n{said}");
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            panic!("up never reached the istio phase within 180s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(
        stderr(&out).contains("interrupted") && stderr(&out).contains("resume"),
        "{}",
        stderr(&out)
    );

    let before = lab.tools.calls().len();
    let resumed = lab.run(&["up", "--clusters", "2"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let new_calls = lab.tools.calls()[before..].to_vec();
    assert!(
        !new_calls.iter().any(|c| c.starts_with("kind create")),
        "{new_calls:?}"
    );
    assert!(
        stderr(&resumed).contains("certs          in place"),
        "the clusters hold the certs phase: {}",
        stderr(&resumed)
    );
    assert_eq!(
        lab.state()["clusters"]["cluster2"]["built"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
}

#[test]
fn the_metallb_manifest_is_downloaded_once_and_checked_against_its_sha256() {
    let Some(upstream) = support::schema::upstream_or_skip() else {
        return;
    };
    let real = std::fs::read(upstream.join("metallb/v0.16.1/metallb-native.yaml")).unwrap();
    let Some(lab) = KindLab::new(2, FakeToolOptions::default()) else {
        return;
    };
    lab.tools
        .set_download(b"apiVersion: v1\nkind: Namespace\nmetadata: {name: tampered}\n");
    let out = lab.run_with(
        &["up", "--clusters", "2", "--only", "clusters,metallb"],
        false,
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("sha256 is")
            && stderr(&out).contains(meshctl::versions::METALLB_MANIFEST_SHA256),
        "{}",
        stderr(&out)
    );
    let tampered = block_on(async {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(lab.planes()[0].client().await);
        namespaces.get_opt("tampered").await.unwrap()
    });
    assert!(tampered.is_none(), "a tampered manifest is never applied");

    lab.tools.set_download(&real);
    let out = lab.run_with(
        &["up", "--clusters", "2", "--only", "clusters,metallb"],
        false,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let curls = lab.tools.calls().iter().filter(|c| c.starts_with("curl")).count();
    assert_eq!(curls, 2, "one failed download, then one for both clusters");
    // A new run (after `down`) uses the cache.
    assert!(lab.run(&["down"]).status.success());
    let out = lab.run_with(
        &["up", "--clusters", "2", "--only", "clusters,metallb"],
        false,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        lab.tools.calls().iter().filter(|c| c.starts_with("curl")).count(),
        2,
        "served from the cache"
    );
}
