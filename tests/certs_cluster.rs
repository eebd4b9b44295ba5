//! `meshctl certs status` and `certs rotate` against real kube-apiservers (envtest): what the
//! clusters' `cacerts` hold, and a rotation that replaces it and restarts istiod through the real
//! deployment controller (pods are run by the kubelet stand-in, tests/support/envtest/kubelet.rs).
//! Every new chain is checked with the real `openssl` too.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::envtest::{Envtest, assets_or_skip, block_on};
use support::{meshctl_in, stderr, stdout};

struct Lab {
    envtest: Envtest,
    work: tempfile::TempDir,
    kubeconfig: PathBuf,
    _stand_ins: std::sync::mpsc::Sender<()>,
}

impl Lab {
    fn run(&self, args: &[&str]) -> Output {
        let state = self.work.path().join("state");
        let mut all = vec![
            "--kubeconfig",
            self.kubeconfig.to_str().unwrap(),
            "--workdir",
            state.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        meshctl_in(self.work.path(), &all, &[("CI", "true")])
    }

    /// `certs gen` of ECDSA CAs for `clusters` into `out`, which must succeed.
    fn certs_gen(&self, out: &Path, clusters: &[&str]) {
        let mut args = vec![
            "certs",
            "gen",
            "--out",
            out.to_str().unwrap(),
            "--key-type",
            "ecdsa-p256",
        ];
        for c in clusters {
            args.extend(["--cluster", c]);
        }
        let done = self.run(&args);
        assert!(done.status.success(), "{}", stderr(&done));
    }

    /// `up --only certs` on both clusters with the mesh's CA directory.
    fn up_certs(&self) -> Output {
        self.run(&[
            "up",
            "--contexts",
            "cluster1,cluster2",
            "--only",
            "certs",
            "--timeout",
            "30s",
        ])
    }

    fn certs(&self) -> PathBuf {
        self.work.path().join("state/mesh1/certs")
    }

    /// `cacerts` file `name` as cluster `i` holds it.
    fn cacerts(&self, i: usize, name: &str) -> String {
        let plane = &self.envtest.planes[i];
        block_on(async {
            let secret = Api::<Secret>::namespaced(plane.client().await, "istio-system")
                .get("cacerts")
                .await
                .unwrap();
            String::from_utf8(secret.data.unwrap()[name].0.clone()).unwrap()
        })
    }

    fn istiod(&self, i: usize) -> Deployment {
        let plane = &self.envtest.planes[i];
        block_on(async {
            Api::<Deployment>::namespaced(plane.client().await, "istio-system")
                .get("istiod")
                .await
                .unwrap()
        })
    }
}

/// Two clusters with nodes and kubelets, an istiod Deployment each, and the mesh's CA from
/// `certs gen` applied by `up --only certs` as on any existing clusters.
fn lab() -> Option<Lab> {
    let assets = assets_or_skip()?;
    let envtest = Envtest::start(&assets, 2);
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = work.path().join("kubeconfig");
    std::fs::write(&kubeconfig, envtest.kubeconfig()).unwrap();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let targets: Vec<_> = envtest
        .planes
        .iter()
        .map(support::envtest::istioctl::Target::of)
        .collect();
    let (ready, started) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            for (i, target) in targets.iter().enumerate() {
                let client = target.client().await;
                let node = format!("cluster{}-node", i + 1);
                support::envtest::kubelet::register_node(&client, &node, &Default::default()).await;
                support::envtest::kubelet::run_pods(client, node);
            }
        });
        ready.send(()).unwrap();
        let _ = stopped.recv();
        drop(rt);
    });
    started.recv().unwrap();
    let lab = Lab {
        envtest,
        work,
        kubeconfig,
        _stand_ins: stop,
    };
    let certs = lab.certs();
    lab.certs_gen(&certs, &["cluster1", "cluster2"]);
    let out = lab.up_certs();
    assert!(out.status.success(), "{}", stderr(&out));
    for plane in &lab.envtest.planes {
        block_on(async {
            let istiod: Deployment =
                serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "istiod", "namespace": "istio-system"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "istiod"}},
                    "template": {"metadata": {"labels": {"app": "istiod"}},
                        "spec": {"containers": [{"name": "discovery", "image": "istio/pilot:1.31.1"}]}}}}))
                .unwrap();
            let api = Api::<Deployment>::namespaced(plane.client().await, "istio-system");
            api.create(&PostParams::default(), &istiod).await.unwrap();
            meshctl::kube::wait::until(
                &api,
                meshctl::kube::wait::rolled_out("istio-system", "istiod"),
                std::time::Duration::from_secs(30),
            )
            .await
            .unwrap();
        });
    }
    Some(lab)
}

fn openssl_verify(root: &Path, cert_pem: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, cert_pem).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(root)
        .arg(&cert)
        .output()
        .expect("openssl runs");
    (out.status.success(), format!("{}{}", stdout(&out), stderr(&out)))
}

#[test]
fn status_reads_each_clusters_ca_and_rotate_reissues_under_the_same_root_and_restarts_istiod() {
    let Some(lab) = lab() else { return };
    let contexts = ["--contexts", "cluster1,cluster2"];
    let root = lab.certs().join("root-cert.pem");
    let root_before = std::fs::read(&root).unwrap();

    // Healthy: both chains hold, one shared root, the mesh's.
    let out = lab.run(&[&["certs", "status"][..], &contexts, &["-o", "json"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["sharedRoot"], true);
    for c in doc["clusters"].as_array().unwrap() {
        assert_eq!(c["chain"], "ok", "{c}");
        assert_eq!(c["root"], "mesh root", "{c}");
        let name = c["cluster"].as_str().unwrap();
        assert!(
            c["intermediate"]["subject"].as_str().unwrap().contains(name),
            "{c}"
        );
        assert!(c["intermediate"]["daysLeft"].as_i64().unwrap() > 3000, "{c}");
    }
    let serial1 = doc["clusters"][0]["intermediate"]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    let serial2 = doc["clusters"][1]["intermediate"]["serial"]
        .as_str()
        .unwrap()
        .to_string();

    // --warn-days beyond the intermediates' life: not healthy, and it says what to run.
    let out = lab.run(&[&["certs", "status"][..], &contexts, &["--warn-days", "5000"]].concat());
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stdout(&out).contains("within --warn-days 5000")
            && stdout(&out).lines().any(|l| l.trim().starts_with("fix: meshctl")
                && l.contains(" certs rotate ")
                && l.ends_with("--cluster cluster1")),
        "{}",
        stdout(&out)
    );

    // Rotate cluster2 only.
    let template_before = lab.istiod(1).spec.unwrap().template;
    let out = lab.run(
        &[
            &["certs", "rotate"][..],
            &contexts,
            &[
                "--cluster",
                "cluster2",
                "--key-type",
                "ecdsa-p256",
                "--timeout",
                "60s",
            ],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("istiod restarted") && stderr(&out).contains("renew"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(&root).unwrap(),
        root_before,
        "the root never changes"
    );
    // The cluster holds the new intermediate, the one now in the work dir, chained to the root.
    let new_cert = lab.cacerts(1, "ca-cert.pem");
    assert_eq!(
        new_cert,
        std::fs::read_to_string(lab.certs().join("cluster2/ca-cert.pem")).unwrap()
    );
    let (ok, text) = openssl_verify(&root, &new_cert);
    assert!(ok, "{text}");
    assert_eq!(
        lab.cacerts(1, "root-cert.pem"),
        String::from_utf8(root_before.clone()).unwrap()
    );
    // istiod was restarted (kubectl's annotation) and the rollout finished.
    let istiod = lab.istiod(1);
    let annotations = istiod
        .spec
        .clone()
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap_or_default();
    assert!(
        annotations.contains_key("kubectl.kubernetes.io/restartedAt"),
        "{annotations:?}"
    );
    assert_ne!(Some(template_before), istiod.spec.clone().map(|s| s.template));
    assert!(meshctl::kube::wait::deployment_rolled_out(&istiod));
    // cluster1 untouched.
    assert!(
        lab.istiod(0)
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .is_none()
    );

    let out = lab.run(&[&["certs", "status"][..], &contexts, &["-o", "json"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["clusters"][0]["intermediate"]["serial"], serial1.as_str());
    assert_ne!(doc["clusters"][1]["intermediate"]["serial"], serial2.as_str());

    // Root rotation, step 1: both clusters trust both roots; intermediates and the root stay.
    let int1 = lab.cacerts(0, "ca-cert.pem");
    let out = lab.run(
        &[
            &["certs", "rotate", "--root"][..],
            &contexts,
            &["--key-type", "ecdsa-p256", "--timeout", "60s"],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("step 1 of 3"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&root).unwrap(),
        root_before,
        "the root never changes"
    );
    let next = std::fs::read_to_string(lab.certs().join("next-root/root-cert.pem")).unwrap();
    let root_text = String::from_utf8(root_before.clone()).unwrap();
    for i in 0..2 {
        let bundle = lab.cacerts(i, "root-cert.pem");
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2, "{bundle}");
        assert!(bundle.contains(root_text.trim()) && bundle.contains(next.trim()));
        let path = lab.work.path().join(format!("bundle{i}.pem"));
        std::fs::write(&path, &bundle).unwrap();
        let (ok, text) = openssl_verify(&path, &lab.cacerts(i, "ca-cert.pem"));
        assert!(ok, "the intermediate still chains within the bundle: {text}");
    }
    assert_eq!(
        lab.cacerts(0, "ca-cert.pem"),
        int1,
        "no intermediate changes in step 1"
    );
    let out = lab.run(&[&["certs", "status"][..], &contexts, &["-o", "json"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("mesh root + next"), "{}", stdout(&out));
    // The work dir holds what the clusters hold: `up` finds cacerts in place.
    let out = lab.up_certs();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing to change"), "{}", stderr(&out));

    // A cluster whose cacerts comes from another root: named, and the roots are not shared.
    let other = lab.work.path().join("other");
    lab.certs_gen(&other, &["cluster2"]);
    let out = lab.run(&[
        "up",
        "--contexts",
        "cluster2",
        "--only",
        "certs",
        "--certs-dir",
        other.to_str().unwrap(),
        "--timeout",
        "30s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = lab.run(
        &[
            &["certs", "status"][..],
            &contexts,
            &["--certs-dir", lab.certs().to_str().unwrap()],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("✗ cluster2") && l.contains("its root-cert.pem is not the mesh's root"))
            && !text
                .lines()
                .any(|l| l.starts_with("✗ cluster1") && l.contains("its root-cert.pem"))
            && text.contains("the clusters hold 2 different roots"),
        "{text}"
    );
}
