//! The order `up` works in, as one list: each stage is one phase for the clusters of some roles.
//! Read top to bottom it is the install order of Istio's multicluster guides: every cluster made
//! and given its CA, then the control planes that serve others (istiod, its gateway, what it
//! exposes), then the remotes they serve, then the secrets that let each istiod read the others.
//!
//! The planner keys its plan by the position here, so a phase runs where this list puts it and
//! nowhere else; a phase and role listed twice would be a second place to run, which the tests
//! refuse.

use crate::plan::Phase;
use crate::topology::Role;

/// The roles a stage is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roles {
    /// Every cluster.
    All,
    /// Clusters that run an istiod of their own or for others: primaries and external control
    /// planes.
    ControlPlanes,
    /// Remotes, once the istiod that configures them is reachable.
    Remotes,
}

impl Roles {
    pub fn holds(self, role: Role) -> bool {
        match self {
            Roles::All => true,
            Roles::ControlPlanes => role != Role::Remote,
            Roles::Remotes => role == Role::Remote,
        }
    }
}

/// One stage: `phase` in the clusters of `roles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    pub phase: Phase,
    pub roles: Roles,
}

const fn stage(phase: Phase, roles: Roles) -> Stage {
    Stage { phase, roles }
}

/// The stages of `up`, in the order they run.
pub const SCHEDULE: [Stage; 12] = [
    stage(Phase::Clusters, Roles::All),
    stage(Phase::Metallb, Roles::All),
    stage(Phase::Routes, Roles::All),
    stage(Phase::Certs, Roles::All),
    stage(Phase::Istio, Roles::ControlPlanes),
    stage(Phase::Eastwest, Roles::ControlPlanes),
    stage(Phase::Expose, Roles::ControlPlanes),
    // A remote's IstioOperator carries its primary's east-west gateway address, and istiod must
    // be exposed through that gateway before the remote's injector calls it.
    stage(Phase::Istio, Roles::Remotes),
    // The external istiod runs once the config cluster's `istio` made the account it runs as,
    // and before the remote secrets it reads.
    stage(Phase::ExternalIstiod, Roles::All),
    // The config cluster of an external control plane exposes services once the external istiod,
    // which validates and reads its Istio configuration, runs.
    stage(Phase::Expose, Roles::Remotes),
    stage(Phase::RemoteSecrets, Roles::All),
    // A remote's gateway pods are injected by its primary's istiod, which serves the remote only
    // once it holds the remote's secret.
    stage(Phase::Eastwest, Roles::Remotes),
];

/// Where `phase` runs for a cluster of `role`: its position in [`SCHEDULE`].
pub fn position(phase: Phase, role: Role) -> usize {
    SCHEDULE
        .iter()
        .position(|s| s.phase == phase && s.roles.holds(role))
        .unwrap_or_else(|| panic!("phase `{phase}` has no stage for a {role:?} cluster in the schedule"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLES: [Role; 3] = [Role::Primary, Role::Remote, Role::External];

    #[test]
    fn every_phase_runs_once_for_every_role() {
        for phase in Phase::ALL {
            for role in ROLES {
                let places: Vec<usize> = SCHEDULE
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.phase == phase && s.roles.holds(role))
                    .map(|(i, _)| i)
                    .collect();
                assert_eq!(
                    places.len(),
                    1,
                    "`{phase}` for a {role:?} cluster must have exactly one stage, has {places:?}"
                );
            }
        }
    }

    #[test]
    fn a_remote_follows_the_control_plane_that_configures_it() {
        let at = |phase, role| position(phase, role);
        assert!(at(Phase::Istio, Role::Remote) > at(Phase::Expose, Role::Primary));
        assert!(at(Phase::ExternalIstiod, Role::External) > at(Phase::Istio, Role::Remote));
        assert!(at(Phase::ExternalIstiod, Role::External) < at(Phase::RemoteSecrets, Role::Remote));
        assert!(at(Phase::Eastwest, Role::Remote) > at(Phase::RemoteSecrets, Role::Primary));
        assert!(at(Phase::Certs, Role::Remote) < at(Phase::Istio, Role::Primary));
    }
}
