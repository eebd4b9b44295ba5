//! Rendering manifests from the embedded `templates/` (minijinja). Pure: no I/O.
//!
//! Escaping policy, the one rule for every template: **auto-escape is off**, and every string value
//! a template interpolates goes through the `q` filter, which writes it as a double-quoted YAML
//! scalar (a JSON string, which YAML reads verbatim). So a value like `1`, `on` or `a: b` can never
//! change type or structure. Multi-line text (PEM) goes through `b64` into a Secret's `data`, or
//! through `indent` under a `|` block scalar. Undefined variables are errors (strict mode) that
//! name the template. Every rendered output is parsed back before it is returned, so a template
//! bug surfaces as an error here, not as a cluster rejecting the object later.

use std::sync::LazyLock;

use base64::Engine as _;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, syntax::SyntaxConfig};
use serde::Serialize;

/// Every template, embedded at build time so `meshctl` is one self-contained file.
/// Names are `<phase>/<file>`; a reader finds any manifest in one file under `templates/`.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "clusters/kind-config.yaml.j2",
        include_str!("../templates/clusters/kind-config.yaml.j2"),
    ),
    (
        "metallb/address-pool.yaml.j2",
        include_str!("../templates/metallb/address-pool.yaml.j2"),
    ),
    (
        "certs/istio-system.yaml.j2",
        include_str!("../templates/certs/istio-system.yaml.j2"),
    ),
    (
        "certs/cacerts.yaml.j2",
        include_str!("../templates/certs/cacerts.yaml.j2"),
    ),
    (
        "istio/control-plane.yaml.j2",
        include_str!("../templates/istio/control-plane.yaml.j2"),
    ),
    (
        "istio/mesh-networks.yaml.j2",
        include_str!("../templates/istio/mesh-networks.yaml.j2"),
    ),
    (
        "istio/remote.yaml.j2",
        include_str!("../templates/istio/remote.yaml.j2"),
    ),
    (
        "istio/ambient.yaml.j2",
        include_str!("../templates/istio/ambient.yaml.j2"),
    ),
    (
        "eastwest/eastwest-gateway.yaml.j2",
        include_str!("../templates/eastwest/eastwest-gateway.yaml.j2"),
    ),
    (
        "eastwest/ambient-gateway.yaml.j2",
        include_str!("../templates/eastwest/ambient-gateway.yaml.j2"),
    ),
    (
        "expose/cross-network-gateway.yaml.j2",
        include_str!("../templates/expose/cross-network-gateway.yaml.j2"),
    ),
    (
        "expose/expose-istiod.yaml.j2",
        include_str!("../templates/expose/expose-istiod.yaml.j2"),
    ),
    (
        "external-istiod/external-istiod.yaml.j2",
        include_str!("../templates/external-istiod/external-istiod.yaml.j2"),
    ),
    (
        "remote-secrets/remote-secret.yaml.j2",
        include_str!("../templates/remote-secrets/remote-secret.yaml.j2"),
    ),
    (
        "remote-secrets/reader-rbac.yaml.j2",
        include_str!("../templates/remote-secrets/reader-rbac.yaml.j2"),
    ),
    (
        "verify/namespace.yaml.j2",
        include_str!("../templates/verify/namespace.yaml.j2"),
    ),
    (
        "verify/helloworld.yaml.j2",
        include_str!("../templates/verify/helloworld.yaml.j2"),
    ),
    (
        "verify/curl.yaml.j2",
        include_str!("../templates/verify/curl.yaml.j2"),
    ),
    (
        "verify/locality-failover.yaml.j2",
        include_str!("../templates/verify/locality-failover.yaml.j2"),
    ),
    (
        "verify/locality-distribute.yaml.j2",
        include_str!("../templates/verify/locality-distribute.yaml.j2"),
    ),
    (
        "verify/per-cluster-subsets.yaml.j2",
        include_str!("../templates/verify/per-cluster-subsets.yaml.j2"),
    ),
];

/// A template could not be rendered, or rendered into something that is not YAML.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// minijinja failed (unknown template, undefined variable, filter error).
    #[error("template `{template}`: {detail}")]
    Template {
        template: String,
        /// minijinja's description, naming the variable and line.
        detail: String,
    },
    /// The output does not parse as YAML.
    #[error("template `{template}` rendered invalid YAML: {detail}")]
    InvalidYaml { template: String, detail: String },
}

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .expect("static syntax config is valid"),
    );
    env.add_filter("q", quote);
    env.add_filter("plain", plain);
    env.add_filter("b64", |s: String| {
        base64::engine::general_purpose::STANDARD.encode(s)
    });
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .expect("embedded templates compile (checked by tests)");
    }
    env
});

/// Writes `value` as a double-quoted YAML scalar.
fn quote(value: minijinja::Value) -> Result<String, minijinja::Error> {
    let text = value
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| value.to_string());
    serde_json::to_string(&text)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string()))
}

/// Writes `value` bare when YAML reads it back as the same string, else double-quoted, as Go's YAML
/// encoder does. Only the remote secret uses it: istioctl's output format has plain scalars.
fn plain(value: String) -> Result<String, minijinja::Error> {
    let probe: Result<serde_json::Value, _> = serde_saphyr::from_str(&format!("v: {value}\n"));
    match probe {
        Ok(doc) if doc["v"].as_str() == Some(value.as_str()) && !value.contains('#') => Ok(value),
        _ => quote(minijinja::Value::from(value)),
    }
}

/// Renders `template` with a typed context and checks that the result parses as YAML.
pub fn render<C: Serialize>(template: &str, context: &C) -> Result<String, RenderError> {
    let tmpl = ENV.get_template(template).map_err(|e| RenderError::Template {
        template: template.to_string(),
        detail: e.to_string(),
    })?;
    let text = tmpl
        .render(minijinja::value::Serde(context))
        .map_err(|e| RenderError::Template {
            template: template.to_string(),
            detail: describe(&e),
        })?;
    parse_documents(&text).map_err(|detail| RenderError::InvalidYaml {
        template: template.to_string(),
        detail,
    })?;
    Ok(text)
}

fn describe(err: &minijinja::Error) -> String {
    let mut text = err.to_string();
    if let Some(detail) = err.detail().filter(|d| !text.contains(*d)) {
        text.push_str(&format!(": {detail}"));
    }
    if let Some(line) = err.line() {
        text.push_str(&format!(" (line {line})"));
    }
    text
}

/// Parses multi-document YAML into JSON values, dropping empty documents.
pub fn parse_documents(text: &str) -> Result<Vec<serde_json::Value>, String> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| yaml_error(&e.to_string(), "the text"))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// A YAML parser's error in a user's words, about `source` (a file name): the position and the
/// snippet stay; advice addressed to programmers using the library (its option and function
/// names) is replaced by what the user can do.
pub fn yaml_error(message: &str, source: &str) -> String {
    let message = message.strip_prefix("error: ").unwrap_or(message);
    let message = message.replace("error: line ", "line ");
    let message = message.replace(
        ", set DuplicateKeyPolicy in Options if acceptable",
        " (each key may appear once)",
    );
    let message = message.replace(
        "multiple YAML documents detected; use from_str_multiple or from_str_multiple_with_options",
        "more than one YAML document (a `---` line between them): this file holds one",
    );
    // The YAML parser's own words for a wrong shape or number, in the user's terms.
    let message = if message.contains("budget breached") {
        format!(
            "is too large or too deeply nested to be read ({})",
            message.trim()
        )
    } else {
        message
            .replace("expected mapping start", "expected `key: value` entries here")
            .replace(
                "expected sequence start",
                "expected a list here (`- item` lines, or `[a, b]`)",
            )
            .replace("invalid u16", "not a whole number from 0 to 65535")
            .replace("invalid u32", "not a whole number from 0 to 4294967295")
            .replace("invalid u64", "not a whole number of 0 or more")
            .replace("invalid i64", "not a whole number")
    };
    message.replace("<input>", source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_errors_speak_to_users_not_to_programmers() {
        let duplicate = serde_saphyr::from_str::<serde_json::Value>("a: 1\na: 2\n")
            .unwrap_err()
            .to_string();
        let told = yaml_error(&duplicate, "meshctl.yaml");
        assert!(
            !told.contains("DuplicateKeyPolicy") && told.contains("duplicate"),
            "{told}"
        );
        let several = serde_saphyr::from_str::<serde_json::Value>("a: 1\n---\nb: 2\n")
            .unwrap_err()
            .to_string();
        let told = yaml_error(&several, "meshctl.yaml");
        assert!(
            !told.contains("from_str_multiple") && told.contains("more than one YAML document"),
            "{told}"
        );
        assert!(!told.starts_with("error:") && !told.contains("<input>"), "{told}");
        // A wrong shape or a number out of range, in the user's words.
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Shape {
            list: Vec<String>,
            port: u16,
        }
        for (text, said, internal) in [
            ("list: 5\nport: 1\n", "expected a list here", "sequence start"),
            (
                "list: []\nport: 70000\n",
                "not a whole number from 0 to 65535",
                "invalid u16",
            ),
        ] {
            let e = serde_saphyr::from_str::<Shape>(text).unwrap_err().to_string();
            let told = yaml_error(&e, "meshctl.yaml");
            assert!(told.contains(said) && !told.contains(internal), "{told}");
        }
    }

    #[test]
    fn every_embedded_template_compiles() {
        LazyLock::force(&ENV);
        assert_eq!(ENV.templates().count(), TEMPLATES.len());
    }

    #[test]
    fn every_file_under_templates_is_embedded() {
        fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    out.push(path.strip_prefix(base).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let mut files = Vec::new();
        walk(&base, &base, &mut files);
        for file in files {
            assert!(
                TEMPLATES.iter().any(|(name, _)| *name == file),
                "templates/{file} is not in TEMPLATES"
            );
        }
    }

    #[test]
    fn q_keeps_strings_strings_whatever_they_look_like() {
        let env = &*ENV;
        let out = env
            .render_str("a: {{ v | q }}\n", minijinja::context! { v => "1" })
            .unwrap();
        assert_eq!(parse_documents(&out).unwrap()[0]["a"], serde_json::json!("1"));
        let out = env
            .render_str("a: {{ v | q }}\n", minijinja::context! { v => "x: \"y\"\n- z" })
            .unwrap();
        assert_eq!(
            parse_documents(&out).unwrap()[0]["a"],
            serde_json::json!("x: \"y\"\n- z")
        );
    }

    #[test]
    fn plain_is_bare_only_when_yaml_reads_the_value_back_unchanged() {
        let env = &*ENV;
        let r = |v: &str| {
            env.render_str("{{ v | plain }}", minijinja::context! { v => v })
                .unwrap()
        };
        assert_eq!(r("cluster1"), "cluster1");
        assert_eq!(r("https://172.18.0.3:6443"), "https://172.18.0.3:6443");
        assert_eq!(r("LS0tLS1CRUdJTg=="), "LS0tLS1CRUdJTg==");
        for ambiguous in ["123", "true", "null", "1e3", "a: b", "x #y"] {
            assert_eq!(
                r(ambiguous),
                serde_json::to_string(ambiguous).unwrap(),
                "{ambiguous}"
            );
        }
    }

    #[test]
    fn a_missing_variable_is_an_error_naming_the_template() {
        #[derive(Serialize)]
        struct Empty {}
        let err = render("clusters/kind-config.yaml.j2", &Empty {}).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("clusters/kind-config.yaml.j2") && text.contains("undefined"),
            "{text}"
        );
    }
}
