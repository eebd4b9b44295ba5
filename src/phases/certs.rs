//! Phase `certs`: what must exist before istiod starts: istio-system with its network label, the
//! nodes' locality labels, and on primaries the plug-in CA (`cacerts`) istiod signs with.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::pki::IntermediateCa;
use crate::plan::{PhaseBuilder, PlanError, Step};
use crate::probe::{self, Finding, Probe};
use crate::topology::{Provider, Role};

/// Context of `templates/certs/istio-system.yaml.j2`.
#[derive(Serialize)]
struct IstioSystem<'a> {
    network: &'a str,
    /// A remote's primary: annotation `topology.istio.io/controlPlaneClusters`.
    control_plane: Option<&'a str>,
}

/// The `cacerts` Secret of `ca`'s cluster, as `up` applies it (and `certs rotate`).
pub fn render_cacerts(ca: &IntermediateCa) -> Result<String, crate::render::RenderError> {
    crate::render::render(CACERTS_TEMPLATE, &CaCerts::of(ca))
}

const CACERTS_TEMPLATE: &str = "certs/cacerts.yaml.j2";

/// Context of `templates/certs/cacerts.yaml.j2`.
#[derive(Serialize)]
struct CaCerts<'a> {
    cluster: &'a str,
    ca_cert: &'a str,
    ca_key: &'a str,
    root_cert: &'a str,
    cert_chain: &'a str,
}

impl<'a> CaCerts<'a> {
    fn of(ca: &'a IntermediateCa) -> CaCerts<'a> {
        CaCerts {
            cluster: &ca.cluster,
            ca_cert: &ca.ca_cert_pem,
            ca_key: &ca.ca_key_pem,
            root_cert: &ca.root_cert_pem,
            cert_chain: &ca.cert_chain_pem,
        }
    }
}

pub(super) fn plan(b: &mut PhaseBuilder<'_>) -> Result<(), PlanError> {
    let cluster = b.cluster;
    let ca = b
        .input
        .cas
        .get(b.index)
        .ok_or_else(|| b.missing("an intermediate CA"))?;
    let namespace = b.render(
        "istio-system.yaml",
        "certs/istio-system.yaml.j2",
        &IstioSystem {
            network: &cluster.network,
            control_plane: cluster.primary.as_deref(),
        },
        false,
    )?;
    b.step(Step::Apply { file: namespace });
    b.step(Step::LabelNodes {
        labels: BTreeMap::from([
            (
                "topology.kubernetes.io/region".to_string(),
                cluster.region.clone(),
            ),
            ("topology.kubernetes.io/zone".to_string(), cluster.zone.clone()),
        ]),
        overwrite: b.input.mesh.provider == Provider::Kind,
    });
    // A remote runs no istiod (the remote profile renders no Deployment: Istio's
    // `istio-discovery/templates/deployment.yaml` is skipped there): its proxies get their
    // certificates from the primary's istiod, so nothing would read a CA key put there.
    if cluster.role == Role::Primary {
        let cacerts = b.render("cacerts.yaml", CACERTS_TEMPLATE, &CaCerts::of(ca), true)?;
        b.step(Step::ApplyPluggedCa { file: cacerts });
    }
    Ok(())
}

/// The namespace with its network label, the nodes' locality labels, and `cacerts` as rendered
/// (compared field by field; a difference names the key, never its value).
pub(super) async fn probe(p: &Probe<'_>) -> Vec<Finding> {
    let client = match p.client().await {
        Ok(c) => c,
        Err(f) => return vec![f],
    };
    let mut out = Vec::new();
    for step in p.steps {
        match step {
            Step::Apply { file } | Step::ApplyPluggedCa { file } => {
                out.extend(p.applied(&client, file).await)
            }
            Step::LabelNodes { labels, overwrite } => {
                out.push(probe::nodes(&client, labels, *overwrite).await)
            }
            _ => {}
        }
    }
    out
}
