//! HTTPS front of a fake cluster: the Kubernetes REST paths meshctl uses, over TLS on 127.0.0.1.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::store::{ApiError, Event, Resource, Store, matches_fields, matches_labels};

type Body = BoxBody<Bytes, Infallible>;

/// Faults a test can inject.
#[derive(Default)]
pub struct Faults {
    /// Close this many incoming connections before TLS.
    pub refuse_connections: AtomicU32,
    /// Answer the next requests with these HTTP statuses, in order.
    pub fail_requests: Mutex<VecDeque<u16>>,
    /// Remote cluster ID → the sync status istiod reports for it (default `synced`).
    pub remote_status: Mutex<std::collections::HashMap<String, String>>,
}

/// An exec into a container, as the fake receives it.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
}

/// What the exec prints and how it ends.
#[derive(Debug, Clone, Default)]
pub struct ExecResult {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

/// Answers execs (the test decides what commands print).
pub type ExecHandler = Arc<dyn Fn(&ExecRequest) -> ExecResult + Send + Sync>;

/// State shared by the server and the test handle.
pub struct Shared {
    /// Who answers `pods/exec`.
    pub exec: Mutex<Option<ExecHandler>>,
    pub store: Mutex<Store>,
    pub faults: Faults,
    pub admin_token: String,
    /// `METHOD path?query` of every request, in order.
    pub log: Mutex<Vec<String>>,
    /// Fill service-account token Secrets like the token controller.
    pub auto_token: std::sync::atomic::AtomicBool,
}

fn full(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("static response parts are valid")
}

fn error(e: ApiError) -> Response<Body> {
    full(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        e.status(),
    )
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a path addresses.
enum Route {
    Version,
    CoreVersions,
    Groups,
    ResourceList {
        group: String,
        version: String,
    },
    Object {
        group: String,
        version: String,
        namespace: Option<String>,
        plural: String,
        name: Option<String>,
        sub: Option<String>,
    },
}

fn route(path: &str, store: &Store) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest): (String, String, &[&str]) = match segs.as_slice() {
        ["version"] => return Some(Route::Version),
        ["api"] => return Some(Route::CoreVersions),
        ["apis"] => return Some(Route::Groups),
        ["api", v] => {
            return Some(Route::ResourceList {
                group: String::new(),
                version: v.to_string(),
            });
        }
        ["apis", g, v] => {
            return Some(Route::ResourceList {
                group: g.to_string(),
                version: v.to_string(),
            });
        }
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let namespaced = rest.len() >= 3
        && rest[0] == "namespaces"
        && store.resource(&group, rest[2]).is_some_and(|r| r.namespaced);
    let (namespace, rest) = if namespaced {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    Some(Route::Object {
        group,
        version,
        namespace,
        plural: rest.first()?.to_string(),
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    })
}

fn discovery_resources(store: &Store, group: &str, version: &str) -> Value {
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut resources = Vec::new();
    for r in store
        .resources
        .iter()
        .filter(|r| r.group == group && r.versions.iter().any(|v| v == version))
    {
        resources.push(
            json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}),
        );
        if r.has_status {
            resources.push(
                json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
        if r.plural == "pods" && r.group.is_empty() {
            resources.push(json!({"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]}));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn discovery_groups(store: &Store) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for r in store.resources.iter().filter(|r| !r.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, vs)) => {
                for v in &r.versions {
                    if !vs.contains(v) {
                        vs.push(v.clone());
                    }
                }
            }
            None => groups.push((r.group.clone(), r.versions.clone())),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0].clone()})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn with_type(mut obj: Value, r: &Resource, version: &str) -> Value {
    obj["apiVersion"] = json!(if r.group.is_empty() {
        version.to_string()
    } else {
        format!("{}/{version}", r.group)
    });
    obj["kind"] = json!(r.kind);
    obj
}

/// `pods/<name>/exec` over WebSocket (channel protocol v4): stdout on channel 1, stderr on 2, the
/// final Status on 3.
fn exec(shared: Arc<Shared>, mut req: Request<Incoming>, path: &str, query: &str) -> Response<Body> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (namespace, pod) = match segs.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", pod, "exec"] => (ns.to_string(), pod.to_string()),
        _ => return error(ApiError::new(404, "NotFound", "not an exec path")),
    };
    let exists = {
        let store = shared.store.lock().unwrap();
        store
            .resource("", "pods")
            .and_then(|r| store.get(&r, &namespace, &pod).ok())
            .is_some()
    };
    if !exists {
        return error(ApiError::new(
            404,
            "NotFound",
            format!("pods \"{pod}\" not found"),
        ));
    }
    let request = ExecRequest {
        namespace,
        pod,
        container: query_param(query, "container").unwrap_or_default(),
        command: query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("command="))
            .map(percent_decode)
            .collect(),
    };
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|k| k.to_str().ok())
        .map(str::to_string)
    else {
        return error(ApiError::new(400, "BadRequest", "exec needs a WebSocket upgrade"));
    };
    let offered = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !offered.contains("v4.channel.k8s.io") {
        return error(ApiError::new(
            400,
            "BadRequest",
            "the fake speaks v4.channel.k8s.io only",
        ));
    }
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
        let result = handler.map(|h| h(&request)).unwrap_or(ExecResult {
            stderr: "no exec handler".into(),
            exit_code: 126,
            ..Default::default()
        });
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
            json!({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode", "message": format!("command terminated with non-zero exit code: {}", result.exit_code),
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
        .header("sec-websocket-protocol", "v4.channel.k8s.io")
        .body(Full::new(Bytes::new()).boxed())
        .expect("static response parts are valid")
}

/// What istiod serves on `/debug/clusterz` (Istio `pkg/cluster/debug.go` `DebugInfo`): its own
/// cluster, and one entry per cluster ID in the remote secrets (label `istio/multiCluster=true`)
/// of istio-system, `synced` unless the test says otherwise. No istiod, no answer: the API
/// server's service proxy then says 503 `no endpoints available`.
fn clusterz(shared: &Shared) -> Response<Body> {
    let store = shared.store.lock().unwrap();
    let get = |group: &str, plural: &str, name: &str| {
        store
            .resource(group, plural)
            .and_then(|r| store.get(&r, "istio-system", name).ok())
    };
    let Some(config) = get("", "configmaps", "istio") else {
        return error(ApiError::new(
            503,
            "ServiceUnavailable",
            "no endpoints available for service \"istiod\"",
        ));
    };
    let overrides = shared.faults.remote_status.lock().unwrap().clone();
    let mut clusters =
        vec![json!({"id": config["data"]["clusterName"], "secretName": "", "syncStatus": "synced"})];
    let secrets = store
        .resource("", "secrets")
        .map(|r| store.list(&r, Some("istio-system")))
        .unwrap_or_default();
    for secret in secrets {
        if secret["metadata"]["labels"]["istio/multiCluster"] != "true" {
            continue;
        }
        let name = secret["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for id in secret["data"]
            .as_object()
            .map(|d| d.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let status = overrides.get(&id).cloned().unwrap_or_else(|| "synced".into());
            clusters
                .push(json!({"id": id, "secretName": format!("istio-system/{name}"), "syncStatus": status}));
        }
    }
    full(StatusCode::OK, json!(clusters))
}

/// Serves one request.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    shared.log.lock().unwrap().push(format!(
        "{method} {path}{}",
        if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        }
    ));

    if let Some(code) = shared.faults.fail_requests.lock().unwrap().pop_front() {
        let reason = match code {
            409 => "Conflict",
            429 => "TooManyRequests",
            _ => "InternalError",
        };
        let mut resp = error(ApiError::new(code, reason, format!("injected fault {code}")));
        if code == 429 {
            resp.headers_mut().insert("retry-after", "0".parse().unwrap());
        }
        return Ok(resp);
    }

    // Authentication and (coarse) authorization: the admin token may do anything, a token issued
    // to a service account may only read.
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let reader = match token.as_deref() {
        Some(t) if t == shared.admin_token => false,
        Some(t) if shared.store.lock().unwrap().issued_tokens.contains_key(t) => true,
        _ => return Ok(error(ApiError::new(401, "Unauthorized", "Unauthorized"))),
    };
    if path.ends_with("/exec") && !reader {
        return Ok(exec(shared, req, &path, &query));
    }
    if path == "/api/v1/namespaces/istio-system/services/istiod:15014/proxy/debug/clusterz" && !reader {
        return Ok(clusterz(&shared));
    }
    if reader && method != Method::GET {
        return Ok(error(ApiError::new(
            403,
            "Forbidden",
            format!("{method} {path} is forbidden for a read-only service account"),
        )));
    }

    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let parsed_body = || -> Result<Value, ApiError> {
        let text =
            std::str::from_utf8(&body).map_err(|_| ApiError::new(400, "BadRequest", "body is not UTF-8"))?;
        serde_saphyr::from_str::<Value>(text)
            .map_err(|e| ApiError::new(400, "BadRequest", format!("cannot parse body: {e}")))
    };

    let routed = {
        let store = shared.store.lock().unwrap();
        match route(&path, &store) {
            None => {
                return Ok(error(ApiError::new(
                    404,
                    "NotFound",
                    format!("the server could not find the requested resource ({path})"),
                )));
            }
            Some(Route::Version) => {
                return Ok(full(
                    StatusCode::OK,
                    json!({"major": "1", "minor": "36", "gitVersion": "v1.36.1", "platform": "linux/amd64"}),
                ));
            }
            Some(Route::CoreVersions) => {
                return Ok(full(
                    StatusCode::OK,
                    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
                ));
            }
            Some(Route::Groups) => return Ok(full(StatusCode::OK, discovery_groups(&store))),
            Some(Route::ResourceList { group, version }) => {
                if !store
                    .resources
                    .iter()
                    .any(|r| r.group == group && r.versions.contains(&version))
                {
                    return Ok(error(ApiError::new(
                        404,
                        "NotFound",
                        format!("the server could not find the requested resource ({path})"),
                    )));
                }
                return Ok(full(
                    StatusCode::OK,
                    discovery_resources(&store, &group, &version),
                ));
            }
            Some(Route::Object {
                group,
                version,
                namespace,
                plural,
                name,
                sub,
            }) => {
                let Some(r) = store
                    .resource(&group, &plural)
                    .filter(|r| r.versions.contains(&version))
                else {
                    return Ok(error(ApiError::new(
                        404,
                        "NotFound",
                        format!("the server could not find the requested resource ({path})"),
                    )));
                };
                (r, version, namespace, name, sub)
            }
        }
    };
    let (r, version, namespace, name, sub) = routed;
    let ns = namespace.clone().unwrap_or_default();
    let status_only = sub.as_deref() == Some("status");
    if sub.as_deref().is_some_and(|s| s != "status") {
        return Ok(error(ApiError::new(
            404,
            "NotFound",
            format!("subresource {sub:?} is not served by the fake"),
        )));
    }

    let result: Result<(StatusCode, Value), ApiError> = match (&method, name.as_deref()) {
        (&Method::GET, None) if matches!(query_param(&query, "watch").as_deref(), Some("true" | "1")) => {
            return Ok(watch(shared.clone(), r, version, namespace, &query));
        }
        (&Method::GET, None) => {
            let store = shared.store.lock().unwrap();
            let labels = query_param(&query, "labelSelector").unwrap_or_default();
            let fields = query_param(&query, "fieldSelector").unwrap_or_default();
            let items: Vec<Value> = store
                .list(&r, namespace.as_deref())
                .into_iter()
                .filter(|o| matches_labels(o, &labels) && matches_fields(o, &fields))
                .map(|o| with_type(o, &r, &version))
                .collect();
            let gv = if r.group.is_empty() { version.clone() } else { format!("{}/{version}", r.group) };
            Ok((StatusCode::OK, json!({"kind": format!("{}List", r.kind), "apiVersion": gv,
                "metadata": {"resourceVersion": store.rv.to_string()}, "items": items})))
        }
        (&Method::GET, Some(n)) => shared.store.lock().unwrap().get(&r, &ns, n).map(|o| (StatusCode::OK, o)),
        (&Method::POST, None) => parsed_body().and_then(|obj| {
            let created = shared.store.lock().unwrap().create(&r, &ns, obj, false)?;
            Ok((StatusCode::CREATED, created))
        }),
        (&Method::PUT, Some(n)) => parsed_body().and_then(|obj| {
            shared.store.lock().unwrap().replace(&r, &ns, n, obj, status_only).map(|o| (StatusCode::OK, o))
        }),
        (&Method::PATCH, Some(n)) => parsed_body().and_then(|patch| {
            let mut store = shared.store.lock().unwrap();
            if content_type.starts_with("application/apply-patch") {
                let Some(manager) = query_param(&query, "fieldManager") else {
                    return Err(ApiError::new(400, "BadRequest", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
                };
                let (obj, created) = store.apply(&r, &ns, n, patch, &manager, status_only)?;
                Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, obj))
            } else if content_type.starts_with("application/merge-patch") || content_type.starts_with("application/strategic-merge-patch") {
                store.merge_patch(&r, &ns, n, &patch, status_only).map(|o| (StatusCode::OK, o))
            } else {
                Err(ApiError::new(415, "UnsupportedMediaType", format!("the fake does not support {content_type}")))
            }
        }),
        (&Method::DELETE, Some(n)) => shared.store.lock().unwrap().delete(&r, &ns, n).map(|o| (StatusCode::OK, o)),
        _ => Err(ApiError::new(405, "MethodNotAllowed", format!("{method} is not supported on {path}"))),
    };
    match result {
        Ok((status, obj)) => {
            if shared.auto_token.load(Ordering::Relaxed)
                && r.kind == "Secret"
                && obj["type"] == "kubernetes.io/service-account-token"
                && !obj["data"]["token"].is_string()
            {
                // The token controller works asynchronously: meshctl has to wait for it.
                let (shared, ns, name) = (
                    shared.clone(),
                    ns.clone(),
                    obj["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                );
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    shared.store.lock().unwrap().fill_token(&ns, &name);
                });
            }
            Ok(full(status, with_type(obj, &r, &version)))
        }
        Err(e) => Ok(error(e)),
    }
}

/// A watch: newline-delimited JSON events, from `resourceVersion` on, until `timeoutSeconds`.
fn watch(
    shared: Arc<Shared>,
    r: Resource,
    version: String,
    namespace: Option<String>,
    query: &str,
) -> Response<Body> {
    let labels = query_param(query, "labelSelector").unwrap_or_default();
    let fields = query_param(query, "fieldSelector").unwrap_or_default();
    let since: u64 = query_param(query, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = query_param(query, "timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(290u64);
    let matches = {
        let (r, namespace, labels, fields) = (r.clone(), namespace.clone(), labels.clone(), fields.clone());
        move |e: &Event| {
            e.group == r.group
                && e.plural == r.plural
                && namespace.as_ref().is_none_or(|ns| *ns == e.namespace)
                && matches_labels(&e.object, &labels)
                && matches_fields(&e.object, &fields)
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let (initial, mut live) = {
        let store = shared.store.lock().unwrap();
        let live = store.events.subscribe();
        let initial: Vec<Event> = if since == 0 {
            store
                .list(&r, namespace.as_deref())
                .into_iter()
                .map(|o| Event {
                    rv: store.rv,
                    group: r.group.clone(),
                    plural: r.plural.clone(),
                    namespace: o["metadata"]["namespace"].as_str().unwrap_or_default().into(),
                    kind: "ADDED",
                    object: o,
                })
                .filter(|e| matches(e))
                .collect()
        } else {
            store
                .history
                .iter()
                .filter(|e| e.rv > since && matches(e))
                .cloned()
                .collect()
        };
        (initial, live)
    };
    let line = move |e: &Event| {
        Bytes::from(format!(
            "{}\n",
            json!({"type": e.kind, "object": with_type(e.object.clone(), &r, &version)})
        ))
    };
    tokio::spawn(async move {
        let mut last = since;
        for e in &initial {
            last = last.max(e.rv);
            if tx.send(line(e)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        loop {
            match tokio::time::timeout_at(deadline, live.recv()).await {
                Ok(Ok(e)) if e.rv > last && matches(&e) => {
                    last = e.rv;
                    if tx.send(line(&e)).await.is_err() {
                        return;
                    }
                }
                Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                _ => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("static response parts are valid")
}
