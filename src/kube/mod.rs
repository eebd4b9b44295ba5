//! Talking to clusters: one kube-rs client per kubeconfig context, server-side apply of rendered
//! YAML, waits driven by watches, and retries of transient failures. No kubectl.

pub mod apply;
pub mod inspect;
pub mod port_forward;
pub mod retry;
pub mod wait;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The one field manager of every server-side apply meshctl makes.
pub const FIELD_MANAGER: &str = "meshctl";

/// The label meshctl's templates put on every object meshctl creates and may later delete. An
/// object that exists without it is someone else's: meshctl neither takes it over nor deletes it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "meshctl");

/// Whether `meta` carries [`MANAGED_BY`].
pub fn managed_by_meshctl(meta: &kube::api::ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY.0))
        .is_some_and(|v| v == MANAGED_BY.1)
}

/// The label naming the mesh (its mesh ID) that made an object of the mesh's own (its CA, address
/// pools, Gateways): one cluster may hold objects of several meshes' meshctl, and each touches
/// only its own.
pub const MESH_LABEL: &str = "meshctl.io/mesh";

/// The mesh `meta` says made it ([`MESH_LABEL`]); none on an object of a meshctl that did not
/// record it yet, which counts as the mesh's that finds it.
pub fn made_for_mesh(meta: &kube::api::ObjectMeta) -> Option<&str> {
    meta.labels.as_ref()?.get(MESH_LABEL).map(String::as_str)
}

/// Whether `meta` is meshctl's and, when it names a mesh, `mesh_id`'s.
pub fn owned_by_mesh(meta: &kube::api::ObjectMeta, mesh_id: &str) -> bool {
    managed_by_meshctl(meta) && made_for_mesh(meta).is_none_or(|m| m == mesh_id)
}

/// Deletes `name` through `api` when it exists and is mesh `mesh_id`'s ([`owned_by_mesh`]); says
/// what it deleted. Anyone else's object of that name, another mesh's included, stays.
/// The Gateway API `Gateway`s (`gateway.networking.k8s.io/v1`) of `namespace`, untyped: Gateway
/// API's types are not Kubernetes' own, and a cluster may not serve them.
pub fn gateways(client: &Client, namespace: &str) -> kube::Api<kube::api::DynamicObject> {
    let gvk = kube::api::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "Gateway");
    kube::Api::namespaced_with(client.clone(), namespace, &kube::api::ApiResource::from_gvk(&gvk))
}

pub async fn delete_owned<K>(
    api: &kube::Api<K>,
    (name, mesh_id): (&str, &str),
    what: &str,
) -> anyhow::Result<Option<String>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    use anyhow::Context as _;
    match api
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read {what}"))?
    {
        Some(obj) if owned_by_mesh(obj.meta(), mesh_id) => {
            api.delete(name, &Default::default())
                .await
                .with_context(|| format!("cannot delete {what}"))?;
            Ok(Some(what.to_string()))
        }
        _ => Ok(None),
    }
}

/// Errors of the Kubernetes layer. Each names the cluster context and the object.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig or context cannot be used.
    #[error("context `{context}`: {reason}")]
    Config { context: String, reason: String },
    /// The API server refused the request for good (4xx other than 409/429).
    #[error("{what}: the API server answered {code} {reason}: {message}")]
    Rejected {
        /// The operation and object.
        what: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// Transient failures persisted through every retry.
    #[error("{what}: still failing after {attempts} attempts: {last}")]
    Exhausted {
        /// The operation and object.
        what: String,
        attempts: u32,
        last: String,
    },
    /// A document cannot be applied as it is.
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    /// The object exists and meshctl did not create it: applying would take it over.
    #[error(
        "{object} already exists and meshctl did not create it for this mesh (it lacks the label app.kubernetes.io/managed-by=meshctl, or its meshctl.io/mesh names another mesh): meshctl does not take over or overwrite what it did not create"
    )]
    Foreign {
        /// `Kind namespace/name`.
        object: String,
    },
    /// A wait ran out of time.
    #[error(transparent)]
    Wait(#[from] wait::WaitError),
    /// The API server of a context cannot be reached or did not answer.
    #[error("context `{context}`: cannot reach the API server at {server}: {reason}")]
    Unreachable {
        context: String,
        /// The server URL from the kubeconfig.
        server: String,
        /// What happened, in words a user can act on.
        reason: String,
    },
}

/// How long `connect` waits for the API server to answer its first request. A server that accepts
/// connections and never answers would otherwise hold a command for minutes (kube sets no bound
/// on a plain request).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A kube error as a user reads it: what failed on the way to the server, not the type names of
/// the HTTP stack (`ServiceError: client error (Connect)`).
pub fn human_reason(e: &kube::Error) -> String {
    if let kube::Error::Api(status) = e {
        return match status.code {
            401 => "the credentials in the kubeconfig were refused (401 Unauthorized)".into(),
            403 => format!("forbidden (403): {}", status.message),
            code => format!("the server answered {code} {}: {}", status.reason, status.message),
        };
    }
    if let kube::Error::SerdeError(_) = e {
        // It answered, with something that is not the API's JSON: not "unreachable".
        return "the server answered, but not as a Kubernetes API server (its answer is not Kubernetes JSON: a web page, or another service at that address?)".into();
    }
    let mut chain = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    let all = chain.join(": ").to_lowercase();
    let innermost = chain.last().cloned().unwrap_or_default();
    if all.contains("invalidcontenttype") || all.contains("corrupt message") {
        "the server does not speak TLS at that address (plain HTTP where the kubeconfig says https://? check the scheme and the port)".into()
    } else if all.contains("causedasendentity") || all.contains("ca used as end entity") {
        "the server presents a CA certificate as its own: it needs a serving certificate signed by a CA, not the CA itself".into()
    } else if all.contains("connection refused") {
        "connection refused: nothing listens at that address (is the cluster running?)".into()
    } else if all.contains("timed out") || all.contains("deadline has elapsed") {
        format!(
            "no answer within {}s (the connection or its TLS handshake did not complete)",
            PROBE_TIMEOUT.as_secs()
        )
    } else if all.contains("certificate") || all.contains("unknownissuer") || all.contains("tls") {
        format!(
            "the TLS handshake failed, the server's certificate does not match the kubeconfig's certificate authority ({innermost})"
        )
    } else if all.contains("dns") || all.contains("failed to lookup") {
        format!("the host name does not resolve ({innermost})")
    } else {
        innermost
    }
}

/// The kubeconfig `path`, or the files `KUBECONFIG` lists (merged in order, the first file
/// winning for a name in several, files that do not exist skipped: kubectl's rules), or
/// `~/.kube/config`. The error says which file and what is wrong with it, in a user's words.
pub fn read_kubeconfig(path: Option<&Path>) -> Result<Kubeconfig, String> {
    let read = |path: &Path| {
        Kubeconfig::read_from(path).map_err(|e| {
            let source = path.display().to_string();
            let reason = match std::error::Error::source(&e) {
                Some(cause) => crate::render::yaml_error(&cause.to_string(), &source),
                None => e.to_string(),
            };
            if path.exists() {
                format!("`{source}` is not a usable kubeconfig: {reason}")
            } else {
                format!("cannot read `{source}`: no such file")
            }
        })
    };
    if let Some(path) = path {
        return read(path);
    }
    let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) else {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        return read(&home.join(".kube/config"));
    };
    let mut merged: Option<Kubeconfig> = None;
    for file in std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty() && p.exists()) {
        let next = read(&file)?;
        merged = Some(match merged {
            None => next,
            Some(first) => first
                .merge(next)
                .map_err(|e| format!("cannot merge the files of KUBECONFIG: {e}"))?,
        });
    }
    merged.ok_or_else(|| {
        format!(
            "none of the files KUBECONFIG lists exists ({})",
            list.to_string_lossy()
        )
    })
}

/// A client for `context` from `kubeconfig` (or `KUBECONFIG`, which may list several files, or
/// `~/.kube/config`).
pub async fn connect(kubeconfig: Option<&Path>, context: &str) -> Result<Client, KubeError> {
    let err = |reason: String| KubeError::Config {
        context: context.to_string(),
        reason,
    };
    let config = read_kubeconfig(kubeconfig).map_err(err)?;
    if !config.contexts.iter().any(|c| c.name == context) {
        let known: Vec<_> = config.contexts.iter().map(|c| c.name.as_str()).collect();
        return Err(err(format!(
            "no such context in the kubeconfig (known: {})",
            known.join(", ")
        )));
    }
    let options = KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(config, &options)
        .await
        .map_err(|e| err(e.to_string()))?;
    config.connect_timeout = Some(PROBE_TIMEOUT);
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| err(e.to_string()))?;
    // One cheap request now, bounded, so an unreachable or silent server is named at once.
    let unreachable = |reason: String| KubeError::Unreachable {
        context: context.to_string(),
        server: server.trim_end_matches('/').to_string(),
        reason,
    };
    // The connect timeout bounds TCP and TLS; this bounds the answer to the request itself.
    // One bound for the whole first answer: a server that accepts and stays silent costs about
    // PROBE_TIMEOUT, not twice that. A moment longer than the connect timeout, so a TCP or TLS
    // handshake that never completes is named as such by the connector first.
    let bound = PROBE_TIMEOUT + Duration::from_millis(500);
    match tokio::time::timeout(bound, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => Err(unreachable(human_reason(&e))),
        Err(_) => Err(unreachable(format!(
            "it accepted the connection but did not answer within {}s",
            PROBE_TIMEOUT.as_secs()
        ))),
    }
}

/// One client per context for a whole command, each connected (and probed) once, however many
/// phases and clusters ask for it; contexts connect in parallel. An API server that did not answer
/// is asked once per command: every later ask (every phase's probe, the run after them) gets the
/// same answer at once. Other failures (a context not in the kubeconfig yet) are tried again, and
/// [`Clients::forget`] clears both (a kind cluster created since).
#[derive(Default)]
pub struct Clients {
    kubeconfig: Option<PathBuf>,
    cells: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Client>>>>,
    /// Contexts whose API server did not answer in this command: `(server, reason)`. Asked again,
    /// they fail at once instead of costing the probe's bound once more per phase.
    unreachable: Mutex<HashMap<String, (String, String)>>,
}

impl Clients {
    /// Clients from `kubeconfig` (else `KUBECONFIG` or `~/.kube/config`).
    pub fn new(kubeconfig: Option<&Path>) -> Clients {
        Clients {
            kubeconfig: kubeconfig.map(Path::to_path_buf),
            cells: Mutex::default(),
            unreachable: Mutex::default(),
        }
    }

    /// The kubeconfig flag they read.
    pub fn kubeconfig(&self) -> Option<&Path> {
        self.kubeconfig.as_deref()
    }

    /// The client of `context`.
    pub async fn get(&self, context: &str) -> Result<Client, KubeError> {
        let cell = self
            .cells
            .lock()
            .expect("clients lock")
            .entry(context.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            // Waiters behind a failed first try land here too: they get its answer, not a try of
            // their own against the same silent server.
            if let Some((server, reason)) = self.unreachable.lock().expect("clients lock").get(context) {
                return Err(KubeError::Unreachable {
                    context: context.to_string(),
                    server: server.clone(),
                    reason: reason.clone(),
                });
            }
            let connected = connect(self.kubeconfig.as_deref(), context).await;
            if let Err(KubeError::Unreachable { server, reason, .. }) = &connected {
                self.unreachable
                    .lock()
                    .expect("clients lock")
                    .insert(context.to_string(), (server.clone(), reason.clone()));
            }
            connected
        })
        .await
        .cloned()
    }

    /// Forgets `context`'s client, or that it did not answer (its kubeconfig entry was just
    /// rewritten: a cluster created again).
    pub fn forget(&self, context: &str) {
        self.cells.lock().expect("clients lock").remove(context);
        self.unreachable.lock().expect("clients lock").remove(context);
    }
}

/// The API server URL `context` points at, as written in the kubeconfig.
pub fn server_of(kubeconfig: Option<&Path>, context: &str) -> Result<String, KubeError> {
    let err = |reason: String| KubeError::Config {
        context: context.to_string(),
        reason,
    };
    // Read as every other command reads it: a file KUBECONFIG lists that is missing is skipped.
    let config = read_kubeconfig(kubeconfig).map_err(err)?;
    let ctx = config
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| {
            let known: Vec<_> = config.contexts.iter().map(|c| c.name.as_str()).collect();
            err(format!(
                "no such context in the kubeconfig (known: {})",
                known.join(", ")
            ))
        })?;
    config
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .ok_or_else(|| err(format!("cluster `{}` of the context has no server", ctx.cluster)))
}
