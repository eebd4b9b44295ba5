//! What the phases that install with istioctl share (the control planes, the east-west gateway,
//! the external istiod): render an IstioOperator and install it, record on what it made the
//! digest of the file it came from, tell from that record whether the cluster runs what the plan
//! renders, and uninstall only what carries it.

use anyhow::{Context as _, Result, anyhow};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;

use super::{RemoveContext, StepContext, StepResult};
use crate::kube::FIELD_MANAGER;
use crate::plan::{Condition, Phase, PhaseBuilder, PlanError, RecordOn, Step};
use crate::plan::{InstallStep, IstioctlInstall};
use crate::probe::{self, Finding, Probe};
use crate::tools::{RunOptions, istioctl};

/// Annotation on an installed Deployment (istiod, the east-west gateway) holding the digest of the
/// IstioOperator it was installed from: kept in the cluster, so any run, from any machine, can
/// tell whether the cluster runs what the plan renders.
pub const INSTALLED_DIGEST: &str = "meshctl.io/installed-operator-digest";

/// What a remote's IstioOperator carries until its primary's east-west gateway has an address:
/// the variable Istio's docs use. `up` fills it in before it installs; a plan written by
/// `--dry-run` may show it.
pub const DISCOVERY_ADDRESS_UNKNOWN: &str = "${DISCOVERY_ADDRESS}";

/// Renders an IstioOperator into `file`, installs it with istioctl, and waits until `deployment`
/// (in `namespace`) is available: the shape shared by the control planes and the east-west gateway.
pub fn install_operator<C: Serialize>(
    b: &mut PhaseBuilder<'_>,
    file: &str,
    template: &'static str,
    context: &C,
    (namespace, deployment): (&str, &str),
) -> Result<(), PlanError> {
    let path = b.render(file, template, context, false)?;
    plan_install(b, path, RecordOn::Deployment(deployment.into()), namespace);
    b.step(Step::Wait {
        until: Condition::DeploymentAvailable {
            namespace: namespace.into(),
            name: deployment.into(),
        },
    });
    Ok(())
}

/// Installs the rendered IstioOperator `file` with istioctl into `namespace`, recording the
/// install on `record_on`.
pub fn plan_install(b: &mut PhaseBuilder<'_>, file: String, record_on: RecordOn, namespace: &str) {
    b.step(Step::Install(InstallStep::IstioctlInstall(IstioctlInstall {
        context: b.cluster.context.clone(),
        file,
        record_on,
        namespace: namespace.into(),
        timeout_secs: b.input.timeout_secs,
    })));
}

/// What each `istioctl install` of the phase installed: its Deployment available and recorded as
/// installed from this very rendering.
pub async fn installed(p: &Probe<'_>, client: &kube::Client) -> Vec<Finding> {
    let mut out = Vec::new();
    for step in p.steps {
        if let Step::Install(InstallStep::IstioctlInstall(IstioctlInstall {
            file,
            record_on,
            namespace,
            ..
        })) = step
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

/// Runs the step the installing phases share.
pub fn run<'a>(step: &'a InstallStep, cx: StepContext<'a>) -> StepResult<'a> {
    let InstallStep::IstioctlInstall(install_step) = step;
    Box::pin(install(cx, install_step))
}

/// How it reads in `--dry-run`.
pub fn describe(step: &InstallStep) -> String {
    let InstallStep::IstioctlInstall(IstioctlInstall {
        context,
        file,
        record_on,
        namespace,
        timeout_secs,
    }) = step;
    format!(
        "run: istioctl {}   (then records the file's digest on {record_on} in {namespace})",
        istioctl::install_args(context, file, *timeout_secs).join(" ")
    )
}

/// `istioctl install`, then the digest of the file it installed, recorded on `record_on` as an
/// annotation (meshctl's own field manager, so istioctl's next apply leaves it alone).
async fn install(cx: StepContext<'_>, step: &IstioctlInstall) -> Result<Option<String>> {
    let IstioctlInstall {
        context,
        file,
        record_on,
        namespace,
        timeout_secs,
    } = step;
    let timeout_secs = *timeout_secs;
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

/// Whether `record_on` (in `namespace`) carries meshctl's install record: meshctl installed it.
pub async fn recorded(client: &kube::Client, record_on: &RecordOn, namespace: &str) -> Result<bool> {
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
pub async fn uninstall_operator(
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
        env: crate::kubeconfig::for_tools(cx.kubeconfig).into_iter().collect(),
        ..Default::default()
    };
    cx.tools.run("istioctl", &args, &options).await?;
    Ok(vec![format!("{record_on} (istioctl uninstall -f {path})")])
}
