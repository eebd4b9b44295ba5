//! The upgrade as data: which clusters in which order, what is left to do in each, and which
//! moves between releases are allowed. Pure: what the clusters hold is read by [`super::held`].

use std::collections::BTreeSet;

use serde::Serialize;

use crate::istio_revisions::Held;
use crate::istio_version::IstioVersion;
use crate::plan::Phase;
use crate::revision::Revision;
use crate::topology::{Cluster, Mesh, Role};

/// One step of one cluster's upgrade, in the order Istio's canary upgrade takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeStep {
    /// The `istio` phase on the new revision: istiod-<rev> beside the running one (primary), or
    /// the remote profile's injector and istiod Service of the revision (remote).
    InstallControlPlane,
    /// `istioctl tag set default --revision <rev>`: namespaces labelled `istio-injection=enabled`
    /// (or `istio.io/rev=default`) get the new revision's proxies from now on; namespaces
    /// labelled with the old revision by name are relabelled with the new one.
    MoveInjection,
    /// The `eastwest` and `expose` phases on the new revision: the gateway's pods re-injected by
    /// it (in place), istiod-<rev> exposed to remotes.
    UpgradeGateway,
}

/// How a step is carried out: the phases `up` runs, on the new revision, in the cluster; or
/// the move of the revision tag (istioctl's `tag set`, and namespaces pinned by name relabelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Converge(&'static [Phase]),
    MoveInjection,
}

impl UpgradeStep {
    /// Every step, in the order a cluster takes them.
    pub const ALL: [UpgradeStep; 3] = [
        UpgradeStep::InstallControlPlane,
        UpgradeStep::MoveInjection,
        UpgradeStep::UpgradeGateway,
    ];

    pub fn action(self) -> Action {
        match self {
            UpgradeStep::InstallControlPlane => Action::Converge(&[Phase::Istio]),
            UpgradeStep::MoveInjection => Action::MoveInjection,
            UpgradeStep::UpgradeGateway => Action::Converge(&[Phase::Eastwest, Phase::Expose]),
        }
    }

    /// Whether `cluster`, holding `held`, holds the step's result for revision `to`.
    pub fn done(self, cluster: &Cluster, held: &Held, to: &Revision, mesh: &Mesh) -> bool {
        match self {
            UpgradeStep::InstallControlPlane => held.revisions.iter().any(|r| &r.revision == to),
            UpgradeStep::MoveInjection => held.injection() == *to && held.pinned_elsewhere(to).is_empty(),
            UpgradeStep::UpgradeGateway => match &held.gateway {
                Some(gateway) => gateway == to,
                None => !mesh.needs_eastwest(cluster),
            },
        }
    }

    /// Every phase some step runs, in step order: what a preview plans.
    pub fn phases() -> Vec<Phase> {
        UpgradeStep::ALL
            .iter()
            .filter_map(|s| match s.action() {
                Action::Converge(phases) => Some(phases.iter().copied()),
                Action::MoveInjection => None,
            })
            .flatten()
            .collect()
    }

    pub fn describe(self, to: &Revision) -> String {
        match self {
            UpgradeStep::InstallControlPlane => format!("install control plane {to} beside the running one"),
            UpgradeStep::MoveInjection => format!("point injection (revision tag `default`) at {to}"),
            UpgradeStep::UpgradeGateway => format!("move the east-west gateway (and exposed istiod) to {to}"),
        }
    }
}

/// The clusters an upgrade goes through, one at a time: each primary, followed by the remotes it
/// configures (a remote's injector serves from its primary's istiod, which must run the new
/// revision first). Isolated clusters are left alone.
pub fn order<'m>(mesh: &'m Mesh, isolated: &BTreeSet<String>) -> Vec<&'m Cluster> {
    let mut ordered = Vec::new();
    for primary in mesh.clusters.iter().filter(|c| c.role == Role::Primary) {
        ordered.push(primary);
        ordered.extend(
            mesh.clusters
                .iter()
                .filter(|c| c.primary.as_deref() == Some(primary.name.as_str())),
        );
    }
    ordered.retain(|c| !isolated.contains(&c.name));
    ordered
}

/// Istio's revision-based (canary) upgrade may jump two minor releases (1.29 → 1.31), unlike an
/// in-place one (istio.io, *Canary Upgrades*: "jumping across two minor versions is supported"):
/// a larger jump, or none, is refused with the reason. Going back is `--rollback` (during an
/// upgrade), not an upgrade.
pub fn check_move(from: &IstioVersion, to: &IstioVersion) -> Result<(), String> {
    if to == from {
        return Err(format!("the mesh already runs Istio {to}"));
    }
    if to < from {
        return Err(format!(
            "Istio {to} is older than the {from} the mesh runs; an upgrade only goes forward (`meshctl upgrade --rollback` undoes one under way)"
        ));
    }
    if to.major != from.major || to.minor > from.minor + 2 {
        return Err(format!(
            "Istio {from} → {to} jumps more than two minor releases: a canary upgrade moves two minor releases at most; upgrade to {}.{}.x first",
            from.major,
            from.minor + 2
        ));
    }
    Ok(())
}

/// What is left of `cluster`'s upgrade to `to`, given what it holds: a step is done when the
/// cluster holds its result, so an interrupted upgrade resumes where it stopped.
pub fn pending(cluster: &Cluster, held: &Held, to: &Revision, mesh: &Mesh) -> Vec<UpgradeStep> {
    UpgradeStep::ALL
        .into_iter()
        .filter(|step| !step.done(cluster, held, to, mesh))
        .collect()
}

/// The release the mesh runs, as its primaries hold it: the revision injection points at, and
/// the release of that revision's istiod. The primaries must agree.
pub fn running_release(primaries: &[(&str, &Held)]) -> Result<(Revision, IstioVersion), String> {
    let mut seen: Vec<(String, Revision, Option<String>)> = Vec::new();
    for (cluster, held) in primaries {
        let revision = held.injection();
        let version = held
            .revisions
            .iter()
            .find(|r| r.revision == revision)
            .and_then(|r| r.version.clone());
        seen.push((cluster.to_string(), revision, version));
    }
    let Some((first, revision, version)) = seen.first().cloned() else {
        return Err("no primary answered: nothing to upgrade".into());
    };
    if let Some((other, r, v)) = seen.iter().find(|(_, r, v)| *r != revision || *v != version) {
        return Err(format!(
            "the primaries do not run one release: `{first}` injects with {revision} ({}), `{other}` with {r} ({}); bring them to one release with `meshctl up` first",
            version.as_deref().unwrap_or("no istiod of it"),
            v.as_deref().unwrap_or("no istiod of it"),
        ));
    }
    let version = version.ok_or_else(|| {
        format!(
            "`{first}` injects with revision {revision}, but runs no istiod of it: run `meshctl up` first"
        )
    })?;
    let version: IstioVersion = version.parse().map_err(|e| {
        format!("`{first}`: istiod of revision {revision} runs an image tagged {version}: {e}")
    })?;
    Ok((revision, version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::istio_revisions::RevisionHeld;

    fn v(text: &str) -> IstioVersion {
        text.parse().unwrap()
    }

    fn held(revisions: &[(&str, &str)], tag: Option<&str>, gateway: Option<&str>) -> Held {
        Held {
            revisions: revisions
                .iter()
                .map(|(r, v)| RevisionHeld {
                    revision: Revision::from_label(r),
                    version: Some(v.to_string()),
                })
                .collect(),
            tag: tag.map(Revision::from_label),
            gateway: gateway.map(Revision::from_label),
            pinned_namespaces: Vec::new(),
        }
    }

    #[test]
    fn up_to_two_minors_forward_are_allowed_and_anything_else_is_refused_with_why() {
        assert!(check_move(&v("1.30.3"), &v("1.31.1")).is_ok());
        assert!(check_move(&v("1.31.0"), &v("1.31.1")).is_ok());
        assert!(check_move(&v("1.29.2"), &v("1.31.1")).is_ok());
        let skip = check_move(&v("1.28.2"), &v("1.31.1")).unwrap_err();
        assert!(
            skip.contains("two minor releases at most") && skip.contains("1.30.x"),
            "{skip}"
        );
        assert!(
            check_move(&v("1.31.1"), &v("1.31.1"))
                .unwrap_err()
                .contains("already runs")
        );
        assert!(
            check_move(&v("1.31.1"), &v("1.30.3"))
                .unwrap_err()
                .contains("--rollback")
        );
        assert!(check_move(&v("1.31.1"), &v("2.0.0")).is_err());
    }

    #[test]
    fn primaries_go_first_each_followed_by_its_remotes_and_isolated_clusters_are_left() {
        let mesh = Mesh::from_yaml(
            "clusters:\n  - {name: a}\n  - {name: r1, role: remote, primary: a}\n  - {name: b}\n  - {name: r2, role: remote, primary: b}\n",
            None,
        )
        .unwrap();
        let names = |isolated: &[&str]| -> Vec<String> {
            let isolated = isolated.iter().map(|s| s.to_string()).collect();
            order(&mesh, &isolated).iter().map(|c| c.name.clone()).collect()
        };
        assert_eq!(names(&[]), ["a", "r1", "b", "r2"]);
        assert_eq!(names(&["r1"]), ["a", "b", "r2"]);
    }

    #[test]
    fn what_a_cluster_holds_decides_what_is_left_so_an_upgrade_resumes() {
        let mesh = Mesh::for_kind(2, "mesh1").unwrap();
        let cluster = &mesh.clusters[0];
        let to = Revision::from_label("1-31-1");
        let fresh = held(&[("default", "1.30.3")], Some("default"), Some("default"));
        assert_eq!(
            pending(cluster, &fresh, &to, &mesh),
            [
                UpgradeStep::InstallControlPlane,
                UpgradeStep::MoveInjection,
                UpgradeStep::UpgradeGateway
            ]
        );
        let installed = held(
            &[("default", "1.30.3"), ("1-31-1", "1.31.1")],
            Some("default"),
            Some("default"),
        );
        assert_eq!(
            pending(cluster, &installed, &to, &mesh),
            [UpgradeStep::MoveInjection, UpgradeStep::UpgradeGateway]
        );
        let done = held(
            &[("default", "1.30.3"), ("1-31-1", "1.31.1")],
            Some("1-31-1"),
            Some("1-31-1"),
        );
        assert!(pending(cluster, &done, &to, &mesh).is_empty());
        // A namespace labelled with the old revision by name still has to move.
        let pinned = Held {
            pinned_namespaces: vec![("shop".into(), Revision::from_label("1-30-3"))],
            ..done.clone()
        };
        assert_eq!(
            pending(cluster, &pinned, &to, &mesh),
            [UpgradeStep::MoveInjection]
        );
        // No tag webhook: the unrevisioned injector is the one that injects.
        assert_eq!(held(&[], None, None).injection(), Revision::default_revision());
    }

    #[test]
    fn the_running_release_is_the_one_injection_points_at_and_primaries_must_agree() {
        let a = held(&[("default", "1.30.3")], Some("default"), None);
        let b = held(&[("default", "1.30.3")], None, None);
        let (revision, version) = running_release(&[("a", &a), ("b", &b)]).unwrap();
        assert_eq!(
            (revision.label(), version.to_string().as_str()),
            ("default", "1.30.3")
        );
        let c = held(
            &[("default", "1.30.3"), ("1-31-1", "1.31.1")],
            Some("1-31-1"),
            None,
        );
        let err = running_release(&[("a", &a), ("c", &c)]).unwrap_err();
        assert!(
            err.contains("`a` injects with default (1.30.3), `c` with 1-31-1 (1.31.1)"),
            "{err}"
        );
    }
}
