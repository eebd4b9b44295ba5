//! Phase `metallb`: LoadBalancer addresses for the gateways. L2 mode, one pool per cluster.

use serde::Serialize;

use super::{Fact, PhaseLogic, Preflight};
use crate::plan::{Condition, PhaseBuilder, PlanError, Step};
use crate::probe::{self, Finding, Probe};
use crate::versions;

/// Namespace MetalLB runs in; its pools must live there too.
pub const NAMESPACE: &str = "metallb-system";
/// The webhook configuration of the v0.16 manifest. Its Service name is read from it at run
/// time, because it differs between MetalLB versions (`metallb-webhook-service` in v0.16.1,
/// `webhook-service` in v0.14.3).
pub const WEBHOOK_CONFIGURATION: &str = "metallb-webhook-configuration";
/// Name of the pool meshctl creates.
pub const POOL_NAME: &str = "meshctl-pool";
/// Name of the L2 advertisement meshctl creates.
pub const ADVERTISEMENT_NAME: &str = "meshctl-l2";

/// Installs MetalLB and gives each cluster its own address pool.
pub struct Metallb;

impl PhaseLogic for Metallb {
    fn on_existing_clusters(&self) -> super::OnExistingClusters {
        super::OnExistingClusters::WhenAsked
    }

    fn preflight(&self, cx: &Preflight<'_>) -> anyhow::Result<()> {
        if let Some(path) = cx.metallb_manifest {
            std::fs::File::open(path).map_err(|e| {
                anyhow::anyhow!(
                    "preflight: --metallb-manifest `{}` cannot be read: {e}",
                    path.display()
                )
            })?;
        }
        Ok(())
    }

    plan_and_probe_are_the_modules!();

    fn needs(&self) -> &'static [Fact] {
        &[Fact::Pools]
    }
}

/// Context of `templates/metallb/address-pool.yaml.j2`.
#[derive(Serialize)]
struct AddressPool<'a> {
    cluster: &'a str,
    pool_name: &'a str,
    advertisement_name: &'a str,
    addresses: Vec<String>,
}

fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    let pool = *b
        .input
        .pools
        .get(b.index)
        .ok_or_else(|| b.missing("a MetalLB address pool"))?;
    b.step(Step::ApplyUpstream {
        name: format!("metallb-native {}", versions::METALLB_VERSION),
        url: versions::METALLB_MANIFEST_URL.to_string(),
        sha256: versions::METALLB_MANIFEST_SHA256.to_string(),
        unless_crd: None,
    });
    let in_ns = |name: &str| (NAMESPACE.to_string(), name.to_string());
    let (namespace, name) = in_ns("controller");
    b.step(Step::Wait {
        until: Condition::DeploymentAvailable { namespace, name },
    });
    let (namespace, name) = in_ns("speaker");
    b.step(Step::Wait {
        until: Condition::DaemonSetReady { namespace, name },
    });
    // Pod readiness is not enough: the webhook serves only once its CA bundle is injected and its
    // endpoint is ready; applying a pool earlier fails with `failed calling webhook
    // "ipaddresspoolvalidationwebhook.metallb.io" … connection refused` (metallb#1540).
    let kind = "ValidatingWebhookConfiguration".to_string();
    let name = WEBHOOK_CONFIGURATION.to_string();
    b.step(Step::Wait {
        until: Condition::WebhookCaBundle {
            kind: kind.clone(),
            name: name.clone(),
        },
    });
    b.step(Step::Wait {
        until: Condition::WebhookEndpointReady { kind, name },
    });
    let file = b.render(
        "address-pool.yaml",
        "metallb/address-pool.yaml.j2",
        &AddressPool {
            cluster: &b.cluster.name,
            pool_name: POOL_NAME,
            advertisement_name: ADVERTISEMENT_NAME,
            addresses: vec![pool.to_string()],
        },
        false,
    )?;
    // Even then the webhook server may still refuse connections: wait until it really answers.
    b.step(Step::AwaitAdmission { file: file.clone() });
    b.step(Step::Apply { file });
    Ok(())
}

/// MetalLB's controller and speaker run, and the pool and advertisement are as rendered.
async fn probe(p: &Probe<'_>) -> Vec<Finding> {
    let client = match p.client().await {
        Ok(c) => c,
        Err(f) => return vec![f],
    };
    let mut out = vec![
        probe::deployment(&client, NAMESPACE, "controller", None).await,
        probe::daemonset(&client, NAMESPACE, "speaker").await,
    ];
    out.extend(p.all_applied(&client).await);
    out
}
