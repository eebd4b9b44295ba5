//! The plug-in CA Secret `cacerts` that istiod signs workload certificates with, as both `up`
//! (phase `certs`) and `certs rotate` put it in a cluster: rendered from an intermediate CA,
//! refused where it would replace the root the mesh already trusts, and, once replaced, every
//! istiod restarted to sign with it.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::kube::apply::rollout_restart;
use crate::kube::{owned_by_mesh, wait};
use crate::pki::{self, IntermediateCa};
use crate::probe::Finding;

/// The Secret istiod reads its plug-in CA from at start.
pub const CACERTS: &str = "cacerts";

/// Its key holding the root CA (during a root rotation: the bundle of both roots).
const ROOT_CERT_KEY: &str = "root-cert.pem";

/// The template `cacerts` is rendered from, with [`context`].
pub const TEMPLATE: &str = "certs/cacerts.yaml.j2";

/// Context of `templates/certs/cacerts.yaml.j2`.
#[derive(Serialize)]
struct CaCerts<'a> {
    mesh_id: &'a str,
    cluster: &'a str,
    namespace: &'a str,
    ca_cert: &'a str,
    ca_key: &'a str,
    root_cert: &'a str,
    cert_chain: &'a str,
}

/// What [`TEMPLATE`] renders for `ca`'s cluster of mesh `mesh_id`, in `namespace` (istiod's).
pub fn context<'a>(ca: &'a IntermediateCa, (mesh_id, namespace): (&'a str, &'a str)) -> impl Serialize + 'a {
    CaCerts {
        mesh_id,
        cluster: &ca.cluster,
        namespace,
        ca_cert: &ca.ca_cert_pem,
        ca_key: &ca.ca_key_pem,
        root_cert: &ca.root_cert_pem,
        cert_chain: &ca.cert_chain_pem,
    }
}

/// The `cacerts` Secret of `ca`'s cluster of mesh `mesh_id`, in `namespace`.
pub fn render(
    ca: &IntermediateCa,
    (mesh_id, namespace): (&str, &str),
) -> Result<String, crate::render::RenderError> {
    crate::render::render(TEMPLATE, &context(ca, (mesh_id, namespace)))
}

/// The root bundle a rendered `cacerts` carries.
pub fn root_of_rendered(yaml: &str) -> Option<String> {
    let secret: Secret = serde_saphyr::from_str(yaml).ok()?;
    root_of(&secret)
}

fn root_of(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(ROOT_CERT_KEY)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// Why meshctl must not put `cacerts` chained to `wanted_root` where meshctl's own `cacerts` trusts
/// `live_root`: they share no root certificate, so replacing it would cut this cluster's workloads
/// off from every cluster still on the mesh's root. A shared root (the same one, or one side the
/// bundle of both during a root rotation) is no conflict.
pub fn root_conflict(live_root: &str, wanted_root: &str) -> Option<String> {
    let live = pki::pem_blocks(live_root);
    let wanted = pki::pem_blocks(wanted_root);
    if live.is_empty() || live.iter().any(|c| wanted.contains(c)) {
        return None;
    }
    let prints = |blocks: &[String]| {
        blocks
            .iter()
            .map(|b| pki::sha256_fingerprint(b).unwrap_or_else(|| "unreadable".into()))
            .collect::<Vec<_>>()
            .join(" + ")
    };
    Some(format!(
        "is chained to another root CA than the one meshctl has here (SHA-256 fingerprint in the cluster: {}; here: {}): replacing it would break mTLS between this cluster's workloads and every other cluster's",
        prints(&live),
        prints(&wanted)
    ))
}

/// Why the `cacerts` meshctl made for mesh `mesh_id` in `namespace` must not be replaced by one
/// chained to `wanted_root` ([`root_conflict`]); `None` when there is none, or it is not this
/// mesh's (ownership is judged apart from this).
pub async fn conflict_in_cluster(
    client: &Client,
    (mesh_id, namespace): (&str, &str),
    wanted_root: &str,
) -> Result<Option<String>, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    Ok(secrets
        .get_opt(CACERTS)
        .await?
        .filter(|s| owned_by_mesh(&s.metadata, mesh_id))
        .and_then(|s| root_of(&s))
        .and_then(|live| root_conflict(&live, wanted_root)))
}

/// Refuses to put a `cacerts` chained to `wanted_root` where this mesh's own one trusts another
/// root ([`conflict_in_cluster`]), with the way to carry the mesh's root over: checked again right
/// before every write of it (`up`'s step, `certs rotate`), whatever the probe found earlier.
pub async fn refuse_other_root(
    client: &Client,
    (mesh_id, namespace): (&str, &str),
    wanted_root: &str,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let conflict = conflict_in_cluster(client, (mesh_id, namespace), wanted_root)
        .await
        .with_context(|| format!("cannot read Secret {namespace}/{CACERTS}"))?;
    match conflict {
        Some(why) => anyhow::bail!(
            "Secret {namespace}/{CACERTS} {why}; nothing was changed\nhint: {CARRY_THE_ROOT_OVER}"
        ),
        None => Ok(()),
    }
}

/// The probe's finding for a `cacerts` of this mesh under another root, if there is one.
pub async fn conflict_finding(
    client: &Client,
    (mesh_id, namespace): (&str, &str),
    wanted_root: &str,
) -> Option<Finding> {
    let object = format!("Secret {namespace}/{CACERTS}");
    match conflict_in_cluster(client, (mesh_id, namespace), wanted_root).await {
        Ok(conflict) => conflict.map(|why| Finding::conflict(object, why)),
        Err(e) => Some(Finding::unreachable(object, crate::kube::human_reason(&e))),
    }
}

/// How a refusal to replace the root says the way out.
pub const CARRY_THE_ROOT_OVER: &str = "run from the machine (or `MESHCTL_HOME`) that built the mesh, or pass `--certs-dir DIR` with the root CA the mesh was built with (its `root-cert.pem` and `root-key.pem`); a new root is a root rotation (`meshctl certs rotate --root`, docs/certificates.md), never a repair";

/// Restarts every istiod in `namespace` and waits for each rollout: istiod takes up a new
/// intermediate by itself but ignores a new root until it restarts (Istio
/// `pilot/pkg/bootstrap/istio_ca.go`, `handleEvent`: "Updating new ROOT-CA not supported").
/// Every revision's istiod (two run during an upgrade) is found by the label Istio's chart gives
/// them (`istio-discovery/templates/deployment.yaml`: `app: istiod`), never by the name `istiod`,
/// which a revisioned install does not use (`istiod-<revision>`). Returns their names.
pub async fn restart_istiods(
    client: &Client,
    namespace: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    use anyhow::Context as _;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let istiods: Vec<String> = deployments
        .list(&ListParams::default().labels("app=istiod"))
        .await
        .with_context(|| format!("cannot list istiod's Deployments in {namespace}"))?
        .items
        .into_iter()
        .filter_map(|d| d.metadata.name)
        .collect();
    for istiod in &istiods {
        rollout_restart(client, namespace, istiod).await?;
    }
    for istiod in &istiods {
        let deployments = kube::Api::namespaced(client.clone(), namespace);
        wait::until(&deployments, wait::rolled_out(namespace, istiod), timeout).await?;
    }
    Ok(istiods)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{KeyType, RootCa, Validity, generate_key};

    fn root() -> String {
        RootCa::generate(generate_key(KeyType::EcdsaP256).unwrap(), Validity::default())
            .unwrap()
            .cert_pem
    }

    #[test]
    fn only_a_cacerts_that_shares_no_root_is_a_conflict() {
        let (mesh, other, next) = (root(), root(), root());
        assert_eq!(root_conflict(&mesh, &mesh), None);
        // A root rotation's bundle holds the mesh's root beside the next one, either way round.
        let bundle = format!("{mesh}{next}");
        assert_eq!(root_conflict(&mesh, &bundle), None);
        assert_eq!(root_conflict(&bundle, &mesh), None);
        let why = root_conflict(&mesh, &other).expect("another root");
        let (in_cluster, here) = (
            pki::sha256_fingerprint(&mesh).unwrap(),
            pki::sha256_fingerprint(&other).unwrap(),
        );
        assert!(why.contains(&in_cluster) && why.contains(&here), "{why}");
    }

    #[test]
    fn the_root_is_read_back_from_the_rendered_secret() {
        let mesh = root();
        let ca = IntermediateCa {
            cluster: "cluster1".into(),
            ca_cert_pem: "c".into(),
            ca_key_pem: "k".into(),
            cert_chain_pem: "cc".into(),
            root_cert_pem: mesh.clone(),
        };
        let yaml = render(&ca, ("mesh1", "istio-system")).unwrap();
        assert_eq!(root_of_rendered(&yaml).as_deref(), Some(mesh.as_str()));
    }
}
