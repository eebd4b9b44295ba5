//! Puts a plan together: which phases run, and each phase planned in each cluster, in the order
//! the clusters need them. Sits above [`crate::phases`] (it asks each one for its steps); the
//! types it builds are [`crate::plan`]'s, below the phases.

use std::collections::BTreeMap;

use crate::phases::{self, OnExistingClusters};
use crate::plan::{ClusterSteps, ClusterSummary, Phase, PhaseBuilder, PhasePlan, Plan, PlanError, PlanInput};
use crate::schedule;
use crate::topology::Provider;

/// The phases `up` runs for `provider`, after `--only` and `--skip`.
pub fn select_phases(provider: Provider, only: &[Phase], skip: &[Phase]) -> Result<Vec<Phase>, PlanError> {
    let on_existing = |p: &Phase| match provider {
        Provider::Kind => OnExistingClusters::Runs,
        Provider::Existing => phases::logic(*p).on_existing_clusters(),
    };
    if let Some(p) = only.iter().find(|p| on_existing(p) == OnExistingClusters::Never) {
        return Err(PlanError::Selection(format!(
            "phase `{p}` works on kind clusters meshctl creates, but these clusters already exist (--contexts or `provider: existing`)"
        )));
    }
    let wanted = |p: &Phase| {
        if only.is_empty() {
            on_existing(p) == OnExistingClusters::Runs
        } else {
            only.contains(p)
        }
    };
    let phases: Vec<Phase> = Phase::ALL
        .into_iter()
        .filter(|p| wanted(p) && !skip.contains(p))
        .collect();
    if phases.is_empty() {
        return Err(PlanError::Selection("--only/--skip leave no phase to run".into()));
    }
    Ok(phases)
}

/// Builds the plan for `input`: one entry per stage of [`schedule::SCHEDULE`] that has work,
/// holding the clusters with work in it (a phase is one entry unless the mesh has remotes, whose
/// stages follow their primary's).
pub fn build(input: &PlanInput<'_>) -> Result<Plan, PlanError> {
    let mesh = input.mesh;
    let mut artifacts = Vec::new();
    let mut staged: BTreeMap<usize, PhasePlan> = BTreeMap::new();
    for &phase in &input.phases {
        for (index, cluster) in mesh.clusters.iter().enumerate() {
            // An isolated cluster is left as it is, whether it answers or not.
            if input.isolated.contains(&cluster.name)
                || input
                    .only_cluster
                    .as_ref()
                    .is_some_and(|only| only != &cluster.name)
            {
                continue;
            }
            let mut builder = PhaseBuilder::new(input, index, phase);
            phases::plan(&mut builder)?;
            let (steps, mut planned) = builder.finish();
            artifacts.append(&mut planned);
            if steps.is_empty() {
                continue;
            }
            staged
                .entry(schedule::position(phase, cluster.role))
                .or_insert_with(|| PhasePlan {
                    phase,
                    clusters: Vec::new(),
                })
                .clusters
                .push(ClusterSteps {
                    cluster: cluster.name.clone(),
                    steps,
                });
        }
    }
    let phase_plans: Vec<PhasePlan> = staged.into_values().collect();
    Ok(Plan {
        mesh_id: mesh.mesh_id.clone(),
        provider: mesh.provider,
        clusters: mesh
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| ClusterSummary {
                name: c.name.clone(),
                context: c.context.clone(),
                network: c.network.clone(),
                locality: format!("{}/{}", c.region, c.zone),
                metallb_pool: input
                    .phases
                    .contains(&Phase::Metallb)
                    .then(|| input.pools.get(i).map(ToString::to_string))
                    .flatten(),
            })
            .collect(),
        phases: phase_plans,
        artifacts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_clusters_skip_cluster_creation_and_metallb_unless_asked() {
        let all = select_phases(Provider::Existing, &[], &[]).unwrap();
        assert_eq!(all.first(), Some(&Phase::Certs));
        assert_eq!(
            select_phases(Provider::Existing, &[Phase::Metallb], &[]).unwrap(),
            [Phase::Metallb]
        );
        assert!(select_phases(Provider::Existing, &[Phase::Clusters], &[]).is_err());
        assert_eq!(select_phases(Provider::Kind, &[], &[]).unwrap(), Phase::ALL);
    }

    #[test]
    fn only_and_skip_keep_the_reference_order() {
        let p = select_phases(
            Provider::Kind,
            &[Phase::Expose, Phase::Certs, Phase::Istio],
            &[Phase::Istio],
        )
        .unwrap();
        assert_eq!(p, [Phase::Certs, Phase::Expose]);
        assert!(select_phases(Provider::Kind, &[Phase::Certs], &[Phase::Certs]).is_err());
    }
}
