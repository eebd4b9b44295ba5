//! `meshctl diagnose` against real kube-apiservers (envtest), one of the three contexts pointing at
//! a server that is gone: the archive holds what the live clusters have, names the missing one, and
//! holds nothing secret (no token, no key), checked byte by byte over the whole archive.

mod support;

use std::io::Read;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::envtest::{Envtest, block_on};
use support::{meshctl_in, stderr};

/// Every file of a `.tar.gz`, by path.
fn unpack(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let mut content = Vec::new();
            e.read_to_end(&mut content).unwrap();
            (path, content)
        })
        .collect()
}

#[test]
fn the_archive_holds_every_reachable_cluster_names_the_gone_one_and_no_secret() {
    let Some(envtest) = Envtest::shared() else { return };
    let work = tempfile::tempdir().unwrap();
    // Contexts cluster1, cluster2 (real) and gone (a closed port).
    let mut kubeconfig = envtest.kubeconfig();
    kubeconfig.push('\n');
    let gone = envtest.planes[2].kubeconfig_for(&[&envtest.planes[2]], &[("cluster3", "gone")]);
    let gone = gone.replace(&envtest.planes[2].url(), "https://127.0.0.1:1");
    let kc1 = work.path().join("kc1");
    let kc2 = work.path().join("kc2");
    std::fs::write(&kc1, &kubeconfig).unwrap();
    std::fs::write(&kc2, gone).unwrap();
    let kubeconfig_env = format!("{}:{}", kc1.display(), kc2.display());
    let env = [("KUBECONFIG", kubeconfig_env.as_str()), ("CI", "true")];

    // cluster2 holds cluster1's remote secret (a real token) and a cacerts with a private key.
    let key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgdiagnosetestkey\n-----END PRIVATE KEY-----\n";
    block_on(async {
        let client = envtest.planes[1].client().await;
        let ns = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}),
        )
        .unwrap();
        let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await;
        let cacerts: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "cacerts", "namespace": "istio-system"},
            "stringData": {"ca-key.pem": key}}))
        .unwrap();
        let _ = Api::<Secret>::namespaced(client, "istio-system")
            .create(&PostParams::default(), &cacerts)
            .await;
    });
    let out = meshctl_in(
        work.path(),
        &[
            "remote-secret",
            "--context",
            "cluster1",
            "--name",
            "cluster1",
            "--server",
            "https://10.0.0.1:6443",
            "--apply-to",
            "cluster2",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let token = block_on(async {
        let client = envtest.planes[1].client().await;
        let secrets = Api::<Secret>::namespaced(client, "istio-system");
        let remote = secrets.get("istio-remote-secret-cluster1").await.unwrap();
        let text = String::from_utf8(remote.data.unwrap()["cluster1"].0.clone()).unwrap();
        text.lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .unwrap()
            .to_string()
    });
    assert!(token.len() > 100, "a real service-account token");
    // As Istio's docs apply a remote secret (`istioctl create-remote-secret | kubectl apply -f -`):
    // kubectl keeps the whole Secret, token included, in its last-applied annotation.
    block_on(async {
        let client = envtest.planes[1].client().await;
        let secrets = Api::<Secret>::namespaced(client, "istio-system");
        let remote = secrets.get("istio-remote-secret-cluster1").await.unwrap();
        // create-remote-secret prints the kubeconfig under `stringData`, so the token is there
        // in plain text.
        let kubeconfig = String::from_utf8(remote.data.unwrap()["cluster1"].0.clone()).unwrap();
        let whole = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "istio-remote-secret-cluster1",
            "namespace": "istio-system"}, "stringData": {"cluster1": kubeconfig}}).to_string();
        let patch = serde_json::json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": whole}}});
        secrets
            .patch(
                "istio-remote-secret-cluster1",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .unwrap();
    });

    let archive = work.path().join("out.tar.gz");
    let out = meshctl_in(
        work.path(),
        &[
            "diagnose",
            "--contexts",
            "cluster1,cluster2,gone",
            "--out",
            archive.to_str().unwrap(),
            "--timeout",
            "30s",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("gone") && stderr(&out).contains("unreachable"),
        "{}",
        stderr(&out)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let files = unpack(&std::fs::read(&archive).unwrap());
    let paths: Vec<&str> = files.iter().map(|(p, _)| p.split_once('/').unwrap().1).collect();
    for expected in [
        "summary.txt",
        "meshctl/state.json.missing",
        "cluster1/version.json",
        "cluster1/nodes.yaml",
        "cluster2/istio-system/pods.yaml",
        "cluster2/istio-system/events.yaml",
        "cluster2/metallb-system/services.yaml",
        "cluster2/remote-secrets.yaml",
        "cluster2/istiod-clusterz.json",
        "cluster3/NOT-COLLECTED.txt",
    ] {
        assert!(paths.contains(&expected), "{expected} in {paths:?}");
    }
    let file = |name: &str| {
        let (_, c) = files.iter().find(|(p, _)| p.ends_with(name)).unwrap();
        String::from_utf8_lossy(c).into_owned()
    };
    assert!(file("summary.txt").contains("cluster3") && file("summary.txt").contains("unreachable"));
    assert!(file("cluster3/NOT-COLLECTED.txt").contains("127.0.0.1:1"));
    let remote = file("cluster2/remote-secrets.yaml");
    assert!(
        remote.contains("istio-remote-secret-cluster1") && remote.contains("https://10.0.0.1:6443"),
        "{remote}"
    );
    assert!(file("cluster1/version.json").contains("v1.36"));
    // Nothing secret anywhere in the archive.
    let everything: Vec<u8> = files.iter().flat_map(|(_, c)| c.clone()).collect();
    let all = String::from_utf8_lossy(&everything);
    assert!(!all.contains(&token), "the token leaked");
    assert!(
        remote.contains("kubectl.kubernetes.io/last-applied-configuration"),
        "{remote}"
    );
    assert!(
        !all.contains("diagnosetestkey") && !all.contains("PRIVATE KEY"),
        "a key leaked"
    );
}
