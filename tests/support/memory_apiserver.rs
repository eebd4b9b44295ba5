//! An API server in this process: a `tower` service that a real `kube::Client` talks to, for tests
//! that must run where no kube-apiserver binary can (CI here). It keeps objects in memory and
//! answers the requests meshctl's Kubernetes layer makes, the way kube-apiserver answers them;
//! each behaviour names the upstream code it follows (kubernetes/kubernetes at v1.36):
//!
//! - discovery (`/api/v1`, `/apis/<group>/<version>`) lists the built-in kinds below and the
//!   served versions of every Established CRD, and answers 404 for a group version nobody serves
//!   (`apiserver/pkg/endpoints/discovery`, `NotFound` of the generic API server);
//! - a CRD becomes NamesAccepted and Established as soon as it is created (the naming and
//!   establishing controllers of `apiextensions-apiserver/pkg/controller/{status,establish}`, with
//!   no conflicting names here), but discovery adds its group version only after
//!   [`MemoryApiServer::discovery_lag`] more discovery requests for it: the discovery controller
//!   works from a queue fed by the Established update
//!   (`apiextensions-apiserver/pkg/apiserver/customresource_discovery_controller.go`, `sync`);
//! - a custom resource of a type that is not Established answers 404, as the CRD handler does
//!   (`customresource_handler.go`, `ServeHTTP`);
//! - get, list (field selector `metadata.name=`), watch (events after the list's resourceVersion,
//!   then live), server-side apply (create, or merge into the live object; a patch that changes
//!   nothing keeps the resourceVersion, as `fieldmanager` does for a no-op apply), create (409
//!   `AlreadyExists` when the name is taken: `apiserver/pkg/registry/generic/registry/store.go`,
//!   `Create`) and delete. Each write records its field manager and operation in
//!   `metadata.managedFields` (`apiserver/pkg/endpoints/handlers/fieldmanager`; the field sets
//!   themselves are not kept). A Secret's `stringData` is merged into `data` on write and never
//!   stored (`pkg/apis/core/v1/conversion.go`, `Convert_v1_Secret_To_core_Secret`). Nothing is
//!   created in a namespace that does not exist: 404 `namespaces "x" not found`
//!   (`apiserver/pkg/admission/plugin/namespace/lifecycle`, `Admit`); [`MemoryApiServer::put`],
//!   a controller's or kubelet's write, is not admitted;
//! - with [`MemoryApiServer::with_token_controller`], kube-controller-manager's token controller:
//!   a `kubernetes.io/service-account-token` Secret gets its token, `ca.crt` and namespace once
//!   its service account exists, and is deleted when that account does not
//!   (`pkg/controller/serviceaccount/tokens_controller.go`, `syncSecret`).
//!
//! What it leaves out it refuses with 405, so a test that strays past it fails loudly.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt as _;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::kubelet_port_forward::{self, PodPorts};
use super::played_istiod::{Caller, PlayedIstiod};

/// A kind the server knows: where it lives and how discovery lists it.
#[derive(Clone, Debug)]
struct Kind {
    group: String,
    version: String,
    kind: String,
    plural: String,
    namespaced: bool,
}

impl Kind {
    fn group_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// The built-in kinds the tests use (kube-apiserver serves many more; add them as tests need).
fn built_in() -> Vec<Kind> {
    let k = |group: &str, version: &str, kind: &str, plural: &str, namespaced: bool| Kind {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        namespaced,
    };
    vec![
        k("", "v1", "Namespace", "namespaces", false),
        k("", "v1", "Pod", "pods", true),
        k("", "v1", "Node", "nodes", false),
        k("", "v1", "ConfigMap", "configmaps", true),
        k("", "v1", "Secret", "secrets", true),
        k("", "v1", "Service", "services", true),
        k("", "v1", "ServiceAccount", "serviceaccounts", true),
        k("apps", "v1", "Deployment", "deployments", true),
        k("apps", "v1", "DaemonSet", "daemonsets", true),
        k("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true),
        k(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
        ),
        k(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
        ),
        k(
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            false,
        ),
        k(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        ),
    ]
}

/// One stored object's key: group version, plural, namespace ("" for cluster-scoped), name.
type Key = (String, String, String, String);

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    /// Every change as a watch event, in resourceVersion order.
    history: Vec<(Key, Value)>,
    revision: u64,
    /// Group versions of Established CRDs, with the discovery requests still to answer 404.
    pending_discovery: BTreeMap<String, u32>,
    /// Every request, as `METHOD path?query`.
    requests: Vec<String>,
}

impl State {
    /// Keeps `object` under `key` and records the watch event of the change (ADDED or MODIFIED).
    fn store(&mut self, key: Key, object: Value) {
        let event = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.objects.insert(key.clone(), object.clone());
        self.history.push((key, json!({"type": event, "object": object})));
    }
}

/// The server. Clone it into as many clients as a test needs; they share one store.
#[derive(Clone)]
pub struct MemoryApiServer {
    state: Arc<Mutex<State>>,
    changed: Arc<tokio::sync::Notify>,
    discovery_lag: u32,
    istiod: Option<Arc<PlayedIstiod>>,
    ztunnel: Option<Arc<super::played_ztunnel::PlayedZtunnel>>,
    rollouts: bool,
    tokens: bool,
}

impl Default for MemoryApiServer {
    fn default() -> Self {
        MemoryApiServer::new()
    }
}

impl MemoryApiServer {
    /// An empty server whose discovery serves a new CRD's group version at once.
    pub fn new() -> MemoryApiServer {
        MemoryApiServer {
            state: Arc::default(),
            changed: Arc::default(),
            discovery_lag: 0,
            istiod: None,
            ztunnel: None,
            rollouts: false,
            tokens: false,
        }
    }

    /// Discovery answers 404 for a new CRD's group version this many more times after the CRD is
    /// Established (the discovery controller has not run yet).
    pub fn discovery_lag(mut self, requests: u32) -> MemoryApiServer {
        self.discovery_lag = requests;
        self
    }

    /// With Deployments rolled out as soon as they change, when served on loopback (see
    /// [`MemoryApiServer::complete_rollouts`]).
    pub fn with_rollouts(mut self) -> MemoryApiServer {
        self.rollouts = true;
        self
    }

    /// With service-account token Secrets filled, when served on loopback (see
    /// [`MemoryApiServer::fill_tokens`]).
    pub fn with_token_controller(mut self) -> MemoryApiServer {
        self.tokens = true;
        self
    }

    /// With `istiod` listening in every running pod labelled `app=istiod`, each answering with the
    /// view of its namespace and revision.
    pub fn with_istiod(mut self, istiod: Arc<PlayedIstiod>) -> MemoryApiServer {
        self.istiod = Some(istiod);
        self
    }

    /// With `ztunnel` answering on the admin port of every running pod labelled `app=ztunnel`.
    pub fn with_ztunnel(mut self, ztunnel: Arc<super::played_ztunnel::PlayedZtunnel>) -> MemoryApiServer {
        self.ztunnel = Some(ztunnel);
        self
    }

    /// Resolves at the next change after it was made (for controllers played beside the server).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Stores `object` as it is (status included), as a controller or kubelet would write it.
    pub fn put(&self, object: Value) {
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = object["kind"].as_str().unwrap_or_default();
        let plural = built_in()
            .into_iter()
            .chain(self.crd_kinds())
            .find(|k| k.group_version() == api_version && k.kind == kind)
            .map(|k| k.plural)
            .unwrap_or_else(|| panic!("the stand-in serves no {api_version} {kind}"));
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut state = self.state.lock().unwrap();
        state.revision += 1;
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(state.revision.to_string());
        let key = (api_version, plural, namespace, name);
        state.store(key, object);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Deletes an object, as a controller or a program outside the test's client would (watchers
    /// see DELETED); a missing one is left missing.
    pub fn remove(&self, group_version: &str, plural: &str, namespace: &str, name: &str) {
        let _ = self.delete((group_version.into(), plural.into(), namespace.into(), name.into()));
    }

    /// A client of this server (build it inside the runtime that uses it). Each request travels
    /// over a connection of its own, an in-memory pipe with hyper's HTTP/1 client at one end and
    /// its server at the other, so upgrades (`pods/portforward`) work as they do on the wire.
    pub fn client(&self) -> kube::Client {
        let server = self.clone();
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let server = server.clone();
            async move {
                let (client_end, server_end) = tokio::io::duplex(1 << 16);
                let handler = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.answer(request).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(server_end), handler)
                        .with_upgrades(),
                );
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(client_end)).await?;
                tokio::spawn(connection.with_upgrades());
                sender.send_request(request).await
            }
        });
        kube::Client::new(service, "default")
    }

    /// Serves this API server over plain HTTP on a free loopback port until the returned handle is
    /// dropped, so a process (the `meshctl` binary) can use it through a kubeconfig.
    pub fn serve_on_loopback(&self) -> Loopback {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = self.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if server.rollouts {
                    server.complete_rollouts();
                }
                if server.tokens {
                    server.fill_tokens();
                }
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let accept = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let server = server.clone();
                        tokio::spawn(async move {
                            let handler = hyper::service::service_fn(move |request: Request<Incoming>| {
                                let server = server.clone();
                                async move { Ok::<_, Infallible>(server.answer(request).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tcp), handler)
                                .with_upgrades()
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        Loopback {
            addr,
            _stop: stop,
            _thread: thread,
        }
    }

    /// Plays kube-controller-manager's deployment controller with kubelets whose pods start at
    /// once: whenever a Deployment's generation is ahead of its status, the status reports that
    /// generation rolled out with every replica updated and available. Runs until the runtime ends.
    pub fn complete_rollouts(&self) {
        let server = self.clone();
        tokio::spawn(async move {
            loop {
                let notified = server.changed.notified();
                let behind: Vec<Value> = server
                    .state
                    .lock()
                    .unwrap()
                    .objects
                    .iter()
                    .filter(|((gv, plural, _, _), d)| {
                        gv == "apps/v1"
                            && plural == "deployments"
                            && d["metadata"]["generation"].as_i64()
                                != d["status"]["observedGeneration"].as_i64()
                    })
                    .map(|(_, d)| d.clone())
                    .collect();
                for mut d in behind {
                    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
                    d["status"] = json!({"observedGeneration": d["metadata"]["generation"], "replicas": replicas,
                        "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                        "conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]});
                    server.put(d);
                }
                notified.await;
            }
        });
    }

    /// Plays the token controller: a service-account token Secret whose account exists gets its
    /// token, the cluster's CA and its namespace; one whose account does not exist is deleted.
    /// Runs until the runtime ends.
    pub fn fill_tokens(&self) {
        let server = self.clone();
        tokio::spawn(async move {
            loop {
                let notified = server.changed.notified();
                let unfilled: Vec<Value> = server
                    .objects_of("v1", "secrets")
                    .into_iter()
                    .filter(|s| {
                        s["type"] == "kubernetes.io/service-account-token" && s["data"]["token"].is_null()
                    })
                    .collect();
                for mut secret in unfilled {
                    let namespace = secret["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let name = secret["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let account = secret["metadata"]["annotations"]["kubernetes.io/service-account.name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    match server.object("v1", "serviceaccounts", &namespace, &account) {
                        None => server.remove("v1", "secrets", &namespace, &name),
                        Some(sa) => {
                            use base64::Engine as _;
                            let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
                            if let Some(uid) = sa["metadata"]["uid"].as_str() {
                                secret["metadata"]["annotations"]["kubernetes.io/service-account.uid"] =
                                    json!(uid);
                            }
                            // The cluster's CA, as the root-CA publisher puts it in every
                            // namespace (both come from the controller manager's root CA file).
                            let published = server
                                .object("v1", "configmaps", &namespace, "kube-root-ca.crt")
                                .and_then(|m| m["data"]["ca.crt"].as_str().map(String::from));
                            let ca = published.unwrap_or_else(|| PLAYED_CLUSTER_CA.to_string());
                            secret["data"] = json!({
                                "token": b64(&format!("played-token-of-{namespace}-{account}")),
                                "ca.crt": b64(&ca),
                                "namespace": b64(&namespace),
                            });
                            server.put(secret);
                        }
                    }
                }
                notified.await;
            }
        });
    }

    /// Every stored object of `plural` in `group_version`, in every namespace.
    pub fn objects_of(&self, group_version: &str, plural: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .iter()
            .filter(|((gv, p, _, _), _)| gv == group_version && p == plural)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Every stored object of `plural` in `group_version` and `namespace`, in name order.
    pub fn objects(&self, group_version: &str, plural: &str, namespace: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .iter()
            .filter(|((gv, p, ns, _), _)| gv == group_version && p == plural && ns == namespace)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// The stored object, if any (`namespace` empty for cluster-scoped kinds).
    pub fn object(&self, group_version: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (group_version.into(), plural.into(), namespace.into(), name.into());
        self.state.lock().unwrap().objects.get(&key).cloned()
    }

    async fn answer(&self, mut request: Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
        // Subresources that reach past the API server, to a pod: answered before the body is read,
        // since a port-forward upgrades the connection.
        let path = request.uri().path().to_string();
        if let [
            "api",
            "v1",
            "namespaces",
            namespace,
            plural,
            name,
            subresource,
            tail @ ..,
        ] = path.trim_matches('/').split('/').collect::<Vec<_>>().as_slice()
        {
            self.log(&request);
            return match (*plural, *subresource) {
                ("pods", "portforward") => self.port_forward(namespace, name, &mut request),
                ("services", "proxy") => {
                    self.service_proxy(namespace, name, &format!("/{}", tail.join("/")))
                        .await
                }
                _ => status(
                    405,
                    "MethodNotAllowed",
                    "this stand-in serves no such subresource",
                ),
            };
        }
        self.log(&request);
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let path = parts.uri.path().to_string();
        let query: BTreeMap<String, String> = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), super::percent_decode(v)))
            .collect();
        if path == "/version" {
            // `apimachinery/pkg/version`.Info, as a v1.36 server reports it.
            return json_response(
                200,
                &json!({"major": "1", "minor": "36", "gitVersion": "v1.36.2", "platform": "linux/amd64"}),
            );
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", "v1", rest @ ..] => ("", "v1", rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => {
                return status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                );
            }
        };
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        if rest.is_empty() {
            return self.discovery(&gv);
        }
        let (namespace, plural, name) = match rest {
            ["namespaces", ns, plural] => (*ns, *plural, None),
            ["namespaces", ns, plural, name] => (*ns, *plural, Some(*name)),
            [plural] => ("", *plural, None),
            [plural, name] => ("", *plural, Some(*name)),
            _ => return status(405, "MethodNotAllowed", "this stand-in serves no subresources"),
        };
        let Some(kind) = self.kind(&gv, plural) else {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        };
        let key = |name: &str| -> Key {
            (
                gv.clone(),
                plural.to_string(),
                namespace.to_string(),
                name.to_string(),
            )
        };
        match (parts.method, name) {
            (Method::GET, Some(name)) => match self.state.lock().unwrap().objects.get(&key(name)) {
                Some(obj) => json_response(200, obj),
                None => not_found(plural, name),
            },
            (Method::GET, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                self.watch(&kind, plural, namespace, &query)
            }
            (Method::GET, None) => self.list(&kind, plural, namespace, &query),
            (Method::PATCH, Some(name)) => {
                let content_type = parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                self.patch(&kind, key(name), &body, &query, &content_type)
            }
            (Method::DELETE, Some(name)) => self.delete(key(name)),
            (Method::POST, None) => {
                let name = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|o| o["metadata"]["name"].as_str().map(String::from))
                    .unwrap_or_default();
                if self.state.lock().unwrap().objects.contains_key(&key(&name)) {
                    return status(
                        409,
                        "AlreadyExists",
                        &format!("{plural} \"{name}\" already exists"),
                    );
                }
                let Ok(object) = serde_json::from_slice::<Value>(&body) else {
                    return status(400, "BadRequest", "the body is not a JSON object");
                };
                let write = Write {
                    manager: query.get("fieldManager").cloned().unwrap_or_default(),
                    operation: "Update",
                    creates: true,
                    dry_run: query.contains_key("dryRun"),
                };
                self.write(&kind, key(&name), &object, &write)
            }
            (method, _) => status(
                405,
                "MethodNotAllowed",
                &format!("this stand-in does not serve {method} here"),
            ),
        }
    }

    fn log(&self, request: &Request<Incoming>) {
        let path = request.uri().path();
        self.state
            .lock()
            .unwrap()
            .requests
            .push(match request.uri().query() {
                Some(q) => format!("{} {path}?{q}", request.method()),
                None => format!("{} {path}", request.method()),
            });
    }

    /// `pods/<name>/portforward`: the API server finds the pod (404 when it is not there, 400 when
    /// it has no node: `pkg/registry/core/pod/strategy.go`, `PortForwardLocation`), then the kubelet
    /// dials the port in the pod. Only a running istiod pod listens (on 15014, when this server
    /// plays an istiod), and a running ztunnel pod on its admin port 15000 (when this server plays
    /// ztunnel); any other port refuses the connection.
    fn port_forward(
        &self,
        namespace: &str,
        name: &str,
        request: &mut Request<Incoming>,
    ) -> Response<BoxBody<Bytes, Infallible>> {
        let Some(pod) = self.object("v1", "pods", namespace, name) else {
            return not_found("pods", name);
        };
        if pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
            return status(
                400,
                "BadRequest",
                &format!("pod {name} does not have a host assigned"),
            );
        }
        let listening = (pod["metadata"]["labels"]["app"] == "istiod" && pod["status"]["phase"] == "Running")
            .then(|| self.istiod.clone())
            .flatten();
        let (cluster, name, namespace) = (self.client(), name.to_string(), namespace.to_string());
        // Each revision's istiod answers with its own view.
        let revision = pod["metadata"]["labels"]["istio.io/rev"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let ztunnel = (pod["metadata"]["labels"]["app"] == "ztunnel" && pod["status"]["phase"] == "Running")
            .then(|| self.ztunnel.clone())
            .flatten();
        let own = self.clone();
        let ports: PodPorts = Arc::new(move |port| {
            if let (Some(ztunnel), 15000) = (&ztunnel, port) {
                let answer = Ok(ztunnel.listen(own.clone()));
                return Box::pin(async move { answer });
            }
            let answer = match &listening {
                Some(istiod) if port == 15014 => Ok(istiod.listen_as(
                    cluster.clone(),
                    super::played_istiod::Pod {
                        name: name.clone(),
                        namespace: namespace.clone(),
                        revision: revision.clone(),
                    },
                )),
                _ => Err(format!(
                    "error forwarding port {port} to pod {name}, uid : failed to connect to localhost:{port} inside namespace: dial tcp 127.0.0.1:{port}: connect: connection refused"
                )),
            };
            Box::pin(async move { answer })
        });
        match kubelet_port_forward::accept(request, ports) {
            Ok(switching) => switching
                .body(BodyExt::boxed(http_body_util::Empty::new()))
                .unwrap(),
            Err((code, message)) => status(code, "BadRequest", &message),
        }
    }

    /// `services/<name>[:<port>]/proxy/<path>`: the API server answers 503 when no pod stands
    /// behind the Service (`no endpoints available`), else forwards from its own address. Only
    /// istiod's monitoring port is played behind it: istiod refuses such a caller.
    async fn service_proxy(
        &self,
        namespace: &str,
        service: &str,
        path: &str,
    ) -> Response<BoxBody<Bytes, Infallible>> {
        let name = service.split(':').next().unwrap_or_default();
        let backed = self
            .state
            .lock()
            .unwrap()
            .objects
            .iter()
            .any(|((gv, plural, ns, _), pod)| {
                gv == "v1"
                    && plural == "pods"
                    && ns == namespace
                    && pod["metadata"]["labels"]["app"] == name
                    && pod["status"]["phase"] == "Running"
            });
        match (&self.istiod, backed) {
            (Some(istiod), true) if (namespace, service) == ("istio-system", "istiod:15014") => {
                let (code, body) = istiod.answer(&self.client(), path, Caller::ServiceProxy).await;
                Response::builder()
                    .status(code)
                    .body(BodyExt::boxed(http_body_util::Full::new(Bytes::from(body))))
                    .unwrap()
            }
            (_, false) => status(
                503,
                "ServiceUnavailable",
                &format!("no endpoints available for service \"{name}\""),
            ),
            _ => status(502, "BadGateway", "nothing is played behind this service"),
        }
    }

    /// The kind of `plural` in group version `gv`, if it is served: built in, or an Established CRD.
    fn kind(&self, gv: &str, plural: &str) -> Option<Kind> {
        if let Some(k) = built_in()
            .into_iter()
            .find(|k| k.group_version() == gv && k.plural == plural)
        {
            return Some(k);
        }
        self.crd_kinds()
            .into_iter()
            .find(|k| k.group_version() == gv && k.plural == plural)
    }

    /// The kinds every stored CRD serves (each is Established at creation).
    fn crd_kinds(&self) -> Vec<Kind> {
        let state = self.state.lock().unwrap();
        state
            .objects
            .iter()
            .filter(|((gv, plural, _, _), _)| {
                gv == "apiextensions.k8s.io/v1" && plural == "customresourcedefinitions"
            })
            .flat_map(|(_, crd)| {
                let spec = &crd["spec"];
                let served: Vec<String> = spec["versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|v| v["served"].as_bool().unwrap_or(false))
                    .filter_map(|v| v["name"].as_str().map(String::from))
                    .collect();
                served.into_iter().map(move |version| Kind {
                    group: spec["group"].as_str().unwrap_or_default().into(),
                    version,
                    kind: spec["names"]["kind"].as_str().unwrap_or_default().into(),
                    plural: spec["names"]["plural"].as_str().unwrap_or_default().into(),
                    namespaced: spec["scope"] == "Namespaced",
                })
            })
            .collect()
    }

    fn discovery(&self, gv: &str) -> Response<BoxBody<Bytes, Infallible>> {
        let lagging = match self.state.lock().unwrap().pending_discovery.get_mut(gv) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        };
        if lagging {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
        let kinds: Vec<Kind> = built_in()
            .into_iter()
            .chain(self.crd_kinds())
            .filter(|k| k.group_version() == gv)
            .collect();
        if kinds.is_empty() {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
        let verbs = [
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ];
        let resources: Vec<Value> = kinds
            .iter()
            .map(|k| json!({"name": k.plural, "singularName": k.kind.to_lowercase(), "namespaced": k.namespaced, "kind": k.kind, "verbs": verbs}))
            .collect();
        json_response(
            200,
            &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
        )
    }

    fn list(
        &self,
        kind: &Kind,
        plural: &str,
        namespace: &str,
        query: &BTreeMap<String, String>,
    ) -> Response<BoxBody<Bytes, Infallible>> {
        if let Err(refusal) = selects(query, kind, &json!({})) {
            return status(400, "BadRequest", &refusal);
        }
        let state = self.state.lock().unwrap();
        let items: Vec<Value> = state
            .objects
            .iter()
            .filter(|((gv, p, ns, _), obj)| {
                *gv == kind.group_version()
                    && p == plural
                    && (namespace.is_empty() || ns == namespace)
                    && selects(query, kind, obj) == Ok(true)
            })
            .map(|(_, obj)| obj.clone())
            .collect();
        json_response(
            200,
            &json!({
                "kind": format!("{}List", kind.kind),
                "apiVersion": kind.group_version(),
                "metadata": {"resourceVersion": state.revision.to_string()},
                "items": items,
            }),
        )
    }

    /// A watch: every event after the given resourceVersion, then each new one as it happens, as
    /// newline-separated JSON `{"type": …, "object": …}` (`apiserver/pkg/endpoints/handlers/watch.go`).
    fn watch(
        &self,
        kind: &Kind,
        plural: &str,
        namespace: &str,
        query: &BTreeMap<String, String>,
    ) -> Response<BoxBody<Bytes, Infallible>> {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if let Err(refusal) = selects(query, kind, &json!({})) {
            return status(400, "BadRequest", &refusal);
        }
        let (kind, plural, namespace, query) = (
            kind.clone(),
            plural.to_string(),
            namespace.to_string(),
            query.clone(),
        );
        // An object's events are sent while it matches the selectors (the API server also tells a
        // watcher when an object stops matching; no test here needs that).
        let matches = move |(g, p, ns, _): &Key, event: &Value| {
            *g == kind.group_version()
                && *p == plural
                && (namespace.is_empty() || *ns == namespace)
                && selects(&query, &kind, &event["object"]) == Ok(true)
        };
        let server = self.clone();
        let events = futures::stream::unfold(from, move |seen| {
            let (server, matches) = (server.clone(), matches.clone());
            async move {
                loop {
                    let notified = server.changed.notified();
                    let next = {
                        let state = server.state.lock().unwrap();
                        state
                            .history
                            .iter()
                            .map(|(key, event)| (key, event, revision_of(&event["object"])))
                            .find(|(key, event, rv)| *rv > seen && matches(key, event))
                            .map(|(_, event, rv)| (event.clone(), rv))
                            .or_else(|| Some((Value::Null, state.revision)).filter(|(_, rv)| *rv > seen))
                    };
                    match next {
                        Some((Value::Null, rv)) => return Some((None, rv)),
                        Some((event, rv)) => return Some((Some(event), rv)),
                        None => notified.await,
                    }
                }
            }
        })
        .filter_map(|event| async move { event })
        .map(|event| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{event}\n")))));
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(events)))
            .unwrap()
    }

    /// Server-side apply of the JSON body: creates the object, or merges it into the live one.
    /// A PATCH, by its content type (`apiserver/pkg/endpoints/handlers/patch.go`): a server-side
    /// apply (`application/apply-patch+yaml`, which needs a `fieldManager` and creates a missing
    /// object), or a JSON merge or strategic merge patch (which need an existing object; a `null`
    /// removes a key).
    fn patch(
        &self,
        kind: &Kind,
        key: Key,
        body: &[u8],
        query: &BTreeMap<String, String>,
        content_type: &str,
    ) -> Response<BoxBody<Bytes, Infallible>> {
        let Ok(applied) = serde_json::from_slice::<Value>(body) else {
            return status(400, "BadRequest", "the body is not a JSON object");
        };
        let is_apply = content_type.starts_with("application/apply-patch");
        if is_apply && query.get("fieldManager").is_none_or(|m| m.is_empty()) {
            return status(422, "Invalid", "fieldManager is required for apply patch");
        }
        let write = Write {
            manager: query.get("fieldManager").cloned().unwrap_or_default(),
            operation: if is_apply { "Apply" } else { "Update" },
            creates: is_apply,
            dry_run: query.contains_key("dryRun"),
        };
        self.write(kind, key, &applied, &write)
    }

    /// Stores `applied` merged over the object under `key` (created when missing and the write
    /// may create), recording its manager's operation in `managedFields`.
    fn write(
        &self,
        kind: &Kind,
        key: Key,
        applied: &Value,
        write: &Write,
    ) -> Response<BoxBody<Bytes, Infallible>> {
        let (manager, operation, dry_run) = (write.manager.as_str(), write.operation, write.dry_run);
        let mut state = self.state.lock().unwrap();
        let before = state.objects.get(&key).cloned();
        if before.is_none() && !write.creates {
            return not_found(&key.1, &key.3);
        }
        // The NamespaceLifecycle admission plugin: nothing is created in a namespace that does
        // not exist (`apiserver/pkg/admission/plugin/namespace/lifecycle`, `Admit`).
        let namespace_key = (
            "v1".to_string(),
            "namespaces".to_string(),
            String::new(),
            key.2.clone(),
        );
        if before.is_none() && kind.namespaced && !state.objects.contains_key(&namespace_key) {
            return status(404, "NotFound", &format!("namespaces \"{}\" not found", key.2));
        }
        let mut object = before.clone().unwrap_or_else(|| json!({}));
        merge(&mut object, applied);
        object["apiVersion"] = json!(kind.group_version());
        object["kind"] = json!(kind.kind);
        if kind.kind == "Secret"
            && let Some(strings) = object.as_object_mut().and_then(|o| o.remove("stringData"))
        {
            use base64::Engine as _;
            for (k, v) in strings.as_object().cloned().unwrap_or_default() {
                let text = v.as_str().unwrap_or_default();
                object["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
            }
        }
        if !manager.is_empty() {
            let entries = object["metadata"]["managedFields"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !entries
                .iter()
                .any(|e| e["manager"] == manager && e["operation"] == operation)
            {
                let mut entries = entries;
                entries.push(json!({"manager": manager, "operation": operation,
                    "apiVersion": kind.group_version(), "fieldsType": "FieldsV1"}));
                object["metadata"]["managedFields"] = json!(entries);
            }
        }
        if kind.kind == "CustomResourceDefinition" {
            let names = object["spec"]["names"].clone();
            object["status"] = json!({
                "acceptedNames": names,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
                ],
            });
        }
        if before.as_ref() == Some(&object) || dry_run {
            return json_response(200, before.as_ref().unwrap_or(&object));
        }
        state.revision += 1;
        let revision = state.revision;
        object["metadata"]["resourceVersion"] = json!(revision.to_string());
        // `metadata.generation` counts changes of the spec (each kind's registry strategy, e.g.
        // `pkg/registry/apps/deployment/strategy.go`, `PrepareForUpdate`).
        if !object["spec"].is_null() {
            let generation = before
                .as_ref()
                .map_or(0, |b| b["metadata"]["generation"].as_i64().unwrap_or(1));
            let changed = before.as_ref().is_none_or(|b| b["spec"] != object["spec"]);
            object["metadata"]["generation"] = json!(if changed { generation + 1 } else { generation });
        }
        if before.is_none() {
            object["metadata"]["uid"] = json!(format!("uid-{revision}"));
            // One second per write: rules created one after another have distinct times, as they
            // would at a person's or a program's pace on a real server.
            object["metadata"]["creationTimestamp"] = json!(format!(
                "2026-01-01T{:02}:{:02}:{:02}Z",
                revision / 3600 % 24,
                revision / 60 % 60,
                revision % 60
            ));
            if kind.kind == "CustomResourceDefinition" && self.discovery_lag > 0 {
                for version in object["spec"]["versions"].as_array().into_iter().flatten() {
                    let gv = format!(
                        "{}/{}",
                        object["spec"]["group"].as_str().unwrap_or_default(),
                        version["name"].as_str().unwrap_or_default()
                    );
                    let lag = self.discovery_lag;
                    state.pending_discovery.entry(gv).or_insert(lag);
                }
            }
        }
        state.store(key, object.clone());
        drop(state);
        self.changed.notify_waiters();
        json_response(if before.is_some() { 200 } else { 201 }, &object)
    }

    fn delete(&self, key: Key) -> Response<BoxBody<Bytes, Infallible>> {
        let mut state = self.state.lock().unwrap();
        let Some(mut object) = state.objects.remove(&key) else {
            return not_found(&key.1, &key.3);
        };
        state.revision += 1;
        object["metadata"]["resourceVersion"] = json!(state.revision.to_string());
        state
            .history
            .push((key, json!({"type": "DELETED", "object": object})));
        drop(state);
        self.changed.notify_waiters();
        json_response(
            200,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        )
    }
}

/// Whether `object` matches the `labelSelector` and `fieldSelector` of `query` (equality and
/// inequality terms, and bare label keys for "has the label"). A field the API server does not
/// index for the kind is refused, as it refuses it: every kind supports `metadata.name` and
/// `metadata.namespace` (`apimachinery/pkg/fields`, `DefaultClusterScopedAttr`/`…NamespaceScopedAttr`);
/// pods add `spec.nodeName` and `status.phase` among others (`pkg/registry/core/pod/strategy.go`,
/// `ToSelectableFields`).
fn selects(query: &BTreeMap<String, String>, kind: &Kind, object: &Value) -> Result<bool, String> {
    let terms = |key: &str| -> Vec<String> { query.get(key).map(|s| selector_terms(s)).unwrap_or_default() };
    let mut matches = true;
    for term in terms("labelSelector") {
        let labels = &object["metadata"]["labels"];
        // Set-based terms: `key in (a,b)`, `key notin (a,b)` (`apimachinery/pkg/labels/selector.go`).
        if let Some((key, values, negated)) = set_term(&term) {
            let have = labels[key.as_str()].as_str();
            matches &= if negated {
                have.is_none_or(|v| !values.iter().any(|w| w == v))
            } else {
                have.is_some_and(|v| values.iter().any(|w| w == v))
            };
            continue;
        }
        matches &= match term.split_once("!=") {
            Some((k, v)) => labels[k].as_str() != Some(v),
            None => match term.split_once('=') {
                Some((k, v)) => labels[k.trim_end_matches('=')].as_str() == Some(v),
                None => labels.get(&term).is_some(),
            },
        };
    }
    for term in terms("fieldSelector") {
        let (field, wanted, equal) = match term.split_once("!=") {
            Some((f, v)) => (f.to_string(), v.to_string(), false),
            None => {
                let (f, v) = term
                    .split_once('=')
                    .ok_or(format!("invalid field selector: {term}"))?;
                (f.trim_end_matches('=').to_string(), v.to_string(), true)
            }
        };
        let pods_only = [
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ];
        let supported = field == "metadata.name"
            || field == "metadata.namespace"
            || (kind.kind == "Pod" && pods_only.contains(&field.as_str()));
        if !supported {
            return Err(format!("field label not supported: {field}"));
        }
        let have = field
            .split('.')
            .fold(object, |v, key| &v[key])
            .as_str()
            .unwrap_or_default();
        matches &= (have == wanted) == equal;
    }
    Ok(matches)
}

/// The terms of a selector: split at the commas outside parentheses.
fn selector_terms(selector: &str) -> Vec<String> {
    let mut terms = vec![String::new()];
    let mut depth = 0;
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(String::new());
                continue;
            }
            _ => {}
        }
        terms.last_mut().unwrap().push(c);
    }
    terms
        .into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// `key in (a,b)` or `key notin (a,b)`: the key, the values, and whether it is `notin`.
fn set_term(term: &str) -> Option<(String, Vec<String>, bool)> {
    let (key, rest, negated) = match term.split_once(" notin ") {
        Some((k, r)) => (k, r, true),
        None => {
            let (k, r) = term.split_once(" in ")?;
            (k, r, false)
        }
    };
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    let values = inner.split(',').map(|v| v.trim().to_string()).collect();
    Some((key.trim().to_string(), values, negated))
}

/// Merges `patch` into `target` as a JSON merge patch does (RFC 7386): maps key by key, `null`
/// removes a key, anything else replaced.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn revision_of(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn json_response(code: u16, value: &Value) -> Response<BoxBody<Bytes, Infallible>> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(BodyExt::boxed(http_body_util::Full::new(Bytes::from(
            value.to_string(),
        ))))
        .unwrap()
}

/// A `Status` failure, as the API server writes one (`apimachinery/pkg/api/errors`).
fn status(code: u16, reason: &str, message: &str) -> Response<BoxBody<Bytes, Infallible>> {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": {}, "code": code}),
    )
}

fn not_found(plural: &str, name: &str) -> Response<BoxBody<Bytes, Infallible>> {
    json_response(
        404,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{plural} \"{name}\" not found"), "reason": "NotFound",
            "details": {"name": name, "kind": plural}, "code": 404}),
    )
}

/// An in-process API server listening on loopback (see [`MemoryApiServer::serve_on_loopback`]).
pub struct Loopback {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
    _thread: std::thread::JoinHandle<()>,
}

/// A kubeconfig with one context per `(context, server)`, each reaching its server (plain HTTP,
/// no credentials).
pub fn kubeconfig_for(servers: &[(&str, &Loopback)]) -> String {
    let (mut clusters, mut contexts, mut users) = (String::new(), String::new(), String::new());
    for (context, loopback) in servers {
        clusters += &format!(
            "- name: {context}\n  cluster:\n    server: http://{}\n",
            loopback.addr
        );
        contexts += &format!("- name: {context}\n  context:\n    cluster: {context}\n    user: {context}\n");
        users += &format!("- name: {context}\n  user: {{}}\n");
    }
    format!("apiVersion: v1\nkind: Config\nclusters:\n{clusters}contexts:\n{contexts}users:\n{users}")
}

impl Loopback {
    /// A kubeconfig whose context `context` reaches this server (plain HTTP, no credentials: the
    /// stand-in authorizes everyone, as `kubectl proxy` does).
    pub fn kubeconfig(&self, context: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {context}\nclusters:\n- name: {context}\n  cluster:\n    server: http://{}\ncontexts:\n- name: {context}\n  context:\n    cluster: {context}\n    user: {context}\nusers:\n- name: {context}\n  user: {{}}\n",
            self.addr
        )
    }
}

/// One write's manager and kind: server-side apply, or a create.
struct Write {
    manager: String,
    /// `Apply` or `Update`, as `managedFields` records it.
    operation: &'static str,
    /// Whether a missing object is created (apply and create) or answered 404 (merge patch).
    creates: bool,
    dry_run: bool,
}

/// The CA the played token controller hands out as `ca.crt`: a cluster's CA as a pod reads it.
pub const PLAYED_CLUSTER_CA: &str =
    "-----BEGIN CERTIFICATE-----\nplayed cluster CA\n-----END CERTIFICATE-----\n";
