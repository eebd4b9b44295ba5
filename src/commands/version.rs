//! `meshctl version`: meshctl's own version and every version it pins.

use std::io::Write;

use anyhow::Result;

use super::Exit;
use crate::cli::DocumentFormat;
use crate::versions;

pub(super) fn run(output: DocumentFormat) -> Result<Exit> {
    let summary = versions::summary();
    match output {
        DocumentFormat::Json | DocumentFormat::Yaml => {
            let map: serde_json::Map<_, _> = summary
                .into_iter()
                .map(|(k, v)| (camel_case(k), serde_json::Value::String(v)))
                .collect();
            super::print_document(output, &serde_json::Value::Object(map))?;
        }
        DocumentFormat::Text => {
            let mut out = std::io::stdout().lock();
            for (name, value) in summary {
                writeln!(out, "{name:<16} {value}")?;
            }
        }
    }
    Ok(Exit::Success)
}

/// `kind node image` → `kindNodeImage`: JSON keys in one style everywhere, Kubernetes' own.
fn camel_case(words: &str) -> String {
    let mut out = String::new();
    for (i, word) in words.split([' ', '_', '-']).filter(|w| !w.is_empty()).enumerate() {
        let mut chars = word.chars();
        if i == 0 {
            out.push_str(word);
        } else if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}
