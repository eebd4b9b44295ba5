//! Server-side apply of rendered multi-document YAML, whatever the kinds.
//!
//! Each document's group/version/kind is resolved through discovery (cached per client), then
//! applied with one field manager and `force`. Namespaces go first, then CRDs, which are waited for
//! until Established and served by discovery before anything else, so custom resources in the same
//! batch find their type.
//! A document that is already in the wanted state is reported `Unchanged`: the server keeps its
//! resource version, and a second `up` says it changed nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::{Client, ResourceExt};
use serde::Serialize;

use super::retry::{RetryPolicy, retry};
use super::{FIELD_MANAGER, KubeError, wait};
use crate::render::parse_documents;

/// What an apply did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// It did not exist.
    Created,
    /// It existed and changed.
    Updated,
    /// It was already as wanted.
    Unchanged,
}

impl Change {
    /// The word for it in messages (`created`, `updated`, `unchanged`), as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// `Kind namespace/name`.
    pub object: String,
    pub change: Change,
}

/// Applies documents to one cluster, remembering discovery results.
pub struct Applier {
    client: Client,
    manager: &'static str,
    policy: RetryPolicy,
    crd_timeout: Duration,
    adopt: bool,
    cache: Mutex<HashMap<(String, String), (ApiResource, ApiCapabilities)>>,
}

/// Whether a rendered document claims meshctl's ownership ([`super::MANAGED_BY`]): it is
/// meshctl's to create, repair and delete, and must not take the place of someone else's object.
fn claims_ownership(obj: &DynamicObject) -> bool {
    super::managed_by_meshctl(&obj.metadata)
}

/// Whether `live` is someone else's where the document `obj` claims meshctl's ownership: not
/// meshctl's at all, or made by meshctl for another mesh than the one the document names
/// ([`super::MESH_LABEL`]).
fn taken_by_another(obj: &DynamicObject, live: &ObjectMeta) -> bool {
    claims_ownership(obj)
        && match super::made_for_mesh(&obj.metadata) {
            Some(mesh) => !super::owned_by_mesh(live, mesh),
            None => !super::managed_by_meshctl(live),
        }
}

impl Applier {
    /// An applier over `client`.
    pub fn new(client: Client) -> Applier {
        Applier {
            client,
            manager: FIELD_MANAGER,
            policy: RetryPolicy::default(),
            crd_timeout: Duration::from_secs(60),
            adopt: false,
            cache: Mutex::default(),
        }
    }

    /// Applying as another field manager. Server-side apply removes the fields a manager set before
    /// and no longer sends, so each writer must apply under its own name (meshctl's is
    /// [`FIELD_MANAGER`]; a test playing istioctl uses istioctl's).
    pub fn with_field_manager(mut self, manager: &'static str) -> Applier {
        self.manager = manager;
        self
    }

    /// With another retry policy (tests use short delays).
    pub fn with_policy(mut self, policy: RetryPolicy) -> Applier {
        self.policy = policy;
        self
    }

    /// Taking over objects meshctl would create that already exist without its label (`--adopt`):
    /// they become meshctl's, which `down --uninstall` then removes. Off by default: such an
    /// object is refused ([`KubeError::Foreign`]).
    pub fn with_adoption(mut self, adopt: bool) -> Applier {
        self.adopt = adopt;
        self
    }

    /// With another bound on each CRD's wait (Established, then served by discovery).
    pub fn with_crd_timeout(mut self, timeout: Duration) -> Applier {
        self.crd_timeout = timeout;
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn resolve(
        &self,
        api_version: &str,
        kind: &str,
        what: &str,
    ) -> Result<(ApiResource, ApiCapabilities), KubeError> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(hit) = self.cache.lock().expect("cache lock").get(&key) {
            return Ok(hit.clone());
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let found = retry(&format!("discover {api_version} {kind}"), self.policy, || {
            kube::discovery::pinned_kind(&self.client, &gvk)
        })
        .await
        .map_err(|e| match e {
            KubeError::Rejected { code: 404, .. } => KubeError::Invalid {
                what: what.to_string(),
                reason: format!("the cluster serves no {api_version} {kind} (are its CRDs installed?)"),
            },
            other => other,
        })?;
        self.cache.lock().expect("cache lock").insert(key, found.clone());
        Ok(found)
    }

    /// Applies every document of `yaml`, in a safe order. `source` names the file in errors.
    pub async fn apply_yaml(&self, yaml: &str, source: &str) -> Result<Vec<Applied>, KubeError> {
        let docs = parse_documents(yaml).map_err(|reason| KubeError::Invalid {
            what: source.to_string(),
            reason,
        })?;
        let mut objects = Vec::with_capacity(docs.len());
        for doc in docs {
            let obj: DynamicObject = serde_json::from_value(doc).map_err(|e| KubeError::Invalid {
                what: source.to_string(),
                reason: format!("not a Kubernetes object: {e}"),
            })?;
            objects.push(obj);
        }
        // Namespaces, then CRDs, then everything else; stable within each group.
        let rank = |o: &DynamicObject| match o.types.as_ref().map(|t| t.kind.as_str()) {
            Some("Namespace") => 0,
            Some("CustomResourceDefinition") => 1,
            _ => 2,
        };
        objects.sort_by_key(rank);
        let mut applied = Vec::with_capacity(objects.len());
        let mut crds = Vec::new();
        for obj in &objects {
            if rank(obj) == 2 && !crds.is_empty() {
                self.await_crds(std::mem::take(&mut crds)).await?;
            }
            let result = self.apply_one(obj, source).await?;
            if rank(obj) == 1 {
                crds.push(obj);
            }
            applied.push(result);
        }
        self.await_crds(crds).await?;
        Ok(applied)
    }

    /// Waits until each CRD is Established and discovery serves every version it serves. The two
    /// are not one moment: the apiserver's discovery controller adds a group version to discovery
    /// from a work queue fed by the CRD's Established update
    /// (`apiextensions-apiserver/pkg/apiserver/customresource_discovery_controller.go`, `sync`), so
    /// right after Established `/apis/<group>/<version>` can still answer 404, or list the group
    /// without the new kind. What discovery then serves seeds the cache.
    async fn await_crds(&self, crds: Vec<&DynamicObject>) -> Result<(), KubeError> {
        if crds.is_empty() {
            return Ok(());
        }
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        // What discovery said before these types existed is stale.
        self.cache.lock().expect("cache lock").clear();
        for crd in crds {
            let name = crd.name_any();
            wait::until(&api, wait::established(&name), self.crd_timeout).await?;
            for gvk in served_kinds(crd) {
                let found = wait::discovery_serves(&self.client, &gvk, self.crd_timeout).await?;
                let key = (gvk.api_version(), gvk.kind.clone());
                self.cache.lock().expect("cache lock").insert(key, found);
            }
        }
        Ok(())
    }

    /// Creates the documents of `yaml` that do not exist yet and leaves existing ones alone (for
    /// objects another tool owns, such as the RBAC istioctl installs).
    pub async fn create_missing(&self, yaml: &str, source: &str) -> Result<Vec<Applied>, KubeError> {
        let docs = parse_documents(yaml).map_err(|reason| KubeError::Invalid {
            what: source.to_string(),
            reason,
        })?;
        let mut out = Vec::new();
        for doc in docs {
            let obj: DynamicObject = serde_json::from_value(doc).map_err(|e| KubeError::Invalid {
                what: source.to_string(),
                reason: e.to_string(),
            })?;
            let types = obj.types.clone().unwrap_or_default();
            let (resource, caps) = self.resolve(&types.api_version, &types.kind, source).await?;
            let name = obj.name_any();
            let ns = obj.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            let api: Api<DynamicObject> = match caps.scope {
                Scope::Namespaced => Api::namespaced_with(self.client.clone(), &ns, &resource),
                Scope::Cluster => Api::all_with(self.client.clone(), &resource),
            };
            let what = format!("get {} {name}", types.kind);
            if retry(&what, self.policy, || api.get_opt(&name)).await?.is_some() {
                out.push(Applied {
                    object: format!("{} {name}", types.kind),
                    change: Change::Unchanged,
                });
            } else {
                out.push(self.apply_one(&obj, source).await?);
            }
        }
        Ok(out)
    }

    /// Waits until the API server's admission chain, webhooks included, accepts every document of
    /// `yaml`: a server-side dry-run apply (`dryRun=All` runs admission but stores nothing), tried
    /// again with growing pauses while a webhook cannot be called, up to `timeout`. A webhook can
    /// have its CA bundle and a ready endpoint and still refuse connections (MetalLB's starts only
    /// once its certificate is mounted: metallb#1540, #1597, #2566), and no object reports that, so
    /// the answer itself is what is waited for. Returns how many tries it took. A denial by the
    /// webhook, or any other refusal, ends the wait at once with the server's message.
    pub async fn await_admission(
        &self,
        yaml: &str,
        source: &str,
        timeout: Duration,
    ) -> Result<u32, KubeError> {
        let docs = parse_documents(yaml).map_err(|reason| KubeError::Invalid {
            what: source.to_string(),
            reason,
        })?;
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(250);
        let mut tries = 0;
        for doc in docs {
            let obj: DynamicObject = serde_json::from_value(doc).map_err(|e| KubeError::Invalid {
                what: source.to_string(),
                reason: format!("not a Kubernetes object: {e}"),
            })?;
            let (api, label) = self.api_for(&obj, source).await?;
            let what = format!("admission of {label} (from {source}, server-side dry run)");
            let params = PatchParams::apply(self.manager).force().dry_run();
            loop {
                tries += 1;
                let last = match api.patch(&obj.name_any(), &params, &Patch::Apply(&obj)).await {
                    Ok(_) => break,
                    Err(e) if webhook_unreachable(&e) => super::retry::describe(&e),
                    Err(e) => return Err(super::retry::permanent(&what, &e)),
                };
                if started.elapsed() + pause > timeout {
                    return Err(KubeError::Wait(wait::WaitError::Timeout {
                        what,
                        after: timeout,
                        last_seen: last,
                    }));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
        }
        Ok(tries)
    }

    /// Compares every document of `yaml` with what the cluster holds, reading only: missing,
    /// different (the first field that differs, by path; never its value, which may be a key), or
    /// the same. A field the server adds (defaults, status, other managers' fields) is no
    /// difference: only what the document sets is compared.
    pub async fn compare_yaml(&self, yaml: &str, source: &str) -> Result<Vec<Compared>, KubeError> {
        let docs = parse_documents(yaml).map_err(|reason| KubeError::Invalid {
            what: source.to_string(),
            reason,
        })?;
        let mut out = Vec::with_capacity(docs.len());
        for doc in docs {
            let obj: DynamicObject = serde_json::from_value(doc.clone()).map_err(|e| KubeError::Invalid {
                what: source.to_string(),
                reason: format!("not a Kubernetes object: {e}"),
            })?;
            let (api, object) = match self.api_for(&obj, source).await {
                Ok(found) => found,
                // The type is not served (its CRDs are not installed): the object cannot exist.
                Err(KubeError::Invalid { reason, .. }) => {
                    let types = obj.types.clone().unwrap_or_default();
                    out.push(Compared {
                        object: format!("{} {}", types.kind, obj.name_any()),
                        comparison: Comparison::Missing(reason),
                    });
                    continue;
                }
                Err(e) => return Err(e),
            };
            let what = format!("read {object} (from {source})");
            let name = obj.name_any();
            let comparison = match retry(&what, self.policy, || api.get_opt(&name)).await? {
                None => Comparison::Missing("not found".into()),
                Some(live) if taken_by_another(&obj, &live.metadata) => Comparison::Foreign,
                Some(live) => {
                    let live = serde_json::to_value(&live).unwrap_or_default();
                    match first_difference(&doc, &live, "") {
                        None => Comparison::Same,
                        Some(path) => Comparison::Differs(path),
                    }
                }
            };
            out.push(Compared { object, comparison });
        }
        Ok(out)
    }

    /// Deletes every document of `yaml` that exists and waits, on a watch, until each is gone, up to
    /// `timeout` for each. A document whose type is not served, or that is not there, is already
    /// gone. Returns `Kind namespace/name` of each object it deleted.
    pub async fn delete_yaml(
        &self,
        yaml: &str,
        source: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, KubeError> {
        let docs = parse_documents(yaml).map_err(|reason| KubeError::Invalid {
            what: source.to_string(),
            reason,
        })?;
        let mut deleted = Vec::new();
        for doc in docs {
            let obj: DynamicObject = serde_json::from_value(doc).map_err(|e| KubeError::Invalid {
                what: source.to_string(),
                reason: format!("not a Kubernetes object: {e}"),
            })?;
            let (api, label) = match self.api_for(&obj, source).await {
                Ok(found) => found,
                Err(KubeError::Invalid { .. }) => continue,
                Err(e) => return Err(e),
            };
            let name = obj.name_any();
            let what = format!("delete {label} (from {source})");
            let params = kube::api::DeleteParams::default();
            match retry(&what, self.policy, || api.delete(&name, &params)).await {
                Ok(_) => {}
                Err(KubeError::Rejected { code: 404, .. }) => continue,
                Err(e) => return Err(e),
            }
            let gone = wait::Condition::absent(&name, format!("{label} gone"), |o: &DynamicObject| {
                match o.metadata.deletion_timestamp {
                    Some(_) => "being deleted (finalizers pending)".to_string(),
                    None => "still there".to_string(),
                }
            });
            wait::until(&api, gone, timeout).await?;
            deleted.push(label);
        }
        Ok(deleted)
    }

    /// The API of `obj`'s kind in its namespace, and `Kind namespace/name` for messages.
    async fn api_for(
        &self,
        obj: &DynamicObject,
        source: &str,
    ) -> Result<(Api<DynamicObject>, String), KubeError> {
        let types = obj.types.as_ref().ok_or_else(|| KubeError::Invalid {
            what: source.to_string(),
            reason: "a document has no apiVersion/kind".into(),
        })?;
        let name = obj.metadata.name.clone().ok_or_else(|| KubeError::Invalid {
            what: format!("{source}: {}", types.kind),
            reason: "metadata.name is missing".into(),
        })?;
        let (resource, caps) = self.resolve(&types.api_version, &types.kind, source).await?;
        Ok(match caps.scope {
            Scope::Namespaced => {
                let ns = obj
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".to_string());
                (
                    Api::namespaced_with(self.client.clone(), &ns, &resource),
                    format!("{} {ns}/{name}", types.kind),
                )
            }
            Scope::Cluster => (
                Api::all_with(self.client.clone(), &resource),
                format!("{} {name}", types.kind),
            ),
        })
    }

    pub async fn apply_one(&self, obj: &DynamicObject, source: &str) -> Result<Applied, KubeError> {
        let (api, label) = self.api_for(obj, source).await?;
        let name = obj.name_any();
        let what = format!("apply {label} (from {source})");
        let before = retry(&what, self.policy, || api.get_opt(&name)).await?;
        if let Some(live) = &before
            && taken_by_another(obj, &live.metadata)
            && !self.adopt
        {
            return Err(KubeError::Foreign { object: label });
        }
        let params = PatchParams::apply(self.manager).force();
        let patch = Patch::Apply(obj);
        let after = retry(&what, self.policy, || api.patch(&name, &params, &patch)).await?;
        let change = match before {
            None => Change::Created,
            Some(b) if b.resource_version() == after.resource_version() => Change::Unchanged,
            Some(_) => Change::Updated,
        };
        Ok(Applied {
            object: label,
            change,
        })
    }
}

/// The group/version/kinds a CRD document serves (`spec.versions[*]` with `served: true`).
fn served_kinds(crd: &DynamicObject) -> Vec<kube::api::GroupVersionKind> {
    let spec = &crd.data["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let kind = spec["names"]["kind"].as_str().unwrap_or_default();
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool().unwrap_or(false))
        .filter_map(|v| v["name"].as_str())
        .map(|version| kube::api::GroupVersionKind::gvk(group, version, kind))
        .collect()
}

/// `kubectl rollout restart`: a new `kubectl.kubernetes.io/restartedAt` annotation on the pod
/// template, so the Deployment replaces its pods (the same annotation kubectl sets, so either tool
/// can restart after the other).
pub async fn rollout_restart(client: &Client, namespace: &str, name: &str) -> Result<(), KubeError> {
    let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), namespace);
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": now}}}}});
    let params = PatchParams {
        field_manager: Some(super::FIELD_MANAGER.into()),
        ..Default::default()
    };
    let what = format!("restart deployment {namespace}/{name}");
    let patch = Patch::Merge(&patch);
    retry(&what, RetryPolicy::default(), || api.patch(name, &params, &patch))
        .await
        .map(|_| ())
}

/// How a live object compares with its rendered document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    /// It exists, the document claims meshctl's ownership, and meshctl did not create it.
    Foreign,
    /// Every field the document sets has that value.
    Same,
    /// It does not exist (and why, e.g. its type is not served).
    Missing(String),
    /// It exists; this field (a dotted path) is absent or has another value.
    Differs(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compared {
    /// `Kind namespace/name`.
    pub object: String,
    pub comparison: Comparison,
}

/// The first field of `wanted` that `live` lacks or holds with another value, as a dotted path.
/// Maps compare by the keys `wanted` has; lists element by element, at the same length.
pub fn first_difference(wanted: &serde_json::Value, live: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    let at = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (wanted, live) {
        (Value::Object(w), Value::Object(l)) => w.iter().find_map(|(k, v)| match l.get(k) {
            Some(have) => first_difference(v, have, &at(k)),
            None if v.is_null() => None,
            None => Some(at(k)),
        }),
        (Value::Array(w), Value::Array(l)) if w.len() == l.len() => w
            .iter()
            .zip(l)
            .enumerate()
            .find_map(|(i, (a, b))| first_difference(a, b, &format!("{path}[{i}]"))),
        (w, l) if w == l => None,
        _ => Some(if path.is_empty() {
            "the object".to_string()
        } else {
            path.to_string()
        }),
    }
}

/// Whether an API error says a webhook could not be called (not that it said no): the apiserver
/// answers 500 `failed calling webhook "…": … connection refused` (or a TLS error) then, and a
/// transport error means the API server itself was not reached.
fn webhook_unreachable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => status.code >= 500 || status.message.contains("failed calling webhook"),
        other => super::retry::is_transient(other),
    }
}

/// `3 objects created, 1 unchanged`, or the objects by name when there are few.
pub fn summary(applied: &[Applied]) -> Option<String> {
    let word = Change::as_str;
    if applied.len() <= 2 {
        let parts: Vec<String> = applied
            .iter()
            .map(|a| format!("{} {}", a.object, word(a.change)))
            .collect();
        return (!parts.is_empty()).then(|| parts.join(", "));
    }
    let parts: Vec<String> = [Change::Created, Change::Updated, Change::Unchanged]
        .into_iter()
        .map(|c| (applied.iter().filter(|a| a.change == c).count(), word(c)))
        .filter(|(n, _)| *n > 0)
        .map(|(n, w)| format!("{n} objects {w}"))
        .collect();
    Some(parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::{Change, first_difference};
    use serde_json::json;

    #[test]
    fn only_the_fields_a_document_sets_are_compared() {
        let wanted = json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"addresses": ["10.0.0.1-10.0.0.9"]}});
        let live = json!({"metadata": {"name": "p", "uid": "x", "labels": {"a": "1", "b": "2"}},
            "spec": {"addresses": ["10.0.0.1-10.0.0.9"], "autoAssign": true}, "status": {}});
        assert_eq!(first_difference(&wanted, &live, ""), None);
        let moved = json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"addresses": ["10.0.9.1-10.0.9.9"]}});
        assert_eq!(
            first_difference(&wanted, &moved, "").as_deref(),
            Some("spec.addresses[0]")
        );
        let unlabelled = json!({"metadata": {"name": "p"}, "spec": {"addresses": ["10.0.0.1-10.0.0.9"]}});
        assert_eq!(
            first_difference(&wanted, &unlabelled, "").as_deref(),
            Some("metadata.labels")
        );
        let longer = json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"addresses": ["10.0.0.1-10.0.0.9", "x"]}});
        assert_eq!(
            first_difference(&wanted, &longer, "").as_deref(),
            Some("spec.addresses")
        );
    }

    #[test]
    fn the_message_word_is_the_json_word() {
        for c in [Change::Created, Change::Updated, Change::Unchanged] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }
}
