//! An external control plane built, converged and removed through the executor's seams:
//! in-process API servers on loopback for the clusters (with the token controller played), the
//! played istioctl of tests/support/played_istioctl.rs (the charts' namespaces, webhook names,
//! config-cluster objects and install-time prune) and the played istiod of
//! tests/support/played_istiod.rs (its view by the pod's namespace).
//!
//! Not covered here: calls from the remotes' pods (`verify`): they need pods that run.

mod support;

use meshctl::executor::RunEnd;
use meshctl::pki::IntermediateCa;
use meshctl::plan::Phase;
use serde_json::Value;
use support::istio_lab::{Lab, lab};

/// cluster1 runs the external istiod; cluster2 is its config cluster, cluster3 one more remote.
/// API addresses are declared (never dialled here: the played istiod does not connect).
const EXTERNAL: &str = "provider: existing
clusters:
  - {role: external, apiServer: 'https://10.0.0.1:6443'}
  - {role: remote, apiServer: 'https://10.0.0.2:6443'}
  - {role: remote, apiServer: 'https://10.0.0.3:6443'}
";

const PHASES: [Phase; 6] = [
    Phase::Certs,
    Phase::Istio,
    Phase::Eastwest,
    Phase::Expose,
    Phase::ExternalIstiod,
    Phase::RemoteSecrets,
];

fn cas(lab: &Lab) -> Vec<IntermediateCa> {
    support::fixed_cas(&lab.mesh)
}

fn names(objects: Vec<Value>) -> Vec<String> {
    objects
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn decoded(secret: &Value, key: &str) -> String {
    use base64::Engine as _;
    let text = secret["data"][key].as_str().unwrap_or_default();
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(text).unwrap()).unwrap()
}

#[tokio::test]
async fn an_external_control_plane_is_built_synced_converges_and_is_removed() {
    let lab = lab(EXTERNAL);
    let (end, tools, said) = lab.run("1.31.1", &PHASES, cas(&lab)).await;
    assert_eq!(end, RunEnd::Finished { changed: true }, "{}", said.join("\n"));
    let (external, config, other) = (
        lab.server("cluster1"),
        lab.server("cluster2"),
        lab.server("cluster3"),
    );

    // The external cluster: its own control plane and gateway in istio-system, the external
    // istiod in external-istiod with the config cluster's ID, the CA beside it, and no webhook of
    // the external istiod's (they live in the config cluster).
    assert_eq!(
        names(external.objects("apps/v1", "deployments", "istio-system")),
        ["istio-eastwestgateway", "istiod"]
    );
    let istiod = external
        .object("apps/v1", "deployments", "external-istiod", "istiod")
        .expect("the external istiod");
    assert_eq!(
        istiod["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
        "cluster2"
    );
    assert!(
        external
            .object("v1", "secrets", "external-istiod", "cacerts")
            .is_some()
    );
    assert!(
        external
            .object("v1", "secrets", "istio-system", "cacerts")
            .is_none()
    );
    let injectors = names(external.objects(
        "admissionregistration.k8s.io/v1",
        "mutatingwebhookconfigurations",
        "",
    ));
    assert!(
        !injectors.iter().any(|n| n.contains("external-istiod")),
        "{injectors:?}"
    );
    // Its gateway passes the remotes through to the external istiod.
    let vs = external
        .objects("networking.istio.io/v1", "virtualservices", "istio-system")
        .pop()
        .expect("istiod's VirtualService");
    assert_eq!(
        vs["spec"]["tls"][0]["route"][0]["destination"]["host"],
        "istiod.external-istiod.svc.cluster.local"
    );

    // The external istiod reads the config cluster through its kubeconfig, made of the config
    // cluster's `istiod` account (the token the played token controller filled), unlabelled so
    // it is not taken for one more remote; cluster3 through a remote secret beside it.
    let kubeconfig = external
        .object("v1", "secrets", "external-istiod", "istio-kubeconfig")
        .expect("istio-kubeconfig");
    assert!(kubeconfig["metadata"]["labels"]["istio/multiCluster"].is_null());
    let config_text = decoded(&kubeconfig, "config");
    assert!(
        config_text.contains("server: https://10.0.0.2:6443")
            && config_text.contains("played-token-of-external-istiod-istiod"),
        "{config_text}"
    );
    let remote_secrets = names(external.objects("v1", "secrets", "external-istiod"));
    assert!(
        remote_secrets.contains(&"istio-remote-secret-cluster3".to_string())
            && !remote_secrets.contains(&"istio-remote-secret-cluster2".to_string()),
        "{remote_secrets:?}"
    );
    let cluster3_secret = external
        .object("v1", "secrets", "external-istiod", "istio-remote-secret-cluster3")
        .unwrap();
    assert!(
        decoded(&cluster3_secret, "cluster3")
            .contains("played-token-of-external-istiod-istio-reader-service-account")
    );

    // The remotes: the remote profile in external-istiod pointed at the external cluster's
    // gateway, the config cluster with the account and mesh config the external istiod uses.
    let gateway = external
        .object("v1", "services", "istio-system", "istio-eastwestgateway")
        .unwrap()["status"]["loadBalancer"]["ingress"][0]["ip"]
        .clone();
    for (remote, name) in [(config, "cluster2"), (other, "cluster3")] {
        let injector = remote
            .object(
                "admissionregistration.k8s.io/v1",
                "mutatingwebhookconfigurations",
                "",
                "istio-sidecar-injector-external-istiod",
            )
            .unwrap_or_else(|| panic!("{name}'s injector"));
        assert_eq!(
            injector["webhooks"][0]["clientConfig"]["service"]["path"],
            format!("/inject/cluster/{name}/net/network2")
        );
        assert!(
            remote
                .object("v1", "services", "external-istiod", "istiod")
                .is_some()
        );
        let namespace = remote.object("v1", "namespaces", "", "external-istiod").unwrap();
        assert_eq!(
            namespace["metadata"]["annotations"]["topology.istio.io/controlPlaneClusters"],
            "cluster2"
        );
        assert!(
            remote
                .objects("apps/v1", "deployments", "external-istiod")
                .is_empty()
        );
    }
    let operator: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(lab.dir.plan().join("cluster2/05-istio/control-plane.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        operator["spec"]["values"]["global"]["remotePilotAddress"],
        gateway
    );
    assert!(
        config
            .object("v1", "serviceaccounts", "external-istiod", "istiod")
            .is_some()
    );
    assert!(
        config
            .object("v1", "configmaps", "external-istiod", "istio")
            .is_some()
    );
    assert!(
        other
            .object("v1", "serviceaccounts", "external-istiod", "istiod")
            .is_none()
    );
    // The run ended on the external istiod's word: both remotes synced.
    assert!(
        said.iter()
            .any(|l| l.contains("istiod reports cluster2, cluster3 synced")),
        "{}",
        said.join("\n")
    );
    assert!(
        tools
            .calls()
            .iter()
            .any(|c| c.contains("cluster1/09-external-istiod/external-istiod.yaml")),
        "{:?}",
        tools.calls()
    );

    // `status` (the binary) asks the external istiod, in its namespace, what it sees.
    let report = lab.status().await;
    let views = report["mesh"]["istiods"].as_array().expect("istiods");
    assert_eq!(views.len(), 1, "{report:#}");
    assert_eq!(views[0]["cluster"], "cluster1");
    assert!(
        views[0]["pod"]
            .as_str()
            .unwrap_or_default()
            .starts_with("external-istiod/"),
        "{report:#}"
    );
    let seen: Vec<(&str, &str)> = views[0]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["syncStatus"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [("cluster2", "synced"), ("cluster3", "synced")],
        "{report:#}"
    );
    assert_eq!(report["mesh"]["problems"], serde_json::json!([]), "{report:#}");
    let states: Vec<(&str, &str, &str)> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["cluster"].as_str().unwrap_or_default(),
                c["phase"].as_str().unwrap_or_default(),
                c["state"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    // (`certs` differs: the lab installed fixed stand-ins, status renders the work dir's CA.)
    assert!(
        states.contains(&("cluster1", "external-istiod", "ok"))
            && states
                .iter()
                .all(|(_, phase, state)| *phase == "certs" || *state == "ok"),
        "{states:?}"
    );

    // Again: nothing to change, no istioctl run.
    let (end, tools, said) = lab.run("1.31.1", &PHASES, cas(&lab)).await;
    assert_eq!(end, RunEnd::Finished { changed: false }, "{}", said.join("\n"));
    assert!(
        !tools.calls().iter().any(|c| c.contains("install")),
        "{:?}",
        tools.calls()
    );

    // Removed: the external istiod and its kubeconfig, the remotes' Istio, and the external
    // cluster's own control plane, each by what installed it.
    let removed = lab.uninstall(&tools).await;
    let of = |cluster: &str| {
        removed
            .iter()
            .find(|(c, _)| c == cluster)
            .map(|(_, r)| r.join("\n"))
            .unwrap_or_default()
    };
    assert!(
        of("cluster1").contains("Secret external-istiod/istio-kubeconfig")
            && of("cluster1").contains("09-external-istiod/external-istiod.yaml"),
        "{removed:?}"
    );
    assert!(
        external
            .object("apps/v1", "deployments", "external-istiod", "istiod")
            .is_none()
    );
    assert!(
        external
            .objects("apps/v1", "deployments", "istio-system")
            .is_empty()
    );
    assert!(
        config
            .object("v1", "services", "external-istiod", "istiod")
            .is_none()
    );
    assert!(
        other
            .object("v1", "secrets", "external-istiod", "cacerts")
            .is_none()
    );
}

/// The config cluster's kubeconfig deleted by hand is put back and reported as a repair; one
/// someone else applied in its place is left alone, and the run says whose it is and how to take
/// it over.
#[tokio::test]
async fn the_config_kubeconfig_is_repaired_and_never_taken_from_someone_else() {
    let lab = lab(EXTERNAL);
    let (end, _, said) = lab.run("1.31.1", &PHASES, cas(&lab)).await;
    assert_eq!(end, RunEnd::Finished { changed: true }, "{}", said.join("\n"));
    let external = lab.server("cluster1");
    external.remove("v1", "secrets", "external-istiod", "istio-kubeconfig");

    let (end, _, said) = lab.run("1.31.1", &PHASES, cas(&lab)).await;
    assert_eq!(end, RunEnd::Finished { changed: true }, "{}", said.join("\n"));
    assert!(
        said.iter()
            .any(|l| l.contains("kubeconfig of config cluster cluster2") && l.contains("missing")),
        "{}",
        said.join("\n")
    );
    assert!(
        external
            .object("v1", "secrets", "external-istiod", "istio-kubeconfig")
            .is_some()
    );

    // Someone else's Secret of that name (no meshctl field manager on it).
    external.put(serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "istio-kubeconfig", "namespace": "external-istiod",
                     "annotations": {"networking.istio.io/cluster": "cluster2"}},
        "data": {"config": "dGhlaXJz"}}));
    let (end, _, said) = lab.try_run("1.31.1", &PHASES, cas(&lab)).await;
    let message = format!("{:#}", end.expect_err(&said.join("\n")));
    assert!(
        message.contains("cluster `cluster1`, phase external-istiod")
            && message.contains("Secret external-istiod/istio-kubeconfig")
            && message.contains("--adopt"),
        "{message}"
    );
    let kept = external
        .object("v1", "secrets", "external-istiod", "istio-kubeconfig")
        .unwrap();
    assert_eq!(kept["data"]["config"], "dGhlaXJz");
}

/// `meshctl remote-secret --type config` (istioctl's `create-remote-secret --type=config`): the
/// config cluster's `istiod` account is required, never created; with it, the printed Secret is
/// the external istiod's `istio-kubeconfig` in the namespace given.
#[tokio::test]
async fn remote_secret_type_config_reads_the_config_clusters_istiod_account() {
    let lab = lab(EXTERNAL);
    let run = |lab: &Lab| {
        support::meshctl_off_runtime(&[
            "--kubeconfig",
            lab.kubeconfig.to_str().unwrap(),
            "remote-secret",
            "--context",
            "cluster2",
            "--name",
            "cluster2",
            "--server",
            "https://10.0.0.2:6443",
            "--type",
            "config",
            "--namespace",
            "external-istiod",
        ])
    };
    let config = lab.server("cluster2");
    let out = run(&lab).await;
    assert_eq!(out.status.code(), Some(1), "{}", support::stderr(&out));
    assert!(
        support::stderr(&out).contains("no service account external-istiod/istiod"),
        "{}",
        support::stderr(&out)
    );
    assert!(
        config
            .objects("v1", "serviceaccounts", "external-istiod")
            .is_empty()
    );

    config.put(serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "external-istiod"}}));
    config.put(serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "istiod", "namespace": "external-istiod", "uid": "sa-uid"}}));
    let out = run(&lab).await;
    assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));
    let secret = meshctl::render::parse_documents(&support::stdout(&out))
        .unwrap()
        .remove(0);
    assert_eq!(secret["metadata"]["name"], "istio-kubeconfig");
    assert_eq!(secret["metadata"]["namespace"], "external-istiod");
    assert!(secret["metadata"]["labels"].is_null(), "{secret:#?}");
    let kubeconfig = secret["stringData"]["config"].as_str().unwrap();
    assert!(
        kubeconfig.contains("token: played-token-of-external-istiod-istiod")
            && kubeconfig.contains("server: https://10.0.0.2:6443"),
        "{kubeconfig}"
    );
}

/// The remotes on networks of their own (the docs' second cluster): each gets an east-west
/// gateway beside its Istio in `external-istiod`, and the config cluster holds the Gateway that
/// exposes services on them (the external istiod reads Istio configuration there); the external
/// cluster exposes istiod only. Converges, and goes with `down --uninstall`.
#[tokio::test]
async fn remotes_on_their_own_networks_get_gateways_beside_their_istio() {
    let lab = lab("provider: existing
clusters:
  - {role: external, apiServer: 'https://10.0.0.1:6443'}
  - {role: remote, apiServer: 'https://10.0.0.2:6443'}
  - {role: remote, network: network3, apiServer: 'https://10.0.0.3:6443'}
");
    let (end, _, said) = lab.run("1.31.1", &PHASES, cas(&lab)).await;
    assert_eq!(end, RunEnd::Finished { changed: true }, "{}", said.join("\n"));
    let (external, config, other) = (
        lab.server("cluster1"),
        lab.server("cluster2"),
        lab.server("cluster3"),
    );
    for (remote, network) in [(config, "network2"), (other, "network3")] {
        let gateway = remote
            .object(
                "apps/v1",
                "deployments",
                "external-istiod",
                "istio-eastwestgateway",
            )
            .unwrap_or_else(|| panic!("{network}'s gateway"));
        assert_eq!(
            gateway["metadata"]["labels"]["install.operator.istio.io/owning-resource-namespace"],
            "external-istiod"
        );
        assert!(
            remote
                .objects("apps/v1", "deployments", "istio-system")
                .is_empty()
        );
    }
    let gateways = |server: &support::memory_apiserver::MemoryApiServer, ns: &str| {
        names(server.objects("networking.istio.io/v1", "gateways", ns))
    };
    assert_eq!(gateways(config, "external-istiod"), ["cross-network-gateway"]);
    assert_eq!(gateways(external, "istio-system"), ["istiod-gateway"]);
    assert!(gateways(other, "external-istiod").is_empty());
    let recorded = lab.state();
    for cluster in ["cluster1", "cluster2", "cluster3"] {
        assert!(
            recorded.clusters[cluster].eastwest_ip.is_some(),
            "{cluster}: {recorded:?}"
        );
    }

    let (end, tools, said) = lab.run("1.31.1", &PHASES, cas(&lab)).await;
    assert_eq!(end, RunEnd::Finished { changed: false }, "{}", said.join("\n"));
    let removed = lab.uninstall(&tools).await;
    let all: Vec<&String> = removed.iter().flat_map(|(_, r)| r).collect();
    assert!(
        all.iter()
            .any(|r| r.as_str() == "Gateway external-istiod/cross-network-gateway"),
        "{removed:?}"
    );
    for remote in [config, other] {
        assert!(
            remote
                .objects("apps/v1", "deployments", "external-istiod")
                .is_empty()
        );
    }
    assert!(gateways(config, "external-istiod").is_empty());
}

/// `meshctl diagnose` of an external control plane collects where its Istio lives: the
/// `external-istiod` objects of every cluster and what the external istiod sees.
#[tokio::test]
async fn diagnose_collects_the_external_istiod_and_its_namespace() {
    let lab = lab(EXTERNAL);
    let (end, _, said) = lab.run("1.31.1", &PHASES, cas(&lab)).await;
    assert_eq!(end, RunEnd::Finished { changed: true }, "{}", said.join("\n"));
    let (text, collected, _) = lab.diagnose().await;
    assert_eq!(collected.len(), 3);
    assert!(text("cluster1/external-istiod/deployments.yaml").contains("name: istiod"));
    assert!(text("cluster1/istio-system/deployments.yaml").contains("istio-eastwestgateway"));
    let clusterz = text("cluster1/istiod-clusterz.json");
    assert!(
        clusterz.contains("external-istiod/istiod") && clusterz.contains("cluster3"),
        "{clusterz}"
    );
    assert!(text("cluster1/remote-secrets.yaml").contains("istio-remote-secret-cluster3"));
    assert!(text("cluster2/external-istiod/services.yaml").contains("name: istiod"));
}

/// `isolate` of a remote takes its secret out of the external istiod's namespace (recorded) and
/// `up` keeps it out; `rejoin` puts it back as it was. The config cluster and the external
/// cluster itself are refused: the mesh cannot run without either.
#[tokio::test]
async fn a_remote_of_an_external_control_plane_is_isolated_and_rejoined() {
    use meshctl::isolation::{self, PeerOutcome};
    let lab = lab(EXTERNAL);
    let (end, _, said) = lab.run("1.31.1", &PHASES, cas(&lab)).await;
    assert_eq!(end, RunEnd::Finished { changed: true }, "{}", said.join("\n"));
    let external = lab.server("cluster1");
    let before = external
        .object("v1", "secrets", "external-istiod", "istio-remote-secret-cluster3")
        .unwrap();
    let timeout = std::time::Duration::from_secs(5);
    for refused in ["cluster1", "cluster2"] {
        assert!(isolation::refusal(&lab.mesh, refused).is_some(), "{refused}");
    }
    assert_eq!(isolation::refusal(&lab.mesh, "cluster3"), None);
    // The command refuses it as a usage error, before asking any cluster.
    let config = lab.config_file();
    let out = support::meshctl_off_runtime(&[
        "--kubeconfig",
        lab.kubeconfig.to_str().unwrap(),
        "--workdir",
        lab.workdir().to_str().unwrap(),
        "isolate",
        "cluster2",
        "--config",
        config.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", support::stderr(&out));
    assert!(
        support::stderr(&out).contains("config cluster"),
        "{}",
        support::stderr(&out)
    );

    let membership =
        isolation::Membership::open(&lab.mesh, &lab.dir, Some(&lab.kubeconfig), timeout).unwrap();
    let outcomes = membership.isolate("cluster3").await.unwrap();
    assert_eq!(outcomes, [("cluster1".to_string(), PeerOutcome::Done)]);
    assert!(
        external
            .object("v1", "secrets", "external-istiod", "istio-remote-secret-cluster3")
            .is_none()
    );
    // `up` leaves it out: nothing of cluster3 comes back, and the external istiod is not asked
    // to see it.
    let (end, _, said) = lab.run("1.31.1", &PHASES, cas(&lab)).await;
    assert!(matches!(end, RunEnd::Finished { .. }), "{}", said.join("\n"));
    assert!(
        external
            .object("v1", "secrets", "external-istiod", "istio-remote-secret-cluster3")
            .is_none()
    );

    let outcomes = membership.rejoin("cluster3").await.unwrap();
    assert_eq!(outcomes, [("cluster1".to_string(), PeerOutcome::Done)]);
    let after = external
        .object("v1", "secrets", "external-istiod", "istio-remote-secret-cluster3")
        .unwrap();
    assert_eq!(after["data"], before["data"]);
}

/// Clusters that bring their own CA (`up --skip certs`): nothing made `external-istiod` in the
/// external cluster before the config cluster's kubeconfig goes there; the phase makes it.
#[tokio::test]
async fn without_the_certs_phase_the_external_istiods_namespace_is_made_first() {
    let lab = lab(EXTERNAL);
    let phases: Vec<Phase> = PHASES.into_iter().filter(|p| *p != Phase::Certs).collect();
    let (end, _, said) = lab.run("1.31.1", &phases, Vec::new()).await;
    assert_eq!(end, RunEnd::Finished { changed: true }, "{}", said.join("\n"));
    assert!(
        lab.server("cluster1")
            .object("v1", "secrets", "external-istiod", "istio-kubeconfig")
            .is_some()
    );
}

/// The config cluster created again (a new CA published in its namespaces, new tokens): the
/// kubeconfig the external istiod holds carries a token of the old one, and `up` makes it anew.
#[tokio::test]
async fn a_config_cluster_created_again_gets_a_new_kubeconfig() {
    let lab = lab(EXTERNAL);
    let (end, _, said) = lab.run("1.31.1", &PHASES, cas(&lab)).await;
    assert_eq!(end, RunEnd::Finished { changed: true }, "{}", said.join("\n"));
    let config = lab.server("cluster2");
    config.remove(
        "v1",
        "secrets",
        "external-istiod",
        "istiod-istio-remote-secret-token",
    );
    config.put(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-root-ca.crt", "namespace": "external-istiod"},
        "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nanother cluster CA\n-----END CERTIFICATE-----\n"}}));
    let (end, _, said) = lab.run("1.31.1", &PHASES, cas(&lab)).await;
    assert_eq!(end, RunEnd::Finished { changed: true }, "{}", said.join("\n"));
    assert!(
        said.iter()
            .any(|l| l.contains("kubeconfig of config cluster cluster2") && l.contains("CA changed")),
        "{}",
        said.join("\n")
    );
    let kubeconfig = lab
        .server("cluster1")
        .object("v1", "secrets", "external-istiod", "istio-kubeconfig")
        .unwrap();
    assert!(
        decoded(&kubeconfig, "config")
            .contains("certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCmFub3RoZXI")
    );
    let (end, _, said) = lab.run("1.31.1", &PHASES, cas(&lab)).await;
    assert_eq!(end, RunEnd::Finished { changed: false }, "{}", said.join("\n"));
}
