//! istiod's gateway deployment controller for the ambient east-west class, over an in-process API
//! server: what istiod 1.31 makes of a Gateway API `Gateway` of class `istio-east-west`, refusals
//! included. Each piece names the upstream file it follows (istio/istio at release-1.31):
//!
//! - The class exists only when istiod runs with `PILOT_ENABLE_AMBIENT` and
//!   `AMBIENT_ENABLE_MULTI_NETWORK` (`pilot/pkg/config/kube/gatewaycommon/classinfo.go`,
//!   `GetBuiltinGatewayClasses`; `pilot/pkg/features/ambient.go`: the multi-network flag is
//!   ignored without ambient): without them a Gateway of the class is left alone, no status.
//! - Listeners: on 15008 only `HBONE` with a `tls` block in mode `Terminate`, elsewhere only TLS
//!   `Passthrough` (`pilot/pkg/config/kube/gateway/conversion.go`,
//!   `unexpectedEastWestWaypointListener`); another shape makes that listener `Accepted=False`
//!   (`UnsupportedProtocol`), and the Gateway's `Accepted` says `ListenersNotValid` when none is
//!   valid. The Deployment and Service are made either way (`deploymentcontroller.go`,
//!   `configureIstioGateway`, does not look at listeners).
//! - Deployment and Service named as the Gateway (`classinfo.go`: `DisableNameSuffix`;
//!   `gatewaycommon/gateway_utils.go`, `GetDefaultName`), labelled with
//!   `gateway.networking.k8s.io/gateway-name` and `-class-name` and the infrastructure labels:
//!   `spec.infrastructure.labels` when set, else the Gateway's own (`deploymentcontroller.go`,
//!   `extractInfrastructureMetadata`); the Deployment also `gateway.istio.io/managed:
//!   istio.io-eastwest-controller` (`files/waypoint.yaml`). The Service is a LoadBalancer (`DefaultServiceType`) with
//!   `status-port` 15021 and one port per listener (`extractServicePorts`); the address is
//!   MetalLB's part, played here.
//! - Status: the Service's address in `status.addresses` and `Programmed=True` once it has one,
//!   whether or not a gateway pod is ready (`conversion.go` `reportGatewayStatus`,
//!   `gatewaycommon/context.go` `ResolveGatewayInstances`, `gatewaycommon/conversion.go`
//!   `SetProgrammedCondition` looks at the Service alone). The stand-in's Deployment is Available
//!   at once, as its pods would be on a kubelet that starts them.
//!
//! Not played: the pods and the ServiceAccount (nothing meshctl reads), the HPA/PDB overlays, the
//! ClusterIP fallback before a LoadBalancer address exists (a wait for `Programmed` never sees it).

use serde_json::{Value, json};

use super::memory_apiserver::MemoryApiServer;

/// The ambient east-west class (`pkg/config/constants/constants.go`, `EastWestGatewayClassName`).
pub const CLASS: &str = "istio-east-west";

/// The controller label value (`classinfo.go`, `ControllerLabel`).
const CONTROLLER_LABEL: &str = "istio.io-eastwest-controller";

/// Runs the controller over `server` until the runtime ends: whenever something changes, every
/// Gateway of the class is reconciled.
pub fn run(server: MemoryApiServer) {
    tokio::spawn(async move {
        loop {
            let changed = server.changed();
            reconcile(&server);
            changed.await;
        }
    });
}

/// Whether istiod in `istio-system` registers the class: its Deployment's env turns on ambient and
/// multi-network.
fn class_registered(server: &MemoryApiServer) -> bool {
    server
        .objects("apps/v1", "deployments", "istio-system")
        .iter()
        .filter(|d| d["metadata"]["labels"]["app"] == "istiod")
        .any(|d| {
            let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
            let on = |name: &str| {
                env.as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e["name"] == name && e["value"] == "true")
            };
            on("PILOT_ENABLE_AMBIENT") && on("AMBIENT_ENABLE_MULTI_NETWORK")
        })
}

/// Why a listener is not one the class takes, if it is not.
fn unexpected_listener(listener: &Value) -> Option<String> {
    let port = listener["port"].as_i64().unwrap_or_default();
    let protocol = listener["protocol"].as_str().unwrap_or_default();
    // No `tls` block is refused on 15008; a block without a mode is Terminate (the CRD default).
    let tls = listener["tls"].is_object();
    let mode = listener["tls"]["mode"].as_str().unwrap_or("Terminate");
    let fine = if port == 15008 {
        protocol == "HBONE" && tls && mode == "Terminate"
    } else {
        protocol == "TLS" && mode == "Passthrough"
    };
    (!fine).then(|| {
        format!("listener on port {port} ({protocol}, {mode}) is not supported by the east-west class")
    })
}

fn reconcile(server: &MemoryApiServer) {
    if server
        .object(
            "apiextensions.k8s.io/v1",
            "customresourcedefinitions",
            "",
            "gateways.gateway.networking.k8s.io",
        )
        .is_none()
        || !class_registered(server)
    {
        return;
    }
    for gateway in server.objects_of("gateway.networking.k8s.io/v1", "gateways") {
        if gateway["spec"]["gatewayClassName"] != CLASS {
            continue;
        }
        let listeners = gateway["spec"]["listeners"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let refused: Vec<Option<String>> = listeners.iter().map(unexpected_listener).collect();
        let address = deploy(server, &gateway, &listeners);
        let listener_status: Vec<Value> = listeners
            .iter()
            .zip(&refused)
            .map(|(l, why)| match why {
                Some(why) => json!({"name": l["name"], "conditions": [
                    {"type": "Accepted", "status": "False", "reason": "UnsupportedProtocol", "message": why}]}),
                None => json!({"name": l["name"], "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}]}),
            })
            .collect();
        let accepted = if refused.iter().all(Option::is_some) {
            json!({"type": "Accepted", "status": "False", "reason": "ListenersNotValid"})
        } else {
            json!({"type": "Accepted", "status": "True", "reason": "Accepted"})
        };
        let status = json!({"addresses": [{"type": "IPAddress", "value": address}], "conditions": [accepted,
            {"type": "Programmed", "status": "True", "reason": "Programmed",
             "message": "Resource programmed, assigned to service(s)"}], "listeners": listener_status});
        set_status(server, gateway, status);
    }
}

/// The Deployment and LoadBalancer Service istiod makes for `gateway`; the Service's address.
fn deploy(server: &MemoryApiServer, gateway: &Value, listeners: &[Value]) -> String {
    let name = gateway["metadata"]["name"].as_str().unwrap_or_default();
    let ns = gateway["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut labels = match gateway["spec"]["infrastructure"]["labels"].as_object() {
        Some(infrastructure) => Value::Object(infrastructure.clone()),
        None => gateway["metadata"]["labels"].clone(),
    };
    if !labels.is_object() {
        labels = json!({});
    }
    labels["gateway.networking.k8s.io/gateway-name"] = json!(name);
    labels["gateway.networking.k8s.io/gateway-class-name"] = json!(CLASS);
    let mut deployment_labels = labels.clone();
    deployment_labels["gateway.istio.io/managed"] = json!(CONTROLLER_LABEL);
    let owner = json!([{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "name": name,
        "uid": gateway["metadata"]["uid"].clone()}]);
    if server.object("apps/v1", "deployments", ns, name).is_none() {
        server.put(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": deployment_labels, "ownerReferences": owner},
            "spec": {"selector": {"matchLabels": {"gateway.networking.k8s.io/gateway-name": name}}},
            "status": {"replicas": 1, "availableReplicas": 1, "conditions": [{"type": "Available", "status": "True"}]}}));
    }
    if let Some(address) = server.object("v1", "services", ns, name).and_then(|s| {
        s["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(String::from)
    }) {
        return address;
    }
    let mut ports = vec![json!({"name": "status-port", "port": 15021})];
    ports.extend(
        listeners
            .iter()
            .map(|l| json!({"name": l["name"], "port": l["port"], "appProtocol": "hbone"})),
    );
    let address = format!("172.18.255.{}", 100 + server.objects("v1", "services", ns).len());
    server.put(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "ownerReferences": owner},
        "spec": {"type": "LoadBalancer", "ports": ports,
                 "selector": {"gateway.networking.k8s.io/gateway-name": name}},
        "status": {"loadBalancer": {"ingress": [{"ip": address}]}}}));
    address
}

/// Writes `status` on `gateway` when it differs (a controller does not write what did not change).
fn set_status(server: &MemoryApiServer, mut gateway: Value, status: Value) {
    if gateway["status"] == status {
        return;
    }
    gateway["status"] = status;
    server.put(gateway);
}

/// A stand-in for the Gateway API CRDs a test applies instead of downloading them: the `Gateway`
/// kind of `gateway.networking.k8s.io/v1`, namespaced, its schema left open (the in-process server
/// validates no schema). Written here, not copied.
pub const GATEWAY_API_CRDS: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gateways.gateway.networking.k8s.io
spec:
  group: gateway.networking.k8s.io
  scope: Namespaced
  names: {kind: Gateway, listKind: GatewayList, plural: gateways, singular: gateway}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
";
