//! Phase `external-istiod`: the istiod of an external control plane, in its cluster's
//! `external-istiod` namespace, configuring the remotes and none of its own cluster's workloads
//! (Istio's docs, "Install Istio with an External Control Plane", the variant without a DNS name:
//! the gateway passes TLS through to istiod, and proxies dial the gateway's address).
//!
//! It runs once the config cluster's Istio is installed: the external istiod runs as that
//! cluster's `istiod` service account (its kubeconfig of the config cluster, Secret
//! `istio-kubeconfig`, carries that account's token) and reads the mesh's configuration there.

use anyhow::{Result, anyhow};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde::Serialize;

use super::istioctl_install::{DISCOVERY_ADDRESS_UNKNOWN, install_operator, installed, uninstall_operator};
use super::{Fact, PhaseLogic, RemoveContext, StepContext, StepResult};
use crate::kube::apply::summary;
use crate::plan::ExternalIstiodStep;
use crate::plan::{Phase, PhaseBuilder, PlanError, RecordOn, Step};
use crate::probe::{Finding, Probe};
use crate::remote_secret::create::{self, Account, CONFIG_SECRET, Placement};
use crate::remote_secret::{api_address, kubeconfig_finding, meshctl_secret_for};
use crate::topology::{Cluster, Mesh, Provider, Role};
use crate::versions;

/// The external istiod's IstioOperator: a name of its own, so that installing (or uninstalling)
/// it never prunes the cluster's own control plane and gateway, which istioctl would otherwise
/// take for leftovers of the same owner (Istio `operator/pkg/install/install.go`, `prune`).
pub const OPERATOR_NAME: &str = "external-istiod";
/// Its file in the plan.
pub const OPERATOR_FILE: &str = "external-istiod.yaml";
/// The istiod Deployment it installs (the chart's name, without a revision).
const ISTIOD: &str = "istiod";
/// The port proxies and the injector's callers reach istiod on, through the gateway.
const XDS_PORT: u16 = 15012;

/// The external control plane's istiod.
pub struct ExternalIstiod;

impl PhaseLogic for ExternalIstiod {
    plan_and_probe_are_the_modules!();

    fn needs(&self) -> &'static [Fact] {
        &[Fact::GatewayAddresses]
    }

    fn runs_istioctl(&self) -> bool {
        true
    }

    /// istiod (through istioctl, from the file it was installed from), then its kubeconfig.
    fn remove<'a>(&'a self, cx: &'a RemoveContext<'a>) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            if cx.cluster.role != Role::External {
                return Ok(Vec::new());
            }
            let namespace = cx.istio_namespace;
            let record_on = RecordOn::Deployment(ISTIOD.into());
            let mut removed =
                uninstall_operator(cx, Phase::ExternalIstiod, OPERATOR_FILE, record_on, namespace).await?;
            let secrets: Api<Secret> = Api::namespaced(cx.client.clone(), namespace);
            if let Some(secret) = secrets.get_opt(CONFIG_SECRET).await?
                && meshctl_secret_for(&secret).is_some()
            {
                secrets.delete(CONFIG_SECRET, &Default::default()).await?;
                removed.push(format!("Secret {namespace}/{CONFIG_SECRET}"));
            }
            Ok(removed)
        })
    }
}

/// Runs the phase's own step.
pub(super) fn run<'a>(step: &'a ExternalIstiodStep, cx: StepContext<'a>) -> StepResult<'a> {
    let ExternalIstiodStep::ConfigKubeconfig { source, .. } = step;
    Box::pin(apply_config_kubeconfig(cx, source))
}

/// How the phase's own step reads.
pub(super) fn describe(step: &ExternalIstiodStep) -> String {
    let ExternalIstiodStep::ConfigKubeconfig { source, preview } = step;
    format!("config cluster: read `{source}`'s istiod token, apply {CONFIG_SECRET} here (shape: {preview})")
}

/// Context of `templates/external-istiod/external-istiod.yaml.j2`.
#[derive(Serialize)]
struct ExternalIstiodOperator<'a> {
    name: &'a str,
    namespace: &'a str,
    istio_version: &'a str,
    mesh_id: &'a str,
    /// The external istiod's cluster ID: the config cluster's name.
    config_cluster: &'a str,
    /// `<gateway address>:15012`: where proxies reach istiod and its CA.
    discovery_address: String,
    /// `meshConfig`, as JSON: the mesh's options plus what this model sets.
    mesh_config: String,
    /// `values.global.meshNetworks`: the remotes' networks whose gateways are declared (a node
    /// port, or an address in front): this istiod configures their proxies, so it must know how
    /// other networks reach them (istiod gives a NodePort Service an address only through
    /// `traffic.istio.io/nodeSelector`: Istio `pilot/pkg/serviceregistry/kube/conversion.go`). It
    /// reads them from the config cluster's `istio` ConfigMap, which comes first among its sources
    /// (phase `istio` renders them there); its own ConfigMap carries the same, for when it reads
    /// its own.
    mesh_networks: Vec<crate::topology::DeclaredNetwork>,
}

fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    let mesh = b.input.mesh;
    if b.cluster.role != Role::External {
        return Ok(());
    }
    let Some(config) = mesh.config_cluster_of(b.cluster) else {
        return Err(b.missing("a config cluster (a `role: remote` cluster naming it)"));
    };
    let namespace = mesh.istio_namespace(b.cluster);
    let address = b
        .input
        .gateway_ips
        .get(&b.cluster.name)
        .map_or(DISCOVERY_ADDRESS_UNKNOWN, String::as_str);
    let discovery_address = format!("{address}:{XDS_PORT}");
    // The kubeconfig first: without it the external istiod would start against its own
    // cluster's API server and take it for the config cluster.
    let preview = b.render(
        &format!("{CONFIG_SECRET}.preview.yaml"),
        create::TEMPLATE,
        &create::preview_in(
            Placement {
                namespace,
                config: true,
            },
            &config.name,
            &server_shown(mesh, config),
            &Account::config_istiod(mesh.istio_namespace(config)),
        ),
        false,
    )?;
    b.step(Step::ExternalIstiod(ExternalIstiodStep::ConfigKubeconfig {
        source: config.name.clone(),
        preview,
    }));
    let operator = ExternalIstiodOperator {
        name: OPERATOR_NAME,
        namespace,
        istio_version: versions::ISTIO_VERSION,
        mesh_id: &mesh.mesh_id,
        config_cluster: &config.name,
        mesh_config: mesh_config(mesh, namespace, &discovery_address),
        discovery_address,
        mesh_networks: mesh.declared_networks(),
    };
    install_operator(
        b,
        OPERATOR_FILE,
        "external-istiod/external-istiod.yaml.j2",
        &operator,
        (namespace, ISTIOD),
    )
}

/// The mesh's `meshConfig` with what the external istiod needs on top: its namespace as the
/// root namespace, and the gateway as every proxy's discovery address (the docs' values).
fn mesh_config(mesh: &Mesh, namespace: &str, discovery_address: &str) -> String {
    let mut config = serde_json::to_value(&mesh.mesh_config).expect("plain data serializes");
    if !config.is_object() {
        config = serde_json::json!({});
    }
    config["rootNamespace"] = namespace.into();
    config["defaultConfig"]["discoveryAddress"] = discovery_address.into();
    config.to_string()
}

/// The config cluster's API server as the plan shows it (read at run time).
fn server_shown(mesh: &Mesh, config: &Cluster) -> String {
    config.api_server.clone().unwrap_or_else(|| match mesh.provider {
        Provider::Kind => format!(
            "<the address of `{}` on the docker network, recorded when it is created>",
            config.name
        ),
        Provider::Existing => format!("<the server of kubeconfig context `{}`>", config.context),
    })
}

/// The kubeconfig of the config cluster (pointing at its API server now, meshctl's) and istiod
/// installed from this rendering.
async fn probe(p: &Probe<'_>) -> Vec<Finding> {
    let client = match p.client().await {
        Ok(c) => c,
        Err(f) => return vec![f],
    };
    let mut out = Vec::new();
    for step in p.steps {
        if let Step::ExternalIstiod(ExternalIstiodStep::ConfigKubeconfig { source, .. }) = step {
            out.push(probe_config_kubeconfig(p, &client, source).await);
        }
    }
    out.extend(installed(p, &client).await);
    out
}

async fn probe_config_kubeconfig(p: &Probe<'_>, client: &kube::Client, source: &str) -> Finding {
    let namespace = p.mesh.istio_namespace(p.cluster);
    let object = format!("kubeconfig of config cluster {source} (Secret {namespace}/{CONFIG_SECRET})");
    let want = match api_address(p.mesh, p.state, p.clients.kubeconfig(), source) {
        Ok(w) => w,
        Err(e) => return Finding::unreachable(object, e),
    };
    let secret = match Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(CONFIG_SECRET)
        .await
    {
        Ok(Some(s)) => s,
        Ok(None) => return Finding::missing(object, format!("no {namespace}/{CONFIG_SECRET}")),
        Err(e) => return Finding::unreachable(object, crate::kube::human_reason(&e)),
    };
    if meshctl_secret_for(&secret).is_none() {
        return Finding::foreign(
            object,
            format!("{namespace}/{CONFIG_SECRET} was applied by someone else"),
        );
    }
    kubeconfig_finding(p, object, &secret, (source, "config"), &want).await
}

/// Reads the config cluster's `istiod` token and applies the external istiod's kubeconfig here,
/// unless an `istio-kubeconfig` here is someone else's (`--adopt` takes it over).
async fn apply_config_kubeconfig(cx: StepContext<'_>, source: &str) -> Result<Option<String>> {
    let run = cx.run;
    let namespace = cx.istio_namespace();
    let secrets: Api<Secret> = Api::namespaced(cx.client().await?, namespace);
    if !cx.settings().adopt
        && let Some(s) = secrets.get_opt(CONFIG_SECRET).await?
        && meshctl_secret_for(&s).is_none()
    {
        return Err(crate::kube::KubeError::Foreign {
            object: format!("Secret {namespace}/{CONFIG_SECRET}"),
        }
        .into());
    }
    let config = run
        .mesh
        .cluster(source)
        .ok_or_else(|| anyhow!("cluster `{source}` is not in the topology"))?;
    let server = api_address(
        &run.mesh,
        &run.state.snapshot(),
        run.settings.kubeconfig_flag.as_deref(),
        source,
    )
    .map_err(|e| anyhow!(e))?;
    let client = run.clients.get(&config.context).await?;
    let account = Account::config_istiod(run.mesh.istio_namespace(config));
    let creds = create::credentials_of(&client, source, &account, run.settings.timeout).await?;
    let placement = Placement {
        namespace,
        config: true,
    };
    let text = create::render_secret_in(placement, source, &server, &creds)?;
    // The namespace the external istiod's install makes, unless the certs phase (skipped where
    // the clusters bring their own CA) made it already: made here when missing, never claimed.
    let namespace_doc = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n");
    crate::kube::apply::Applier::new(cx.client().await?)
        .create_missing(&namespace_doc, namespace)
        .await?;
    Ok(summary(&cx.apply(&text, CONFIG_SECRET).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mesh's options stay, and the model's are added beside them.
    #[test]
    fn mesh_config_keeps_the_meshs_options_and_adds_the_discovery_address() {
        let yaml = "clusters:\n  - {role: external}\n  - {role: remote}\nmeshConfig:\n  defaultServiceExportTo: [\".\"]\n";
        let mesh = Mesh::from_yaml(yaml, None).unwrap();
        let config: serde_json::Value =
            serde_json::from_str(&mesh_config(&mesh, "external-istiod", "172.18.255.1:15012")).unwrap();
        assert_eq!(config["defaultServiceExportTo"], serde_json::json!(["."]));
        assert_eq!(config["rootNamespace"], "external-istiod");
        assert_eq!(config["defaultConfig"]["discoveryAddress"], "172.18.255.1:15012");
    }
}
