//! Phase `istio`: each cluster's control plane. A primary gets istiod; a
//! remote gets Istio's `remote` profile, pointed at its primary's istiod through the primary's
//! east-west gateway (Istio docs, "Install Primary-Remote" and "… on different networks").

use anyhow::{Context as _, Result, anyhow};
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;

use super::{Fact, PhaseLogic, RemoveContext, StepContext, StepResult, SummaryColumn};
use crate::kube::FIELD_MANAGER;
use crate::plan::{Condition, Phase, PhaseBuilder, PlanError, RecordOn, Step};
use crate::probe::{self, Finding, Probe};
use crate::tools::{RunOptions, istioctl};
use crate::topology::{Cluster, Mesh, Role};
use crate::versions;

/// Name of the control-plane IstioOperator; a name keeps istioctl's pruning away from the east-west
/// gateway on a re-install (an unnamed re-install prunes every install-owned object it did not
/// render, the gateway included).
pub const OPERATOR_NAME: &str = "control-plane";
pub const NAMESPACE: &str = crate::topology::ISTIO_NAMESPACE;
/// Annotation on an installed Deployment (istiod, the east-west gateway) holding the digest of the
/// IstioOperator it was installed from: kept in the cluster, so any run, from any machine, can
/// tell whether the cluster runs what the plan renders.
pub const INSTALLED_DIGEST: &str = "meshctl.io/installed-operator-digest";

/// What a remote's IstioOperator carries until its primary's east-west gateway has an address:
/// the variable Istio's docs use. `up` fills it in before it installs; a plan written by
/// `--dry-run` may show it.
pub const DISCOVERY_ADDRESS_UNKNOWN: &str = "${DISCOVERY_ADDRESS}";

/// Each cluster's control plane: istiod on a primary, the remote profile on a remote.
pub struct Istio;

impl PhaseLogic for Istio {
    fn phase(&self) -> Phase {
        Phase::Istio
    }

    fn summary(&self, _mesh: &Mesh, cluster: &Cluster) -> Option<SummaryColumn> {
        let value = match &cluster.primary {
            None => "ready".to_string(),
            Some(primary) => format!("of {primary}"),
        };
        Some(SummaryColumn {
            header: "ISTIOD",
            key: "istiod",
            value,
        })
    }

    fn plan(&self, b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
        plan(b)
    }

    fn probe<'a>(&'a self, p: &'a Probe<'a>) -> BoxFuture<'a, Vec<Finding>> {
        Box::pin(probe(p))
    }

    fn needs(&self) -> &'static [Fact] {
        &[Fact::GatewayAddresses]
    }

    fn runs_istioctl(&self) -> bool {
        true
    }

    fn run<'a>(&'a self, step: &'a Step, cx: StepContext<'a>) -> Option<StepResult<'a>> {
        run_install(step, cx)
    }

    fn describe(&self, step: &Step) -> Option<String> {
        describe_install(step)
    }

    fn remove<'a>(&'a self, cx: &'a RemoveContext<'a>) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let Some((record_on, namespace)) = recorded_control_plane(cx).await? else {
                return Ok(Vec::new());
            };
            uninstall_operator(cx, Phase::Istio, CONTROL_PLANE_FILE, record_on, namespace).await
        })
    }
}

/// The control plane's IstioOperator file in a plan.
pub const CONTROL_PLANE_FILE: &str = "control-plane.yaml";

/// Context of `templates/istio/control-plane.yaml.j2`.
#[derive(Serialize)]
struct ControlPlane<'a> {
    name: &'a str,
    /// `spec.revision`: empty for Istio's default revision.
    revision: &'a str,
    istio_version: &'a str,
    mesh_id: &'a str,
    cluster_name: &'a str,
    network: &'a str,
    /// `meshConfig`, as JSON, when the topology sets any.
    mesh_config: Option<String>,
    /// `values.global.externalIstiod`: this istiod also configures remote clusters.
    external_istiod: bool,
    /// `values.global.meshNetworks`: the networks whose gateways are declared.
    mesh_networks: Vec<crate::topology::DeclaredNetwork>,
}

/// Context of `templates/istio/remote.yaml.j2`.
#[derive(Serialize)]
struct Remote<'a> {
    name: &'a str,
    revision: &'a str,
    /// `values.global.istioNamespace`: `external-istiod` for the remotes of an external control
    /// plane, else empty (istio-system).
    istio_namespace: &'a str,
    /// The config cluster of an external control plane: `configCluster`, and the `istio`
    /// ConfigMap the external istiod reads its mesh config from.
    config_cluster: bool,
    istio_version: &'a str,
    cluster_name: &'a str,
    network: &'a str,
    primary: &'a str,
    remote_pilot_address: &'a str,
    /// In the config cluster: `values.global.meshNetworks` of its `istio` ConfigMap, the one the
    /// external istiod takes its networks from (Istio `pkg/config/mesh/meshwatcher`,
    /// `NewNetworksCollection`: the first source there is, and `SHARED_MESH_CONFIG`'s comes first).
    mesh_networks: Vec<crate::topology::DeclaredNetwork>,
}

/// Renders an IstioOperator into `file`, installs it with istioctl, and waits until `deployment`
/// (in `namespace`) is available: the shape shared by the control planes and the east-west gateway.
pub(super) fn install_operator<C: Serialize>(
    b: &mut PhaseBuilder<'_>,
    file: &str,
    template: &'static str,
    context: &C,
    (namespace, deployment): (&str, &str),
) -> Result<(), PlanError> {
    let path = b.render(file, template, context, false)?;
    b.step(Step::IstioctlInstall {
        context: b.cluster.context.clone(),
        file: path,
        record_on: RecordOn::Deployment(deployment.into()),
        namespace: namespace.into(),
        timeout_secs: b.input.timeout_secs,
    });
    b.step(Step::Wait {
        until: Condition::DeploymentAvailable {
            namespace: namespace.into(),
            name: deployment.into(),
        },
    });
    Ok(())
}

fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    if b.cluster.role == Role::Remote {
        return plan_remote(b);
    }
    let cluster = b.cluster;
    let mesh = b.input.mesh;
    let revision = &mesh.istio_revision;
    // An external control plane's own istiod only configures the gateway in front of the
    // external istiod (Istio's docs install it from the default profile with that gateway): the
    // mesh's options and its remotes belong to the external istiod (phase `external-istiod`).
    let primary = cluster.role == Role::Primary;
    let control_plane = ControlPlane {
        revision: revision.operator_value(),
        external_istiod: primary && mesh.controls_remotes(cluster),
        mesh_networks: if primary {
            mesh.declared_networks()
        } else {
            Vec::new()
        },
        name: OPERATOR_NAME,
        istio_version: versions::ISTIO_VERSION,
        mesh_id: &mesh.mesh_id,
        cluster_name: &cluster.name,
        network: &cluster.network,
        mesh_config: (primary && !mesh.mesh_config.is_empty())
            .then(|| serde_json::to_string(&mesh.mesh_config).expect("plain data serializes")),
    };
    install_operator(
        b,
        CONTROL_PLANE_FILE,
        "istio/control-plane.yaml.j2",
        &control_plane,
        (NAMESPACE, &revision.istiod()),
    )?;
    // The east-west gateway's `image: auto` is filled in by this webhook: a gateway
    // created before it serves keeps the literal image `auto` and never starts.
    b.step(Step::Wait {
        until: Condition::WebhookCaBundle {
            kind: "MutatingWebhookConfiguration".into(),
            name: b.input.mesh.injector_webhook(cluster),
        },
    });
    Ok(())
}

/// A remote: the `remote` profile, its injector and istiod Service pointed at the primary's
/// east-west gateway. It runs no istiod, so there is nothing to wait for: the primary's istiod
/// takes the remote over once it holds the remote's secret (phase `remote-secrets`).
fn plan_remote(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    let mesh = b.input.mesh;
    let primary = mesh.control_plane_of(b.cluster);
    let address = b
        .input
        .gateway_ips
        .get(&primary.name)
        .map_or(DISCOVERY_ADDRESS_UNKNOWN, String::as_str);
    let revision = &mesh.istio_revision;
    let namespace = mesh.istio_namespace(b.cluster);
    let remote = Remote {
        name: OPERATOR_NAME,
        revision: revision.operator_value(),
        istio_namespace: if namespace == NAMESPACE { "" } else { namespace },
        config_cluster: mesh.is_config_cluster(b.cluster),
        istio_version: versions::ISTIO_VERSION,
        cluster_name: &b.cluster.name,
        network: &b.cluster.network,
        primary: &primary.name,
        remote_pilot_address: address,
        mesh_networks: if mesh.is_config_cluster(b.cluster) {
            mesh.declared_networks()
        } else {
            Vec::new()
        },
    };
    let path = b.render(CONTROL_PLANE_FILE, "istio/remote.yaml.j2", &remote, false)?;
    b.step(Step::IstioctlInstall {
        context: b.cluster.context.clone(),
        file: path,
        record_on: RecordOn::Service(revision.istiod()),
        namespace: namespace.into(),
        timeout_secs: b.input.timeout_secs,
    });
    Ok(())
}

/// What each `istioctl install` of the phase installed: its Deployment available and recorded as
/// installed from this very rendering.
pub(super) async fn installed(p: &Probe<'_>, client: &kube::Client) -> Vec<Finding> {
    let mut out = Vec::new();
    for step in p.steps {
        if let Step::IstioctlInstall {
            file,
            record_on,
            namespace,
            ..
        } = step
        {
            let digest = p.artifact(file).map(|a| a.digest()).unwrap_or_default();
            let installed = Some((INSTALLED_DIGEST, digest.as_str()));
            out.push(match record_on {
                RecordOn::Service(name) => probe::service(client, namespace, name, installed).await,
                RecordOn::Deployment(name) => probe::deployment(client, namespace, name, installed).await,
            });
        }
    }
    out
}

/// istiod installed from this cluster's rendered IstioOperator, and available.
async fn probe(p: &Probe<'_>) -> Vec<Finding> {
    match p.client().await {
        Ok(client) => installed(p, &client).await,
        Err(f) => vec![f],
    }
}

/// Runs an `IstioctlInstall` step (the one step of its own the control plane and the east-west
/// gateway share).
pub(super) fn run_install<'a>(step: &'a Step, cx: StepContext<'a>) -> Option<StepResult<'a>> {
    match step {
        Step::IstioctlInstall {
            context,
            file,
            record_on,
            namespace,
            timeout_secs,
        } => Some(Box::pin(install(
            cx,
            context,
            file,
            (namespace, record_on),
            *timeout_secs,
        ))),
        _ => None,
    }
}

/// How an `IstioctlInstall` step reads in `--dry-run`.
pub(super) fn describe_install(step: &Step) -> Option<String> {
    match step {
        Step::IstioctlInstall {
            context,
            file,
            record_on,
            namespace,
            timeout_secs,
        } => Some(format!(
            "run: istioctl {}   (then records the file's digest on {record_on} in {namespace})",
            istioctl::install_args(context, file, *timeout_secs).join(" ")
        )),
        _ => None,
    }
}

/// `istioctl install`, then the digest of the file it installed, recorded on `record_on` as an
/// annotation (meshctl's own field manager, so istioctl's next apply leaves it alone).
async fn install(
    cx: StepContext<'_>,
    context: &str,
    file: &str,
    (namespace, record_on): (&str, &RecordOn),
    timeout_secs: u64,
) -> Result<Option<String>> {
    let rendered = cx.artifact_text(file)?;
    if rendered.contains(DISCOVERY_ADDRESS_UNKNOWN) {
        let primary = &cx.run.mesh.control_plane_of(cx.cluster).name;
        return Err(anyhow!(
            "{file}: the east-west gateway of `{primary}` has no IP recorded yet, and this remote's istiod address is that IP; run `meshctl up` so `{primary}`'s eastwest phase completes first"
        ));
    }
    // Its version was checked before anything changed. istioctl reads KUBECONFIG: point it at
    // the file meshctl was given.
    let options = cx.tool_options(cx.settings().kubeconfig_flag.as_deref());
    cx.run
        .tools
        .run(
            "istioctl",
            &istioctl::install_args(context, file, timeout_secs),
            &options,
        )
        .await?;
    let digest = crate::plan::digest(&cx.artifact_text(file)?);
    let client = cx.client().await?;
    let patch = serde_json::json!({"metadata": {"annotations": {INSTALLED_DIGEST: digest}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let patched = match record_on {
        RecordOn::Deployment(name) => Api::<Deployment>::namespaced(client, namespace)
            .patch(name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
        RecordOn::Service(name) => Api::<Service>::namespaced(client, namespace)
            .patch(name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
    };
    patched.with_context(|| format!("cannot record the installed digest on {record_on} in {namespace}"))?;
    Ok(None)
}

/// The istiod Deployment (primary, external control plane's own) or Service (remote) of any
/// revision that carries meshctl's install record, with its namespace: `down` removes what the
/// last `up` or `upgrade` installed, whatever its revision.
async fn recorded_control_plane(cx: &RemoveContext<'_>) -> Result<Option<(RecordOn, &'static str)>> {
    let remote = cx.cluster.role == Role::Remote;
    let namespace = if remote { cx.istio_namespace } else { NAMESPACE };
    let names = if remote {
        names_in_namespace::<Service>(&cx.client, namespace).await
    } else {
        names_in_namespace::<Deployment>(&cx.client, namespace).await
    }
    .with_context(|| format!("cannot list istiod in {namespace}"))?;
    for name in names
        .into_iter()
        .filter(|n| n == "istiod" || n.starts_with("istiod-"))
    {
        let record_on = if remote {
            RecordOn::Service(name)
        } else {
            RecordOn::Deployment(name)
        };
        if recorded(&cx.client, &record_on, namespace).await? {
            return Ok(Some((record_on, namespace)));
        }
    }
    Ok(None)
}

/// The names of every `K` in `namespace`.
async fn names_in_namespace<K>(client: &kube::Client, namespace: &str) -> kube::Result<Vec<String>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let listed = Api::<K>::namespaced(client.clone(), namespace)
        .list(&Default::default())
        .await?;
    Ok(listed
        .items
        .into_iter()
        .filter_map(|o| o.meta().name.clone())
        .collect())
}

/// Whether `record_on` (in `namespace`) carries meshctl's install record: meshctl installed it.
async fn recorded(client: &kube::Client, record_on: &RecordOn, namespace: &str) -> Result<bool> {
    let has_record = |meta: &kube::api::ObjectMeta| {
        meta.annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(INSTALLED_DIGEST))
    };
    let found = match record_on {
        RecordOn::Service(name) => Api::<Service>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .map(|o| o.is_some_and(|s| has_record(&s.metadata))),
        RecordOn::Deployment(name) => Api::<Deployment>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .map(|o| o.is_some_and(|d| has_record(&d.metadata))),
    };
    found.with_context(|| format!("cannot read {record_on} in {namespace}"))
}

/// `istioctl uninstall -f` of the IstioOperator `phase` installed from `file`, when `record_on`
/// carries meshctl's install record (it installed it) and the file is still in the plan folder.
pub(super) async fn uninstall_operator(
    cx: &RemoveContext<'_>,
    phase: Phase,
    file: &str,
    record_on: RecordOn,
    namespace: &str,
) -> Result<Vec<String>> {
    let path = format!("{}/{}/{file}", cx.cluster.name, phase.folder());
    if !recorded(&cx.client, &record_on, namespace).await? || !cx.plan_dir.join(&path).exists() {
        return Ok(Vec::new());
    }
    let args: Vec<String> = ["uninstall", "-y", "--context", &cx.cluster.context, "-f", &path]
        .map(String::from)
        .to_vec();
    let options = RunOptions {
        cwd: Some(cx.plan_dir.to_path_buf()),
        timeout: Some(cx.timeout),
        env: cx
            .kubeconfig
            .map(|p| ("KUBECONFIG".to_string(), p.display().to_string()))
            .into_iter()
            .collect(),
        ..Default::default()
    };
    cx.tools.run("istioctl", &args, &options).await?;
    Ok(vec![format!("{record_on} (istioctl uninstall -f {path})")])
}
