//! The plan of `meshctl up`, checked three ways: insta snapshots of the exact text for 1, 2 and 3
//! clusters; every document parsed and validated (CRD schemas from ../shared/upstream, k8s-openapi
//! types for core objects); and the reference facts point by point.

mod support;

use std::collections::{BTreeMap, HashSet};

use meshctl::ipam;
use meshctl::pki::IntermediateCa;
use meshctl::plan::Phase;
use meshctl::plan::{self, Artifact, Plan, PlanInput, Step};
use meshctl::render::parse_documents;
use meshctl::topology::Mesh;
use serde_json::Value;

/// Fixed, readable stand-ins for the CA files, so snapshots are deterministic.
fn fixed_cas(mesh: &Mesh) -> Vec<IntermediateCa> {
    mesh.clusters
        .iter()
        .map(|c| IntermediateCa {
            cluster: c.name.clone(),
            ca_cert_pem: format!("ca-cert of {}\n", c.name),
            ca_key_pem: format!("ca-key of {}\n", c.name),
            cert_chain_pem: format!("ca-cert of {}\nroot-cert\n", c.name),
            root_cert_pem: "root-cert\n".into(),
        })
        .collect()
}

fn plan_for(mesh: &Mesh) -> Plan {
    let pools = ipam::plan_pools("172.18.0.0/16".parse().unwrap(), mesh.clusters.len(), &[]).unwrap();
    let phases = plan::select_phases(mesh.provider, &[], &[]).unwrap();
    plan::build(&PlanInput {
        mesh,
        phases,
        pools,
        cas: fixed_cas(mesh),
        timeout_secs: 300,
        docker_network: "kind".into(),
    })
    .unwrap()
}

fn all_artifacts(mesh: &Mesh, plan: &Plan) -> Vec<Artifact> {
    let mut all = plan.artifacts.clone();
    all.extend(meshctl::phases::verify::artifacts(mesh).unwrap());
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
        let mut text = meshctl::dry_run::listing(&plan);
        for a in all_artifacts(&mesh, &plan) {
            text.push_str(&format!(
                "\n=== {} (from {}{})\n",
                a.path,
                a.template,
                if a.secret { ", secret" } else { "" }
            ));
            text.push_str(&a.content);
            // A snapshot alone accepts broken YAML: parse in the same test.
            parse_documents(&a.content).unwrap_or_else(|e| panic!("{}: {e}", a.path));
        }
        insta::assert_snapshot!(format!("plan_{n}_clusters"), text);
    }
}

#[test]
fn every_document_validates_against_its_schema() {
    let mesh = Mesh::for_kind(3, "mesh1").unwrap();
    let plan = plan_for(&mesh);
    let artifacts = all_artifacts(&mesh, &plan);
    let Some(upstream) = support::schema::upstream_dir() else {
        eprintln!("skipping CRD schema checks: ../shared/upstream is not beside the project");
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
    let iops = docs_of(&plan.artifacts, "04-istio/control-plane.yaml");
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
    let iops = docs_of(&plan.artifacts, "04-istio/control-plane.yaml");
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
        .find(|a| a.path == "cluster1/04-istio/control-plane.yaml")
        .unwrap()
        .content;
    insta::assert_snapshot!("control_plane_with_mesh_config", text);
    let plain = plan_for(&Mesh::for_kind(2, "mesh1").unwrap());
    for (path, iop) in docs_of(&plain.artifacts, "04-istio/control-plane.yaml") {
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
    for ((_, ns), c) in docs_of(&plan.artifacts, "03-certs/istio-system.yaml")
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
                    Step::RemoteSecret { source } => {
                        assert_ne!(source, &cs.cluster);
                        assert!(pairs.insert((source.clone(), cs.cluster.clone())));
                    }
                    Step::IstioctlInstall { context, file, .. } => {
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
    let artifacts = meshctl::phases::verify::artifacts(&mesh).unwrap();
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
    let single = meshctl::phases::verify::artifacts(&Mesh::for_kind(1, "m").unwrap()).unwrap();
    assert!(
        single.iter().all(|a| !a.path.ends_with("locality-failover.yaml")),
        "no failover target with one region"
    );
}

#[test]
fn existing_clusters_plan_starts_at_certs_and_labels_nodes_only_where_missing() {
    let mesh = Mesh::for_contexts(&["ctx-a".into(), "ctx-b".into()], "mesh1").unwrap();
    let phases = plan::select_phases(mesh.provider, &[], &[]).unwrap();
    let p = plan::build(&PlanInput {
        mesh: &mesh,
        phases,
        pools: vec![],
        cas: fixed_cas(&mesh),
        timeout_secs: 60,
        docker_network: "kind".into(),
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
        .find(|s| matches!(s, Step::LabelNodes { .. }))
        .unwrap();
    assert!(matches!(label, Step::LabelNodes { overwrite: false, .. }));
    let install = &p.phases[1].clusters[1].steps[0];
    assert!(matches!(install, Step::IstioctlInstall { context, .. } if context == "ctx-b"));
}

#[test]
fn schema_checks_reject_what_the_api_server_would() {
    let Some(upstream) = support::schema::upstream_dir() else {
        eprintln!("skipping CRD schema checks: ../shared/upstream is not beside the project");
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
