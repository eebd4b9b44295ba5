//! The kubeconfig file meshctl works with: importing a kind cluster's context under the cluster's
//! name, and removing it again. Other entries are left as they are.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::atomic_file::{self, PRIVATE};

/// The file kubectl would write to: `--kubeconfig`, else the first entry of `KUBECONFIG`, else
/// `~/.kube/config`.
pub fn target_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(first) = std::env::var_os("KUBECONFIG")
        .and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()))
    {
        return first;
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".kube/config")
}

/// `KUBECONFIG` for a program meshctl runs (istioctl, from the plan folder): the files meshctl
/// itself reads, every one made absolute, since the program runs elsewhere than meshctl was
/// started (`--kubeconfig ./kc` would otherwise name another file for it). `None`: the program
/// finds `~/.kube/config` as meshctl does.
pub fn for_tools(flag: Option<&Path>) -> Option<(String, String)> {
    let files: Vec<PathBuf> = match (flag, std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty())) {
        (Some(file), _) => vec![file.to_path_buf()],
        (None, Some(list)) => std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
        (None, None) => return None,
    };
    let absolute: Vec<PathBuf> = files
        .iter()
        .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
        .collect();
    let joined = std::env::join_paths(&absolute).ok()?;
    Some(("KUBECONFIG".to_string(), joined.to_string_lossy().into_owned()))
}

fn load(path: &Path) -> io::Result<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => serde_saphyr::from_str::<Value>(&text)
            .map_err(|e| {
                let source = path.display().to_string();
                io::Error::other(format!(
                    "`{source}` is not a kubeconfig: {}",
                    crate::render::yaml_error(&e.to_string(), &source)
                ))
            })
            .and_then(|v| {
                if v.is_object() {
                    Ok(v)
                } else {
                    Err(io::Error::other(format!(
                        "`{}` is not a kubeconfig: it is not a YAML mapping",
                        path.display()
                    )))
                }
            }),
        Ok(_) => Ok(empty()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(empty()),
        Err(e) => Err(e),
    }
}

fn empty() -> Value {
    json!({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": [], "current-context": ""})
}

fn save(path: &Path, config: &Value) -> io::Result<()> {
    atomic_file::create_dir_all(atomic_file::parent_of(path), 0o700)?;
    let text = serde_saphyr::to_string(config).map_err(io::Error::other)?;
    atomic_file::write(path, text.as_bytes(), PRIVATE)
}

fn upsert(list: &mut Value, entry: Value) {
    if !list.is_array() {
        *list = json!([]);
    }
    let items = list.as_array_mut().expect("just made an array");
    items.retain(|e| e["name"] != entry["name"]);
    items.push(entry);
}

/// Takes context `from` (with its cluster and user) out of `source` (a kubeconfig's text), renames
/// all three to `to`, and writes them into the kubeconfig at `target`.
pub fn import_context(target: &Path, source: &str, from: &str, to: &str) -> io::Result<()> {
    let src: Value = serde_saphyr::from_str(source).map_err(|e| {
        io::Error::other(format!(
            "kubeconfig from kind: {}",
            crate::render::yaml_error(&e.to_string(), "kind's kubeconfig")
        ))
    })?;
    let find = |list: &str, name: &str| {
        src[list]
            .as_array()
            .and_then(|l| l.iter().find(|e| e["name"] == name))
            .cloned()
    };
    let ctx = find("contexts", from)
        .ok_or_else(|| io::Error::other(format!("the kubeconfig from kind has no context `{from}`")))?;
    let cluster_name = ctx["context"]["cluster"].as_str().unwrap_or(from).to_string();
    let user_name = ctx["context"]["user"].as_str().unwrap_or(from).to_string();
    let mut cluster = find("clusters", &cluster_name)
        .ok_or_else(|| io::Error::other(format!("no cluster `{cluster_name}`")))?;
    let mut user =
        find("users", &user_name).ok_or_else(|| io::Error::other(format!("no user `{user_name}`")))?;
    cluster["name"] = json!(to);
    user["name"] = json!(to);
    let context = json!({"name": to, "context": {"cluster": to, "user": to}});

    let mut config = load(target)?;
    upsert(&mut config["clusters"], cluster);
    upsert(&mut config["users"], user);
    upsert(&mut config["contexts"], context);
    if config["current-context"].as_str().unwrap_or_default().is_empty() {
        config["current-context"] = json!(to);
    }
    save(target, &config)
}

/// Entries of `target` named like one of `names` that are not in `owned` (what meshctl wrote):
/// `("context" | "cluster" | "user", name)` each. A file that does not parse is an error naming it.
pub fn foreign_entries(
    target: &Path,
    names: &[String],
    owned: &std::collections::BTreeSet<String>,
) -> io::Result<Vec<(&'static str, String)>> {
    let config = load(target)?;
    let mut found = Vec::new();
    for (list, word) in [
        ("contexts", "context"),
        ("clusters", "cluster"),
        ("users", "user"),
    ] {
        for entry in config[list].as_array().into_iter().flatten() {
            let Some(name) = entry["name"].as_str() else {
                continue;
            };
            if names.iter().any(|n| n == name) && !owned.contains(name) {
                found.push((word, name.to_string()));
            }
        }
    }
    Ok(found)
}

/// Removes context `name` and the cluster and user of the same name from `target`.
pub fn remove_context(target: &Path, name: &str) -> io::Result<()> {
    if !target.exists() {
        return Ok(());
    }
    let mut config = load(target)?;
    for list in ["clusters", "users", "contexts"] {
        if let Some(items) = config[list].as_array_mut() {
            items.retain(|e| e["name"] != name);
        }
    }
    if config["current-context"] == name {
        config["current-context"] = json!("");
    }
    save(target, &config)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_program_run_elsewhere_gets_the_kubeconfig_meshctl_reads() {
        let (name, value) = for_tools(Some(Path::new("kc/config"))).unwrap();
        assert_eq!(name, "KUBECONFIG");
        let path = PathBuf::from(&value);
        assert!(path.is_absolute(), "{value}");
        assert_eq!(path, std::env::current_dir().unwrap().join("kc/config"));
    }

    #[test]
    fn a_kubeconfig_that_does_not_parse_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "clusters: [unclosed\n").unwrap();
        let err = foreign_entries(&path, &["cluster1".into()], &Default::default()).unwrap_err();
        assert!(err.to_string().contains("is not a kubeconfig"), "{err}");
        std::fs::write(&path, "just text\n").unwrap();
        let err = foreign_entries(&path, &["cluster1".into()], &Default::default()).unwrap_err();
        assert!(err.to_string().contains("not a YAML mapping"), "{err}");
    }

    use super::*;

    const KIND: &str = "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://127.0.0.1:40001\n    certificate-authority-data: Q0E=\n  name: kind-cluster1\ncontexts:\n- context:\n    cluster: kind-cluster1\n    user: kind-cluster1\n  name: kind-cluster1\ncurrent-context: kind-cluster1\nusers:\n- name: kind-cluster1\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n";

    #[test]
    fn a_kind_context_is_imported_under_the_cluster_name_and_others_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "apiVersion: v1\nkind: Config\ncurrent-context: prod\ncontexts:\n- name: prod\n  context: {cluster: prod, user: prod}\nclusters:\n- name: prod\n  cluster: {server: https://prod}\nusers:\n- name: prod\n  user: {token: t}\n").unwrap();
        import_context(&path, KIND, "kind-cluster1", "cluster1").unwrap();
        import_context(&path, KIND, "kind-cluster1", "cluster1").unwrap();
        let config: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            config["current-context"], "prod",
            "the user's current context is kept"
        );
        assert_eq!(
            config["contexts"].as_array().unwrap().len(),
            2,
            "importing twice does not duplicate"
        );
        let c = config["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "cluster1")
            .unwrap();
        assert_eq!(c["cluster"]["server"], "https://127.0.0.1:40001");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let owned = std::collections::BTreeSet::from(["cluster1".to_string()]);
        let names = ["cluster1".to_string(), "prod".to_string()];
        assert_eq!(
            foreign_entries(&path, &names, &owned).unwrap(),
            vec![
                ("context", "prod".to_string()),
                ("cluster", "prod".to_string()),
                ("user", "prod".to_string())
            ],
            "the user's entries are foreign, meshctl's own are not"
        );
        remove_context(&path, "cluster1").unwrap();
        let config: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(config["contexts"].as_array().unwrap().len(), 1);
    }
}
