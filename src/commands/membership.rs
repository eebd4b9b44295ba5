//! `meshctl isolate CLUSTER` and `meshctl rejoin CLUSTER` (see [`crate::isolation`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use super::{Exit, UsageError};
use crate::cli::MembershipArgs;
use crate::executor::{Executor, Prepared, RunEnd, Settings};
use crate::isolation::{self, Membership, PeerOutcome, PeerOutcomes};
use crate::mesh_dir::MeshDir;
use crate::plan::{Phase, PlanInput};
use crate::report::Reporter;
use crate::state::StateStore;
use crate::topology::Mesh;

/// How long a cluster has to answer before it is named as down: a stopped API server must not
/// hold the command for the whole `--timeout`.
const ANSWER_BOUND: Duration = Duration::from_secs(10);

pub(super) async fn isolate(args: MembershipArgs, workdir: &Path, kubeconfig: Option<&Path>) -> Result<Exit> {
    let mesh = member_mesh(&args)?;
    // Isolation is recorded in the mesh's state: a mesh never built here has nothing to isolate.
    let dir = crate::work_dir::recorded_mesh(workdir, &mesh.mesh_id, "isolate")?;
    // A remote is cut off from its own control plane too: said first, and done only when asked.
    if let Some(cost) = isolation::remote_cost(&mesh, &args.cluster)
        && !args.yes
    {
        eprintln!("warning: {cost}");
        super::confirm(
            &format!("isolate `{}`", args.cluster),
            &format!("Isolate remote `{}`?", args.cluster),
        )?;
    }
    let reporter = Reporter::new(super::report_format(args.output));
    let membership = Membership::open(&mesh, &dir, kubeconfig, args.timeout.min(ANSWER_BOUND))?;
    let outcomes = membership.isolate(&args.cluster).await?;
    let target = &args.cluster;
    for (peer, outcome) in &outcomes {
        match outcome {
            PeerOutcome::Done => reporter.ok(
                peer,
                &format!(
                    "no longer reads `{target}`: its remote secret was removed (kept in `{}`)",
                    dir.isolated(target).join(format!("{peer}.yaml")).display()
                ),
            ),
            PeerOutcome::NothingToDo { detail } => reporter.note(peer, &format!("does not read `{target}`: {detail}")),
            PeerOutcome::NotMeshctls => reporter.warn(
                peer,
                &format!(
                    "still reads `{target}` through a remote secret meshctl did not apply; left as it is (delete it yourself to isolate `{target}` here)"
                ),
            ),
            PeerOutcome::Unreachable { error } => reporter.fail(
                peer,
                &format!("did not answer ({error}); `meshctl up` removes `{target}`'s secret here once it does"),
            ),
        }
    }
    reporter.event(
        "isolate",
        serde_json::json!({"cluster": target, "peers": peers_json(&outcomes)}),
    );
    reporter.note(
        target,
        &format!("isolated: `up` keeps it out and `status` shows it, until `meshctl rejoin {target}`"),
    );
    Ok(exit_of(&outcomes))
}

pub(super) async fn rejoin(args: MembershipArgs, workdir: &Path, kubeconfig: Option<&Path>) -> Result<Exit> {
    let mesh = member_mesh(&args)?;
    let dir = MeshDir::new(workdir, &mesh.mesh_id);
    let bound = args.timeout.min(ANSWER_BOUND);
    let membership = Membership::open(&mesh, &dir, kubeconfig, bound)?;
    let target = &args.cluster;
    if !membership.state.snapshot().isolated.contains_key(target) {
        return Err(UsageError(format!(
            "cluster `{target}` is not isolated in mesh `{}`; nothing to rejoin",
            mesh.mesh_id
        ))
        .into());
    }
    let reporter = Arc::new(Reporter::new(super::report_format(args.output)));
    let outcomes = membership.rejoin(target).await?;
    for (peer, outcome) in &outcomes {
        match outcome {
            PeerOutcome::Done => reporter.ok(peer, &format!("reads `{target}` again: its recorded remote secret is back")),
            PeerOutcome::NothingToDo { detail } => reporter.note(peer, detail),
            PeerOutcome::NotMeshctls => {}
            PeerOutcome::Unreachable { error } => reporter.fail(
                peer,
                &format!("did not answer ({error}); `{target}` stays isolated here until `meshctl rejoin {target}` reaches it"),
            ),
        }
    }
    reporter.event(
        "rejoin",
        serde_json::json!({"cluster": target, "peers": peers_json(&outcomes)}),
    );
    if exit_of(&outcomes) != Exit::Success {
        return Ok(Exit::Failure);
    }
    let cluster = mesh.cluster(target).expect("checked by member_mesh");
    let answers = matches!(
        tokio::time::timeout(bound, membership.clients.get(&cluster.context)).await,
        Ok(Ok(_))
    );
    if !answers {
        reporter.warn(
            target,
            "does not answer: the recorded secrets are back, and the istiods sync it once it does; then `meshctl up --only remote-secrets` refreshes its tokens",
        );
        return Ok(Exit::NotReady);
    }
    // It answers: the remote-secrets phase makes what drifted while it was out new (a token or CA
    // of a cluster created again, a moved API server) and waits until every istiod synced it.
    let settings = Settings::for_mesh(&dir, kubeconfig, args.timeout);
    reporter.note(
        target,
        &format!(
            "answers: refreshing its remote secrets, then waiting (at most {}) until every istiod reports it synced",
            humantime::format_duration(args.timeout)
        ),
    );
    match converge_remote_secrets(&mesh, &dir, membership.state, settings, reporter.clone()).await? {
        RunEnd::Interrupted => Ok(Exit::Interrupted),
        RunEnd::Finished { .. } => {
            reporter.ok(target, "rejoined: every istiod reads it and reports it synced");
            reporter.note("next", "meshctl verify   (calls across every pair of clusters)");
            Ok(Exit::Success)
        }
    }
}

/// The mesh, with `args.cluster` in it and another primary to read it.
fn member_mesh(args: &MembershipArgs) -> Result<Mesh> {
    let mesh = super::resolve_topology(&args.topology)?;
    if mesh.cluster(&args.cluster).is_none() {
        let names: Vec<&str> = mesh.clusters.iter().map(|c| c.name.as_str()).collect();
        return Err(UsageError(format!(
            "cluster `{}` is not in mesh `{}` (its clusters: {})",
            args.cluster,
            mesh.mesh_id,
            names.join(", ")
        ))
        .into());
    }
    if let Some(reason) = isolation::refusal(&mesh, &args.cluster) {
        return Err(UsageError(reason).into());
    }
    if isolation::peers(&mesh, &args.cluster).is_empty() {
        return Err(UsageError(format!(
            "no other primary reads `{}`: there is nothing to take it out of",
            args.cluster
        ))
        .into());
    }
    Ok(mesh)
}

fn exit_of(outcomes: &PeerOutcomes) -> Exit {
    let failed = outcomes
        .iter()
        .any(|(_, o)| matches!(o, PeerOutcome::Unreachable { .. } | PeerOutcome::NotMeshctls));
    if failed { Exit::Failure } else { Exit::Success }
}

fn peers_json(outcomes: &PeerOutcomes) -> serde_json::Value {
    outcomes
        .iter()
        .map(|(peer, outcome)| {
            let mut v = serde_json::to_value(outcome).unwrap_or_default();
            v["peer"] = serde_json::Value::from(peer.as_str());
            v
        })
        .collect()
}

/// `up --only remote-secrets`, in process.
async fn converge_remote_secrets(
    mesh: &Mesh,
    dir: &MeshDir,
    state: StateStore,
    settings: Settings,
    reporter: Arc<Reporter>,
) -> Result<RunEnd> {
    let snapshot = state.snapshot();
    let input = PlanInput::recorded(
        mesh,
        vec![Phase::RemoteSecrets],
        &snapshot,
        settings.timeout,
        &settings.docker_network,
    );
    let mut prepared = Prepared::written(input, dir.plan())?;
    Executor::new(settings, state, reporter, mesh.clone())
        .run(&mut prepared)
        .await
}
