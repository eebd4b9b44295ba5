//! istioctl of one Istio release, as a [`ToolRunner`] over in-process API servers, for the
//! revision-based canary upgrade and the external control plane: what `install`, `tag set` and
//! `uninstall` do to a cluster at Istio 1.31, refusals included. Each piece names the upstream file it copies
//! (istio/istio at 1.31):
//!
//! - `install -f <IstioOperator>`: the objects of the charts meshctl reads, labelled as the charts
//!   label them. A control plane (`istio-discovery`: `deployment.yaml`, `service.yaml`,
//!   `mutatingwebhook.yaml`): Deployment and Service `istiod[-<rev>]`, one running pod of it (the
//!   ReplicaSet's), injector `istio-sidecar-injector[-<rev>]` with its CA bundle (istiod patches it
//!   in once it runs: `pilot/pkg/webhooks/webhookpatch.go`; on a remote, its primary's istiod), and
//!   the base component's Gateway and VirtualService CRDs (read from ../shared/upstream). The
//!   `remote` profile (`remote-istiod-service.yaml`): Service `istiod[-<rev>]` and the injector
//!   calling it on the remote's `injectionPath`, no istiod. An
//!   east-west gateway (`gateways/istio-ingress`): Deployment `istio-eastwestgateway` labelled with
//!   the revision that injects it, and its LoadBalancer Service with an address (MetalLB's part).
//!   Then, after every install (a gateway's too), the default tag, as `operator/pkg/webhook/
//!   webhook.go` `WebhooksToDeploy` decides: made (pointing at this revision) when no `default`
//!   tag exists yet or the install is unrevisioned, silently skipped when it cannot be made.
//! - `tag set <tag> --revision <rev>` (`istioctl/pkg/tag/generate.go` `Generate`): refused
//!   without exactly one injector of the revision ("cannot modify tag: cannot find
//!   MutatingWebhookConfiguration or Service with revision"), and without `--overwrite` when the
//!   tag exists ("already exists, and --overwrite is false"); else webhook
//!   `istio-revision-tag-<tag>` (labels `istio.io/tag`, `istio.io/rev`) calling that injector's
//!   service, Service `istiod-revision-tag-<tag>`, and for `default` the unrevisioned injector
//!   made ineffectual, never deleted (`util.go` `DeactivateIstioInjectionWebhook`). (The
//!   `istiod-default-validator` it also writes is left out: the in-process server serves no
//!   ValidatingWebhookConfiguration.)
//! - `uninstall --revision <rev>` (`operator/cmd/mesh/uninstall.go`, `operator/pkg/uninstall/
//!   prune.go` `GetPrunedResources`): refused when no object carries the revision ("could not find
//!   target revision"); else deletes the Deployments, Services and webhooks labelled
//!   `istio.io/rev=<rev>` whose `operator.istio.io/component` is Pilot or a gateway, and nothing
//!   else (the Deployment's pods go with it, as the garbage collector takes them).
//!
//! - The base component's CRDs wherever the profile enables it (default and remote; not
//!   `empty`, `manifests/profiles/`).
//! - Namespaces and the external control plane model: Pilot's objects go to
//!   `values.global.istioNamespace`; outside istio-system the injector (and a tag's webhook) is
//!   named with the namespace as a suffix (`mutatingwebhook.yaml`, `revision-tags-mwc.yaml`); a
//!   remote with `configCluster` also gets Service account `istiod` (`serviceaccount.yaml`), and
//!   `pilot.configMap` the `istio` ConfigMap (`configmap.yaml`); `profile: empty` with Pilot
//!   enabled installs istiod alone, its `CLUSTER_ID` taken from the IstioOperator's `k8s.env`
//!   when set; `operatorManageWebhooks` renders no injector and makes no default tag
//!   (`webhook.go` `detectIfTagWebhookIsNeeded`); the tag goes to the IstioOperator's
//!   `metadata.namespace` (istio-system when unset).
//! - Before every install, `install.go` `installSystemNamespace`: the IstioOperator's
//!   `metadata.namespace` (istio-system when unset) made when missing.
//! - After every install, `install.go` `prune`: the objects labelled with this IstioOperator's
//!   name, namespace and revision and this istioctl's release (`getOwnerLabels`:
//!   `operator.istio.io/version`) that this install did not write are deleted (another
//!   IstioOperator's objects stay, and so do those an istioctl of another release installed).
//!
//! Not played: `install`'s webhook overlap analysis (`webhook.go` `CheckWebhooks`; the installs
//! meshctl makes never overlap: a revision's injector selects its own label), and `uninstall`'s
//! confirmation about proxies still on the revision (`preCheckWarnings`; meshctl passes `-y` and
//! refuses by itself while pods run on it), the reader account and role the remote profile makes
//! (meshctl makes its own where they are missing), and the API server refusing objects in a
//! namespace that does not exist (the in-process server does not check it).

use std::sync::Mutex;

use meshctl::tools::{Output, Ran, RunOptions, ToolError, ToolRunner};
use serde_json::{Value, json};

use super::memory_apiserver::MemoryApiServer;

/// The gateway components `istioctl uninstall --revision` prunes besides Pilot (prune.go).
const PRUNED_COMPONENTS: [&str; 5] = ["Pilot", "IngressGateways", "EgressGateways", "Cni", "Ztunnel"];

pub struct PlayedIstioctl {
    /// The release it is (`istioctl version`), and the tag of the images it installs.
    pub version: String,
    servers: Vec<(String, MemoryApiServer)>,
    /// A context where the control plane's install never gets ready.
    failing_install: Option<String>,
    /// A command (its arguments) that never returns: the run is killed there.
    hanging_on: Option<String>,
    /// Notified when the hanging command was reached.
    pub reached: std::sync::Arc<tokio::sync::Notify>,
    calls: Mutex<Vec<String>>,
}

impl PlayedIstioctl {
    pub fn new(version: &str, servers: &[(&str, &MemoryApiServer)]) -> PlayedIstioctl {
        PlayedIstioctl {
            version: version.into(),
            servers: servers
                .iter()
                .map(|(c, s)| (c.to_string(), (*s).clone()))
                .collect(),
            failing_install: None,
            hanging_on: None,
            reached: Default::default(),
            calls: Mutex::default(),
        }
    }

    /// In `context`, a control plane's `install` applies its objects, but its istiod never gets
    /// ready: istioctl's readiness wait runs out (`operator/pkg/install/wait.go`) and it exits 1
    /// naming the Deployment.
    pub fn failing_install_in(mut self, context: &str) -> PlayedIstioctl {
        self.failing_install = Some(context.into());
        self
    }

    /// `istioctl <command>` (any command whose arguments contain it) never returns.
    pub fn hanging_on(mut self, command: &str) -> PlayedIstioctl {
        self.hanging_on = Some(command.into());
        self
    }

    /// Every command run, as `istioctl <args>`.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn server_of(&self, args: &[String]) -> Result<&MemoryApiServer, String> {
        let context = args
            .iter()
            .position(|a| a == "--context")
            .map(|i| args[i + 1].as_str())
            .ok_or("no --context")?;
        self.servers
            .iter()
            .find(|(c, _)| c == context)
            .map(|(_, s)| s)
            .ok_or(format!("context {context} not found"))
    }

    fn answer(&self, args: &[String], options: &RunOptions) -> Result<String, String> {
        let flag = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        match args.first().map(String::as_str) {
            Some("version") => Ok(format!("client version: {}\n", self.version)),
            Some("install") => {
                let file = flag("-f").ok_or("install: no -f")?;
                let path = options.cwd.clone().unwrap_or_default().join(&file);
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let operator: Value = serde_saphyr::from_str(&text).map_err(|e| e.to_string())?;
                let server = self.server_of(args)?;
                install(server, &operator, &self.version)?;
                let context = flag("--context").unwrap_or_default();
                let control_plane =
                    components(&operator["spec"]).0 && operator["spec"]["profile"] != "remote";
                if control_plane && self.failing_install.as_deref() == Some(context.as_str()) {
                    return Err(never_ready(
                        server,
                        operator["spec"]["revision"].as_str().unwrap_or_default(),
                    ));
                }
                Ok(String::new())
            }
            Some("tag") if args.get(1).map(String::as_str) == Some("set") => {
                let tag = args.get(2).ok_or("tag set: no tag")?;
                let revision = flag("--revision").ok_or("tag set: no --revision")?;
                let overwrite = args.iter().any(|a| a == "--overwrite");
                set_tag(self.server_of(args)?, tag, &revision, overwrite)
            }
            Some("uninstall") => match (flag("--revision"), flag("-f")) {
                (Some(revision), _) => uninstall_revision(self.server_of(args)?, &revision),
                // `uninstall -f`: what the IstioOperator of that name installed
                // (`uninstall.go`: its `metadata.name` selects the owner label).
                (None, Some(file)) => {
                    let path = options.cwd.clone().unwrap_or_default().join(&file);
                    let text =
                        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                    let operator: Value = serde_saphyr::from_str(&text).map_err(|e| e.to_string())?;
                    let owner = operator["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    prune(self.server_of(args)?, |o| {
                        o["metadata"]["labels"]["install.operator.istio.io/owning-resource"] == owner.as_str()
                    });
                    Ok(String::new())
                }
                _ => Err("uninstall: --revision or -f".into()),
            },
            _ => Err(format!("not played: istioctl {}", args.join(" "))),
        }
    }
}

impl ToolRunner for PlayedIstioctl {
    fn run<'a>(&'a self, program: &'a str, args: &'a [String], options: &'a RunOptions) -> Ran<'a> {
        Box::pin(async move {
            let line = format!("{program} {}", args.join(" "));
            self.calls.lock().unwrap().push(line.clone());
            if self
                .hanging_on
                .as_deref()
                .is_some_and(|h| args.join(" ").contains(h))
            {
                self.reached.notify_one();
                std::future::pending::<()>().await;
            }
            if program != "istioctl" {
                return Err(ToolError::Other {
                    command: line,
                    reason: "not played".into(),
                });
            }
            match self.answer(args, options) {
                Ok(stdout) => Ok(Output {
                    stdout,
                    stderr: String::new(),
                }),
                Err(message) => Err(ToolError::Failed {
                    command: line,
                    code: 1,
                    stderr_tail: format!("Error: {message}"),
                }),
            }
        })
    }
}

fn suffixed(name: &str, revision: &str) -> String {
    if revision.is_empty() {
        name.into()
    } else {
        format!("{name}-{revision}")
    }
}

/// What istioctl labels every object of an install with (`operator/pkg/install/install.go`,
/// `getOwnerLabels`): the IstioOperator's name (and namespace, when it has one), the revision,
/// the component.
fn labels(owner: &Owner, component: &str, extra: Value) -> Value {
    let mut labels = json!({
        "istio.io/rev": owner.rev(),
        "operator.istio.io/component": component,
        "install.operator.istio.io/owning-resource": owner.name,
        "operator.istio.io/version": owner.version,
    });
    if !owner.namespace.is_empty() {
        labels["install.operator.istio.io/owning-resource-namespace"] = json!(owner.namespace);
    }
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        labels[k] = v;
    }
    labels
}

/// The IstioOperator an install comes from, as its objects are labelled with it.
struct Owner {
    name: String,
    /// `metadata.namespace`, empty when not set.
    namespace: String,
    /// `spec.revision`, empty for the default revision.
    revision: String,
    /// The istioctl release that installs (`operator.istio.io/version`).
    version: String,
}

impl Owner {
    fn of(operator: &Value) -> Owner {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Owner {
            name: operator["metadata"]["name"].as_str().unwrap_or("unknown").into(),
            namespace: text(&operator["metadata"]["namespace"]),
            revision: text(&operator["spec"]["revision"]),
            version: String::new(),
        }
    }

    fn rev(&self) -> &str {
        if self.revision.is_empty() {
            "default"
        } else {
            &self.revision
        }
    }
}

/// The objects one install wrote, by kind, namespace and name: what its prune keeps.
struct Writes<'a> {
    server: &'a MemoryApiServer,
    keys: Vec<(String, String, String)>,
}

impl Writes<'_> {
    fn put(&mut self, object: Value) {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        self.keys.push((
            text(&object["kind"]),
            text(&object["metadata"]["namespace"]),
            text(&object["metadata"]["name"]),
        ));
        self.server.put(object);
    }

    fn wrote(&self, object: &Value) -> bool {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        self.keys.contains(&(
            text(&object["kind"]),
            text(&object["metadata"]["namespace"]),
            text(&object["metadata"]["name"]),
        ))
    }
}

/// A name the chart suffixes with its namespace outside istio-system (`mutatingwebhook.yaml`,
/// `revision-tags-mwc.yaml`).
fn in_namespace(name: String, namespace: &str) -> String {
    if namespace == "istio-system" {
        name
    } else {
        format!("{name}-{namespace}")
    }
}

fn install(server: &MemoryApiServer, operator: &Value, version: &str) -> Result<(), String> {
    let spec = &operator["spec"];
    let owner = Owner {
        version: version.to_string(),
        ..Owner::of(operator)
    };
    let mut writes = Writes {
        server,
        keys: Vec::new(),
    };
    // `install.go` `installSystemNamespace`: the IstioOperator's namespace (istio-system when it
    // names none) first, when it is missing, labelled with the network.
    let system = owner.namespace.as_str();
    let system = if system.is_empty() { "istio-system" } else { system };
    if server.object("v1", "namespaces", "", system).is_none() {
        let network = spec["values"]["global"]["network"].as_str();
        let labels = network.map_or(json!({}), |n| json!({"topology.istio.io/network": n}));
        server.put(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": system, "labels": labels}}),
        );
    }
    let ns = spec["values"]["global"]["istioNamespace"]
        .as_str()
        .unwrap_or("istio-system");
    let (pilot, gateways) = components(spec);
    if pilot {
        install_control_plane(&mut writes, &owner, spec, version)?;
    }
    for gateway in gateways.iter().filter(|g| g["enabled"] == true) {
        install_gateway(&mut writes, (&owner, ns), gateway);
    }
    for (component, daemonset) in node_agents(spec) {
        install_node_agent(&mut writes, (&owner, ns), component, daemonset);
    }
    // `install.go` `prune`: what this IstioOperator (name, namespace, revision) installed before with
    // this istioctl release and did not install now goes; another IstioOperator's objects stay.
    let carries =
        |o: &Value, key: &str, want: &str| o["metadata"]["labels"][key].as_str().unwrap_or_default() == want;
    prune(server, |o| {
        carries(o, "install.operator.istio.io/owning-resource", &owner.name)
            && carries(
                o,
                "install.operator.istio.io/owning-resource-namespace",
                &owner.namespace,
            )
            && carries(o, "istio.io/rev", owner.rev())
            && carries(o, "operator.istio.io/version", &owner.version)
            && !writes.wrote(o)
    });
    // `webhook.go` `detectIfTagWebhookIsNeeded`: never when the operator manages webhooks.
    if spec["values"]["global"]["operatorManageWebhooks"] != true {
        let tag_namespace = if owner.namespace.is_empty() {
            "istio-system"
        } else {
            &owner.namespace
        };
        deploy_default_tag(server, &owner.revision, tag_namespace);
    }
    Ok(())
}

/// Whether Pilot is on, and the ingress gateways, as the profile sets them under what the
/// IstioOperator says (`operator/pkg/render/manifest.go` `MergeInputs`: the profile, then the
/// user's file merged key by key with `values.Map.MergeFrom`, which replaces a list whole, so an
/// `ingressGateways` list of the file drops the profile's). `manifests/profiles/`: `default`
/// (no profile named) turns on Pilot and `istio-ingressgateway`; `remote` turns on Pilot (the
/// remote chart) and no gateway; `empty` turns everything off.
fn components(spec: &Value) -> (bool, Vec<Value>) {
    let profile = spec["profile"].as_str().unwrap_or("default");
    let (pilot_on, profile_gateways) = match profile {
        "empty" => (false, json!([{"name": "istio-ingressgateway", "enabled": false}])),
        // `ambient.yaml`: the default profile with the ingress gateway off, and cni and ztunnel on
        // (see [`node_agents`]).
        "remote" | "ambient" => (true, json!([{"name": "istio-ingressgateway", "enabled": false}])),
        _ => (true, json!([{"name": "istio-ingressgateway", "enabled": true}])),
    };
    let pilot = spec["components"]["pilot"]["enabled"]
        .as_bool()
        .unwrap_or(pilot_on);
    let gateways = match &spec["components"]["ingressGateways"] {
        Value::Array(listed) => listed.clone(),
        _ => profile_gateways.as_array().cloned().unwrap_or_default(),
    };
    (pilot, gateways)
}

/// The node agents the profile turns on, as `(component, DaemonSet)`: `manifests/profiles/
/// ambient.yaml` enables `cni` (chart `istio-cni`, DaemonSet `istio-cni-node`) and `ztunnel`
/// (DaemonSet named by `ztunnel.resourceName`, `ztunnel` in `profiles/default.yaml`); an
/// IstioOperator may turn either on or off itself.
fn node_agents(spec: &Value) -> Vec<(&'static str, &'static str)> {
    let ambient = spec["profile"] == "ambient";
    let on = |component: &str| {
        spec["components"][component]["enabled"]
            .as_bool()
            .unwrap_or(ambient)
    };
    [
        ("Cni", "cni", "istio-cni-node"),
        ("Ztunnel", "ztunnel", "ztunnel"),
    ]
    .into_iter()
    .filter(|(_, key, _)| on(key))
    .map(|(component, _, daemonset)| (component, daemonset))
    .collect()
}

/// A node agent's DaemonSet, a ready pod on each of the cluster's nodes (the stand-in runs one
/// node): pods labelled as the charts select them (`ztunnel/templates/daemonset.yaml`: `app:
/// ztunnel`; `istio-cni/templates/daemonset.yaml`: `k8s-app: istio-cni-node`).
fn install_node_agent(writes: &mut Writes<'_>, (owner, ns): (&Owner, &str), component: &str, name: &str) {
    let selector = if name == "ztunnel" {
        json!({"app": "ztunnel"})
    } else {
        json!({"k8s-app": name})
    };
    writes.server.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{name}-7xk2p"), "namespace": ns, "labels": selector.clone()},
        "spec": {"nodeName": "control-plane", "containers": [{"name": name, "image": format!("docker.io/istio/{name}:{}", owner.version)}]},
        "status": {"phase": "Running"}}));
    writes.put(json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": ns, "labels": labels(owner, component, selector.clone())},
        "spec": {"selector": {"matchLabels": selector}, "template": {"metadata": {"labels": selector},
                 "spec": {"containers": [{"name": name, "image": format!("docker.io/istio/{name}:{}", owner.version)}]}}},
        "status": {"desiredNumberScheduled": 1, "currentNumberScheduled": 1, "numberReady": 1,
                   "numberAvailable": 1, "numberMisscheduled": 0, "updatedNumberScheduled": 1}}));
}

/// Pilot's objects of the `istio-discovery` chart, in `values.global.istioNamespace`.
fn install_control_plane(
    writes: &mut Writes<'_>,
    owner: &Owner,
    spec: &Value,
    version: &str,
) -> Result<(), String> {
    let values = &spec["values"];
    let ns = values["global"]["istioNamespace"]
        .as_str()
        .unwrap_or("istio-system");
    let remote = spec["profile"] == "remote";
    let config_cluster = values["global"]["configCluster"] == true;
    let istiod = suffixed("istiod", &owner.revision);
    let pilot = |extra: Value| labels(owner, "Pilot", extra);
    // `service.yaml` where istiod runs; `remote-istiod-service.yaml` on a remote with a
    // `remotePilotAddress`.
    if !remote || values["global"]["remotePilotAddress"].is_string() {
        writes.put(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": istiod, "namespace": ns,
                         "labels": pilot(json!({"app": "istiod", "app.kubernetes.io/name": "istiod"}))},
            "spec": {"ports": [{"name": "https-dns", "port": 15012}, {"name": "https-webhook", "port": 443}]}}));
    }
    // `serviceaccount.yaml`: where istiod runs, and in a config cluster (the account an external
    // istiod runs as there).
    if !remote || config_cluster {
        writes.put(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": istiod, "namespace": ns, "labels": pilot(json!({"app": "istiod"}))}}));
    }
    // `configmap.yaml`, when `pilot.configMap` (the remote profile turns it off).
    if values["pilot"]["configMap"].as_bool().unwrap_or(!remote) {
        writes.put(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": suffixed("istio", &owner.revision), "namespace": ns,
                         "labels": pilot(json!({"app": "istiod"}))},
            "data": {"mesh": serde_json::to_string(&spec["meshConfig"]).unwrap_or_default()}}));
    }
    // The base component (the CRDs): on in the default and remote profiles, off in `empty`
    // unless the IstioOperator turns it on (`manifests/profiles/*.yaml`).
    if spec["profile"] != "empty" || spec["components"]["base"]["enabled"] == true {
        install_crds(writes.server)?;
    }
    if !remote {
        install_istiod(writes, owner, spec, ns, version);
    }
    // The injector calls the revision's istiod Service: on a remote, the one backed by the
    // primary's gateway, on the path naming the remote's cluster and network
    // (`istiodRemote.injectionPath`; `mutatingwebhook.yaml` "core"). None when the operator
    // manages webhooks (an external istiod: they live in its config cluster).
    if values["global"]["operatorManageWebhooks"] != true {
        let path = values["istiodRemote"]["injectionPath"]
            .as_str()
            .unwrap_or("/inject");
        let client_config = json!({"service": {"name": istiod, "namespace": ns, "path": path, "port": 443}, "caBundle": "Y2E="});
        writes.put(
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": in_namespace(suffixed("istio-sidecar-injector", &owner.revision), ns),
                         "labels": pilot(json!({"app": "sidecar-injector"}))},
            "webhooks": [{"name": "rev.namespace.sidecar-injector.istio.io", "admissionReviewVersions": ["v1"],
                          "sideEffects": "None", "clientConfig": client_config}]}),
        );
    }
    Ok(())
}

/// istiod's Deployment (`deployment.yaml`) and one running pod of it. Its `CLUSTER_ID` is the
/// chart's (`multiCluster.clusterName`) unless the IstioOperator's `k8s.env` sets it, as an
/// external istiod's does (the env list is merged by name).
fn install_istiod(writes: &mut Writes<'_>, owner: &Owner, spec: &Value, ns: &str, version: &str) {
    let istiod = suffixed("istiod", &owner.revision);
    let env_override = spec["components"]["pilot"]["k8s"]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "CLUSTER_ID")
        .and_then(|e| e["value"].as_str());
    let cluster_id = env_override
        .or(spec["values"]["global"]["multiCluster"]["clusterName"].as_str())
        .unwrap_or("Kubernetes");
    let pod_labels = json!({"app": "istiod", "istio": "pilot", "istio.io/rev": owner.rev()});
    // `deployment.yaml` renders `pilot.env` (the ambient profile's `PILOT_ENABLE_AMBIENT`:
    // `manifests/helm-profiles/ambient.yaml`) and then the IstioOperator's `k8s.env`, merged by name.
    let mut env = vec![json!({"name": "CLUSTER_ID", "value": cluster_id})];
    if spec["profile"] == "ambient" {
        env.push(json!({"name": "PILOT_ENABLE_AMBIENT", "value": "true"}));
    }
    // A strategic merge on the list's key `name`: an entry of the same name is replaced where it
    // stands, a new one appended.
    for e in spec["components"]["pilot"]["k8s"]["env"]
        .as_array()
        .into_iter()
        .flatten()
    {
        match env.iter_mut().find(|have| have["name"] == e["name"]) {
            Some(have) => *have = e.clone(),
            None => env.push(e.clone()),
        }
    }
    writes.put(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": istiod, "namespace": ns,
                     "labels": labels(owner, "Pilot", json!({"app": "istiod", "istio": "pilot"}))},
        "spec": {"selector": {"matchLabels": pod_labels}, "template": {"metadata": {"labels": pod_labels},
                 "spec": {"containers": [{"name": "discovery", "image": format!("docker.io/istio/pilot:{version}"),
                                          "env": env}]}}},
        "status": {"replicas": 1, "availableReplicas": 1, "conditions": [{"type": "Available", "status": "True"}]}}));
    writes.server.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{istiod}-6f9c7b8d4-x2x7q"), "namespace": ns, "labels": pod_labels},
        "spec": {"nodeName": format!("{cluster_id}-control-plane"),
                 "containers": [{"name": "discovery", "image": format!("docker.io/istio/pilot:{version}")}]},
        "status": {"phase": "Running"}}));
}

/// What every `istioctl install` does after applying its manifests, a gateway's included
/// (`operator/pkg/install/install.go` calls `webhook.WebhooksToDeploy` unconditionally): the
/// `default` tag (re)made, pointing at this install's revision, when no tag exists yet or the
/// install is unrevisioned; when the tag cannot be made (no injector of that revision), nothing,
/// silently ("could be remote cluster install, don't fail out").
fn deploy_default_tag(server: &MemoryApiServer, revision: &str, namespace: &str) {
    let tag_exists = webhooks(server).iter().any(|w| {
        w["metadata"]["labels"]["istio.io/tag"] == "default"
            && w["metadata"]["labels"]["app"] == "sidecar-injector"
    });
    if !tag_exists || revision.is_empty() {
        let rev = if revision.is_empty() { "default" } else { revision };
        let _ = set_tag_in(server, ("default", namespace), rev, true);
    }
}

/// The istiod of `revision` as its install left it when it never got ready, and what istioctl
/// says then.
fn never_ready(server: &MemoryApiServer, revision: &str) -> String {
    let istiod = suffixed("istiod", revision);
    if let Some(mut deployment) = server.object("apps/v1", "deployments", "istio-system", &istiod) {
        deployment["status"] = json!({"replicas": 1, "availableReplicas": 0,
            "conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}]});
        server.put(deployment);
    }
    let pod = format!("{istiod}-6f9c7b8d4-x2x7q");
    if let Some(mut pod) = server.object("v1", "pods", "istio-system", &pod) {
        pod["status"] = json!({"phase": "Pending"});
        server.put(pod);
    }
    format!(
        "✘ Istiod encountered an error: failed to wait for resource: resources not ready after 5m0s: context deadline exceeded\nDeployment/istio-system/{istiod} (containers with unready status: [discovery])"
    )
}

/// The gateway chart's objects of one `ingressGateways` entry, in `ns`
/// (`values.global.istioNamespace`: istioctl puts a gateway with no namespace of its own there):
/// its Deployment and Service named as the entry, with its `label` (the chart's own
/// `app`/`istio` labels for `istio-ingressgateway`, `gateways/istio-ingress/values.yaml`).
fn install_gateway(writes: &mut Writes<'_>, (owner, ns): (&Owner, &str), gateway: &Value) {
    let server = writes.server;
    let name = gateway["name"].as_str().unwrap_or("istio-ingressgateway");
    let selector = match gateway["label"].as_object() {
        Some(labels) => {
            let mut picked = serde_json::Map::new();
            for key in ["app", "istio"] {
                if let Some(v) = labels.get(key) {
                    picked.insert(key.into(), v.clone());
                }
            }
            Value::Object(picked)
        }
        None => json!({"app": "istio-ingressgateway", "istio": "ingressgateway"}),
    };
    writes.put(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns,
                     "labels": labels(owner, "IngressGateways", selector.clone())},
        "spec": {"selector": {"matchLabels": selector}, "template": {"metadata": {"labels": selector},
                 "spec": {"containers": [{"name": "istio-proxy", "image": "auto"}]}}},
        "status": {"replicas": 1, "availableReplicas": 1, "conditions": [{"type": "Available", "status": "True"}]}}));
    // The Service as the IstioOperator's `k8s.service` has it (type, ports and node ports); a
    // LoadBalancer gets an address, as MetalLB gives one.
    let service = &gateway["k8s"]["service"];
    let service_type = service["type"].as_str().unwrap_or("LoadBalancer");
    let status = if service_type == "LoadBalancer" {
        let address = server
            .object("v1", "services", ns, name)
            .and_then(|s| {
                s["status"]["loadBalancer"]["ingress"][0]["ip"]
                    .as_str()
                    .map(String::from)
            })
            .unwrap_or_else(|| format!("172.18.255.{}", 200 + server.objects("v1", "services", ns).len()));
        json!({"loadBalancer": {"ingress": [{"ip": address}]}})
    } else {
        json!({"loadBalancer": {}})
    };
    let ports = if service["ports"].is_array() {
        service["ports"].clone()
    } else {
        json!([{"name": "status-port", "port": 15021}, {"name": "http2", "port": 80}, {"name": "https", "port": 443}])
    };
    writes.put(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns,
                     "labels": labels(owner, "IngressGateways", selector.clone())},
        "spec": {"type": service_type, "ports": ports},
        "status": status}));
}

/// The base component's CRDs that meshctl's phases apply objects of (the stand-in serves a CRD
/// once stored).
fn install_crds(server: &MemoryApiServer) -> Result<(), String> {
    let upstream = super::schema::upstream_dir().ok_or("../shared/upstream is not there")?;
    for name in ["gateways", "virtualservices"] {
        if server
            .object(
                "apiextensions.k8s.io/v1",
                "customresourcedefinitions",
                "",
                &format!("{name}.networking.istio.io"),
            )
            .is_some()
        {
            continue;
        }
        let path = upstream.join(format!("istio/release-1.31/crds/{name}.networking.istio.io.yaml"));
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let crd: Value = serde_saphyr::from_str(&text).map_err(|e| e.to_string())?;
        server.put(crd);
    }
    Ok(())
}

fn webhooks(server: &MemoryApiServer) -> Vec<Value> {
    server.objects(
        "admissionregistration.k8s.io/v1",
        "mutatingwebhookconfigurations",
        "",
    )
}

fn set_tag(server: &MemoryApiServer, tag: &str, revision: &str, overwrite: bool) -> Result<String, String> {
    set_tag_in(server, (tag, "istio-system"), revision, overwrite)
}

/// `tag set` in the Istio namespace `namespace` (`--istioNamespace`; the tag's webhook name is
/// suffixed with it outside istio-system, its Service lives there).
fn set_tag_in(
    server: &MemoryApiServer,
    (tag, namespace): (&str, &str),
    revision: &str,
    overwrite: bool,
) -> Result<String, String> {
    let all = webhooks(server);
    let label = |w: &Value, key: &str| w["metadata"]["labels"][key].as_str().map(String::from);
    let canonical: Vec<&Value> = all
        .iter()
        .filter(|w| {
            label(w, "istio.io/rev").as_deref() == Some(revision) && label(w, "istio.io/tag").is_none()
        })
        .collect();
    match canonical.len() {
        0 => {
            return Err(format!(
                "cannot modify tag: cannot find MutatingWebhookConfiguration or Service with revision {revision:?}"
            ));
        }
        1 => {}
        _ => {
            return Err(format!(
                "cannot modify tag: found multiple canonical webhooks or services with revision {revision:?}"
            ));
        }
    }
    if !overwrite
        && all
            .iter()
            .any(|w| label(w, "istio.io/tag").as_deref() == Some(tag))
    {
        return Err(format!(
            "revision tag {tag:?} already exists, and --overwrite is false"
        ));
    }
    let client_config = canonical[0]["webhooks"][0]["clientConfig"].clone();
    let tag_labels = json!({"istio.io/tag": tag, "istio.io/rev": revision, "app": "sidecar-injector",
                            "operator.istio.io/component": "Pilot"});
    server.put(json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": in_namespace(format!("istio-revision-tag-{tag}"), namespace), "labels": tag_labels},
        "webhooks": [{"name": "rev.namespace.sidecar-injector.istio.io", "admissionReviewVersions": ["v1"],
                      "sideEffects": "None", "clientConfig": client_config,
                      "namespaceSelector": {"matchExpressions": [{"key": "istio.io/rev", "operator": "In", "values": [tag]}]}},
                     {"name": "namespace.sidecar-injector.istio.io", "admissionReviewVersions": ["v1"],
                      "sideEffects": "None", "clientConfig": canonical[0]["webhooks"][0]["clientConfig"].clone(),
                      "namespaceSelector": {"matchExpressions": [{"key": "istio-injection", "operator": "In", "values": ["enabled"]}]}}]}));
    server.put(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("istiod-revision-tag-{tag}"), "namespace": namespace,
                     "labels": {"istio.io/tag": tag, "istio.io/rev": revision, "app": "istiod",
                                "operator.istio.io/component": "Pilot"}},
        "spec": {"ports": [{"name": "https-dns", "port": 15012}]}}));
    if tag == "default" {
        let never = json!({"matchExpressions": [{"key": "istio.io/deactivated", "operator": "In", "values": ["never-match"]}]});
        for mut unrevisioned in all.into_iter().filter(|w| {
            label(w, "istio.io/rev").as_deref() == Some("default") && label(w, "istio.io/tag").is_none()
        }) {
            for hook in unrevisioned["webhooks"].as_array_mut().into_iter().flatten() {
                hook["namespaceSelector"] = never.clone();
                hook["objectSelector"] = never.clone();
            }
            server.put(unrevisioned);
        }
    }
    Ok(format!(
        "Revision tag {tag:?} created, referencing control plane revision {revision:?}.\n"
    ))
}

fn uninstall_revision(server: &MemoryApiServer, revision: &str) -> Result<String, String> {
    let kinds = [
        ("apps/v1", "deployments"),
        ("apps/v1", "daemonsets"),
        ("v1", "services"),
        ("admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations"),
    ];
    let carries = |o: &Value| o["metadata"]["labels"]["istio.io/rev"] == revision;
    if !kinds
        .iter()
        .any(|(gv, plural)| server.objects_of(gv, plural).iter().any(carries))
    {
        return Err("could not find target revision".into());
    }
    prune(server, carries);
    Ok(String::new())
}

/// Deletes what `selects` and whose component `istioctl uninstall` prunes (prune.go,
/// `GetPrunedResources`: Pilot and the gateways, never the base component), in any namespace.
fn prune(server: &MemoryApiServer, selects: impl Fn(&Value) -> bool) {
    let kinds = [
        ("apps/v1", "deployments"),
        ("apps/v1", "daemonsets"),
        ("v1", "services"),
        ("v1", "serviceaccounts"),
        ("v1", "configmaps"),
        ("admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations"),
    ];
    for (gv, plural) in kinds {
        for object in server.objects_of(gv, plural) {
            let component = object["metadata"]["labels"]["operator.istio.io/component"]
                .as_str()
                .unwrap_or_default();
            if !selects(&object) || !PRUNED_COMPONENTS.contains(&component) {
                continue;
            }
            let ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            server.remove(gv, plural, ns, name);
            if plural == "deployments" {
                // Its pods (those its selector matches) go with it.
                let selector = object["spec"]["selector"]["matchLabels"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                for pod in server.objects("v1", "pods", ns) {
                    if selector.iter().all(|(k, v)| pod["metadata"]["labels"][k] == *v) {
                        let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
                        server.remove("v1", "pods", ns, pod_name);
                    }
                }
            }
        }
    }
}
