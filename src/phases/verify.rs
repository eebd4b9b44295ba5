//! The verification workloads of `meshctl verify` (reference sections 10 and 11). Pure: rendered
//! here, applied by the verify command. Not a phase of `up`, but part of the plan on disk.

use serde::Serialize;

use crate::plan::Artifact;
use crate::render::{self, RenderError};
use crate::topology::Mesh;
use crate::versions;

/// Namespace of the verification workloads.
pub const NAMESPACE: &str = "sample";
/// The host the clients call, as Istio names it.
pub const HELLOWORLD_HOST: &str = "helloworld.sample.svc.cluster.local";

/// Version label of the helloworld that runs in the cluster at 0-based `index`: `v1`, `v2`, ...
pub fn version_of(index: usize) -> String {
    format!("v{}", index + 1)
}

#[derive(Serialize)]
struct Namespace<'a> {
    namespace: &'a str,
}

#[derive(Serialize)]
struct Helloworld<'a> {
    namespace: &'a str,
    cluster: &'a str,
    version: String,
    image: &'a str,
}

#[derive(Serialize)]
struct Curl<'a> {
    namespace: &'a str,
    image: &'a str,
}

#[derive(Serialize)]
struct Subsets<'a> {
    namespace: &'a str,
    host: &'a str,
    clusters: Vec<&'a str>,
}

/// File name of the per-cluster subsets (applied by `verify --per-cluster-subsets` only).
pub const SUBSETS_FILE: &str = "per-cluster-subsets.yaml";
/// File name of the locality failover rule (applied by `verify --failover` only).
pub const FAILOVER_FILE: &str = "locality-failover.yaml";
/// File name of the weighted locality rule (applied by `verify --locality distribute` only).
pub const DISTRIBUTE_FILE: &str = "locality-distribute.yaml";
/// Share of requests a caller keeps in its own locality under the distribute rule, in percent
/// (the split of the walkthrough the project started from; the rest goes to another region).
pub const DISTRIBUTE_LOCAL_WEIGHT: u32 = 80;

#[derive(Serialize)]
struct Distribute<'a> {
    namespace: &'a str,
    from: String,
    to: String,
    local_weight: u32,
}

/// The distribute rule's two localities (`region/zone`): the first cluster's, and the first
/// cluster's in another region; `None` when every cluster is in one region.
pub fn distribute_localities(mesh: &Mesh) -> Option<(usize, usize)> {
    let first = mesh.clusters.first()?;
    let other = mesh.clusters.iter().position(|c| c.region != first.region)?;
    Some((0, other))
}

#[derive(Serialize)]
struct FailoverRule {
    from: String,
    to: String,
}

#[derive(Serialize)]
struct Failover<'a> {
    namespace: &'a str,
    failover: Vec<FailoverRule>,
}

/// Each region fails over to the next cluster's region (round robin); no rule with one region.
fn failover_rules(mesh: &Mesh) -> Vec<FailoverRule> {
    let mut regions: Vec<&str> = Vec::new();
    for c in &mesh.clusters {
        if !regions.contains(&c.region.as_str()) {
            regions.push(&c.region);
        }
    }
    if regions.len() < 2 {
        return Vec::new();
    }
    (0..regions.len())
        .map(|i| FailoverRule {
            from: regions[i].to_string(),
            to: regions[(i + 1) % regions.len()].to_string(),
        })
        .collect()
}

/// Every verification manifest, under `<cluster>/verify/`.
pub fn artifacts(mesh: &Mesh) -> Result<Vec<Artifact>, RenderError> {
    let mut out = Vec::new();
    let rules = failover_rules(mesh);
    let failover = if rules.is_empty() {
        None
    } else {
        Some(render::render(
            "verify/locality-failover.yaml.j2",
            &Failover {
                namespace: NAMESPACE,
                failover: rules,
            },
        )?)
    };
    let distribute = distribute_localities(mesh)
        .map(|(a, b)| {
            let locality = |i: usize| format!("{}/{}", mesh.clusters[i].region, mesh.clusters[i].zone);
            render::render(
                "verify/locality-distribute.yaml.j2",
                &Distribute {
                    namespace: NAMESPACE,
                    from: locality(a),
                    to: locality(b),
                    local_weight: DISTRIBUTE_LOCAL_WEIGHT,
                },
            )
        })
        .transpose()?;
    let subsets = render::render(
        "verify/per-cluster-subsets.yaml.j2",
        &Subsets {
            namespace: NAMESPACE,
            host: HELLOWORLD_HOST,
            clusters: mesh.clusters.iter().map(|c| c.name.as_str()).collect(),
        },
    )?;
    for (i, cluster) in mesh.clusters.iter().enumerate() {
        let mut add = |file: &str, template: &'static str, content: String| {
            out.push(Artifact {
                path: format!("{}/verify/{file}", cluster.name),
                template,
                secret: false,
                content,
            });
        };
        add(
            "namespace.yaml",
            "verify/namespace.yaml.j2",
            render::render("verify/namespace.yaml.j2", &Namespace { namespace: NAMESPACE })?,
        );
        let image = versions::HELLOWORLD_IMAGES[i % versions::HELLOWORLD_IMAGES.len()];
        add(
            "helloworld.yaml",
            "verify/helloworld.yaml.j2",
            render::render(
                "verify/helloworld.yaml.j2",
                &Helloworld {
                    namespace: NAMESPACE,
                    cluster: &cluster.name,
                    version: version_of(i),
                    image,
                },
            )?,
        );
        add(
            "curl.yaml",
            "verify/curl.yaml.j2",
            render::render(
                "verify/curl.yaml.j2",
                &Curl {
                    namespace: NAMESPACE,
                    image: versions::CURL_IMAGE,
                },
            )?,
        );
        if let Some(text) = &failover {
            add(FAILOVER_FILE, "verify/locality-failover.yaml.j2", text.clone());
        }
        if let Some(text) = &distribute {
            add(
                DISTRIBUTE_FILE,
                "verify/locality-distribute.yaml.j2",
                text.clone(),
            );
        }
        add(
            SUBSETS_FILE,
            "verify/per-cluster-subsets.yaml.j2",
            subsets.clone(),
        );
    }
    Ok(out)
}
