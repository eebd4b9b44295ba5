//! A fake Kubernetes API server, in process, on 127.0.0.1, over TLS: enough of the real REST
//! semantics for meshctl to run against it through an ordinary kubeconfig.
//!
//! Served: discovery (`/api`, `/apis`, group versions; CRDs are served as soon as they are created,
//! and reported Established), create/get/list (label and field selectors)/replace/merge patch/
//! server-side apply/delete, watch from a resource version, the status subresource, namespaced and
//! cluster-scoped objects with `uid`, `resourceVersion` and `generation`. A write that changes
//! nothing keeps the resource version. Secrets turn `stringData` into `data`. The token controller
//! fills service-account token Secrets asynchronously. Bearer tokens are checked: the admin token
//! may do anything, issued service-account tokens may only read.
//!
//! Simplifications (documented, not hidden): server-side apply merges maps and replaces lists, and
//! does not remove fields an earlier apply set; strategic merge patch is a JSON merge patch; no
//! admission webhooks run.
//!
//! Each cluster runs on its own thread and runtime, so synchronous tests can start the real
//! `meshctl` binary against it and async tests can use kube directly.

pub mod controllers;
pub mod server;
pub mod store;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use server::{Faults, Shared};
use store::Store;

/// One running fake cluster.
pub struct FakeCluster {
    /// Cluster name (also the kubeconfig context name).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// PEM of the CA that signed its serving certificate.
    pub ca_pem: String,
    shared: Arc<Shared>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl FakeCluster {
    /// Starts a fake cluster named `name`.
    pub fn start(name: &str) -> FakeCluster {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name}-ca"));
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let ca_pem = ca_cert.pem();

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(name, &ca_pem)),
            faults: Faults::default(),
            admin_token: format!("admin-token-{name}"),
            log: Mutex::new(Vec::new()),
            auto_token: AtomicBool::new(true),
            exec: Mutex::new(None),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let server_shared = shared.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (stream, _) = tokio::select! {
                        accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                        _ = &mut rx => return,
                    };
                    let refuse = &server_shared.faults.refuse_connections;
                    if refuse.load(Ordering::SeqCst) > 0 {
                        refuse.fetch_sub(1, Ordering::SeqCst);
                        drop(stream);
                        continue;
                    }
                    let (acceptor, shared) = (acceptor.clone(), server_shared.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let service =
                            hyper::service::service_fn(move |req| server::handle(shared.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .with_upgrades()
                            .await;
                    });
                }
            });
        });
        FakeCluster {
            name: name.to_string(),
            addr,
            ca_pem,
            shared,
            _shutdown: tx,
        }
    }

    /// Starts the controllers a real cluster runs (deployments, daemonsets, webhook CA injection,
    /// MetalLB); see [`controllers`].
    pub fn start_controllers(&self, options: controllers::ControllerOptions) {
        controllers::start(self.shared.clone(), options);
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.shared.admin_token
    }

    /// Runs `f` on the store.
    pub fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.shared.store.lock().unwrap())
    }

    /// An object as JSON, if it exists.
    pub fn get(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.with_store(|s| {
            s.resource(group, plural)
                .and_then(|r| s.get(&r, namespace, name).ok())
        })
    }

    /// Every object of a type (all namespaces).
    pub fn list(&self, group: &str, plural: &str) -> Vec<Value> {
        self.with_store(|s| {
            s.resource(group, plural)
                .map(|r| s.list(&r, None))
                .unwrap_or_default()
        })
    }

    /// Creates an object as an admin would (the namespace must exist). A token Secret made this way
    /// stands for one made long ago, so the token controller has filled it already.
    pub fn create(&self, group: &str, plural: &str, namespace: &str, obj: Value) -> Value {
        let auto_token = self.shared.auto_token.load(Ordering::SeqCst);
        self.with_store(|s| {
            let r = s
                .resource(group, plural)
                .unwrap_or_else(|| panic!("no resource {group}/{plural}"));
            let created = s.create(&r, namespace, obj, false).unwrap();
            let name = created["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if auto_token && s.fill_token(namespace, &name).is_some() {
                return s.get(&r, namespace, &name).unwrap();
            }
            created
        })
    }

    /// Creates namespace `name`.
    pub fn create_namespace(&self, name: &str) -> Value {
        self.create(
            "",
            "namespaces",
            "",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
    }

    /// Replaces the status of an object, as a controller would.
    pub fn set_status(&self, group: &str, plural: &str, namespace: &str, name: &str, status: Value) {
        self.with_store(|s| {
            let r = s.resource(group, plural).unwrap();
            s.merge_patch(&r, namespace, name, &json!({"status": status}), true)
                .unwrap();
        });
    }

    /// Plays the deployment controller: marks a Deployment Available.
    pub fn mark_deployment_available(&self, namespace: &str, name: &str) {
        self.set_status("apps", "deployments", namespace, name, json!({
            "observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1,
            "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}));
    }

    /// Plays MetalLB: gives a LoadBalancer Service its ingress IP.
    pub fn set_load_balancer_ip(&self, namespace: &str, name: &str, ip: &str) {
        self.set_status(
            "",
            "services",
            namespace,
            name,
            json!({"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}),
        );
    }

    /// Turns the token controller on or off.
    pub fn set_auto_token(&self, on: bool) {
        self.shared.auto_token.store(on, Ordering::SeqCst);
    }

    /// Closes the next `n` connections before TLS (connection refused/reset for the client).
    pub fn set_remote_cluster_status(&self, id: &str, status: &str) {
        self.shared
            .faults
            .remote_status
            .lock()
            .unwrap()
            .insert(id.to_string(), status.to_string());
    }

    pub fn refuse_next_connections(&self, n: u32) {
        self.shared.faults.refuse_connections.store(n, Ordering::SeqCst);
    }

    /// Answers the next requests with these HTTP statuses.
    pub fn fail_next_requests(&self, statuses: &[u16]) {
        self.shared.faults.fail_requests.lock().unwrap().extend(statuses);
    }

    /// Who answers execs into this cluster's pods.
    pub fn set_exec_handler(&self, handler: server::ExecHandler) {
        *self.shared.exec.lock().unwrap() = Some(handler);
    }

    /// Requests received so far (`METHOD path?query`).
    pub fn requests(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }
}

/// The kubeconfig `kind get kubeconfig` would print for a fake cluster: cluster, user and context
/// all named `name`.
pub fn kubeconfig_named(cluster: &FakeCluster, name: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    serde_json::to_string_pretty(&json!({
        "apiVersion": "v1", "kind": "Config", "current-context": name, "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": cluster.server_url(), "certificate-authority-data": b64(&cluster.ca_pem)}}],
        "users": [{"name": name, "user": {"token": cluster.admin_token()}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
    }))
    .unwrap()
}

/// A kubeconfig with one context per fake cluster (context = cluster name), admin token auth.
pub fn kubeconfig(clusters: &[&FakeCluster]) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": clusters.first().map(|c| c.name.clone()).unwrap_or_default(),
        "clusters": clusters.iter().map(|c| json!({"name": c.name, "cluster": {"server": c.server_url(), "certificate-authority-data": b64(&c.ca_pem)}})).collect::<Vec<_>>(),
        "users": clusters.iter().map(|c| json!({"name": format!("{}-admin", c.name), "user": {"token": c.admin_token()}})).collect::<Vec<_>>(),
        "contexts": clusters.iter().map(|c| json!({"name": c.name, "context": {"cluster": c.name, "user": format!("{}-admin", c.name)}})).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&doc).unwrap()
}
