//! Plays an admission webhook server on a Service's cluster IP. With envtest's loopback service
//! range the real kube-apiserver dials a webhook at `https://<cluster IP>:<port><path>` and checks
//! its certificate against the configuration's `caBundle` for the name `<service>.<namespace>.svc`
//! (k8s.io/apiserver `pkg/util/webhook`), so binding that address here is all a test needs to
//! stand in for MetalLB's or istiod's webhook server.
//!
//! Answers every `AdmissionReview` (admission.k8s.io/v1) with `allowed: true`, echoing its `uid`
//! as the API requires, and, for a mutating webhook, the JSON patch its [`Mutation`] makes
//! (`patchType: JSONPatch`, base64 `patch`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

/// What a mutating webhook changes: the review's request → a JSON patch (RFC 6902), if any.
pub type Mutation = Arc<dyn Fn(&Value) -> Option<Value> + Send + Sync>;

/// A running webhook server; stops when dropped.
pub struct WebhookServer {
    /// PEM of the CA that signed its certificate (the `caBundle` to inject).
    pub ca_pem: String,
    /// Reviews answered so far.
    pub reviews: Arc<AtomicUsize>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _thread: std::thread::JoinHandle<()>,
}

impl WebhookServer {
    /// A validating webhook that allows everything, on `addr`, with a certificate for
    /// `<service>.<namespace>.svc`.
    pub fn start(addr: SocketAddr, service: &str, namespace: &str) -> WebhookServer {
        WebhookServer::start_with(addr, service, namespace, Arc::new(|_: &Value| None))
    }

    /// A webhook that allows everything and patches what `mutation` says.
    pub fn start_with(addr: SocketAddr, service: &str, namespace: &str, mutation: Mutation) -> WebhookServer {
        let (serving, ca_pem) = super::serving_cert(&[format!("{service}.{namespace}.svc")]);
        let listener = std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("bind the webhook's cluster IP {addr}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let reviews = Arc::new(AtomicUsize::new(0));
        let counter = reviews.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let acceptor = super::proxy::tls_acceptor(&serving);
                let serve = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else { continue };
                        let (acceptor, counter, mutation) = (acceptor.clone(), counter.clone(), mutation.clone());
                        tokio::spawn(async move {
                            let Ok(tls) = acceptor.accept(tcp).await else { return };
                            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                                let (counter, mutation) = (counter.clone(), mutation.clone());
                                async move {
                                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                                    counter.fetch_add(1, Ordering::SeqCst);
                                    let mut answer = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                        "response": {"uid": review["request"]["uid"], "allowed": true}});
                                    if let Some(patch) = mutation(&review["request"]) {
                                        use base64::Engine as _;
                                        answer["response"]["patchType"] = json!("JSONPatch");
                                        answer["response"]["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch.to_string()));
                                    }
                                    Ok::<_, std::convert::Infallible>(
                                        hyper::Response::builder()
                                            .header("content-type", "application/json")
                                            .body(Full::new(Bytes::from(answer.to_string())))
                                            .unwrap(),
                                    )
                                }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stop_rx => {}
                }
            });
        });
        WebhookServer {
            ca_pem,
            reviews,
            _stop: stop_tx,
            _thread: thread,
        }
    }
}
