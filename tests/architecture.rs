//! The shape of the source tree, checked: which module imports which, read from `src/`.
//!
//! A module here is a file (`src/phases/eastwest.rs` is `phases::eastwest`, `src/kube/mod.rs` is
//! `kube`). An edge is any path into another module: `use crate::…`, `super::…` and paths written
//! inline (`crate::kube::wait::…`), braces expanded. Test modules inside a file count too: a
//! test that needs a module above its own is a sign the code sits in the wrong place.
//!
//! `cargo test --test architecture -- --nocapture` prints the graph (module → what it imports).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` → `a::b`, `src/a/mod.rs` → `a`, `src/lib.rs` → `crate`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("below src").with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts == ["main"] {
        return "crate".into();
    }
    parts.join("::")
}

/// Removes comments and string literals, so a path quoted in a message or a doc is not an import.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for n in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if n == '\\' {
                        escaped = true;
                    } else if n == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            'r' if chars.peek() == Some(&'#') => {
                // r#"…"#: skip to the closing quote-hash.
                out.push(c);
                let mut rest = String::new();
                for n in chars.by_ref() {
                    rest.push(n);
                    if rest.ends_with("\"#") && rest.len() > 2 {
                        break;
                    }
                    if rest == "#" || rest == "#\"" {
                        continue;
                    }
                    if !rest.starts_with("#\"") {
                        out.push_str(&rest);
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Every path of a `use` tree: `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(p).into_iter().map(move |e| format!("{prefix}{e}")))
        .collect()
}

/// The module a path lands in: the longest prefix of it that is a module.
fn resolve(path: &[&str], modules: &BTreeSet<String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// Absolute segments of a path written in `module`: `crate::a::b`, `super::x`, `self::x`.
fn absolute<'a>(module: &'a str, path: &'a str) -> Option<Vec<&'a str>> {
    let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<&str> = if module == "crate" {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    let mut rest = segments.as_slice();
    match rest.first() {
        Some(&"crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some(&"super") | Some(&"self") => {
            while let Some(&s) = rest.first() {
                match s {
                    "super" => {
                        base.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    base.extend_from_slice(rest);
    Some(base)
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let path_re = regex::Regex::new(r"\b(?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+").unwrap();
    let use_re = regex::Regex::new(r"(?s)\buse\s+((?:crate|super|self)::[^;]*);").unwrap();
    let mut graph = Graph::new();
    for file in &files {
        let module = module_of(&src, file);
        let is_dir_module = file.ends_with("mod.rs");
        let code = code_only(&std::fs::read_to_string(file).expect("readable"));
        // A file's `mod tests` sits one level down: its `super` is the file's module.
        let (body, tests) = code.split_at(code.find("#[cfg(test)]\nmod tests").unwrap_or(code.len()));
        let tests_module = format!("{module}::tests");
        let paths_of = |text: &str| -> Vec<String> {
            let mut paths: Vec<String> = use_re.captures_iter(text).flat_map(|c| expand(&c[1])).collect();
            paths.extend(path_re.find_iter(text).map(|m| m.as_str().to_string()));
            paths
        };
        let written: Vec<(&str, String)> = paths_of(body)
            .into_iter()
            .map(|p| (module.as_str(), p))
            .chain(paths_of(tests).into_iter().map(|p| (tests_module.as_str(), p)))
            .collect();
        let edges = graph.entry(module.clone()).or_default();
        for (from, path) in &written {
            let Some(segments) = absolute(from, path) else {
                continue;
            };
            if let Some(target) = resolve(&segments, &modules)
                && target != module
                && target != "crate"
                // A folder module naming its own children declares them; that is not an import.
                && !(is_dir_module && target.starts_with(&format!("{module}::")) && segments.len() == module.split("::").count() + 1)
            {
                edges.insert(target);
            }
        }
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan).
fn circles(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[w].min(self.low[v]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.index[w].min(self.low[v]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn the_import_graph_reads_use_trees_and_inline_paths() {
    assert_eq!(
        expand("crate::{plan::{A, B}, probe}"),
        ["crate::plan::A", "crate::plan::B", "crate::probe"]
    );
    let text = "let x = \"crate::commands::up\"; // crate::executor\nuse crate::kube::wait;";
    assert!(!code_only(text).contains("commands"));
    assert!(!code_only(text).contains("executor"));
    let g = graph();
    assert!(
        g["phases::eastwest"].contains("phases::istioctl_install"),
        "{:?}",
        g["phases::eastwest"]
    );
    assert!(g.contains_key("kube"));
}

#[test]
fn imports_form_no_circle() {
    let graph = graph();
    for (module, imports) in &graph {
        println!(
            "{module} → {}",
            imports.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let found = circles(&graph);
    assert!(
        found.is_empty(),
        "modules that import each other, directly or round a circle:\n{}",
        found
            .iter()
            .map(|c| format!("  - {}", c.join(", ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn top_level_modules_import_one_way() {
    // A folder is one layer: `executor/steps.rs` importing `commands` puts the executor both
    // below and above the commands.
    let mut collapsed = Graph::new();
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_string();
    for (module, imports) in graph() {
        let edges = collapsed.entry(top(&module)).or_default();
        edges.extend(imports.iter().map(|i| top(i)).filter(|i| *i != top(&module)));
    }
    let found = circles(&collapsed);
    assert!(
        found.is_empty(),
        "top-level modules that import each other:\n{}",
        found
            .iter()
            .map(|c| format!("  - {}", c.join(", ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The layers of docs/architecture.md, lowest first. A module imports its own layer or lower ones.
const LAYERS: [&[&str]; 6] = [
    // Pure facts and helpers: no I/O beyond files meshctl owns.
    &[
        "versions",
        "istio_version",
        "revision",
        "exit",
        "atomic_file",
        "render",
        "ipam",
        "pki",
        "topology",
        "state",
        "mesh_dir",
        "kubeconfig",
        "memo",
    ],
    // I/O with no knowledge of meshes: Kubernetes clients and waits, external programs.
    &["kube", "tools", "upstream", "istio_release"],
    // The vocabulary phases plan and probe with, and the Istio facts they read.
    &[
        "plan",
        "schedule",
        "probe",
        "check",
        "plugged_ca",
        "istio_config",
        "istioctl_choice",
        "work_dir",
        "remote_secret",
        "istiod",
        "ztunnel",
        "istio_revisions",
        "mesh_health",
        "report",
    ],
    // One file per phase.
    &["phases"],
    // What puts phases together: planning, running, writing, removing, proving.
    &[
        "planner",
        "executor",
        "dry_run",
        "uninstall",
        "isolation",
        "upgrade",
        "verification",
        "diagnostic_bundle",
        "mesh_ca",
        "mesh_status",
        "teardown",
    ],
    // The command line.
    &["cli", "commands"],
];

#[test]
fn modules_import_only_their_layer_or_lower() {
    let layer = |m: &str| {
        let top = m.split("::").next().unwrap_or(m);
        LAYERS.iter().position(|l| l.contains(&top))
    };
    let mut upward = Vec::new();
    for (module, imports) in graph() {
        if module == "crate" {
            continue;
        }
        let Some(own) = layer(&module) else {
            upward.push(format!(
                "{module} is in no layer: add it to LAYERS and docs/architecture.md"
            ));
            continue;
        };
        for import in imports {
            if layer(&import).is_some_and(|l| l > own) {
                upward.push(format!("{module} imports {import}, a layer above it"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports running back up:\n  - {}",
        upward.join("\n  - ")
    );
}

/// The phase files: those that implement a phase (`impl PhaseLogic for`).
fn phase_modules() -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join("phases"), &mut files);
    files
        .iter()
        .filter(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains("impl PhaseLogic for")))
        .map(|f| module_of(&src, f))
        .collect()
}

/// A phase file is used only through the phase interface (`phases::logic`): what two phases, or
/// a phase and a command, both need lives in a module of its own below them. Only the registry
/// (`phases`) names the phase files.
#[test]
fn no_module_imports_a_phase_file() {
    let phases = phase_modules();
    assert!(phases.len() >= 9, "{phases:?}");
    let mut found = Vec::new();
    for (module, imports) in graph() {
        if module == "phases" {
            continue;
        }
        for import in imports.intersection(&phases) {
            found.push(format!("{module} imports the phase file {import}"));
        }
    }
    assert!(
        found.is_empty(),
        "phase files used as libraries:\n  - {}",
        found.join("\n  - ")
    );
}

/// A command parses, calls the library, prints: its file stays short, and what grows goes into
/// a module of the library, where other commands and tests can use it.
#[test]
fn command_files_stay_thin() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/commands");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let long: Vec<String> = files
        .iter()
        .map(|f| (f, std::fs::read_to_string(f).expect("readable").lines().count()))
        .filter(|(_, lines)| *lines >= 250)
        .map(|(f, lines)| format!("{} ({lines} lines)", f.display()))
        .collect();
    assert!(
        long.is_empty(),
        "command files of 250 lines or more:\n  - {}",
        long.join("\n  - ")
    );
}
