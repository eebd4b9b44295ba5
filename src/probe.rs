//! What a phase finds in a cluster, held against what its plan wants: read-only, as data.
//!
//! Every phase file has a `probe` next to its `plan` (see [`crate::phases::probe`]). `up` runs a
//! phase's steps in a cluster only where its probe finds something missing or different, and names
//! each repair; `status` prints the same findings. The helpers here are the checks phases share:
//! a rendered file against the live objects, a Deployment installed from a given rendering, a
//! DaemonSet, node labels.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::kube::apply::{Applier, Comparison};
use crate::kube::{Clients, wait};
use crate::plan::CertsStep;
use crate::plan::{Artifact, Plan, Step};
use crate::state::MeshState;
use crate::tools::ToolRunner;
use crate::topology::{Cluster, Mesh};

/// What was found of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Found {
    /// As the plan wants it.
    Present,
    Missing,
    /// There, but not as the plan wants it (or not ready).
    Different,
    /// The cluster did not answer.
    Unreachable,
    /// There, but meshctl did not create it: it will not take it over (`up --adopt` does).
    Foreign,
    /// meshctl's, but replacing it would break what runs (a `cacerts` under another root): `up`
    /// refuses, `--adopt` or not.
    Conflict,
}

impl Found {
    /// The word for it in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Found::Present => "present",
            Found::Missing => "missing",
            Found::Different => "different",
            Found::Unreachable => "unreachable",
            Found::Foreign => "not meshctl's",
            Found::Conflict => "in conflict",
        }
    }
}

/// One object a phase owns, as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What it is, e.g. `remote secret for cluster2` or `Secret istio-system/cacerts`.
    pub object: String,
    pub found: Found,
    /// The detail a person needs (never secret values).
    pub detail: String,
}

impl Finding {
    fn new(object: impl Into<String>, found: Found, detail: impl Into<String>) -> Finding {
        Finding {
            object: object.into(),
            found,
            detail: detail.into(),
        }
    }

    pub fn present(object: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding::new(object, Found::Present, detail)
    }

    pub fn missing(object: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding::new(object, Found::Missing, detail)
    }

    pub fn different(object: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding::new(object, Found::Different, detail)
    }

    /// The cluster did not answer.
    pub fn unreachable(object: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding::new(object, Found::Unreachable, detail)
    }

    /// Someone else's object where meshctl would create its own.
    pub fn foreign(object: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding::new(object, Found::Foreign, detail)
    }

    /// meshctl's object that must not be replaced by the plan's.
    pub fn conflict(object: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding::new(object, Found::Conflict, detail)
    }

    /// `Secret istio-system/cacerts was missing (not found)`: what `up` says it repaired.
    pub fn as_drift(&self) -> String {
        format!("{} was {} ({})", self.object, self.found.as_str(), self.detail)
    }
}

/// Whether everything a phase owns is in place.
pub fn in_place(findings: &[Finding]) -> bool {
    findings.iter().all(|f| f.found == Found::Present)
}

/// Everything a probe reads: the plan of one phase in one cluster, the mesh, what meshctl
/// recorded, and the connections.
pub struct Probe<'a> {
    pub mesh: &'a Mesh,
    pub cluster: &'a Cluster,
    /// The whole plan (artifacts by path).
    pub plan: &'a Plan,
    /// This phase's steps in this cluster.
    pub steps: &'a [Step],
    pub state: &'a MeshState,
    pub clients: &'a Clients,
    /// How external programs run (the `routes` probe reads a kind node's routing table).
    pub tools: &'a dyn ToolRunner,
    /// What the probes of one look share: a fact of one cluster read once, however many other
    /// clusters' probes compare with it (each peer's published CA).
    pub memo: &'a crate::memo::Memo,
}

impl Probe<'_> {
    /// The cluster's client, or the finding that it does not answer.
    pub async fn client(&self) -> Result<Client, Finding> {
        self.clients.get(&self.cluster.context).await.map_err(|e| {
            Finding::unreachable(format!("API server of `{}`", self.cluster.name), e.to_string())
        })
    }

    /// A rendered file of the plan.
    pub fn artifact(&self, path: &str) -> Option<&Artifact> {
        self.plan.artifacts.iter().find(|a| a.path == path)
    }

    /// The files this phase applies with plain `Apply` steps.
    pub fn applied_files(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Apply { file } | Step::Certs(CertsStep::ApplyPluggedCa { file }) => Some(file.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Each object of the rendered `file` against the cluster.
    pub async fn applied(&self, client: &Client, file: &str) -> Vec<Finding> {
        let Some(artifact) = self.artifact(file) else {
            return vec![Finding::missing(file, "not in the plan")];
        };
        match Applier::new(client.clone())
            .compare_yaml(&artifact.content, file)
            .await
        {
            Ok(compared) => compared
                .into_iter()
                .map(|c| match c.comparison {
                    Comparison::Same => Finding::present(c.object, "as rendered"),
                    Comparison::Foreign => Finding::foreign(
                        c.object,
                        "exists without the label app.kubernetes.io/managed-by=meshctl (someone else created it), or meshctl.io/mesh names another mesh",
                    ),
                    Comparison::Missing(why) => Finding::missing(c.object, why),
                    Comparison::Differs(path) => {
                        Finding::different(c.object, format!("{path} differs from {file}"))
                    }
                })
                .collect(),
            Err(e) => vec![Finding::unreachable(file, e.to_string())],
        }
    }

    /// Every file of the phase's `Apply` steps against the cluster.
    pub async fn all_applied(&self, client: &Client) -> Vec<Finding> {
        let mut out = Vec::new();
        for file in self.applied_files() {
            out.extend(self.applied(client, file).await);
        }
        out
    }
}

/// Why `meta` does not carry the install record `(annotation, digest)`, as a finding on `object`.
fn install_record_differs(
    object: &str,
    meta: &kube::api::ObjectMeta,
    (key, digest): (&str, &str),
) -> Option<Finding> {
    match meta.annotations.as_ref().and_then(|a| a.get(key)) {
        Some(have) if have == digest => None,
        Some(have) => Some(Finding::different(
            object,
            format!("installed from another rendering (digest {have}, the plan's is {digest})"),
        )),
        None => Some(Finding::different(
            object,
            format!("no record of what was installed (annotation {key})"),
        )),
    }
}

/// Service `namespace/name` exists and, with `installed`, carries that digest in annotation `key`
/// (the record of an install that creates no Deployment: a remote's).
pub async fn service(
    client: &Client,
    namespace: &str,
    name: &str,
    installed: Option<(&str, &str)>,
) -> Finding {
    let object = format!("Service {namespace}/{name}");
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(svc)) => installed
            .and_then(|i| install_record_differs(&object, &svc.metadata, i))
            .unwrap_or_else(|| Finding::present(object, "installed from this rendering")),
        Ok(None) => Finding::missing(object, "not found"),
        Err(e) => Finding::unreachable(object, crate::kube::human_reason(&e)),
    }
}

/// Deployment `namespace/name`: Available, and, with `installed`, carrying that digest in
/// annotation `key` (what the install step records).
pub async fn deployment(
    client: &Client,
    namespace: &str,
    name: &str,
    installed: Option<(&str, &str)>,
) -> Finding {
    let object = format!("Deployment {namespace}/{name}");
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let d = match api.get_opt(name).await {
        Ok(Some(d)) => d,
        Ok(None) => return Finding::missing(object, "not found"),
        Err(e) => return Finding::unreachable(object, crate::kube::human_reason(&e)),
    };
    if let Some(f) = installed.and_then(|i| install_record_differs(&object, &d.metadata, i)) {
        return f;
    }
    if wait::deployment_available(&d) {
        Finding::present(object, "available")
    } else {
        let s = d.status.unwrap_or_default();
        Finding::different(
            object,
            format!(
                "not available ({}/{} replicas)",
                s.available_replicas.unwrap_or(0),
                s.replicas.unwrap_or(0)
            ),
        )
    }
}

/// DaemonSet `namespace/name` with a ready pod on every node it schedules to.
pub async fn daemonset(client: &Client, namespace: &str, name: &str) -> Finding {
    let object = format!("DaemonSet {namespace}/{name}");
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(d)) if wait::daemonset_ready(&d) => Finding::present(object, "ready on every node"),
        Ok(Some(d)) => Finding::different(object, format!("not rolled out: {}", wait::daemonset_counts(&d))),
        Ok(None) => Finding::missing(object, "not found"),
        Err(e) => Finding::unreachable(object, crate::kube::human_reason(&e)),
    }
}

/// Every node Ready and carrying `labels` (with `overwrite`, the same values; without, any value).
pub async fn nodes(
    client: &Client,
    labels: &std::collections::BTreeMap<String, String>,
    overwrite: bool,
) -> Finding {
    let object = "node labels";
    let list = match Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items,
        Err(e) => return Finding::unreachable(object, crate::kube::human_reason(&e)),
    };
    for node in &list {
        let name = node.metadata.name.clone().unwrap_or_default();
        let have = node.metadata.labels.clone().unwrap_or_default();
        for (k, v) in labels {
            match have.get(k) {
                None => return Finding::missing(object, format!("node {name} has no {k}")),
                Some(h) if overwrite && h != v => {
                    return Finding::different(
                        object,
                        format!("node {name} has {k}={h}, the topology says {v}"),
                    );
                }
                _ => {}
            }
        }
    }
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Finding::present(
        object,
        format!("{} node(s) with {}", list.len(), wanted.join(", ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_is_in_place_only_when_everything_is_present() {
        let ok = Finding::present("a", "as rendered");
        let gone = Finding::missing("Secret istio-system/cacerts", "not found");
        assert!(in_place(std::slice::from_ref(&ok)));
        assert!(!in_place(&[ok, gone.clone()]));
        assert_eq!(
            gone.as_drift(),
            "Secret istio-system/cacerts was missing (not found)"
        );
    }
}
