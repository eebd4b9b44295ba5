//! The object store of one fake cluster: resources, objects, resource versions, watch events, and
//! the write semantics of the real API server that meshctl relies on.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

/// A resource type the fake serves.
#[derive(Debug, Clone)]
pub struct Resource {
    pub group: String,
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub has_status: bool,
}

impl Resource {
    fn new(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        has_status: bool,
    ) -> Resource {
        Resource {
            group: group.into(),
            versions: vec![version.into()],
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            has_status,
        }
    }
}

/// The built-in kinds meshctl touches.
pub fn builtin_resources() -> Vec<Resource> {
    let r = Resource::new;
    vec![
        r("", "v1", "namespaces", "Namespace", false, true),
        r("", "v1", "nodes", "Node", false, true),
        r("", "v1", "secrets", "Secret", true, false),
        r("", "v1", "configmaps", "ConfigMap", true, false),
        r("", "v1", "services", "Service", true, true),
        r("", "v1", "serviceaccounts", "ServiceAccount", true, false),
        r("", "v1", "pods", "Pod", true, true),
        r("", "v1", "endpoints", "Endpoints", true, false),
        r("", "v1", "events", "Event", true, false),
        r("apps", "v1", "deployments", "Deployment", true, true),
        r("apps", "v1", "daemonsets", "DaemonSet", true, true),
        r("apps", "v1", "replicasets", "ReplicaSet", true, true),
        r(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "EndpointSlice",
            true,
            false,
        ),
        r(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            true,
        ),
        r(
            "admissionregistration.k8s.io",
            "v1",
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            false,
            false,
        ),
        r(
            "admissionregistration.k8s.io",
            "v1",
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
            false,
            false,
        ),
        r(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            false,
        ),
        r(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            false,
        ),
        r("rbac.authorization.k8s.io", "v1", "roles", "Role", true, false),
        r(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            false,
        ),
    ]
}

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

/// A change, as a watch reports it.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub kind: &'static str,
    pub object: Value,
}

/// An API error: HTTP status, reason and message, rendered as a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }
    pub fn not_found(r: &Resource, name: &str) -> ApiError {
        let what = if r.group.is_empty() {
            r.plural.clone()
        } else {
            format!("{}.{}", r.plural, r.group)
        };
        ApiError::new(404, "NotFound", format!("{what} \"{name}\" not found"))
    }
    pub fn status(&self) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code})
    }
}

/// Everything one fake cluster holds.
pub struct Store {
    pub cluster: String,
    pub resources: Vec<Resource>,
    pub objects: BTreeMap<Key, Value>,
    pub rv: u64,
    pub history: Vec<Event>,
    pub events: broadcast::Sender<Event>,
    /// Tokens issued by the token controller: token → service account (`ns/name`).
    pub issued_tokens: HashMap<String, String>,
    /// PEM of the cluster CA (what a token Secret's `ca.crt` holds).
    pub ca_pem: String,
    uid_counter: u64,
}

impl Store {
    pub fn new(cluster: &str, ca_pem: &str) -> Store {
        let (events, _) = broadcast::channel(4096);
        let mut store = Store {
            cluster: cluster.into(),
            resources: builtin_resources(),
            objects: BTreeMap::new(),
            rv: 100,
            history: Vec::new(),
            events,
            issued_tokens: HashMap::new(),
            ca_pem: ca_pem.into(),
            uid_counter: 0,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            store
                .create(
                    &store.resource("", "namespaces").unwrap(),
                    "",
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                    true,
                )
                .unwrap();
        }
        let node = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": format!("{cluster}-control-plane"), "labels": {"kubernetes.io/hostname": format!("{cluster}-control-plane")}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        store
            .create(&store.resource("", "nodes").unwrap(), "", node, true)
            .unwrap();
        store
    }

    pub fn resource(&self, group: &str, plural: &str) -> Option<Resource> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .cloned()
    }

    pub fn resource_by_kind(&self, group: &str, kind: &str) -> Option<Resource> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.kind == kind)
            .cloned()
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn emit(&mut self, r: &Resource, namespace: &str, kind: &'static str, object: Value) {
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(self.rv);
        let event = Event {
            rv,
            group: r.group.clone(),
            plural: r.plural.clone(),
            namespace: namespace.into(),
            kind,
            object,
        };
        self.history.push(event.clone());
        let _ = self.events.send(event);
    }

    pub fn key(r: &Resource, namespace: &str, name: &str) -> Key {
        Key {
            group: r.group.clone(),
            plural: r.plural.clone(),
            namespace: if r.namespaced {
                namespace.into()
            } else {
                String::new()
            },
            name: name.into(),
        }
    }

    pub fn get(&self, r: &Resource, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&Store::key(r, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(r, name))
    }

    pub fn list(&self, r: &Resource, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| {
                k.group == r.group && k.plural == r.plural && namespace.is_none_or(|ns| k.namespace == ns)
            })
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn check_namespace(&self, r: &Resource, namespace: &str) -> Result<(), ApiError> {
        if r.namespaced
            && !self.objects.contains_key(&Key {
                group: String::new(),
                plural: "namespaces".into(),
                namespace: String::new(),
                name: namespace.into(),
            })
        {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("namespaces \"{namespace}\" not found"),
            ));
        }
        Ok(())
    }

    /// POST: fails with 409 when the object exists.
    pub fn create(
        &mut self,
        r: &Resource,
        namespace: &str,
        mut obj: Value,
        internal: bool,
    ) -> Result<Value, ApiError> {
        let name = obj["metadata"]["name"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ApiError::new(422, "Invalid", "metadata.name: Required value"))?;
        if !internal {
            self.check_namespace(r, namespace)?;
        }
        let key = Store::key(r, namespace, &name);
        if self.objects.contains_key(&key) {
            let what = if r.group.is_empty() {
                r.plural.clone()
            } else {
                format!("{}.{}", r.plural, r.group)
            };
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{what} \"{name}\" already exists"),
            ));
        }
        normalize_secret(r, &mut obj);
        self.uid_counter += 1;
        let rv = self.next_rv();
        let meta = obj["metadata"].as_object_mut().expect("metadata is an object");
        meta.insert(
            "uid".into(),
            json!(format!("{}-uid-{:04}", self.cluster, self.uid_counter)),
        );
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("creationTimestamp".into(), json!("2026-11-21T00:00:00Z"));
        meta.insert("generation".into(), json!(1));
        if r.namespaced {
            meta.insert("namespace".into(), json!(namespace));
        } else {
            meta.remove("namespace");
        }
        if r.kind == "CustomResourceDefinition" {
            self.register_crd(&mut obj);
        }
        self.objects.insert(key, obj.clone());
        self.emit(r, namespace, "ADDED", obj.clone());
        Ok(obj)
    }

    /// Stores `updated` as the new state of an existing object, unless nothing changed (then the
    /// resource version stays, as on a real server).
    fn commit(&mut self, r: &Resource, namespace: &str, existing: Value, mut updated: Value) -> Value {
        normalize_secret(r, &mut updated);
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v["metadata"].as_object_mut() {
                for f in ["resourceVersion", "managedFields", "generation"] {
                    m.remove(f);
                }
            }
            v
        };
        if strip(&existing) == strip(&updated) {
            return existing;
        }
        let rv = self.next_rv();
        let generation = existing["metadata"]["generation"].as_i64().unwrap_or(1)
            + i64::from(existing.get("spec") != updated.get("spec"));
        let meta = updated["metadata"]
            .as_object_mut()
            .expect("metadata is an object");
        for f in ["uid", "creationTimestamp"] {
            meta.insert(f.into(), existing["metadata"][f].clone());
        }
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("generation".into(), json!(generation));
        if r.kind == "CustomResourceDefinition" {
            self.register_crd(&mut updated);
        }
        let name = updated["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.objects
            .insert(Store::key(r, namespace, &name), updated.clone());
        self.emit(r, namespace, "MODIFIED", updated.clone());
        updated
    }

    /// PUT. `status_only` for the status subresource.
    pub fn replace(
        &mut self,
        r: &Resource,
        namespace: &str,
        name: &str,
        obj: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let existing = self.get(r, namespace, name)?;
        if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
            && rv
                != existing["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    r.plural
                ),
            ));
        }
        let updated = with_status_rules(r, &existing, obj, status_only);
        Ok(self.commit(r, namespace, existing, updated))
    }

    /// PATCH with a merge patch (JSON merge patch; strategic merge is treated the same way).
    pub fn merge_patch(
        &mut self,
        r: &Resource,
        namespace: &str,
        name: &str,
        patch: &Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let existing = self.get(r, namespace, name)?;
        let mut merged = existing.clone();
        json_merge(&mut merged, patch);
        let updated = with_status_rules(r, &existing, merged, status_only);
        Ok(self.commit(r, namespace, existing, updated))
    }

    /// Server-side apply: create when absent, else merge the applied configuration into the object
    /// (maps merged, lists replaced) and keep the resource version when nothing changes.
    pub fn apply(
        &mut self,
        r: &Resource,
        namespace: &str,
        name: &str,
        applied: Value,
        manager: &str,
        status_only: bool,
    ) -> Result<(Value, bool), ApiError> {
        if applied["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL",
            ));
        }
        let with_manager = |mut v: Value| {
            v["metadata"]["managedFields"] =
                json!([{"manager": manager, "operation": "Apply", "apiVersion": v["apiVersion"].clone()}]);
            v
        };
        match self.get(r, namespace, name) {
            Err(_) => {
                let mut obj = applied;
                obj["metadata"]["name"] = json!(name);
                Ok((self.create(r, namespace, with_manager(obj), false)?, true))
            }
            Ok(existing) => {
                let mut merged = existing.clone();
                let mut applied = applied;
                if let Some(m) = applied["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                deep_merge(&mut merged, &applied);
                let merged = with_manager(merged);
                let updated = with_status_rules(r, &existing, merged, status_only);
                let before = existing["metadata"]["resourceVersion"].clone();
                let out = self.commit(r, namespace, existing, updated);
                let changed = out["metadata"]["resourceVersion"] != before;
                Ok((out, changed))
            }
        }
    }

    pub fn delete(&mut self, r: &Resource, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let key = Store::key(r, namespace, name);
        let obj = self
            .objects
            .remove(&key)
            .ok_or_else(|| ApiError::not_found(r, name))?;
        self.next_rv();
        let mut gone = obj.clone();
        gone["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.emit(r, namespace, "DELETED", gone);
        // Deleting a namespace deletes what is in it (the real server does so through finalizers).
        if r.plural == "namespaces" && r.group.is_empty() {
            let inside: Vec<Key> = self
                .objects
                .keys()
                .filter(|k| k.namespace == name)
                .cloned()
                .collect();
            for k in inside {
                if let Some(res) = self.resource(&k.group, &k.plural) {
                    let _ = self.delete(&res, &k.namespace, &k.name);
                }
            }
        }
        Ok(obj)
    }

    /// A created CRD is served at once and reported Established, as the real server does.
    fn register_crd(&mut self, crd: &mut Value) {
        let spec = crd["spec"].clone();
        let group = spec["group"].as_str().unwrap_or_default().to_string();
        let plural = spec["names"]["plural"].as_str().unwrap_or_default().to_string();
        let versions: Vec<String> = spec["versions"]
            .as_array()
            .map(|vs| {
                vs.iter()
                    .filter(|v| v["served"] == true)
                    .filter_map(|v| v["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let has_status = spec["versions"]
            .as_array()
            .is_some_and(|vs| vs.iter().any(|v| v["subresources"]["status"].is_object()));
        self.resources
            .retain(|r| !(r.group == group && r.plural == plural));
        self.resources.push(Resource {
            group,
            versions,
            plural,
            singular: spec["names"]["singular"].as_str().unwrap_or_default().to_string(),
            kind: spec["names"]["kind"].as_str().unwrap_or_default().to_string(),
            namespaced: spec["scope"] == "Namespaced",
            has_status,
        });
        crd["status"] = json!({"conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}]});
    }

    /// The token controller: fills a service-account token Secret, once.
    pub fn fill_token(&mut self, namespace: &str, name: &str) -> Option<String> {
        let r = self.resource("", "secrets")?;
        let secret = self.get(&r, namespace, name).ok()?;
        let sa = secret["metadata"]["annotations"]["kubernetes.io/service-account.name"]
            .as_str()?
            .to_string();
        if secret["type"] != "kubernetes.io/service-account-token" || secret["data"]["token"].is_string() {
            return None;
        }
        let token = format!("fake-token.{}.{}.{}", self.cluster, sa, self.rv);
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut updated = secret.clone();
        updated["data"] =
            json!({"token": b64(&token), "ca.crt": b64(&self.ca_pem), "namespace": b64(namespace)});
        self.issued_tokens
            .insert(token.clone(), format!("{namespace}/{sa}"));
        self.commit(&r, namespace, secret, updated);
        Some(token)
    }
}

/// Secrets: `stringData` is write-only and lands base64-encoded in `data`, as on a real server.
fn normalize_secret(r: &Resource, obj: &mut Value) {
    if r.kind != "Secret" || !r.group.is_empty() {
        return;
    }
    if let Some(Value::Object(string_data)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
        let data = obj["data"].as_object().cloned().unwrap_or_default();
        let mut data: Map<String, Value> = data;
        for (k, v) in string_data {
            let text = v.as_str().unwrap_or_default();
            data.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(text)));
        }
        obj["data"] = Value::Object(data);
    }
}

/// Main-resource writes keep the status; status writes change only the status.
fn with_status_rules(r: &Resource, existing: &Value, mut incoming: Value, status_only: bool) -> Value {
    if status_only {
        let mut out = existing.clone();
        out["status"] = incoming["status"].take();
        out
    } else {
        if r.has_status {
            match existing.get("status") {
                Some(s) => incoming["status"] = s.clone(),
                None => {
                    if let Some(m) = incoming.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        incoming
    }
}

/// RFC 7386 JSON merge patch.
pub fn json_merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("just made an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    json_merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Apply-style merge: maps recursively, everything else (lists included) replaced.
fn deep_merge(target: &mut Value, applied: &Value) {
    match (target.as_object_mut(), applied) {
        (Some(t), Value::Object(a)) => {
            for (k, v) in a {
                deep_merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        _ => *target = applied.clone(),
    }
}

/// Kubernetes label selector (`a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x,y)`).
pub fn matches_labels(obj: &Value, selector: &str) -> bool {
    let labels = &obj["metadata"]["labels"];
    split_selector(selector).iter().all(|term| {
        let term = term.trim();
        if term.is_empty() {
            return true;
        }
        let value_of = |k: &str| labels[k.trim()].as_str().map(str::to_string);
        if let Some((k, set)) = term.split_once(" notin ") {
            return value_of(k).is_none_or(|v| !parse_set(set).contains(&v));
        }
        if let Some((k, set)) = term.split_once(" in ") {
            return value_of(k).is_some_and(|v| parse_set(set).contains(&v));
        }
        if let Some((k, v)) = term.split_once("!=") {
            return value_of(k).as_deref() != Some(v.trim());
        }
        if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            return value_of(k).as_deref() == Some(v.trim());
        }
        if let Some(k) = term.strip_prefix('!') {
            return value_of(k).is_none();
        }
        value_of(term).is_some()
    })
}

fn parse_set(set: &str) -> Vec<String> {
    set.trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(|s| s.trim().to_string())
        .collect()
}

fn split_selector(selector: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for ch in selector.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    out.push(cur);
    out
}

/// Field selector on `metadata.name` / `metadata.namespace` (`=`, `==`, `!=`).
pub fn matches_fields(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (path, want, negate) = if let Some((p, v)) = term.split_once("!=") {
            (p, v, true)
        } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (p, v, false)
        } else {
            return true;
        };
        let actual = path
            .split('.')
            .fold(obj, |v, seg| &v[seg])
            .as_str()
            .unwrap_or_default();
        (actual == want) != negate
    })
}
