//! What the fake `istioctl install` (tests/support/fake_tools.rs) writes into a real
//! kube-apiserver (envtest), so the Kubernetes side of every phase after it runs against real
//! servers: the fake's script hands each request to a harness thread, which applies the objects
//! with the admin client (as istioctl's field manager) and lets the script exit as istioctl would.
//!
//! What `istioctl install -f <IstioOperator>` creates, after Istio 1.31's charts
//! (`manifests/charts/base`, `istio-control/istio-discovery`, `gateways/istio-ingress`):
//! * control plane: the Istio CRDs (the real `crd-all.gen.yaml` from ../shared/upstream), the
//!   `istio-reader-service-account` with its `istio-reader-clusterrole-istio-system` role and
//!   binding, the `istio` ConfigMap holding the mesh config (`mesh:` YAML with `defaultConfig.meshId`),
//!   Deployment `istiod` (labels `app=istiod`, `istio=pilot`, env `CLUSTER_ID`), Service `istiod`
//!   (15010, 15012, 443→15017, 15014), and MutatingWebhookConfiguration `istio-sidecar-injector`.
//! * east-west gateway: Deployment and LoadBalancer Service `istio-eastwestgateway` with the
//!   IstioOperator's labels, env and ports.
//!
//! Every object carries the labels istioctl puts on what it installs (owning IstioOperator and
//! component), and `istioctl uninstall -f` prunes by them as Istio 1.31 does ([`prune`]).
//!
//! The data plane itself does not run (no images here): the kubelet stand-in reports the pods
//! running, so the real deployment controller marks the Deployments Available.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::ControlPlane;
use super::webhook::WebhookServer;
use crate::support::fake_tools::InstallHandler;

/// Where an install goes: a control plane's admin kubeconfig and address.
#[derive(Clone)]
pub struct Target {
    kubeconfig: String,
    context: String,
    url: String,
}

impl Target {
    /// `plane`, through its own admin credentials.
    pub fn of(plane: &ControlPlane) -> Target {
        Target {
            kubeconfig: plane.kubeconfig(&plane.name),
            context: plane.name.clone(),
            url: plane.url(),
        }
    }

    /// An admin client (build it inside the runtime that uses it).
    pub async fn client(&self) -> kube::Client {
        super::client_from(&self.kubeconfig, &self.context).await
    }
}

/// The `istioctl install` of [`crate::support::fake_tools::FakeTools`] for real control planes:
/// `--context NAME` installs into the plane mapped to NAME; a file `istioctl-NAME` in the fakes'
/// failure folder makes it fail as istioctl does when it cannot reach the cluster.
pub fn install_handler(contexts: HashMap<String, Target>) -> InstallHandler {
    install_handler_for(std::sync::Arc::new(move |name: &str| contexts.get(name).cloned()))
}

/// Which control plane a context names, when the test asks (clusters may appear later).
pub type Lookup = std::sync::Arc<dyn Fn(&str) -> Option<Target> + Send + Sync>;

/// Like [`install_handler`], finding the control plane of a context through `contexts`.
pub fn install_handler_for(contexts: Lookup) -> InstallHandler {
    // One injector per cluster, started by its first control-plane install and served for as long
    // as the fake tools live (a second install, as `up` makes when the rendering changed, keeps it).
    let injectors: std::sync::Mutex<HashMap<String, WebhookServer>> = Default::default();
    let attaching: std::sync::Mutex<std::collections::HashSet<String>> = Default::default();
    Box::new(move |req: &Path, fail_dir: &Path| {
        let (code, stderr, control_plane) = super::block_on(install(req, &contexts, fail_dir));
        let Some(installed) = control_plane.filter(|_| code == 0) else {
            return (code, stderr);
        };
        let context = installed.context.clone();
        if installed.external_istiod
            && let Some(target) = contexts(&context)
            && attaching
                .lock()
                .unwrap()
                .insert(format!("{context}\n{}", target.kubeconfig))
        {
            let (contexts, id) = (contexts.clone(), installed.cluster_id.clone());
            std::thread::spawn(move || super::block_on(attach_remotes(target, id, contexts)));
        }
        let Some(target) = contexts(&context) else {
            return (1, format!("Error: context \"{context}\" does not exist"));
        };
        // By cluster, not by name: a cluster created again under the same name gets a new istiod,
        // which patches its CA bundle into the new cluster's webhook configuration.
        let key = format!("{context}\n{}", target.kubeconfig);
        let mut running = injectors.lock().unwrap();
        if running.contains_key(&key) {
            return (code, stderr);
        }
        match super::block_on(serve_injector(&target)) {
            Ok(server) => {
                running.insert(key, server);
                (code, stderr)
            }
            Err(e) => (1, format!("Error: istiod's injector: {e}")),
        }
    })
}

/// What istiod's injector does to a pod of a namespace labelled `istio-injection=enabled`, as a
/// JSON patch, in the native-sidecar shape Istio 1.28+ produces on Kubernetes 1.33+ (the injection
/// template's NativeSidecars branch; the fixture in src/verification/exec.rs): `istio-init`, then
/// `istio-proxy` with `restartPolicy: Always`, appended to `initContainers`, and the
/// `sidecar.istio.io/status` annotation.
fn inject(request: &Value) -> Option<Value> {
    let pod = &request["object"];
    if pod["kind"] != "Pod" {
        return None;
    }
    let image = "docker.io/istio/proxyv2:1.31.1";
    let init = json!({"name": "istio-init", "image": image,
        "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020"]});
    let proxy = json!({"name": "istio-proxy", "image": image, "restartPolicy": "Always",
        "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
        "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}]});
    let status = r#"{"initContainers":["istio-init","istio-proxy"],"containers":null,"volumes":["istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"],"imagePullSecrets":null,"revision":"default"}"#;
    let mut patch = Vec::new();
    if pod["metadata"]["annotations"].is_object() {
        patch.push(
            json!({"op": "add", "path": "/metadata/annotations/sidecar.istio.io~1status", "value": status}),
        );
    } else {
        patch.push(json!({"op": "add", "path": "/metadata/annotations", "value": {"sidecar.istio.io/status": status}}));
    }
    if pod["spec"]["initContainers"].is_array() {
        patch.push(json!({"op": "add", "path": "/spec/initContainers/-", "value": init}));
        patch.push(json!({"op": "add", "path": "/spec/initContainers/-", "value": proxy}));
    } else {
        patch.push(json!({"op": "add", "path": "/spec/initContainers", "value": [init, proxy]}));
    }
    Some(Value::Array(patch))
}

/// Serves istiod's injection webhook on istiod's Service cluster IP, and puts its CA into the
/// `istio-sidecar-injector` configuration (istiod patches its own CA bundle there at start).
async fn serve_injector(plane: &Target) -> Result<WebhookServer, String> {
    use k8s_openapi::api::core::v1::Service;
    let client = plane.client().await;
    let svc = kube::Api::<Service>::namespaced(client.clone(), "istio-system")
        .get("istiod")
        .await
        .map_err(|e| e.to_string())?;
    let ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .ok_or("istiod has no cluster IP")?;
    serve_injector_at(plane, &ip).await
}

/// Serves injection at `ip:443` and patches that CA into `plane`'s `istio-sidecar-injector`.
async fn serve_injector_at(plane: &Target, ip: &str) -> Result<WebhookServer, String> {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    let client = plane.client().await;
    let server = WebhookServer::start_with(
        format!("{ip}:443").parse().unwrap(),
        "istiod",
        "istio-system",
        std::sync::Arc::new(inject),
    );
    let hooks = kube::Api::<MutatingWebhookConfiguration>::all(client);
    let bundle = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&server.ca_pem)
    };
    let patch = json!({"webhooks": [{"name": "namespace.sidecar-injector.istio.io", "clientConfig": {"caBundle": bundle}}]});
    hooks
        .patch(
            "istio-sidecar-injector",
            &kube::api::PatchParams::apply("istiod").force(),
            &kube::api::Patch::Apply(&json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": "istio-sidecar-injector"}, "webhooks": patch["webhooks"]})),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(server)
}

/// What the istiod of a primary installed with `externalIstiod: true` does for the remotes it
/// controls (Istio docs, "Attach cluster2 as a remote cluster of cluster1": with API access to the
/// remote, and named in the remote's `topology.istio.io/controlPlaneClusters`, the primary's istiod
/// patches the remote's webhooks and serves its injection through the remote's `istiod` Service,
/// which points at the primary's east-west gateway). Polls what the servers hold, as istiod's
/// informers would see it, until the primary's API server is gone.
async fn attach_remotes(primary: Target, primary_id: String, contexts: Lookup) {
    use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
    let mut served: HashMap<String, WebhookServer> = HashMap::new();
    let mut failures = 0;
    while failures < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let client = primary.client().await;
        let secrets = match kube::Api::<Secret>::namespaced(client, "istio-system")
            .list(&kube::api::ListParams::default().labels("istio/multiCluster=true"))
            .await
        {
            Ok(list) => {
                failures = 0;
                list.items
            }
            Err(_) => {
                failures += 1;
                continue;
            }
        };
        for remote in secrets
            .into_iter()
            .flat_map(|s| s.data.unwrap_or_default().into_keys())
        {
            let Some(target) = contexts(&remote) else { continue };
            let key = format!("{remote}\n{}", target.kubeconfig);
            if served.contains_key(&key) {
                continue;
            }
            let rc = target.client().await;
            let named = kube::Api::<Namespace>::all(rc.clone())
                .get_opt("istio-system")
                .await
                .ok()
                .flatten()
                .and_then(|ns| ns.metadata.annotations)
                .and_then(|a| a.get("topology.istio.io/controlPlaneClusters").cloned())
                .is_some_and(|v| v.split(',').any(|c| c.trim() == primary_id));
            let ip = kube::Api::<Service>::namespaced(rc, "istio-system")
                .get_opt("istiod")
                .await
                .ok()
                .flatten()
                .and_then(|s| s.spec?.cluster_ip);
            if let (true, Some(ip)) = (named, ip)
                && let Ok(server) = serve_injector_at(&target, &ip).await
            {
                served.insert(key, server);
            }
        }
    }
}

async fn apply(plane: &Target, yaml: &str, what: &str) -> Result<(), String> {
    // istioctl's own field manager: applying as `meshctl` would take away the fields meshctl set
    // on shared objects (istio-system's network label), which server-side apply does.
    meshctl::kube::apply::Applier::new(plane.client().await)
        .with_field_manager("istio-operator")
        .apply_yaml(yaml, what)
        .await
        .map(|_| ())
        .map_err(|e| format!("Error: failed to install manifests: {e}"))
}

fn docs(values: &[Value]) -> String {
    values
        .iter()
        .map(|v| serde_json::to_string(v).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// What an IstioOperator installs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Installs {
    /// istiod (and the CRDs).
    ControlPlane,
    /// The `remote` profile (and the CRDs): no istiod.
    Remote,
    /// A gateway.
    Gateway,
}

/// What `istioctl install` creates for `profile: remote` with a `remotePilotAddress`, after
/// Istio 1.31's charts: the reader account remote secrets are made from (`base`,
/// `istio-discovery/templates/reader-*`), no `istio` mesh ConfigMap (the remote profile sets
/// `configMap: false`: `manifests/helm-profiles/remote.yaml`), Service `istiod` without a
/// selector and its EndpointSlice on the remote pilot address, or an ExternalName Service when the
/// address is a hostname (`remote-istiod-service.yaml`, `remote-istiod-endpointslices.yaml`), and
/// the injector webhook calling that Service on
/// `istiodRemote.injectionPath`, with an empty CA bundle until the primary's istiod patches it
/// (`mutatingwebhook.yaml`). No Deployment.
fn remote_objects(iop: &Value) -> Vec<Value> {
    let ns = "istio-system";
    let values = &iop["spec"]["values"];
    let address = values["global"]["remotePilotAddress"].clone();
    let path = values["istiodRemote"]["injectionPath"]
        .as_str()
        .unwrap_or("/inject")
        .to_string();
    let labels = json!({"app.kubernetes.io/name": "istiod"});
    // An IP address goes into an EndpointSlice of a selector-less Service; a hostname makes the
    // Service an ExternalName and no slice is rendered (the charts' regexes for IPv4 and IPv6).
    let text = address.as_str().unwrap_or_default();
    let ipv4 = regex::Regex::new(r"^([0-9]*\.){3}[0-9]*$")
        .unwrap()
        .is_match(text);
    let ipv6 = regex::Regex::new(r"^([0-9a-fA-F]*:)+[0-9a-fA-F]*$")
        .unwrap()
        .is_match(text);
    let mut service_spec = json!({"ports": [{"name": "tcp-istiod", "port": 15012, "protocol": "TCP"},
                                            {"name": "tcp-webhook", "port": 443, "targetPort": 15017, "protocol": "TCP"}]});
    if !ipv4 {
        service_spec["type"] = json!("ExternalName");
        service_spec["externalName"] = address.clone();
    }
    let mut objects = vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})];
    objects.extend(reader_objects(ns));
    objects.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "istiod", "namespace": ns, "labels": labels},
        "spec": service_spec}));
    if ipv4 || ipv6 {
        objects.push(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "istiod", "namespace": ns,
                "labels": {"kubernetes.io/service-name": "istiod", "app.kubernetes.io/name": "istiod"}},
            "addressType": if ipv4 { "IPv4" } else { "IPv6" }, "endpoints": [{"addresses": [address]}],
            "ports": [{"name": "tcp-istiod", "port": 15012, "protocol": "TCP"}, {"name": "tcp-webhook", "port": 15017, "protocol": "TCP"}]}));
    }
    objects.extend([
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "istio-sidecar-injector"},
            "webhooks": [{"name": "namespace.sidecar-injector.istio.io",
                "clientConfig": {"service": {"name": "istiod", "namespace": ns, "path": path, "port": 443}},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                "namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}},
                "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"]}]}),
    ]);
    objects
}

/// The reader account remote secrets are made from, with its cluster role and binding (Istio
/// charts `base` and `istio-discovery/templates/reader-*`): installed by both profiles.
fn reader_objects(ns: &str) -> [Value; 3] {
    [
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "istio-reader-service-account", "namespace": ns}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "istio-reader-clusterrole-istio-system", "labels": {"app": "istio-reader"}},
            "rules": [{"apiGroups": ["", "discovery.k8s.io", "networking.istio.io"], "resources": ["*"], "verbs": ["get", "list", "watch"]},
                      {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "istio-reader-clusterrole-istio-system"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "istio-reader-clusterrole-istio-system"},
            "subjects": [{"kind": "ServiceAccount", "name": "istio-reader-service-account", "namespace": ns}]}),
    ]
}

/// The objects `istioctl install -f` creates for IstioOperator `iop` (CRDs aside), and what it is.
pub fn objects_of(iop: &Value) -> Result<(Vec<Value>, Installs), String> {
    let ns = "istio-system";
    match iop["metadata"]["name"].as_str() {
        Some("control-plane") if iop["spec"]["profile"] == "remote" => {
            Ok((remote_objects(iop), Installs::Remote))
        }
        Some("control-plane") => {
            let global = &iop["spec"]["values"]["global"];
            let cluster_id = global["multiCluster"]["clusterName"].clone();
            let mesh_id = global["meshID"].as_str().unwrap_or_default().to_string();
            let labels = json!({"app": "istiod", "istio": "pilot"});
            let objects = [
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "istiod", "namespace": ns}}),
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio", "namespace": ns},
                    "data": {"mesh": mesh_config(iop, &mesh_id),
                             "meshNetworks": "networks: {}"}}),
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "istiod", "namespace": ns, "labels": labels},
                    "spec": {"selector": {"matchLabels": {"app": "istiod"}}, "template": {"metadata": {"labels": labels},
                        "spec": {"serviceAccountName": "istiod", "containers": [{"name": "discovery", "image": "docker.io/istio/pilot:1.31.1",
                            "env": [{"name": "CLUSTER_ID", "value": cluster_id}]}]}}}}),
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "istiod", "namespace": ns, "labels": labels},
                    "spec": {"selector": {"app": "istiod"}, "ports": [
                        {"name": "grpc-xds", "port": 15010}, {"name": "https-dns", "port": 15012},
                        {"name": "https-webhook", "port": 443, "targetPort": 15017}, {"name": "http-monitoring", "port": 15014}]}}),
                json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                    "metadata": {"name": "istio-sidecar-injector"},
                    "webhooks": [{"name": "namespace.sidecar-injector.istio.io",
                        "clientConfig": {"service": {"name": "istiod", "namespace": ns, "path": "/inject", "port": 443}},
                        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                        "namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}},
                        "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"]}]}),
            ];
            let mut all = objects.to_vec();
            all.extend(reader_objects(ns));
            Ok((all, Installs::ControlPlane))
        }
        Some("eastwest") => {
            let gw = &iop["spec"]["components"]["ingressGateways"][0];
            let name = gw["name"].as_str().unwrap_or("istio-eastwestgateway").to_string();
            let labels = gw["label"].clone();
            let ports: Vec<Value> = gw["k8s"]["service"]["ports"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let objects = [
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns, "labels": labels},
                    "spec": {"selector": {"matchLabels": {"istio": "eastwestgateway"}}, "template": {"metadata": {"labels": labels,
                        "annotations": {"inject.istio.io/templates": "gateway"}},
                        "spec": {"containers": [{"name": "istio-proxy", "image": "auto", "env": gw["k8s"]["env"]}]}}}}),
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "labels": labels},
                    "spec": {"type": "LoadBalancer", "selector": {"istio": "eastwestgateway"}, "ports": ports}}),
            ];
            Ok((objects.to_vec(), Installs::Gateway))
        }
        other => Err(format!(
            "Error: fake istioctl does not know IstioOperator {other:?}"
        )),
    }
}

/// The `mesh` key of ConfigMap `istio`: what Istio's istiod chart renders (`templates/configmap.yaml`,
/// the chart's mesh defaults merged with the IstioOperator's `spec.meshConfig`): `defaultConfig`
/// with the mesh ID, the trust domain, and every `meshConfig` field as given.
fn mesh_config(iop: &Value, mesh_id: &str) -> String {
    let mut mesh = json!({"defaultConfig": {"discoveryAddress": "istiod.istio-system.svc:15012", "meshId": mesh_id},
        "trustDomain": "cluster.local"});
    if let (Some(target), Some(given)) = (mesh.as_object_mut(), iop["spec"]["meshConfig"].as_object()) {
        target.extend(given.clone());
    }
    serde_saphyr::to_string(&mesh).unwrap()
}

/// The component of Istio's install an object belongs to, as istioctl labels it
/// (`operator.istio.io/component`): the reader ServiceAccount comes from the `base` chart
/// (`manifests/charts/base/templates/reader-serviceaccount.yaml`), a gateway's objects from the
/// gateway chart, everything else here from `istio-discovery` (Pilot).
fn component_of(object: &Value, owner: &str) -> &'static str {
    match (object["kind"].as_str(), object["metadata"]["name"].as_str()) {
        _ if owner == "eastwest" => "IngressGateways",
        (Some("ServiceAccount"), Some("istio-reader-service-account")) => "Base",
        _ => "Pilot",
    }
}

/// `object` with the labels istioctl puts on what it installs for IstioOperator `owner`
/// (`install.operator.istio.io/owning-resource` and `operator.istio.io/component`), which is
/// what `istioctl uninstall` later selects by.
pub fn owned(mut object: Value, owner: &str) -> Value {
    if object["kind"] == "Namespace" {
        return object;
    }
    let component = component_of(&object, owner);
    let labels = &mut object["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    labels["install.operator.istio.io/owning-resource"] = json!(owner);
    labels["operator.istio.io/component"] = json!(component);
    object
}

/// `istioctl uninstall -f <IstioOperator>` as Istio 1.31 prunes (`operator/pkg/uninstall/
/// prune.go`, `GetPrunedResources` without `--purge`): the objects of the namespaced kinds it
/// prunes (`NamespacedResources`) and of its cluster-scoped control-plane kinds
/// (`ClusterCPResources`) labelled as owned by that IstioOperator, whose component is one it
/// prunes (Pilot, IngressGateways, EgressGateways, Cni, IstiodRemote, Ztunnel): never Base (the
/// reader ServiceAccount, CRDs), never the namespace, never a kind outside those lists (an
/// EndpointSlice stays).
pub async fn prune(client: &kube::Client, owner: &str) -> Result<(), String> {
    let client = client.clone();
    let kinds = [
        ("apps", "v1", "Deployment"),
        ("apps", "v1", "DaemonSet"),
        ("", "v1", "Service"),
        ("", "v1", "ConfigMap"),
        ("", "v1", "Pod"),
        ("", "v1", "Secret"),
        ("", "v1", "ServiceAccount"),
        ("rbac.authorization.k8s.io", "v1", "RoleBinding"),
        ("rbac.authorization.k8s.io", "v1", "Role"),
        ("policy", "v1", "PodDisruptionBudget"),
        ("autoscaling", "v2", "HorizontalPodAutoscaler"),
        ("networking.istio.io", "v1alpha3", "EnvoyFilter"),
        (
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
        ),
        (
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
        ),
        ("rbac.authorization.k8s.io", "v1", "ClusterRole"),
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding"),
    ];
    let selector = format!(
        "install.operator.istio.io/owning-resource={owner},operator.istio.io/component in (Pilot,IngressGateways,EgressGateways,Cni,IstiodRemote,Ztunnel)"
    );
    for (group, version, kind) in kinds {
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let Ok((resource, _)) = kube::discovery::pinned_kind(&client, &gvk).await else {
            continue;
        };
        let api: kube::api::Api<kube::api::DynamicObject> =
            kube::api::Api::all_with(client.clone(), &resource);
        let listed = api
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .map_err(|e| format!("Error: failed to list {kind}: {e}"))?;
        for object in listed.items {
            let name = object.metadata.name.clone().unwrap_or_default();
            let scoped: kube::api::Api<kube::api::DynamicObject> = match &object.metadata.namespace {
                Some(ns) => kube::api::Api::namespaced_with(client.clone(), ns, &resource),
                None => kube::api::Api::all_with(client.clone(), &resource),
            };
            match scoped.delete(&name, &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(format!("Error: failed to delete {kind} {name}: {e}")),
            }
        }
    }
    Ok(())
}

/// A control plane an install put in place (its injector then needs serving).
struct ControlPlaneInstalled {
    context: String,
    /// `values.global.externalIstiod`: it also takes over the remotes that name it.
    external_istiod: bool,
    cluster_id: String,
}

/// Handles one `istioctl install` request: exit code, stderr, and the control plane it installed.
async fn install(
    req: &Path,
    contexts: &Lookup,
    fail_dir: &Path,
) -> (i32, String, Option<ControlPlaneInstalled>) {
    let mut control_plane = None;
    let (code, stderr) = install_objects(req, contexts, fail_dir, &mut control_plane).await;
    (code, stderr, control_plane)
}

async fn install_objects(
    req: &Path,
    contexts: &Lookup,
    fail_dir: &Path,
    control_plane: &mut Option<ControlPlaneInstalled>,
) -> (i32, String) {
    let text = std::fs::read_to_string(req).unwrap();
    let mut lines = text.lines();
    let cwd = PathBuf::from(lines.next().unwrap_or_default());
    let args: Vec<&str> = lines.collect();
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| *a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|s| s.to_string())
    };
    let (Some(context), Some(file)) = (value_of("--context"), value_of("-f")) else {
        return (1, "Error: fake istioctl needs --context and -f".into());
    };
    if !args.contains(&"-y") {
        return (
            1,
            "Proceed? (y/N) Error: no answer (stdin is not a terminal)".into(),
        );
    }
    let Some(plane) = contexts(&context) else {
        return (1, format!("Error: context \"{context}\" does not exist"));
    };
    if fail_dir.join(format!("istioctl-{context}")).exists() {
        return (
            1,
            format!(
                "Error: failed to install manifests: Get \"{}/version\": dial tcp: connect: connection refused",
                plane.url
            ),
        );
    }
    let Ok(iop_text) = std::fs::read_to_string(cwd.join(&file)) else {
        return (1, format!("Error: open {file}: no such file or directory"));
    };
    let iop: Value = serde_saphyr::from_str(&iop_text).unwrap();
    let (objects, installs) = match objects_of(&iop) {
        Ok(found) => found,
        Err(e) => return (1, e),
    };
    let owner = iop["metadata"]["name"].as_str().unwrap_or_default().to_string();
    if args.first() == Some(&"uninstall") {
        return match prune(&plane.client().await, &owner).await {
            Ok(()) => (0, "✔ Uninstall complete".into()),
            Err(e) => (1, e),
        };
    }
    let objects: Vec<Value> = objects.into_iter().map(|o| owned(o, &owner)).collect();
    let result = async {
        if installs != Installs::Gateway
            && let Some(dir) = crate::support::schema::upstream_dir()
        {
            let crds = std::fs::read_to_string(dir.join("istio/release-1.31/crds/crd-all.gen.yaml")).unwrap();
            apply(&plane, &crds, "crd-all.gen.yaml").await?;
        }
        let what = match installs {
            Installs::ControlPlane => "control-plane",
            Installs::Remote => "remote",
            Installs::Gateway => "eastwest",
        };
        apply(&plane, &docs(&objects), what).await?;
        if installs == Installs::ControlPlane {
            let global = &iop["spec"]["values"]["global"];
            *control_plane = Some(ControlPlaneInstalled {
                context: context.clone(),
                external_istiod: global["externalIstiod"] == true,
                cluster_id: global["multiCluster"]["clusterName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        Ok::<(), String>(())
    }
    .await;
    match result {
        Ok(()) => (0, "✔ Installation complete".into()),
        Err(e) => (1, e),
    }
}
