//! A TLS proxy in front of a real kube-apiserver, on a loopback port of its own. It forwards every
//! request with the control plane's admin identity and can, on demand, do what a real network or
//! an overloaded server does: refuse connections, answer 429/409/5xx (as the apiserver's own
//! `Status` objects), or accept and never answer.
//!
//! It also answers `pods/<name>/exec`, the one API that needs a kubelet, which envtest does not
//! have: the WebSocket framing follows the Kubernetes remote-command protocol
//! (`v5.channel.k8s.io`/`v4.channel.k8s.io`: channel byte 1 stdout, 2 stderr, 3 the final
//! `Status`, as in k8s.io/apimachinery `pkg/util/remotecommand` and client-go's
//! `tools/remotecommand/websocket.go`); what the command prints is the test's [`ExecHandler`].
//!
//! And it stands where istiod's pod would be (tests/support/played_istiod.rs): through the API
//! server's service proxy (`services/istiod:15014/proxy/…`) istiod refuses with 401, as Istio
//! 1.31's debug handlers refuse a caller that is not local; `pods/<istiod pod>/portforward` reaches
//! its monitoring port as a loopback caller, over the kubelet's port-forward protocol
//! (tests/support/kubelet_port_forward.rs).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::{ControlPlane, Pem};
use crate::support::query_values;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// An exec into a container, as the proxy receives it.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// Namespace of the pod.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// `container=` of the request.
    pub container: String,
    /// `command=` parameters, in order.
    pub command: Vec<String>,
}

/// What the command printed and how it ended.
#[derive(Debug, Clone, Default)]
pub struct ExecResult {
    /// Channel 1.
    pub stdout: String,
    /// Channel 2.
    pub stderr: String,
    /// Exit code (non-zero: a `Failure` status with reason `NonZeroExitCode`, as the kubelet sends).
    pub exit_code: i32,
}

pub use crate::support::played_istiod::SynczHandler;
use crate::support::played_istiod::{Caller, PlayedIstiod};

/// Answers execs.
pub type ExecHandler = Arc<dyn Fn(ExecRequest) -> BoxFuture<'static, ExecResult> + Send + Sync>;

#[derive(Default)]
struct Faults {
    refuse_connections: AtomicU32,
    fail_requests: Mutex<VecDeque<u16>>,
    stall: AtomicBool,
}

struct Shared {
    faults: Faults,
    istiod: Arc<PlayedIstiod>,
    upstream: kube::Client,
    exec: Mutex<Option<ExecHandler>>,
    log: Mutex<Vec<String>>,
}

/// A running proxy.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// PEM of the CA of its serving certificate.
    pub ca_pem: String,
    shared: Arc<Shared>,
    _runtime: std::thread::JoinHandle<()>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Proxy {
    /// A proxy on 127.0.0.1 (a free port) in front of `plane`.
    pub fn start(plane: &ControlPlane) -> Proxy {
        let (serving, ca_pem) = super::serving_cert(&["127.0.0.1".to_string()]);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let kubeconfig = plane.kubeconfig(&plane.name);
        let name = plane.name.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let upstream = super::client_from(&kubeconfig, &name).await;
                let shared = Arc::new(Shared {
                    faults: Faults::default(),
                    istiod: PlayedIstiod::new(),
                    upstream,
                    exec: Mutex::new(None),
                    log: Mutex::new(Vec::new()),
                });
                ready_tx.send(shared.clone()).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    _ = serve(listener, tls_acceptor(&serving), shared) => {}
                    _ = stop_rx => {}
                }
            });
        });
        let shared = ready_rx.recv().unwrap();
        Proxy {
            addr,
            ca_pem,
            shared,
            _runtime: runtime,
            _stop: stop_tx,
        }
    }

    /// A kubeconfig whose context `context` goes through the proxy.
    pub fn kubeconfig(&self, context: &str) -> String {
        let b64 = |s: &str| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(s)
        };
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {context}\nclusters:\n- name: {context}\n  cluster:\n    server: https://{}\n    certificate-authority-data: {}\nusers:\n- name: {context}\n  user:\n    token: proxied\ncontexts:\n- name: {context}\n  context:\n    cluster: {context}\n    user: {context}\n",
            self.addr,
            b64(&self.ca_pem)
        )
    }

    /// Close the next `n` connections as soon as they are accepted.
    pub fn refuse_next_connections(&self, n: u32) {
        self.shared.faults.refuse_connections.store(n, Ordering::SeqCst);
    }

    /// Answer the next requests with these statuses, in order, without forwarding them.
    pub fn fail_next_requests(&self, statuses: &[u16]) {
        self.shared.faults.fail_requests.lock().unwrap().extend(statuses);
    }

    /// Accept connections and read requests, but never answer (a hung server).
    pub fn stall(&self, on: bool) {
        self.shared.faults.stall.store(on, Ordering::SeqCst);
    }

    /// What istiod reports for remote cluster `id` on `/debug/clusterz` (default `synced`).
    pub fn set_remote_cluster_status(&self, id: &str, status: &str) {
        self.shared.istiod.set_remote_cluster_status(id, status);
    }

    /// Who lists the proxies istiod configures on `/debug/syncz` (the data plane, which knows
    /// which proxies run where); without one, istiod lists none.
    pub fn set_syncz_handler(&self, handler: SynczHandler) {
        self.shared.istiod.set_syncz_handler(handler);
    }

    /// Who answers `pods/exec`.
    pub fn set_exec_handler(&self, handler: ExecHandler) {
        *self.shared.exec.lock().unwrap() = Some(handler);
    }

    /// `METHOD path?query` of every request that reached the proxy, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }
}

pub fn tls_acceptor(serving: &Pem) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(serving.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(serving.key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(tls))
}

async fn serve(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let refuse = shared
            .faults
            .refuse_connections
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refuse {
            drop(tcp);
            continue;
        }
        let (acceptor, shared) = (acceptor.clone(), shared.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .with_upgrades()
                .await;
        });
    }
}

/// The apiserver's own shape of an error answer.
fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    let mut resp = Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(full(body.to_string()))
        .unwrap();
    if code == 429 {
        resp.headers_mut().insert("retry-after", "0".parse().unwrap());
    }
    resp
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text))
        .map_err(|e| match e {})
        .boxed_unsync()
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path_query = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    shared
        .log
        .lock()
        .unwrap()
        .push(format!("{} {path_query}", req.method()));
    if shared.faults.stall.load(Ordering::SeqCst) {
        futures::future::pending::<()>().await;
    }
    if let Some(code) = shared.faults.fail_requests.lock().unwrap().pop_front() {
        let reason = match code {
            403 => "Forbidden",
            409 => "Conflict",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            _ => "InternalError",
        };
        return Ok(status(
            code,
            reason,
            &format!("injected by the test proxy: {code}"),
        ));
    }
    if req.uri().path().ends_with("/exec") {
        return Ok(exec(&shared, req));
    }
    if let Some(path) = req
        .uri()
        .path()
        .strip_prefix("/api/v1/namespaces/istio-system/services/istiod:15014/proxy")
    {
        return Ok(istiod_through_service_proxy(&shared, path).await);
    }
    if req.uri().path().ends_with("/portforward") {
        return Ok(port_forward(&shared, req).await);
    }
    let (mut parts, body) = req.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    // The upstream client adds its own credentials and host.
    parts.headers.remove("authorization");
    parts.headers.remove("host");
    let forwarded = Request::from_parts(parts, kube::client::Body::from(bytes.to_vec()));
    match shared.upstream.send(forwarded).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            Ok(Response::from_parts(
                parts,
                body.map_err(std::io::Error::other).boxed_unsync(),
            ))
        }
        Err(e) => Ok(status(502, "InternalError", &format!("test proxy: {e}"))),
    }
}

/// The service proxy to istiod's monitoring port: the apiserver answers 503 without an istiod pod
/// behind the Service (a remote's `istiod` Service has none), else istiod answers a caller that is
/// not local.
async fn istiod_through_service_proxy(shared: &Shared, path: &str) -> Response<Body> {
    let deployment = kube::Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(
        shared.upstream.clone(),
        "istio-system",
    )
    .get_opt("istiod")
    .await
    .ok()
    .flatten();
    if deployment.is_none() {
        return status(
            503,
            "ServiceUnavailable",
            "no endpoints available for service \"istiod\"",
        );
    }
    let (code, body) = shared
        .istiod
        .answer(&shared.upstream, path, Caller::ServiceProxy)
        .await;
    Response::builder().status(code).body(full(body)).unwrap()
}

/// `pods/<name>/portforward`: the apiserver finds the pod (404 when it is not there, 400 when it
/// has no node: `pkg/registry/core/pod/strategy.go`, `PortForwardLocation`), then the kubelet
/// dials the port in the pod. Only a running istiod pod listens here (on 15014); any other port
/// refuses the connection, as nothing listens on it.
async fn port_forward(shared: &Shared, mut req: Request<Incoming>) -> Response<Body> {
    use k8s_openapi::api::core::v1::Pod;
    let Some((namespace, name)) = pod_subresource(req.uri().path(), "portforward") else {
        return status(404, "NotFound", "not a port-forward path");
    };
    let pod = match kube::Api::<Pod>::namespaced(shared.upstream.clone(), &namespace)
        .get_opt(&name)
        .await
    {
        Ok(Some(pod)) => pod,
        _ => return status(404, "NotFound", &format!("pods \"{name}\" not found")),
    };
    if pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none() {
        return status(
            400,
            "BadRequest",
            &format!("pod {name} does not have a host assigned"),
        );
    }
    let is_istiod = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("app"))
        .map(String::as_str)
        == Some("istiod")
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let (istiod, cluster) = (shared.istiod.clone(), shared.upstream.clone());
    let ports: crate::support::kubelet_port_forward::PodPorts = Arc::new(move |port| {
        let answer = if is_istiod && port == 15014 {
            Ok(istiod.listen(cluster.clone()))
        } else {
            Err(format!(
                "error forwarding port {port} to pod {name}, uid : failed to connect to localhost:{port} inside namespace: dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        };
        Box::pin(async move { answer })
    });
    match crate::support::kubelet_port_forward::accept(&mut req, ports) {
        Ok(switching) => switching.body(full(String::new())).unwrap(),
        Err((code, message)) => status(code, "BadRequest", &message),
    }
}

/// `(namespace, pod)` of `/api/v1/namespaces/<ns>/pods/<pod>/<subresource>`.
fn pod_subresource(path: &str, subresource: &str) -> Option<(String, String)> {
    match path.trim_matches('/').split('/').collect::<Vec<_>>().as_slice() {
        ["api", "v1", "namespaces", ns, "pods", pod, sub] if *sub == subresource => {
            Some((ns.to_string(), pod.to_string()))
        }
        _ => None,
    }
}

/// `pods/<name>/exec` over WebSocket.
fn exec(shared: &Shared, mut req: Request<Incoming>) -> Response<Body> {
    let Some((namespace, pod)) = pod_subresource(req.uri().path(), "exec") else {
        return status(404, "NotFound", "not an exec path");
    };
    let query = req.uri().query().unwrap_or_default().to_string();
    let request = ExecRequest {
        namespace,
        pod,
        container: query_values(&query, "container")
            .into_iter()
            .next()
            .unwrap_or_default(),
        command: query_values(&query, "command"),
    };
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|k| k.to_str().ok())
        .map(str::to_string)
    else {
        return status(400, "BadRequest", "exec needs a WebSocket upgrade");
    };
    let offered = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let protocol = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
        .into_iter()
        .find(|p| offered.split(',').any(|o| o.trim() == *p));
    let Some(protocol) = protocol else {
        return status(400, "BadRequest", "no supported remote-command protocol offered");
    };
    let handler = shared.exec.lock().unwrap().clone();
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        use futures::SinkExt;
        use tokio_tungstenite::tungstenite::protocol::{Message, Role};
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        let result = match handler {
            Some(h) => h(request).await,
            None => ExecResult {
                stderr: "no exec handler".into(),
                exit_code: 126,
                ..Default::default()
            },
        };
        let frame = |channel: u8, bytes: &[u8]| Message::binary([&[channel][..], bytes].concat());
        if !result.stdout.is_empty() {
            let _ = ws.send(frame(1, result.stdout.as_bytes())).await;
        }
        if !result.stderr.is_empty() {
            let _ = ws.send(frame(2, result.stderr.as_bytes())).await;
        }
        let status = if result.exit_code == 0 {
            json!({"metadata": {}, "status": "Success"})
        } else {
            json!({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {}", "sh", result.exit_code),
                "details": {"causes": [{"reason": "ExitCode", "message": result.exit_code.to_string()}]}})
        };
        let _ = ws.send(frame(3, status.to_string().as_bytes())).await;
        let _ = ws.close(None).await;
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", accept)
        .header("sec-websocket-protocol", protocol)
        .body(full(String::new()))
        .unwrap()
}
