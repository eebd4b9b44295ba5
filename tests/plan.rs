//! The plan of `meshctl up`, checked three ways: insta snapshots of the exact text for 1, 2 and 3
//! clusters; every document parsed and validated (CRD schemas from ../shared/upstream, k8s-openapi
//! types for core objects); and the reference facts point by point.

mod support;

use std::collections::{BTreeMap, HashSet};

use meshctl::ipam;
use meshctl::plan::Phase;
use meshctl::plan::{self, Artifact, Plan, PlanInput, Step};
use meshctl::plan::{
    CertsStep, EastwestStep, ExternalIstiodStep, InstallStep, IstioctlInstall, RemoteSecretsStep, RoutesStep,
};
use meshctl::render::parse_documents;
use meshctl::topology::Mesh;
use serde_json::Value;

fn plan_for(mesh: &Mesh) -> Plan {
    plan_with_gateways(mesh, &[])
}

/// The plan once the east-west gateways in `ips` have their IPs recorded.
fn plan_with_gateways(mesh: &Mesh, ips: &[(&str, &str)]) -> Plan {
    let pools = ipam::plan_pools("172.18.0.0/16".parse().unwrap(), mesh.clusters.len(), &[]).unwrap();
    let phases = meshctl::planner::select_phases(mesh.provider, &[], &[]).unwrap();
    meshctl::planner::build(&PlanInput {
        mesh,
        phases,
        pools,
        cas: support::fixed_cas(mesh),
        timeout_secs: 300,
        docker_network: "kind".into(),
        gateway_ips: ips
            .iter()
            .map(|(c, ip)| (c.to_string(), ip.to_string()))
            .collect(),
        isolated: Default::default(),
        only_cluster: None,
    })
    .unwrap()
}

/// Primary `cluster1` on network1 and remote `cluster2` on network2: Istio's "Install
/// Primary-Remote on different networks".
const PRIMARY_REMOTE_MULTI_NETWORK: &str = "clusters:\n  - {}\n  - {role: remote}\n";
/// The same on one network: "Install Primary-Remote".
const PRIMARY_REMOTE_ONE_NETWORK: &str =
    "clusters:\n  - {network: network1}\n  - {role: remote, network: network1}\n";
/// Two primaries on one network: "Install Multi-Primary".
const MULTI_PRIMARY_ONE_NETWORK: &str = "clusters:\n  - {network: network1}\n  - {network: network1}\n";

fn model(yaml: &str) -> Mesh {
    Mesh::from_yaml(yaml, None).unwrap()
}

/// The text a snapshot holds: the listing, then every artifact (each parsed, so broken YAML fails).
fn snapshot_text(mesh: &Mesh, plan: &Plan) -> String {
    let mut text = meshctl::dry_run::listing(plan);
    for a in all_artifacts(mesh, plan) {
        text.push_str(&format!(
            "\n=== {} (from {}{})\n",
            a.path,
            a.template,
            if a.secret { ", secret" } else { "" }
        ));
        text.push_str(&a.content);
        parse_documents(&a.content).unwrap_or_else(|e| panic!("{}: {e}", a.path));
    }
    text
}

fn all_artifacts(mesh: &Mesh, plan: &Plan) -> Vec<Artifact> {
    let mut all = plan.artifacts.clone();
    all.extend(meshctl::verification::workloads::artifacts(mesh).unwrap());
    all
}

fn docs_of(artifacts: &[Artifact], suffix: &str) -> Vec<(String, Value)> {
    artifacts
        .iter()
        .filter(|a| a.path.ends_with(suffix))
        .flat_map(|a| {
            parse_documents(&a.content)
                .unwrap()
                .into_iter()
                .map(|d| (a.path.clone(), d))
        })
        .collect()
}

#[test]
fn rendered_plan_snapshots_for_one_two_and_three_clusters() {
    for n in 1..=3 {
        let mesh = Mesh::for_kind(n, "mesh1").unwrap();
        let plan = plan_for(&mesh);
        insta::assert_snapshot!(format!("plan_{n}_clusters"), snapshot_text(&mesh, &plan));
    }
}

#[test]
fn rendered_plan_snapshots_for_each_deployment_model() {
    for (name, yaml) in [
        ("primary_remote_multi_network", PRIMARY_REMOTE_MULTI_NETWORK),
        ("primary_remote_one_network", PRIMARY_REMOTE_ONE_NETWORK),
        ("multi_primary_one_network", MULTI_PRIMARY_ONE_NETWORK),
    ] {
        let mesh = model(yaml);
        let plan = plan_with_gateways(&mesh, &[("cluster1", "172.18.255.200")]);
        insta::assert_snapshot!(format!("model_{name}"), snapshot_text(&mesh, &plan));
    }
}

#[test]
fn every_document_validates_against_its_schema() {
    let mut artifacts = Vec::new();
    for mesh in [
        Mesh::for_kind(3, "mesh1").unwrap(),
        model(PRIMARY_REMOTE_MULTI_NETWORK),
        model(MULTI_PRIMARY_ONE_NETWORK),
    ] {
        let plan = plan_with_gateways(&mesh, &[("cluster1", "172.18.255.200")]);
        artifacts.extend(all_artifacts(&mesh, &plan));
    }
    let Some(upstream) = support::schema::upstream_or_skip() else {
        return;
    };
    let mut crds = support::schema::load_crds(&upstream.join("istio/release-1.31/crds/crd-all.gen.yaml"));
    crds.extend(support::schema::load_crds(
        &upstream.join("metallb/v0.16.1/metallb.io_ipaddresspools.yaml"),
    ));
    crds.extend(support::schema::load_crds(
        &upstream.join("metallb/v0.16.1/metallb.io_l2advertisements.yaml"),
    ));
    let mut checked = HashSet::new();
    for a in &artifacts {
        for doc in parse_documents(&a.content).unwrap() {
            let (api, kind) = (doc["apiVersion"].as_str().unwrap(), doc["kind"].as_str().unwrap());
            let errors = match (api, kind) {
                ("kind.x-k8s.io/v1alpha4", "Cluster") | ("install.istio.io/v1alpha1", "IstioOperator") => {
                    continue;
                }
                ("v1", _) | ("apps/v1", _) => core_roundtrip_errors(kind, &doc),
                _ => {
                    let schema = support::schema::schema_for(&crds, api, kind)
                        .unwrap_or_else(|| panic!("{}: no CRD serves {api} {kind}", a.path));
                    support::schema::validate(&doc["spec"], &schema["properties"]["spec"])
                }
            };
            assert!(
                errors.is_empty(),
                "{} ({api} {kind}):\n{}",
                a.path,
                errors.join("\n")
            );
            checked.insert(format!("{api} {kind}"));
        }
    }
    for expected in [
        "networking.istio.io/v1 Gateway",
        "networking.istio.io/v1 VirtualService",
        "networking.istio.io/v1 DestinationRule",
        "metallb.io/v1beta1 IPAddressPool",
        "metallb.io/v1beta1 L2Advertisement",
        "v1 Secret",
        "apps/v1 Deployment",
    ] {
        assert!(
            checked.contains(expected),
            "{expected} was not checked: {checked:?}"
        );
    }
}

/// A core object survives a round trip through its k8s-openapi type unchanged: right types, and no
/// field the API would drop.
fn core_roundtrip_errors(kind: &str, doc: &Value) -> Vec<String> {
    use k8s_openapi::api::{apps::v1 as apps, core::v1 as core};
    fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> Vec<String> {
        match serde_json::from_value::<T>(doc.clone()) {
            Err(e) => vec![e.to_string()],
            Ok(typed) => {
                let back = serde_json::to_value(typed).unwrap();
                if &back == doc {
                    vec![]
                } else {
                    vec![format!("changed by a round trip:\n{doc}\n{back}")]
                }
            }
        }
    }
    match kind {
        "Namespace" => roundtrip::<core::Namespace>(doc),
        "Secret" => roundtrip::<core::Secret>(doc),
        "Service" => roundtrip::<core::Service>(doc),
        "ServiceAccount" => roundtrip::<core::ServiceAccount>(doc),
        "Deployment" => roundtrip::<apps::Deployment>(doc),
        other => vec![format!("no check for core kind {other}")],
    }
}

#[test]
fn one_mesh_id_and_a_distinct_cluster_name_and_network_per_primary() {
    let mesh = Mesh::for_kind(3, "lab-mesh").unwrap();
    let plan = plan_for(&mesh);
    let iops = docs_of(&plan.artifacts, "05-istio/control-plane.yaml");
    assert_eq!(iops.len(), 3);
    let mut names = HashSet::new();
    let mut networks = HashSet::new();
    for ((path, iop), cluster) in iops.iter().zip(&mesh.clusters) {
        assert_eq!(iop["kind"], "IstioOperator");
        assert_eq!(
            iop["metadata"]["name"], "control-plane",
            "{path}: named, so a re-install cannot prune the gateway"
        );
        let global = &iop["spec"]["values"]["global"];
        assert_eq!(global["meshID"], "lab-mesh");
        assert_eq!(global["multiCluster"]["clusterName"], cluster.name.as_str());
        assert_eq!(global["network"], cluster.network.as_str());
        names.insert(global["multiCluster"]["clusterName"].to_string());
        networks.insert(global["network"].to_string());
    }
    assert_eq!((names.len(), networks.len()), (3, 3));
}

#[test]
fn mesh_config_options_reach_every_istio_operator_as_given_and_only_when_set() {
    let yaml = "clusters: [{}, {}]\nmeshConfig:\n  discoverySelectors:\n    - matchLabels: {kubernetes.io/metadata.name: istio-system}\n    - matchExpressions: [{key: team, operator: In, values: [payments, 'on']}]\n  defaultVirtualServiceExportTo: ['.']\n  serviceSettings:\n    - settings: {clusterLocal: true}\n      hosts: ['*.kube-system.svc.cluster.local']\n";
    let mesh = Mesh::from_yaml(yaml, None).unwrap();
    let plan = plan_for(&mesh);
    let iops = docs_of(&plan.artifacts, "05-istio/control-plane.yaml");
    assert_eq!(iops.len(), 2);
    for (path, iop) in &iops {
        let mc = &iop["spec"]["meshConfig"];
        assert_eq!(
            mc["discoverySelectors"][1]["matchExpressions"][0]["values"],
            serde_json::json!(["payments", "on"]),
            "{path}: strings stay strings (YAML 1.1 would read a bare on as true)"
        );
        assert_eq!(mc["defaultVirtualServiceExportTo"], serde_json::json!(["."]));
        assert_eq!(mc["serviceSettings"][0]["settings"]["clusterLocal"], true);
        assert!(
            mc.get("defaultServiceExportTo").is_none(),
            "unset options are not rendered"
        );
    }
    let text = &plan
        .artifacts
        .iter()
        .find(|a| a.path == "cluster1/05-istio/control-plane.yaml")
        .unwrap()
        .content;
    insta::assert_snapshot!("control_plane_with_mesh_config", text);
    let plain = plan_for(&Mesh::for_kind(2, "mesh1").unwrap());
    for (path, iop) in docs_of(&plain.artifacts, "05-istio/control-plane.yaml") {
        assert!(
            iop["spec"].get("meshConfig").is_none(),
            "{path}: no meshConfig unless asked"
        );
    }
}

#[test]
fn eastwest_gateway_has_the_reference_ports_labels_and_network_view() {
    let mesh = Mesh::for_kind(2, "mesh1").unwrap();
    let plan = plan_for(&mesh);
    for ((path, iop), cluster) in docs_of(&plan.artifacts, "eastwest-gateway.yaml")
        .iter()
        .zip(&mesh.clusters)
    {
        assert_eq!(iop["metadata"]["name"], "eastwest");
        assert_eq!(iop["spec"]["profile"], "empty");
        let gw = &iop["spec"]["components"]["ingressGateways"][0];
        assert_eq!(gw["name"], "istio-eastwestgateway");
        assert_eq!(gw["enabled"], true);
        assert_eq!(gw["label"]["istio"], "eastwestgateway");
        assert_eq!(gw["label"]["app"], "istio-eastwestgateway");
        assert_eq!(
            gw["label"]["topology.istio.io/network"],
            cluster.network.as_str(),
            "{path}"
        );
        assert_eq!(gw["k8s"]["env"][0]["name"], "ISTIO_META_REQUESTED_NETWORK_VIEW");
        assert_eq!(gw["k8s"]["env"][0]["value"], cluster.network.as_str());
        let ports: Vec<(String, i64, i64)> = gw["k8s"]["service"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().into(),
                    p["port"].as_i64().unwrap(),
                    p["targetPort"].as_i64().unwrap(),
                )
            })
            .collect();
        let expected = [
            ("status-port", 15021),
            ("tls", 15443),
            ("tls-istiod", 15012),
            ("tls-webhook", 15017),
        ];
        assert_eq!(ports, expected.map(|(n, p)| (n.to_string(), p, p)));
        assert_eq!(
            iop["spec"]["values"]["gateways"]["istio-ingressgateway"]["injectionTemplate"],
            "gateway"
        );
        assert_eq!(
            iop["spec"]["values"]["global"]["network"],
            cluster.network.as_str()
        );
    }
}

#[test]
fn cross_network_gateway_is_auto_passthrough_on_15443_for_local_hosts() {
    let mesh = Mesh::for_kind(2, "mesh1").unwrap();
    let plan = plan_for(&mesh);
    let gws = docs_of(&plan.artifacts, "cross-network-gateway.yaml");
    assert_eq!(gws.len(), 2, "one per cluster");
    for (_, gw) in gws {
        assert_eq!(gw["apiVersion"], "networking.istio.io/v1");
        assert_eq!(gw["metadata"]["name"], "cross-network-gateway");
        assert_eq!(gw["metadata"]["namespace"], "istio-system");
        assert_eq!(gw["spec"]["selector"]["istio"], "eastwestgateway");
        let server = &gw["spec"]["servers"][0];
        assert_eq!(server["port"]["number"], 15443);
        assert_eq!(server["port"]["protocol"], "TLS");
        assert_eq!(server["tls"]["mode"], "AUTO_PASSTHROUGH");
        assert_eq!(server["hosts"], serde_json::json!(["*.local"]));
    }
}

#[test]
fn istio_system_is_labelled_with_the_network_and_cacerts_holds_the_four_files() {
    use base64::Engine as _;
    let mesh = Mesh::for_kind(2, "mesh1").unwrap();
    let plan = plan_for(&mesh);
    for ((_, ns), c) in docs_of(&plan.artifacts, "04-certs/istio-system.yaml")
        .iter()
        .zip(&mesh.clusters)
    {
        assert_eq!(ns["metadata"]["name"], "istio-system");
        assert_eq!(
            ns["metadata"]["labels"]["topology.istio.io/network"],
            c.network.as_str()
        );
    }
    let secret_artifacts: Vec<_> = plan
        .artifacts
        .iter()
        .filter(|a| a.path.ends_with("cacerts.yaml"))
        .collect();
    assert!(
        secret_artifacts.iter().all(|a| a.secret),
        "cacerts is marked secret (written 0600)"
    );
    for ((_, s), c) in docs_of(&plan.artifacts, "cacerts.yaml")
        .iter()
        .zip(&mesh.clusters)
    {
        assert_eq!(
            (
                s["metadata"]["name"].as_str(),
                s["metadata"]["namespace"].as_str()
            ),
            (Some("cacerts"), Some("istio-system"))
        );
        let decoded: BTreeMap<String, String> = s["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap())
                    .unwrap();
                (k.clone(), String::from_utf8(bytes).unwrap())
            })
            .collect();
        let name = &c.name;
        assert_eq!(decoded["ca-cert.pem"], format!("ca-cert of {name}\n"));
        assert_eq!(decoded["ca-key.pem"], format!("ca-key of {name}\n"));
        assert_eq!(
            decoded["cert-chain.pem"],
            format!("ca-cert of {name}\nroot-cert\n")
        );
        assert_eq!(decoded["root-cert.pem"], "root-cert\n");
    }
}

#[test]
fn kind_configs_give_distinct_subnets_and_locality_labels() {
    let mesh = Mesh::for_kind(3, "mesh1").unwrap();
    let plan = plan_for(&mesh);
    let mut subnets = HashSet::new();
    for ((_, cfg), c) in docs_of(&plan.artifacts, "kind-config.yaml")
        .iter()
        .zip(&mesh.clusters)
    {
        assert_eq!(cfg["apiVersion"], "kind.x-k8s.io/v1alpha4");
        assert_eq!(cfg["name"], c.name.as_str());
        assert!(subnets.insert(cfg["networking"]["podSubnet"].to_string()));
        assert!(subnets.insert(cfg["networking"]["serviceSubnet"].to_string()));
        let labels = &cfg["nodes"][0]["labels"];
        assert_eq!(labels["topology.kubernetes.io/region"], c.region.as_str());
        assert_eq!(labels["topology.kubernetes.io/zone"], c.zone.as_str());
        assert!(cfg["nodes"][0]["image"].as_str().unwrap().contains("@sha256:"));
    }
}

#[test]
fn metallb_pools_are_disjoint_and_inside_the_kind_network() {
    let mesh = Mesh::for_kind(3, "mesh1").unwrap();
    let plan = plan_for(&mesh);
    let subnet: ipnet::Ipv4Net = "172.18.0.0/16".parse().unwrap();
    let pools: Vec<ipam::Pool> = docs_of(&plan.artifacts, "address-pool.yaml")
        .iter()
        .filter(|(_, d)| d["kind"] == "IPAddressPool")
        .map(|(_, d)| {
            assert_eq!(d["metadata"]["namespace"], "metallb-system");
            let (a, b) = d["spec"]["addresses"][0]
                .as_str()
                .unwrap()
                .split_once('-')
                .unwrap();
            ipam::Pool {
                first: a.parse().unwrap(),
                last: b.parse().unwrap(),
            }
        })
        .collect();
    assert_eq!(pools.len(), 3);
    for (i, p) in pools.iter().enumerate() {
        assert!(subnet.contains(&p.first) && subnet.contains(&p.last));
        assert!(pools[i + 1..].iter().all(|q| !p.overlaps(q)));
    }
    for (_, adv) in docs_of(&plan.artifacts, "address-pool.yaml")
        .iter()
        .filter(|(_, d)| d["kind"] == "L2Advertisement")
    {
        assert_eq!(adv["spec"]["ipAddressPools"], serde_json::json!(["meshctl-pool"]));
    }
}

#[test]
fn full_mesh_of_remote_secrets_and_non_interactive_istioctl() {
    let mesh = Mesh::for_kind(3, "mesh1").unwrap();
    let plan = plan_for(&mesh);
    let mut pairs = HashSet::new();
    for phase in &plan.phases {
        for cs in &phase.clusters {
            for step in &cs.steps {
                match step {
                    Step::RemoteSecrets(RemoteSecretsStep::RemoteSecret { source, preview }) => {
                        assert_ne!(source, &cs.cluster);
                        assert!(pairs.insert((source.clone(), cs.cluster.clone())));
                        // The plan shows the Secret's shape; the credential is never on disk.
                        let artifact = plan
                            .artifacts
                            .iter()
                            .find(|a| &a.path == preview)
                            .unwrap_or_else(|| panic!("{preview} is not in the plan"));
                        let docs = meshctl::render::parse_documents(&artifact.content).unwrap();
                        assert_eq!(docs.len(), 1, "{}", artifact.content);
                        let secret = &docs[0];
                        assert_eq!(
                            secret["metadata"]["name"],
                            format!("istio-remote-secret-{source}")
                        );
                        assert_eq!(secret["metadata"]["labels"]["istio/multiCluster"], "true");
                        let kubeconfig = secret["stringData"][source.as_str()].as_str().unwrap();
                        assert!(kubeconfig.contains("<read at run time"), "{kubeconfig}");
                        assert!(
                            artifact.content.starts_with("# Preview, never applied"),
                            "{}",
                            artifact.content
                        );
                    }
                    Step::Install(InstallStep::IstioctlInstall(IstioctlInstall {
                        context, file, ..
                    })) => {
                        let args = meshctl::tools::istioctl::install_args(context, file, 300);
                        assert!(
                            args.contains(&"-y".to_string()),
                            "istioctl never prompts: {args:?}"
                        );
                        let ctx = args.iter().position(|a| a == "--context").map(|i| &args[i + 1]);
                        assert_eq!(ctx, Some(&cs.cluster));
                    }
                    _ => {}
                }
            }
        }
    }
    assert_eq!(pairs.len(), 6, "N*(N-1) remote secrets");
}

#[test]
fn verification_workloads_run_one_version_per_cluster_with_failover_rules() {
    let mesh = Mesh::for_kind(3, "mesh1").unwrap();
    let artifacts = meshctl::verification::workloads::artifacts(&mesh).unwrap();
    let mut versions = Vec::new();
    for (path, doc) in docs_of(&artifacts, "helloworld.yaml") {
        match doc["kind"].as_str().unwrap() {
            "Service" => assert_eq!(doc["spec"]["ports"][0]["port"], 5000, "{path}"),
            "Deployment" => versions.push(doc["metadata"]["labels"]["version"].as_str().unwrap().to_string()),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(versions, ["v1", "v2", "v3"]);
    for (_, ns) in docs_of(&artifacts, "verify/namespace.yaml") {
        assert_eq!(ns["metadata"]["labels"]["istio-injection"], "enabled");
    }
    let drs = docs_of(&artifacts, "locality-failover.yaml");
    assert_eq!(drs.len(), 3);
    let tp = &drs[0].1["spec"]["trafficPolicy"];
    assert!(
        tp["outlierDetection"].is_object(),
        "failover needs outlierDetection"
    );
    assert!(
        tp["loadBalancer"]["localityLbSetting"]["distribute"].is_null(),
        "failover and distribute are exclusive"
    );
    assert_eq!(
        tp["loadBalancer"]["localityLbSetting"]["failover"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let single = meshctl::verification::workloads::artifacts(&Mesh::for_kind(1, "m").unwrap()).unwrap();
    assert!(
        single.iter().all(|a| !a.path.ends_with("locality-failover.yaml")),
        "no failover target with one region"
    );
}

#[test]
fn existing_clusters_plan_starts_at_certs_and_labels_nodes_only_where_missing() {
    let mesh = Mesh::for_contexts(&["ctx-a".into(), "ctx-b".into()], "mesh1").unwrap();
    let phases = meshctl::planner::select_phases(mesh.provider, &[], &[]).unwrap();
    let p = meshctl::planner::build(&PlanInput {
        mesh: &mesh,
        phases,
        pools: vec![],
        cas: support::fixed_cas(&mesh),
        timeout_secs: 60,
        docker_network: "kind".into(),
        gateway_ips: Default::default(),
        isolated: Default::default(),
        only_cluster: None,
    })
    .unwrap();
    assert_eq!(p.phases[0].phase, Phase::Certs);
    assert!(
        p.artifacts
            .iter()
            .all(|a| !a.path.contains("kind-config") && !a.path.contains("metallb"))
    );
    let label = p.phases[0].clusters[0]
        .steps
        .iter()
        .find(|s| matches!(s, Step::Certs(CertsStep::LabelNodes { .. })))
        .unwrap();
    assert!(matches!(
        label,
        Step::Certs(CertsStep::LabelNodes { overwrite: false, .. })
    ));
    let install = &p.phases[1].clusters[1].steps[0];
    assert!(
        matches!(install, Step::Install(InstallStep::IstioctlInstall(IstioctlInstall { context, .. })) if context == "ctx-b")
    );
}

#[test]
fn schema_checks_reject_what_the_api_server_would() {
    let Some(upstream) = support::schema::upstream_or_skip() else {
        return;
    };
    let crds = support::schema::load_crds(&upstream.join("istio/release-1.31/crds/crd-all.gen.yaml"));
    let schema = &support::schema::schema_for(&crds, "networking.istio.io/v1", "Gateway").unwrap()["properties"]
        ["spec"];
    let good = serde_json::json!({"selector": {"istio": "x"}, "servers": [{"port": {"number": 15443, "name": "tls", "protocol": "TLS"}, "hosts": ["*.local"], "tls": {"mode": "AUTO_PASSTHROUGH"}}]});
    assert!(support::schema::validate(&good, schema).is_empty());
    let mut bad = good.clone();
    bad["servers"][0]["tls"]["mode"] = "PASSTHRU".into();
    bad["servers"][0]["tlss"] = serde_json::json!({});
    bad["servers"][0]["port"]["number"] = "15443".into();
    let errors = support::schema::validate(&bad, schema).join("\n");
    assert!(errors.contains(".servers[0].tls.mode"), "{errors}");
    assert!(errors.contains(".servers[0].tlss: unknown field"), "{errors}");
    assert!(
        errors.contains(".servers[0].port.number: expected integer"),
        "{errors}"
    );
    let bad_deployment = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replica": 1, "selector": {}, "template": {}}});
    assert!(
        !core_roundtrip_errors("Deployment", &bad_deployment).is_empty(),
        "unknown core field is caught"
    );
}

/// The steps of `cluster` in every entry of `phase`, in plan order.
fn steps_of<'p>(plan: &'p Plan, phase: Phase, cluster: &str) -> Vec<&'p Step> {
    plan.phases
        .iter()
        .filter(|p| p.phase == phase)
        .flat_map(|p| p.clusters.iter().filter(|cs| cs.cluster == cluster))
        .flat_map(|cs| cs.steps.iter())
        .collect()
}

/// The clusters whose remote secrets `cluster` receives, in plan order.
fn secret_sources(plan: &Plan, cluster: &str) -> Vec<String> {
    steps_of(plan, Phase::RemoteSecrets, cluster)
        .into_iter()
        .filter_map(|s| match s {
            Step::RemoteSecrets(RemoteSecretsStep::RemoteSecret { source, .. }) => Some(source.clone()),
            _ => None,
        })
        .collect()
}

fn one_doc(plan: &Plan, path: &str) -> Value {
    let a = plan
        .artifacts
        .iter()
        .find(|a| a.path == path)
        .unwrap_or_else(|| panic!("no artifact {path}"));
    parse_documents(&a.content).unwrap().remove(0)
}

/// Istio docs, "Install Primary-Remote on different networks" (istio.io
/// content/en/docs/setup/install/multicluster/primary-remote_multi-network/index.md): the primary's
/// IstioOperator adds `externalIstiod: true`; istiod is exposed with
/// samples/multicluster/expose-istiod.yaml; the remote's istio-system is annotated
/// `topology.istio.io/controlPlaneClusters=cluster1` and labelled with its network; the remote gets
/// `profile: remote`, `istiodRemote.injectionPath: /inject/cluster/cluster2/net/network2` and
/// `global.remotePilotAddress` = the primary's east-west gateway IP; the remote's secret goes to the
/// primary only; both clusters get an east-west gateway, the remote's after it is attached;
/// services are exposed on the primary only.
#[test]
fn primary_remote_on_two_networks_follows_istios_install_docs() {
    let mesh = model(PRIMARY_REMOTE_MULTI_NETWORK);
    let plan = plan_with_gateways(&mesh, &[("cluster1", "172.18.255.200")]);
    let primary = one_doc(&plan, "cluster1/05-istio/control-plane.yaml");
    assert_eq!(primary["spec"]["values"]["global"]["externalIstiod"], true);
    assert_eq!(primary["spec"]["values"]["global"]["meshID"], "mesh1");
    let remote = one_doc(&plan, "cluster2/05-istio/control-plane.yaml");
    assert_eq!(remote["spec"]["profile"], "remote");
    assert_eq!(
        remote["spec"]["values"]["istiodRemote"]["injectionPath"],
        "/inject/cluster/cluster2/net/network2"
    );
    assert_eq!(
        remote["spec"]["values"]["global"]["remotePilotAddress"],
        "172.18.255.200"
    );
    assert_eq!(
        remote["metadata"]["name"], "control-plane",
        "named: pruning never takes the gateway"
    );
    let ns = one_doc(&plan, "cluster2/04-certs/istio-system.yaml");
    assert_eq!(
        ns["metadata"]["annotations"]["topology.istio.io/controlPlaneClusters"],
        "cluster1"
    );
    assert_eq!(ns["metadata"]["labels"]["topology.istio.io/network"], "network2");
    let ns1 = one_doc(&plan, "cluster1/04-certs/istio-system.yaml");
    assert!(
        ns1["metadata"]["annotations"].is_null(),
        "a primary is nobody's remote"
    );

    // expose-istiod as upstream ships it, in istio-system.
    if let Some(upstream) = support::schema::upstream_dir() {
        let sample = parse_documents(
            &std::fs::read_to_string(upstream.join("istio/samples/multicluster/expose-istiod.yaml")).unwrap(),
        )
        .unwrap();
        let ours = parse_documents(
            &plan
                .artifacts
                .iter()
                .find(|a| a.path == "cluster1/07-expose/expose-istiod.yaml")
                .unwrap()
                .content,
        )
        .unwrap();
        assert_eq!(ours.len(), sample.len());
        for (o, s) in ours.iter().zip(&sample) {
            assert_eq!(
                (&o["kind"], &o["metadata"]["name"]),
                (&s["kind"], &s["metadata"]["name"])
            );
            assert_eq!(
                o["spec"], s["spec"],
                "{} differs from the upstream sample",
                s["kind"]
            );
            assert_eq!(o["metadata"]["namespace"], "istio-system");
        }
    }
    assert!(
        plan.artifacts
            .iter()
            .all(|a| !a.path.starts_with("cluster2/07-expose"))
    );
    assert!(
        plan.artifacts
            .iter()
            .any(|a| a.path == "cluster1/07-expose/cross-network-gateway.yaml")
    );

    // Secrets: the primary holds the remote's; the remote holds none.
    assert_eq!(secret_sources(&plan, "cluster1"), ["cluster2"]);
    assert!(steps_of(&plan, Phase::RemoteSecrets, "cluster2").is_empty());

    // Order: the primary's control plane, gateway and exposure, then the remote's install, then
    // the attach (secret), then the remote's gateway.
    let order: Vec<(Phase, Vec<&str>)> = plan
        .phases
        .iter()
        .filter(|p| p.phase >= Phase::Istio)
        .map(|p| (p.phase, p.clusters.iter().map(|c| c.cluster.as_str()).collect()))
        .collect();
    assert_eq!(
        order,
        [
            (Phase::Istio, vec!["cluster1"]),
            (Phase::Eastwest, vec!["cluster1"]),
            (Phase::Expose, vec!["cluster1"]),
            (Phase::Istio, vec!["cluster2"]),
            (Phase::RemoteSecrets, vec!["cluster1"]),
            (Phase::Eastwest, vec!["cluster2"]),
        ]
    );
    // The remote's gateway waits for the primary to take the injector over.
    assert!(matches!(
        steps_of(&plan, Phase::Eastwest, "cluster2")[0],
        Step::Wait {
            until: plan::Condition::WebhookCaBundle { .. }
        }
    ));
    assert!(matches!(
        steps_of(&plan, Phase::Istio, "cluster2")[0],
        Step::Install(InstallStep::IstioctlInstall(IstioctlInstall { record_on: plan::RecordOn::Service(name), .. })) if name == "istiod"
    ));
}

#[test]
fn a_remote_planned_before_its_primary_has_a_gateway_ip_shows_the_docs_variable() {
    let mesh = model(PRIMARY_REMOTE_MULTI_NETWORK);
    let plan = plan_for(&mesh);
    let remote = one_doc(&plan, "cluster2/05-istio/control-plane.yaml");
    assert_eq!(
        remote["spec"]["values"]["global"]["remotePilotAddress"],
        "${DISCOVERY_ADDRESS}"
    );
}

/// Istio docs, "Install Primary-Remote" (one network): the primary still exposes istiod through an
/// east-west gateway, but no services Gateway and no gateway in the remote.
#[test]
fn primary_remote_on_one_network_has_one_gateway_for_istiod_only() {
    let mesh = model(PRIMARY_REMOTE_ONE_NETWORK);
    let plan = plan_with_gateways(&mesh, &[("cluster1", "172.18.255.200")]);
    let paths: Vec<&str> = plan.artifacts.iter().map(|a| a.path.as_str()).collect();
    assert!(paths.contains(&"cluster1/06-eastwest/eastwest-gateway.yaml"));
    assert!(paths.contains(&"cluster1/07-expose/expose-istiod.yaml"));
    assert!(
        !paths.iter().any(|p| p.ends_with("cross-network-gateway.yaml")),
        "{paths:?}"
    );
    assert!(
        !paths.iter().any(|p| p.starts_with("cluster2/06-eastwest")),
        "{paths:?}"
    );
    let remote = one_doc(&plan, "cluster2/05-istio/control-plane.yaml");
    assert_eq!(
        remote["spec"]["values"]["istiodRemote"]["injectionPath"],
        "/inject/cluster/cluster2/net/network1"
    );
}

/// Istio docs, "Install Multi-Primary" (one network): no east-west gateway at all, every istiod
/// watches the other's API server; on kind, each node routes the other's pod and service CIDRs to
/// the other node, as Istio's CI does for clusters sharing a network
/// (common/scripts/kind_provisioner.sh, connect_kind_clusters).
#[test]
fn multi_primary_on_one_network_routes_pods_and_needs_no_gateway() {
    let mesh = model(MULTI_PRIMARY_ONE_NETWORK);
    let plan = plan_for(&mesh);
    assert!(
        !plan
            .phases
            .iter()
            .any(|p| matches!(p.phase, Phase::Eastwest | Phase::Expose)),
        "a flat mesh has no east-west gateway"
    );
    for (me, peer, cidrs) in [
        ("cluster1", "cluster2", ["10.20.0.0/16", "10.255.20.0/24"]),
        ("cluster2", "cluster1", ["10.10.0.0/16", "10.255.10.0/24"]),
    ] {
        let steps = steps_of(&plan, Phase::Routes, me);
        let [Step::Routes(RoutesStep::RoutePeers { node, peers, .. })] = steps.as_slice() else {
            panic!("{me}: {steps:?}");
        };
        assert_eq!(node, &format!("{me}-control-plane"));
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].cluster, peer);
        assert_eq!(peers[0].node, format!("{peer}-control-plane"));
        assert_eq!(peers[0].cidrs, cidrs);
    }
    for c in ["cluster1", "cluster2"] {
        let iop = one_doc(&plan, &format!("{c}/05-istio/control-plane.yaml"));
        assert_eq!(iop["spec"]["values"]["global"]["network"], "network1");
        assert!(iop["spec"]["values"]["global"]["externalIstiod"].is_null());
    }
    // Separate networks get no routes: that is what keeps them separate.
    let plan = plan_for(&Mesh::for_kind(2, "mesh1").unwrap());
    assert!(!plan.phases.iter().any(|p| p.phase == Phase::Routes));
}

/// The example topologies of docs/examples load, plan, and describe the models their comments
/// name (the smoke workflow runs one of them on real kind clusters).
#[test]
fn every_example_topology_in_the_docs_loads_and_plans() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples");
    let mut seen = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let mesh = Mesh::from_file(&path, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let plan = plan_with_gateways(&mesh, &[("cluster1", "172.18.255.200")]);
        assert!(!plan.phases.is_empty());
        let remotes = mesh.clusters.iter().filter(|c| c.primary.is_some()).count();
        seen.insert(
            path.file_name().unwrap().to_string_lossy().to_string(),
            (remotes, mesh.multi_network()),
        );
    }
    assert_eq!(seen["primary-remote.yaml"], (1, true));
    assert_eq!(seen["primary-remote-one-network.yaml"], (1, false));
    assert_eq!(seen["multi-primary-one-network.yaml"], (0, false));
    assert_eq!(seen["external-control-plane.yaml"], (2, false));
}

/// Istio docs, "Install Istio with an External Control Plane", without a DNS name: the external
/// cluster installs its own control plane and a gateway exposing 15012/15017 (passed through to
/// `istiod.external-istiod`); the config cluster gets the remote profile in `external-istiod`
/// with `configCluster` and the `istio` ConfigMap, pointed at that gateway; then the external
/// cluster gets the config cluster's kubeconfig and the external istiod (`profile: empty`,
/// `CLUSTER_ID` the config cluster, webhooks left to the config cluster), and the other remote's
/// secret; `cacerts` goes beside the external istiod.
#[test]
fn an_external_control_plane_follows_istios_install_docs() {
    let mesh = model("clusters:\n  - {role: external}\n  - {role: remote}\n  - {role: remote}\n");
    let plan = plan_with_gateways(&mesh, &[("cluster1", "172.18.255.200")]);
    let order: Vec<(Phase, Vec<&str>)> = plan
        .phases
        .iter()
        .filter(|p| p.phase >= Phase::Istio)
        .map(|p| (p.phase, p.clusters.iter().map(|c| c.cluster.as_str()).collect()))
        .collect();
    assert_eq!(
        order,
        [
            (Phase::Istio, vec!["cluster1"]),
            (Phase::Eastwest, vec!["cluster1"]),
            (Phase::Expose, vec!["cluster1"]),
            (Phase::Istio, vec!["cluster2", "cluster3"]),
            (Phase::ExternalIstiod, vec!["cluster1"]),
            (Phase::RemoteSecrets, vec!["cluster1"]),
        ]
    );
    let own = one_doc(&plan, "cluster1/05-istio/control-plane.yaml");
    assert!(own["spec"]["values"]["global"]["externalIstiod"].is_null());
    let expose = parse_documents(
        &plan
            .artifacts
            .iter()
            .find(|a| a.path == "cluster1/07-expose/expose-istiod.yaml")
            .unwrap()
            .content,
    )
    .unwrap();
    assert_eq!(
        expose[1]["spec"]["tls"][0]["route"][0]["destination"]["host"],
        "istiod.external-istiod.svc.cluster.local"
    );
    let config = one_doc(&plan, "cluster2/05-istio/control-plane.yaml");
    let global = &config["spec"]["values"]["global"];
    assert_eq!(config["metadata"]["namespace"], "external-istiod");
    assert_eq!(global["istioNamespace"], "external-istiod");
    assert_eq!(global["configCluster"], true);
    assert_eq!(global["remotePilotAddress"], "172.18.255.200");
    assert_eq!(config["spec"]["values"]["pilot"]["configMap"], true);
    let other = one_doc(&plan, "cluster3/05-istio/control-plane.yaml");
    assert!(other["spec"]["values"]["global"]["configCluster"].is_null());
    assert_eq!(
        other["spec"]["values"]["istiodRemote"]["injectionPath"],
        "/inject/cluster/cluster3/net/network2"
    );
    let external = one_doc(&plan, "cluster1/09-external-istiod/external-istiod.yaml");
    let env: BTreeMap<String, String> = external["spec"]["components"]["pilot"]["k8s"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(env["CLUSTER_ID"], "cluster2");
    assert_eq!(env["EXTERNAL_ISTIOD"], "true");
    assert_eq!(
        env["INJECTION_WEBHOOK_CONFIG_NAME"],
        "istio-sidecar-injector-external-istiod"
    );
    assert_eq!(external["metadata"]["name"], "external-istiod");
    assert_eq!(
        external["spec"]["meshConfig"]["defaultConfig"]["discoveryAddress"],
        "172.18.255.200:15012"
    );
    // What the proxies of both remotes are injected with toward istiod (`discoveryAddress` of the
    // mesh config, `CA_ADDR` of the injection template: the IstioOperator's values, else the
    // chart's `istiod.<istioNamespace>.svc:15012`), each accepted by the certificate the external
    // istiod serves with.
    let namespace = "external-istiod";
    let default_address = format!("istiod.{namespace}.svc:15012");
    let discovery = external["spec"]["meshConfig"]["defaultConfig"]["discoveryAddress"]
        .as_str()
        .unwrap_or(&default_address);
    let ca = external["spec"]["values"]["global"]["caAddress"]
        .as_str()
        .unwrap_or(&default_address);
    let names = support::played_istiod::serving_names(
        discovery,
        namespace,
        "",
        env.get("ISTIOD_CUSTOM_HOST").map(String::as_str),
    );
    for address in [discovery, ca] {
        support::played_istiod::proxy_accepts(address, None, &names)
            .unwrap_or_else(|e| panic!("a proxy dialling {address}: {e}"));
    }
    assert_eq!(
        external["spec"]["values"]["global"]["operatorManageWebhooks"],
        true
    );
    let kubeconfig = steps_of(&plan, Phase::ExternalIstiod, "cluster1");
    assert!(
        matches!(kubeconfig[0], Step::ExternalIstiod(ExternalIstiodStep::ConfigKubeconfig { source, .. }) if source == "cluster2")
    );
    assert_eq!(secret_sources(&plan, "cluster1"), ["cluster3"]);
    let cacerts = one_doc(&plan, "cluster1/04-certs/cacerts.yaml");
    assert_eq!(cacerts["metadata"]["namespace"], "external-istiod");
    assert!(
        plan.artifacts
            .iter()
            .all(|a| !a.path.starts_with("cluster2/04-certs/cacerts"))
    );
    // Planned before the gateway has an address: the docs' variable, refused at install time.
    let early = plan_with_gateways(&mesh, &[]);
    let text = &early
        .artifacts
        .iter()
        .find(|a| a.path == "cluster1/09-external-istiod/external-istiod.yaml")
        .unwrap()
        .content;
    assert!(text.contains("${DISCOVERY_ADDRESS}:15012"), "{text}");
}

/// A mixed mesh: primary cluster1 with remote cluster2 on network1, primary cluster3 on network2.
/// Gateways wherever another network must reach in (all three), istiod exposed by cluster1 only,
/// `*.local` exposed by both primaries, routes between cluster1 and cluster2 only, and each primary
/// holding the secrets of both other clusters.
#[test]
fn a_mixed_mesh_combines_the_rules_of_each_model() {
    let mesh = model(
        "clusters:\n  - {network: network1}\n  - {network: network1, role: remote}\n  - {network: network2}\n",
    );
    let plan = plan_with_gateways(&mesh, &[("cluster1", "172.18.255.200")]);
    let paths: Vec<&str> = plan.artifacts.iter().map(|a| a.path.as_str()).collect();
    for c in ["cluster1", "cluster2", "cluster3"] {
        assert!(
            paths.contains(&format!("{c}/06-eastwest/eastwest-gateway.yaml").as_str()),
            "{c}"
        );
    }
    assert!(paths.contains(&"cluster1/07-expose/expose-istiod.yaml"));
    assert!(!paths.contains(&"cluster3/07-expose/expose-istiod.yaml"));
    for c in ["cluster1", "cluster3"] {
        assert!(
            paths.contains(&format!("{c}/07-expose/cross-network-gateway.yaml").as_str()),
            "{c}"
        );
    }
    assert!(!paths.iter().any(|p| p.starts_with("cluster2/07-expose")));
    let routed: Vec<&str> = plan
        .phases
        .iter()
        .filter(|p| p.phase == Phase::Routes)
        .flat_map(|p| p.clusters.iter().map(|c| c.cluster.as_str()))
        .collect();
    assert_eq!(routed, ["cluster1", "cluster2"]);
    assert_eq!(secret_sources(&plan, "cluster1"), ["cluster2", "cluster3"]);
    assert_eq!(secret_sources(&plan, "cluster3"), ["cluster1", "cluster2"]);
    assert!(secret_sources(&plan, "cluster2").is_empty());
    let listing = meshctl::dry_run::listing(&plan);
    assert!(
        listing.contains("05-istio   (remotes, after their primaries)"),
        "{listing}"
    );
}

/// A primary whose east-west gateway got a hostname from its cloud load balancer (AWS ELB/NLB):
/// the remote's `remotePilotAddress` is that hostname, which Istio's remote charts turn into an
/// ExternalName Service (tests/plays_in_process.rs checks the play of that).
#[test]
fn a_gateway_hostname_becomes_the_remotes_pilot_address() {
    let mesh = model(PRIMARY_REMOTE_MULTI_NETWORK);
    let plan = plan_with_gateways(&mesh, &[("cluster1", "a1b2-123.elb.eu-west-1.amazonaws.com")]);
    let remote = one_doc(&plan, "cluster2/05-istio/control-plane.yaml");
    assert_eq!(
        remote["spec"]["values"]["global"]["remotePilotAddress"],
        "a1b2-123.elb.eu-west-1.amazonaws.com"
    );
}

/// Rendered manifests are read by users, who cannot open meshctl's internal notes: a comment
/// states the fact itself, never "reference section N" or "pitfall N".
#[test]
fn no_rendered_file_cites_a_document_users_cannot_open() {
    for mesh in [
        Mesh::for_kind(3, "mesh1").unwrap(),
        model(PRIMARY_REMOTE_MULTI_NETWORK),
        model(PRIMARY_REMOTE_ONE_NETWORK),
    ] {
        let plan = plan_with_gateways(&mesh, &[("cluster1", "172.18.255.200")]);
        let verify = meshctl::verification::workloads::artifacts(&mesh).unwrap();
        for artifact in plan.artifacts.iter().chain(&verify) {
            let text = artifact.content.to_lowercase();
            assert!(
                !text.contains("pitfall") && !text.contains("reference section"),
                "{} cites an internal document:\n{}",
                artifact.path,
                artifact.content
            );
        }
    }
}

/// Gateways other networks reach at a declared address: every istiod's `meshNetworks` names them
/// (address and port, with the network's clusters as its registries), a NodePort gateway's
/// Service is a NodePort with 15443 on the declared node port, and the address is recorded
/// instead of waited for from a LoadBalancer. A gateway with no declared address is left to
/// discovery.
#[test]
fn declared_gateways_reach_every_istiods_mesh_networks_and_a_node_port_service_is_rendered() {
    let mesh = model(
        "clusters:\n  - eastwest: {service: NodePort, address: 172.18.0.2}\n  - eastwest: {address: gw.example.com}\n  - {}\n",
    );
    let plan = plan_for(&mesh);
    let control_planes = docs_of(&plan.artifacts, "control-plane.yaml");
    assert_eq!(control_planes.len(), 3);
    for (path, doc) in &control_planes {
        let networks = &doc["spec"]["values"]["global"]["meshNetworks"];
        assert_eq!(
            networks["network1"],
            serde_json::json!({"endpoints": [{"fromRegistry": "cluster1"}],
                               "gateways": [{"address": "172.18.0.2", "port": 31443}]}),
            "{path}"
        );
        assert_eq!(
            networks["network2"]["gateways"],
            serde_json::json!([{"address": "gw.example.com", "port": 15443}]),
            "{path}"
        );
        assert!(networks.get("network3").is_none(), "{path}: {networks}");
    }
    let gateways = docs_of(&plan.artifacts, "eastwest-gateway.yaml");
    let service = |cluster: &str| {
        let (_, doc) = gateways
            .iter()
            .find(|(p, _)| p.starts_with(&format!("{cluster}/")))
            .unwrap();
        doc["spec"]["components"]["ingressGateways"][0]["k8s"]["service"].clone()
    };
    assert_eq!(service("cluster1")["type"], "NodePort");
    let tls = service("cluster1")["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == 15443)
        .cloned()
        .unwrap();
    assert_eq!(tls["nodePort"], 31443);
    assert!(service("cluster2").get("type").is_none() && service("cluster3").get("type").is_none());
    let records = |cluster: &str| {
        steps_of(&plan, Phase::Eastwest, cluster)
            .into_iter()
            .filter_map(|s| match s {
                Step::Eastwest(EastwestStep::RecordGatewayAddress { address, port }) => {
                    Some(format!("{address}:{port}"))
                }
                Step::Wait {
                    until: meshctl::plan::Condition::LoadBalancerIp { .. },
                } => Some("load balancer".into()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(records("cluster1"), ["172.18.0.2:31443"]);
    assert_eq!(records("cluster2"), ["gw.example.com:15443"]);
    assert_eq!(records("cluster3"), ["load balancer"]);
    // Without a declared gateway nothing changes: no meshNetworks at all.
    let plain = plan_for(&Mesh::for_kind(2, "mesh1").unwrap());
    for (path, doc) in docs_of(&plain.artifacts, "control-plane.yaml") {
        assert!(
            doc["spec"]["values"]["global"].get("meshNetworks").is_none(),
            "{path}"
        );
    }
}

/// A mesh on a revisioned control plane (after `meshctl upgrade`) renders what Istio's canary
/// upgrade docs install: `spec.revision` in every IstioOperator, so istiod-<rev> runs beside the
/// one it replaces; the waits and install records on the revision's istiod and injector
/// (istio-discovery chart: `istiod-<rev>`, `istio-sidecar-injector-<rev>`); the remote's istiod
/// Service of that revision; istiod exposed to remotes as `istiod-<rev>` (samples/multicluster/
/// expose-istiod-rev.yaml.tmpl). The default revision renders none of it (the snapshots).
#[test]
fn a_revisioned_mesh_installs_names_and_exposes_the_revision() {
    let mut mesh = model(PRIMARY_REMOTE_MULTI_NETWORK);
    mesh.istio_revision = meshctl::revision::Revision::of(&"1.31.1".parse().unwrap());
    let plan = plan_with_gateways(&mesh, &[("cluster1", "172.18.255.200")]);
    for path in [
        "cluster1/05-istio/control-plane.yaml",
        "cluster2/05-istio/control-plane.yaml",
        "cluster1/06-eastwest/eastwest-gateway.yaml",
        "cluster2/06-eastwest/eastwest-gateway.yaml",
    ] {
        assert_eq!(one_doc(&plan, path)["spec"]["revision"], "1-31-1", "{path}");
    }
    let records: Vec<String> = plan
        .phases
        .iter()
        .filter(|p| p.phase == Phase::Istio)
        .flat_map(|p| &p.clusters)
        .flat_map(|c| &c.steps)
        .filter_map(|s| match s {
            Step::Install(InstallStep::IstioctlInstall(IstioctlInstall { record_on, .. })) => {
                Some(record_on.to_string())
            }
            _ => None,
        })
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(
        records[0].contains("istiod-1-31-1") && records[1].contains("istiod-1-31-1"),
        "{records:?}"
    );
    let waits: Vec<String> = steps_of(&plan, Phase::Istio, "cluster1")
        .into_iter()
        .filter_map(|s| match s {
            Step::Wait { until } => Some(format!("{until:?}")),
            _ => None,
        })
        .collect();
    assert!(waits.iter().any(|w| w.contains("\"istiod-1-31-1\"")), "{waits:?}");
    assert!(
        waits
            .iter()
            .any(|w| w.contains("\"istio-sidecar-injector-1-31-1\"")),
        "{waits:?}"
    );
    let expose = &plan
        .artifacts
        .iter()
        .find(|a| a.path == "cluster1/07-expose/expose-istiod.yaml")
        .unwrap()
        .content;
    assert_eq!(
        expose
            .matches("host: istiod-1-31-1.istio-system.svc.cluster.local")
            .count(),
        2
    );
    // The default revision: no `revision` in the control plane, the bare names.
    let plain = plan_with_gateways(
        &model(PRIMARY_REMOTE_MULTI_NETWORK),
        &[("cluster1", "172.18.255.200")],
    );
    assert!(
        one_doc(&plain, "cluster1/05-istio/control-plane.yaml")["spec"]
            .get("revision")
            .is_none()
    );
    assert_eq!(
        one_doc(&plain, "cluster1/06-eastwest/eastwest-gateway.yaml")["spec"]["revision"],
        ""
    );
}

/// An external control plane whose second remote is on a network of its own behind a NodePort
/// gateway: istiod learns a NodePort gateway's address only from `meshNetworks` (a NodePort Service
/// gets one only through `traffic.istio.io/nodeSelector`: Istio
/// `pilot/pkg/serviceregistry/kube/conversion.go`), and the istiod that configures every proxy of
/// this mesh is the external one: its IstioOperator declares that network, as a primary's does.
#[test]
fn an_external_istiod_knows_the_declared_gateways_of_its_remotes_networks() {
    let mesh = model(
        "provider: existing
clusters:
  - {role: external, apiServer: 'https://10.0.0.1:6443'}
  - {role: remote, apiServer: 'https://10.0.0.2:6443'}
  - {role: remote, network: network3, apiServer: 'https://10.0.0.3:6443', eastwest: {service: NodePort, address: 10.0.0.3, nodePort: 31443}}
",
    );
    let plan = plan_with_gateways(&mesh, &[("cluster1", "172.18.255.200")]);
    // The external istiod takes its networks from the first of its mesh-config sources, the
    // config cluster's `istio` ConfigMap (`SHARED_MESH_CONFIG`; Istio `pkg/config/mesh/meshwatcher`
    // `NewNetworksCollection`), which the config cluster's remote install renders.
    let config = one_doc(&plan, "cluster2/05-istio/control-plane.yaml");
    let external = one_doc(&plan, "cluster1/09-external-istiod/external-istiod.yaml");
    for (what, doc) in [("config cluster", &config), ("external istiod", &external)] {
        assert_eq!(
            doc["spec"]["values"]["global"]["meshNetworks"]["network3"],
            serde_json::json!({"endpoints": [{"fromRegistry": "cluster3"}],
                               "gateways": [{"address": "10.0.0.3", "port": 31443}]}),
            "{what}: {doc:#}"
        );
    }
    // The other remote's install renders no mesh config.
    let other = one_doc(&plan, "cluster3/05-istio/control-plane.yaml");
    assert!(other["spec"]["values"]["global"]["meshNetworks"].is_null());
}

/// Which addresses istiod gives a network's gateways, as `pilot/pkg/xds/endpoints/ep_filters.go`
/// `selectNetworkGateways` chooses them: the gateways found from a Service labelled
/// `topology.istio.io/network` (`controller/network.go`, `getGatewayDetails`), with the address
/// its LoadBalancer has, are tagged with their cluster and preferred; only without one, the
/// network's `meshNetworks` gateways.
fn istiods_gateway_addresses(
    network: &str,
    gateway_labels: &serde_json::Value,
    load_balancer_address: &str,
    mesh_networks: &serde_json::Value,
) -> Vec<String> {
    if gateway_labels["topology.istio.io/network"] == network {
        return vec![load_balancer_address.to_string()];
    }
    mesh_networks[network]["gateways"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["address"].as_str().map(String::from))
        .collect()
}

/// The labels of the gateway's Service as istioctl renders them: the gateway's `label`, less what
/// a `k8s.overlays` patch without a value on the Service removes (`operator/pkg/render/
/// postprocess.go` `applyPatches`: `tpath.WritePathContext` with no value deletes the path; a
/// `\.` in a path is a dot within a key, `operator/pkg/util/path.go` `PathFromString`).
fn service_labels(gateway: &Value) -> Value {
    let entry = &gateway["spec"]["components"]["ingressGateways"][0];
    let mut labels = entry["label"].clone();
    for overlay in entry["k8s"]["overlays"].as_array().into_iter().flatten() {
        if overlay["kind"] != "Service" {
            continue;
        }
        for patch in overlay["patches"].as_array().into_iter().flatten() {
            let path = patch["path"].as_str().unwrap_or_default().replace("\\.", "\u{0}");
            let parts: Vec<String> = path.split('.').map(|p| p.replace('\u{0}', ".")).collect();
            if patch.get("value").is_none()
                && parts.len() == 3
                && parts[0] == "metadata"
                && parts[1] == "labels"
            {
                labels.as_object_mut().map(|m| m.remove(&parts[2]));
            }
        }
    }
    labels
}

/// A LoadBalancer gateway with `eastwest.address` in front of it (a NAT or DNS name other networks
/// dial): istiod must hand out the declared address, not the LoadBalancer's own. The Service loses
/// the network label istiod finds gateways by; the Deployment keeps it (its selector holds it).
#[test]
fn a_declared_address_in_front_of_a_load_balancer_is_the_one_istiod_hands_out() {
    let mesh = model("clusters:\n  - {eastwest: {address: gw1.example.com}}\n  - {}\n");
    let plan = plan_with_gateways(
        &mesh,
        &[("cluster1", "gw1.example.com"), ("cluster2", "172.18.255.201")],
    );
    let gateway = one_doc(&plan, "cluster1/06-eastwest/eastwest-gateway.yaml");
    assert_eq!(
        gateway["spec"]["components"]["ingressGateways"][0]["label"]["topology.istio.io/network"], "network1",
        "the Deployment's selector keeps it"
    );
    let other = one_doc(&plan, "cluster2/05-istio/control-plane.yaml");
    let networks = &other["spec"]["values"]["global"]["meshNetworks"];
    assert_eq!(
        istiods_gateway_addresses("network1", &service_labels(&gateway), "172.18.255.200", networks),
        ["gw1.example.com"]
    );
    // Without a declared address, the LoadBalancer's own, found by the label.
    let plain = one_doc(&plan, "cluster2/06-eastwest/eastwest-gateway.yaml");
    assert_eq!(
        istiods_gateway_addresses("network2", &service_labels(&plain), "172.18.255.201", networks),
        ["172.18.255.201"]
    );
}

/// Two primaries on their own networks, ambient: Istio's "Install ambient multi-primary on
/// different networks".
const AMBIENT_MULTI_NETWORK: &str = "dataplane: ambient\nclusters:\n  - {}\n  - {}\n";

#[test]
fn rendered_plan_snapshot_of_an_ambient_mesh() {
    let mesh = model(AMBIENT_MULTI_NETWORK);
    let plan = plan_for(&mesh);
    insta::assert_snapshot!("model_ambient_multi_network", snapshot_text(&mesh, &plan));
}

/// Every value the ambient plan sets that differs from a sidecar mesh's is upstream's, and the file
/// says where it comes from: the guide's IstioOperator (`profile: ambient`, the multi-network flag
/// on Pilot, meshID, clusterName and network under `values.global`), the Gateway
/// `gen-eastwest-gateway.sh --ambient` prints, the Gateway API CRDs pinned where the cluster has
/// none, and nothing of the sidecar mesh's east-west or expose objects.
#[test]
fn the_ambient_plan_is_upstreams_and_names_its_sources() {
    let mesh = model(AMBIENT_MULTI_NETWORK);
    let plan = plan_for(&mesh);
    let all = all_artifacts(&mesh, &plan);
    let text_of = |suffix: &str| {
        all.iter()
            .find(|a| a.path.ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix}"))
            .content
            .clone()
    };
    let (_, operator) = docs_of(&all, "cluster2/05-istio/control-plane.yaml").remove(0);
    assert_eq!(operator["spec"]["profile"], "ambient");
    assert_eq!(
        operator["spec"]["components"]["pilot"]["k8s"]["env"],
        serde_json::json!([{"name": "AMBIENT_ENABLE_MULTI_NETWORK", "value": "true"}])
    );
    assert_eq!(
        operator["spec"]["values"]["global"],
        serde_json::json!({"meshID": "mesh1", "multiCluster": {"clusterName": "cluster2"}, "network": "network2"})
    );
    let control_plane = text_of("cluster2/05-istio/control-plane.yaml");
    for source in [
        "multi-primary on different networks",
        "manifests/profiles/ambient.yaml",
        "manifests/helm-profiles/ambient.yaml",
        "pilot/pkg/features/ambient.go",
        "gatewaycommon/classinfo.go",
        "operator/pkg/render/manifest.go",
        "manifests/charts/ztunnel/templates/zzz_profile.yaml",
    ] {
        assert!(
            control_plane.contains(source),
            "control plane does not name {source}"
        );
    }
    let (_, gateway) = docs_of(&all, "cluster2/06-eastwest/eastwest-gateway.yaml").remove(0);
    assert_eq!(gateway["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(gateway["metadata"]["name"], "istio-eastwestgateway");
    assert_eq!(gateway["metadata"]["namespace"], "istio-system");
    assert_eq!(
        gateway["metadata"]["labels"]["topology.istio.io/network"],
        "network2"
    );
    assert_eq!(gateway["spec"]["gatewayClassName"], "istio-east-west");
    assert_eq!(
        gateway["spec"]["listeners"],
        serde_json::json!([{"name": "mesh", "port": 15008, "protocol": "HBONE",
            "tls": {"mode": "Terminate", "options": {"gateway.istio.io/tls-terminate-mode": "ISTIO_MUTUAL"}}}])
    );
    let gateway_text = text_of("cluster2/06-eastwest/eastwest-gateway.yaml");
    for source in [
        "gen-eastwest-gateway.sh --ambient",
        "gatewaycommon/classinfo.go",
        "ambient/networks.go",
        "unexpectedEastWestWaypointListener",
        "extractInfrastructureMetadata",
    ] {
        assert!(gateway_text.contains(source), "gateway does not name {source}");
    }
    let steps: Vec<&Step> = plan
        .phases
        .iter()
        .filter(|p| p.phase == Phase::Istio)
        .flat_map(|p| p.clusters.iter().flat_map(|c| c.steps.iter()))
        .collect();
    assert!(steps.iter().any(
        |s| matches!(s, Step::ApplyUpstream { url, unless_crd: Some(crd), .. }
        if url.contains("gateway-api/releases/download/v1.6.0/standard-install.yaml")
            && crd == "gateways.gateway.networking.k8s.io")
    ));
    // No sidecar-mesh gateway objects: no IstioOperator for the gateway, no expose-services Gateway.
    assert!(
        !all.iter().any(|a| a.path.contains("07-expose")),
        "{:?}",
        all.iter().map(|a| &a.path).collect::<Vec<_>>()
    );
    assert!(
        !plan
            .phases
            .iter()
            .any(|p| p.clusters.iter().any(|c| c
                .steps
                .iter()
                .any(|s| matches!(s, Step::Install(_)) && p.phase == Phase::Eastwest)))
    );
}
