//! The steps every phase shares: apply a rendered file, wait until admission accepts it, apply a
//! pinned upstream manifest, wait for a condition. A phase's own steps run in its file
//! ([`crate::phases::run_own`]); these run here.

use anyhow::{Context, Result, anyhow};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;

use crate::kube::apply::{Applier, summary};
use crate::kube::wait;
use crate::phases::StepContext;
use crate::plan::{Condition, Step};
use crate::{upstream, versions};

/// Runs a shared step in one cluster; returns a short detail for the phase's line.
pub(super) async fn run(step: &Step, cx: StepContext<'_>) -> Result<Option<String>> {
    match step {
        Step::Apply { file } => Ok(summary(&cx.apply(&cx.artifact_text(file)?, file).await?)),
        Step::AwaitAdmission { file } => {
            let tries = Applier::new(cx.client().await?)
                .with_adoption(cx.settings().adopt)
                .await_admission(&cx.artifact_text(file)?, file, cx.settings().timeout)
                .await?;
            Ok((tries > 1).then(|| format!("webhook answered after {tries} tries")))
        }
        Step::ApplyUpstream {
            name,
            url,
            sha256,
            unless_crd,
        } => {
            if let Some(crd) = unless_crd
                && present_crd(&cx, crd).await?
            {
                return Ok(Some(format!("{name}: CRD {crd} is there already; left as it is")));
            }
            apply_upstream(cx, name, url, sha256).await
        }
        Step::Wait { until } => wait_for(cx, until).await,
        own => Err(anyhow!(
            "{own:?} is a phase's own step: `phases::run_own` runs it"
        )),
    }
}

/// Whether the cluster has CRD `name` (whoever installed it).
async fn present_crd(cx: &StepContext<'_>, name: &str) -> Result<bool> {
    let crds: Api<CustomResourceDefinition> = Api::all(cx.client().await?);
    Ok(crds
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read CRD {name}"))?
        .is_some())
}

/// Downloads (once per run, sha256-checked, cached on disk) and applies an upstream manifest, or
/// the file the user named in its place (`--metallb-manifest`, `--gateway-api-crds`).
async fn apply_upstream(cx: StepContext<'_>, name: &str, url: &str, sha256: &str) -> Result<Option<String>> {
    let settings = cx.settings();
    let given = match url {
        versions::METALLB_MANIFEST_URL => settings.metallb_manifest.as_deref(),
        versions::GATEWAY_API_CRDS_URL => settings.gateway_api_crds.as_deref(),
        _ => None,
    };
    let download = upstream::fetch(cx.run.tools.as_ref(), url, sha256, given, &settings.cache_dir);
    let text = cx
        .run
        .memo
        .get_or_compute(&format!("upstream/{url}"), async {
            download.await.map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| anyhow!(e))?;
    let applied = cx.apply(&text, name).await?;
    Ok(summary(&applied).map(|d| format!("{name}: {d}")))
}

/// Waits for `until` with the run's timeout.
async fn wait_for(cx: StepContext<'_>, until: &Condition) -> Result<Option<String>> {
    let client = cx.client().await?;
    let timeout = cx.settings().timeout;
    // The wait says what it waits for as the plan says it.
    let what = until.to_string();
    let c = client.clone();
    match until {
        Condition::NodesReady => {
            wait::until(&Api::all(c), wait::nodes_ready().described_as(what), timeout).await?;
        }
        Condition::DeploymentAvailable { namespace, name } => {
            let ready = wait::available(namespace, name).described_as(what);
            wait::until(&Api::namespaced(c, namespace), ready, timeout).await?;
        }
        Condition::DaemonSetReady { namespace, name } => {
            let ready = wait::on_every_node(namespace, name).described_as(what);
            wait::until(&Api::namespaced(c, namespace), ready, timeout).await?;
        }
        Condition::WebhookCaBundle { kind, name } => {
            wait::webhook_service(&client, kind, name, &what, timeout).await?;
        }
        Condition::WebhookEndpointReady { kind, name } => {
            wait::webhook_endpoint_ready(&client, kind, name, &what, timeout).await?
        }
        Condition::LoadBalancerIp { namespace, name } => {
            let address = wait::load_balancer_address(&client, namespace, name, timeout).await?;
            return Ok(Some(format!("{name} at {address}")));
        }
        Condition::GatewayProgrammed { namespace, name } => {
            let programmed = wait::programmed(namespace, name).described_as(what);
            wait::until(&crate::kube::gateways(&c, namespace), programmed, timeout).await?;
        }
        Condition::RemoteClustersSynced { .. } => {
            return Err(anyhow!(
                "istiod's view of its peers is the remote-secrets phase's to wait for"
            ));
        }
    }
    Ok(None)
}
