//! istiod's debug endpoints as Istio 1.31 serves them, for the stand-ins that sit where istiod's
//! pod would be (the in-process API server, and the proxy of the real-server tests).
//!
//! Who is answered: `pilot/pkg/xds/debug.go`, `addDebugHandler` wraps every debug handler in
//! `allowAuthenticatedOrLocalhost`: a request from a loopback address is served; any other must
//! carry credentials one of istiod's authenticators accepts, or gets 401 with an empty body.
//! Through the API server's service proxy (`services/istiod:15014/proxy/…`) the request comes from
//! the API server's own address, without the caller's `Authorization` header, which the API server
//! removes once it has authenticated the caller (`apiserver/pkg/endpoints/filters/
//! authentication.go`, `WithAuthentication`): refused. Through a port-forward it comes from the
//! pod's own loopback: served. (istiod's authenticators are not played: no caller here can present
//! credentials to istiod.)
//!
//! What it says: `/debug/clusterz` as `pkg/kube/multicluster/secretcontroller.go`
//! `ListRemoteClusters` lists it: istiod's config cluster (`CLUSTER_ID` of its Deployment,
//! `istiod` or `istiod-<revision>` in the pod's namespace) first, then one entry per cluster ID
//! in the `istio/multiCluster=true` Secrets of that namespace, `synced` unless the test says
//! otherwise; a key naming the config cluster, or a cluster another Secret registered already, is
//! skipped (`addRemoteConfig`). The Secrets are read from istiod's own cluster: a primary's, and an
//! external istiod's with `LOCAL_CLUSTER_SECRET_WATCHER`, as meshctl installs it;
//! `/debug/syncz` is what the test's [`SynczHandler`] lists for the pod asked: each istiod pod
//! lists only the proxies connected to it (`pilot/pkg/xds/debug.go`, `SyncStatus` ranges over the
//! server's own connections), so the handler is told which pod answers; any other path is 404, as
//! Go's `ServeMux` answers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;
use tokio::io::DuplexStream;

/// Builds the `/debug/syncz` answer (a JSON array of `SyncStatus`) of the istiod pod named.
pub type SynczHandler = Arc<dyn Fn(&str) -> BoxFuture<'static, serde_json::Value> + Send + Sync>;

/// Where a request to istiod's monitoring port comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The pod's own loopback: a port-forward, or a process in the pod.
    Loopback,
    /// The API server's service proxy: another address, no credentials for istiod.
    ServiceProxy,
}

/// Which istiod pod answers: its name, its namespace, and its revision (`istio.io/rev`).
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub revision: String,
}

impl Pod {
    /// The one pod of an unrevisioned istiod in istio-system.
    fn lone() -> Pod {
        Pod {
            name: "istiod".into(),
            namespace: "istio-system".into(),
            revision: "default".into(),
        }
    }
}

/// The played istiod of one cluster.
#[derive(Default)]
pub struct PlayedIstiod {
    remote_status: Mutex<HashMap<String, String>>,
    /// The same, for the istiod of one revision only (`(revision, cluster ID)`): during a canary
    /// upgrade two istiods run, each with its own view.
    revision_status: Mutex<HashMap<(String, String), String>>,
    /// The same, for one istiod pod only (`(pod, cluster ID)`): each replica runs its own secret
    /// controller, so one may still be syncing what another has synced.
    pod_status: Mutex<HashMap<(String, String), String>>,
    syncz: Mutex<Option<SynczHandler>>,
}

impl PlayedIstiod {
    /// An istiod that reports every remote `synced` and lists no proxies.
    pub fn new() -> Arc<PlayedIstiod> {
        Arc::default()
    }

    /// What istiod reports for remote cluster `id` on `/debug/clusterz` (default `synced`).
    pub fn set_remote_cluster_status(&self, id: &str, status: &str) {
        self.remote_status
            .lock()
            .unwrap()
            .insert(id.to_string(), status.to_string());
    }

    /// What the istiod of `revision` (its pods' `istio.io/rev`) reports for remote cluster `id`.
    pub fn set_remote_cluster_status_of_revision(&self, revision: &str, id: &str, status: &str) {
        self.revision_status
            .lock()
            .unwrap()
            .insert((revision.to_string(), id.to_string()), status.to_string());
    }

    /// What istiod pod `pod` reports for remote cluster `id`.
    pub fn set_remote_cluster_status_of_pod(&self, pod: &str, id: &str, status: &str) {
        self.pod_status
            .lock()
            .unwrap()
            .insert((pod.to_string(), id.to_string()), status.to_string());
    }

    /// Who lists the proxies istiod configures on `/debug/syncz`; without one, istiod lists none.
    pub fn set_syncz_handler(&self, handler: SynczHandler) {
        *self.syncz.lock().unwrap() = Some(handler);
    }

    /// istiod's answer to `GET path` on its monitoring port from `caller`, reading what it reports
    /// from `cluster` (its own cluster's API): status and body.
    pub async fn answer(&self, cluster: &kube::Client, path: &str, caller: Caller) -> (u16, String) {
        self.answer_as(cluster, &Pod::lone(), path, caller).await
    }

    /// The answer of the istiod running in pod `istiod`.
    pub async fn answer_as(
        &self,
        cluster: &kube::Client,
        istiod: &Pod,
        path: &str,
        caller: Caller,
    ) -> (u16, String) {
        if caller != Caller::Loopback {
            return (401, String::new());
        }
        match path {
            "/debug/clusterz" => (200, self.clusterz(cluster, istiod).await.to_string()),
            "/debug/syncz" => {
                let handler = self.syncz.lock().unwrap().clone();
                let list = match handler {
                    Some(h) => h(&istiod.name).await,
                    None => json!([]),
                };
                (200, list.to_string())
            }
            _ => (404, "404 page not found\n".into()),
        }
    }

    async fn clusterz(&self, cluster: &kube::Client, pod: &Pod) -> serde_json::Value {
        use k8s_openapi::api::apps::v1::Deployment;
        use k8s_openapi::api::core::v1::Secret;
        let (namespace, revision) = (pod.namespace.as_str(), pod.revision.as_str());
        // Every revision's istiod runs with its cluster's ID (`CLUSTER_ID`); the first found.
        let istiod = kube::Api::<Deployment>::namespaced(cluster.clone(), namespace)
            .list(&kube::api::ListParams::default())
            .await
            .ok()
            .and_then(|l| {
                l.items.into_iter().find(|d| {
                    let name = d.metadata.name.as_deref().unwrap_or_default();
                    name == "istiod" || name.starts_with("istiod-")
                })
            });
        let own = istiod
            .and_then(|d| d.spec)
            .and_then(|s| s.template.spec)
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.env)
            .and_then(|env| env.into_iter().find(|e| e.name == "CLUSTER_ID"))
            .and_then(|e| e.value)
            .unwrap_or_else(|| "Kubernetes".into());
        let mut overrides = self.remote_status.lock().unwrap().clone();
        for ((rev, id), status) in self.revision_status.lock().unwrap().iter() {
            if rev == revision {
                overrides.insert(id.clone(), status.clone());
            }
        }
        for ((name, id), status) in self.pod_status.lock().unwrap().iter() {
            if *name == pod.name {
                overrides.insert(id.clone(), status.clone());
            }
        }
        let mut clusters = vec![json!({"id": own, "secretName": "", "syncStatus": "synced"})];
        let secrets = kube::Api::<Secret>::namespaced(cluster.clone(), namespace)
            .list(&kube::api::ListParams::default().labels("istio/multiCluster=true"))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let mut registered = vec![own.clone()];
        for secret in secrets {
            let name = secret.metadata.name.clone().unwrap_or_default();
            for id in secret.data.unwrap_or_default().into_keys() {
                if registered.contains(&id) {
                    continue;
                }
                registered.push(id.clone());
                let sync = overrides.get(&id).cloned().unwrap_or_else(|| "synced".into());
                clusters
                    .push(json!({"id": id, "secretName": format!("{namespace}/{name}"), "syncStatus": sync}));
            }
        }
        json!(clusters)
    }

    /// istiod's monitoring port as the kubelet reaches it in the pod: an HTTP/1 server on one end
    /// of a pipe, whose other end is returned; every caller through it is a loopback caller.
    pub fn listen(self: &Arc<Self>, cluster: kube::Client) -> DuplexStream {
        self.listen_as(cluster, Pod::lone())
    }

    /// The same, in pod `istiod`.
    pub fn listen_as(self: &Arc<Self>, cluster: kube::Client, istiod_pod: Pod) -> DuplexStream {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let istiod = self.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let (istiod, cluster, pod) = (istiod.clone(), cluster.clone(), istiod_pod.clone());
            async move {
                let (status, body) = istiod
                    .answer_as(&cluster, &pod, request.uri().path(), Caller::Loopback)
                    .await;
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body)))
                        .unwrap(),
                )
            }
        });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(ours), service),
        );
        theirs
    }
}

/// The names istiod's serving certificate carries, for xDS and its CA on 15012 and its webhooks
/// (`pilot/pkg/bootstrap/server.go`, `getDNSNames`, called by `initIstiodCerts` with the host of
/// the mesh config's `defaultConfig.discoveryAddress`, `model/context.go`
/// `GetDiscoveryAddress`): each host of `ISTIOD_CUSTOM_HOST`, that host, then `istiod`,
/// `istiod-remote` and `istio-pilot` (and `istiod-<revision>` for a revision other than `default`)
/// as `<name>.<namespace>.svc`. The certificate is made from them joined by commas
/// (`security/pkg/pki/util/san.go`, `BuildSubjectAltNameExtension`): an entry that parses as an IP
/// becomes an IP SAN, every other a DNS SAN. The names are fixed when istiod starts.
pub fn serving_names(
    discovery_address: &str,
    namespace: &str,
    revision: &str,
    custom_host: Option<&str>,
) -> Vec<String> {
    let mut names: Vec<String> = custom_host
        .into_iter()
        .flat_map(|h| h.split(','))
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    let host = discovery_address
        .rsplit_once(':')
        .map_or(discovery_address, |(h, _)| h);
    names.push(host.trim_start_matches('[').trim_end_matches(']').to_string());
    let mut known = vec!["istiod".to_string(), "istiod-remote".into(), "istio-pilot".into()];
    if !revision.is_empty() && revision != "default" {
        known.push(format!("istiod-{revision}"));
    }
    names.extend(known.iter().map(|n| format!("{n}.{namespace}.svc")));
    names.sort();
    names.dedup();
    names
}

/// Whether a proxy's agent that dials istiod at `address` (`host:port`: its `discoveryAddress`,
/// or `CA_ADDR` for certificates) accepts a certificate carrying `names` ([`serving_names`]), as
/// `pilot/pkg/grpc/tls.go` `getTLSDialOption` sets the TLS server name (the dialled host;
/// `istiod.istio-system.svc` for a host naming localhost; `ISTIOD_SAN` over both, where the agent
/// uses it) and Go's `crypto/x509` `VerifyHostname` then checks it: an IP against the IP SANs
/// only, a name against the DNS SANs. The refusal is Go's message.
pub fn proxy_accepts(address: &str, istiod_san: Option<&str>, names: &[String]) -> Result<(), String> {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = match istiod_san {
        Some(san) if !san.is_empty() => san.to_string(),
        _ if host.contains("localhost") => "istiod.istio-system.svc".to_string(),
        _ => host.to_string(),
    };
    if server_name.parse::<std::net::IpAddr>().is_ok() {
        let ips: Vec<&String> = names
            .iter()
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        if ips.is_empty() {
            return Err(format!(
                "x509: cannot validate certificate for {server_name} because it doesn't contain any IP SANs"
            ));
        }
        return if ips.iter().any(|ip| **ip == server_name) {
            Ok(())
        } else {
            Err(format!(
                "x509: certificate is valid for {}, not {server_name}",
                ips.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ))
        };
    }
    if names.iter().any(|n| n.eq_ignore_ascii_case(&server_name)) {
        Ok(())
    } else {
        Err(format!(
            "x509: certificate is valid for {}, not {server_name}",
            names.join(", ")
        ))
    }
}
