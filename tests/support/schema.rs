//! Validation of custom resources against a CRD's `openAPIV3Schema`, the way the API server does it
//! for structural schemas: types, required fields, enums, bounds, patterns, `oneOf`/`anyOf`/`not`,
//! and, stricter than pruning, *unknown fields are errors* (kubectl's `--validate=strict`), unless the
//! schema says `x-kubernetes-preserve-unknown-fields`. CEL rules (`x-kubernetes-validations`) are not
//! evaluated.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// `../shared/upstream`, when the team folder is beside the project.
pub fn upstream_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/upstream");
    dir.is_dir().then_some(dir)
}

/// `../shared/upstream`, or `None` after saying once why the test that needs it skips, and
/// recording the skip ([`crate::support::record_skip`]).
pub fn upstream_or_skip() -> Option<PathBuf> {
    let dir = upstream_dir();
    if dir.is_none() {
        static ONCE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        ONCE.get_or_init(|| eprintln!("skipping tests that read Istio's and MetalLB's files: ../shared/upstream is not beside the project"));
        crate::support::record_skip("../shared/upstream is not beside the project");
    }
    dir
}

/// Loads every CRD of a (multi-document) YAML file.
pub fn load_crds(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    meshctl::render::parse_documents(&text)
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
        .into_iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect()
}

/// The schema of `apiVersion`/`kind` among `crds`, if one serves it.
pub fn schema_for<'a>(crds: &'a [Value], api_version: &str, kind: &str) -> Option<&'a Value> {
    let (group, version) = api_version.split_once('/')?;
    crds.iter().find_map(|crd| {
        let spec = &crd["spec"];
        if spec["group"] != group || spec["names"]["kind"] != kind {
            return None;
        }
        spec["versions"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == version && v["served"] == true)
            .map(|v| &v["schema"]["openAPIV3Schema"])
    })
}

/// Every violation of `schema` by `value`, as `path: message`.
pub fn validate(value: &Value, schema: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(value, schema, "", &mut errors);
    errors
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(value: &Value, schema: &Value, path: &str, errors: &mut Vec<String>) {
    let here = if path.is_empty() { "<root>" } else { path };
    if value.is_null() && schema["nullable"] == true {
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    if let Some(expected) = schema["type"].as_str() {
        let actual = type_name(value);
        let ok = actual == expected
            || (expected == "number" && actual == "integer")
            || (int_or_string && (actual == "integer" || actual == "string"));
        if !ok {
            errors.push(format!("{here}: expected {expected}, found {actual}"));
            return;
        }
    } else if int_or_string && !matches!(type_name(value), "integer" | "string") {
        errors.push(format!("{here}: expected integer or string"));
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        errors.push(format!(
            "{here}: {value} is not one of {}",
            Value::Array(options.clone())
        ));
    }
    if let (Some(s), Some(max)) = (value.as_str(), schema["maxLength"].as_u64())
        && s.chars().count() as u64 > max
    {
        errors.push(format!("{here}: longer than {max}"));
    }
    if let (Some(s), Some(pattern)) = (value.as_str(), schema["pattern"].as_str()) {
        match regex::Regex::new(pattern) {
            Ok(re) if !re.is_match(s) => errors.push(format!("{here}: `{s}` does not match {pattern}")),
            _ => {}
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64().filter(|m| n < *m) {
            errors.push(format!("{here}: {n} is below the minimum {min}"));
        }
        if let Some(max) = schema["maximum"].as_f64().filter(|m| n > *m) {
            errors.push(format!("{here}: {n} is above the maximum {max}"));
        }
    }
    if let Some(subs) = schema["oneOf"].as_array() {
        let matching = subs.iter().filter(|s| validate(value, s).is_empty()).count();
        if matching != 1 {
            errors.push(format!(
                "{here}: matches {matching} of the oneOf alternatives, not exactly one"
            ));
        }
    }
    if let Some(subs) = schema["anyOf"].as_array()
        && !subs.iter().any(|s| validate(value, s).is_empty())
    {
        errors.push(format!("{here}: matches none of the anyOf alternatives"));
    }
    if schema.get("not").is_some() && validate(value, &schema["not"]).is_empty() {
        errors.push(format!("{here}: matches a `not` schema"));
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            check(value, s, path, errors);
        }
    }
    match value {
        Value::Object(map) => {
            if let Some(required) = schema["required"].as_array() {
                for r in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        errors.push(format!("{here}: missing required field `{r}`"));
                    }
                }
            }
            let props = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                if let Some(prop) = props.and_then(|p| p.get(key)) {
                    check(child, prop, &child_path, errors);
                } else if additional.is_object() {
                    check(child, additional, &child_path, errors);
                } else if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    // Checked by the API machinery, not the CRD schema.
                } else if !(preserve
                    || *additional == true
                    || (props.is_none() && schema["type"] != "object"))
                {
                    errors.push(format!("{child_path}: unknown field"));
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter().enumerate() {
                check(item, &schema["items"], &format!("{path}[{i}]"), errors);
            }
        }
        _ => {}
    }
}
