//! `meshctl upgrade` through its seams, in the test process: in-process API servers on loopback
//! stand in for the clusters (each with a played istiod answering `/debug/clusterz` through a
//! port-forward), and a played istioctl of each release (tests/support/played_istioctl.rs, copied
//! from Istio 1.31's install, tag and uninstall code) stands in for the real one. The mesh is
//! first built by `up`'s phases with istioctl 1.30.3, then moved to 1.31.1.
//!
//! Not covered here: the cross-cluster call matrix as a gate (it needs pods that run and answer;
//! the envtest suite's data-plane play has them): these runs pass `verify: false`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use meshctl::kube::Clients;
use meshctl::report::{Format, Reporter};
use meshctl::revision::Revision;
use meshctl::state::IstioRelease;
use meshctl::upgrade::Outcome;
use serde_json::{Value, json};
use support::istio_lab::lab;
use support::memory_apiserver::MemoryApiServer;
use support::played_istioctl::PlayedIstioctl;

const OLD: &str = "1.30.3";
const NEW: &str = "1.31.1";

const TWO_PRIMARIES: &str =
    "provider: existing\nclusters:\n  - {context: cluster1}\n  - {context: cluster2}\n";
const THREE_PRIMARIES: &str = "provider: existing\nclusters:\n  - {context: cluster1}\n  - {context: cluster2}\n  - {context: cluster3}\n";
const PRIMARY_REMOTE: &str =
    "provider: existing\nclusters:\n  - {context: cluster1}\n  - {context: cluster2, role: remote}\n";

fn new_release() -> IstioRelease {
    IstioRelease {
        version: NEW.into(),
        revision: Revision::of(&NEW.parse().unwrap()),
    }
}

fn webhook(server: &MemoryApiServer, name: &str) -> Option<Value> {
    server.object(
        "admissionregistration.k8s.io/v1",
        "mutatingwebhookconfigurations",
        "",
        name,
    )
}

fn deployment(server: &MemoryApiServer, name: &str) -> Option<Value> {
    server.object("apps/v1", "deployments", "istio-system", name)
}

/// The gateway Deployments in istio-system (Istio's charts label them with the component
/// `IngressGateways`).
fn gateways(server: &MemoryApiServer) -> Vec<String> {
    server
        .objects("apps/v1", "deployments", "istio-system")
        .iter()
        .filter(|d| d["metadata"]["labels"]["operator.istio.io/component"] == "IngressGateways")
        .filter_map(|d| d["metadata"]["name"].as_str().map(String::from))
        .collect()
}

fn rev_of(object: &Option<Value>) -> String {
    object.as_ref().map_or("absent".into(), |o| {
        o["metadata"]["labels"]["istio.io/rev"]
            .as_str()
            .unwrap_or("none")
            .to_string()
    })
}

/// The calls that changed something, for the order of the procedure.
fn changes(tools: &PlayedIstioctl) -> Vec<String> {
    tools
        .calls()
        .into_iter()
        .filter(|c| !c.starts_with("istioctl version"))
        .map(|c| {
            let context = c
                .split("--context ")
                .nth(1)
                .unwrap_or("")
                .split(' ')
                .next()
                .unwrap_or("")
                .to_string();
            let what = if c.contains("tag set") {
                "tag".to_string()
            } else if c.contains("uninstall") {
                "uninstall".to_string()
            } else if c.contains("eastwest-gateway.yaml") {
                "gateway".to_string()
            } else {
                "control-plane".to_string()
            };
            format!("{context} {what}")
        })
        .collect()
}

#[tokio::test]
async fn three_primaries_move_one_at_a_time_show_in_status_resume_to_nothing_and_finish_on_the_new_revision_alone()
 {
    let lab = lab(THREE_PRIMARIES);
    lab.build(OLD).await;
    let clients = Clients::new(Some(&lab.kubeconfig));
    let to = new_release();

    let new = lab.istioctl(NEW);
    let (reporter, said) = Reporter::capturing(Format::Text);
    let upgrader = lab.upgrader(new.clone(), &clients, reporter);
    let from = upgrader.from_release(&to).await.unwrap();
    assert_eq!((from.version.as_str(), from.revision.label()), (OLD, "default"));
    assert_eq!(upgrader.upgrade(&from, &to).await.unwrap(), Outcome::Done);
    // One cluster at a time, each in Istio's canary order.
    assert_eq!(
        changes(&new),
        [
            "cluster1 control-plane",
            "cluster1 tag",
            "cluster1 gateway",
            "cluster2 control-plane",
            "cluster2 tag",
            "cluster2 gateway",
            "cluster3 control-plane",
            "cluster3 tag",
            "cluster3 gateway"
        ]
    );
    for (context, server) in lab.pairs() {
        // Both control planes run; injection and the gateway are on the new one.
        let canary =
            deployment(server, "istiod-1-31-1").unwrap_or_else(|| panic!("{context}: no istiod-1-31-1"));
        assert_eq!(
            canary["spec"]["template"]["spec"]["containers"][0]["image"],
            "docker.io/istio/pilot:1.31.1"
        );
        assert!(
            canary["metadata"]["annotations"]["meshctl.io/installed-operator-digest"].is_string(),
            "{context}"
        );
        assert_eq!(rev_of(&deployment(server, "istiod")), "default", "{context}");
        assert_eq!(
            rev_of(&webhook(server, "istio-revision-tag-default")),
            "1-31-1",
            "{context}"
        );
        assert_eq!(
            rev_of(&deployment(server, "istio-eastwestgateway")),
            "1-31-1",
            "{context}"
        );
    }
    let text = said.lines().join("\n");
    assert!(
        text.contains("cluster1") && text.contains("gate passed") && !text.contains("repaired"),
        "{text}"
    );
    let state = lab.state();
    assert_eq!(
        state.istio.as_ref(),
        Some(&to),
        "up now converges on the new release"
    );
    assert_eq!(state.upgrade.as_ref().map(|u| &u.from), Some(&from));

    // `status` sees both revisions, where injection points, the proxies by release, the upgrade.
    // Each revision's istiod pod lists only the proxies connected to it: the old one the proxy
    // still on 1.30.3, the new one the proxy restarted onto 1.31.1.
    lab.istiods[0].set_syncz_handler(Arc::new(|pod: &str| {
        let on_new = pod.starts_with("istiod-1-31-1-");
        Box::pin(async move {
            if on_new {
                json!([{"cluster_id": "cluster2", "proxy": "helloworld-v2-1.sample", "istio_version": "1.31.1"}])
            } else {
                json!([{"cluster_id": "cluster1", "proxy": "helloworld-v1-1.sample", "istio_version": "1.30.3"}])
            }
        })
    }));
    let reachable: Vec<(String, kube::Client)> =
        lab.servers.iter().map(|(c, s)| (c.clone(), s.client())).collect();
    let health = meshctl::mesh_health::gather(&lab.mesh, &reachable, &lab.state(), &Default::default()).await;
    for (context, held) in &health.revisions {
        assert_eq!(held.injection(), to.revision, "{context}");
        assert!(
            held.has(&Revision::default_revision()) && held.has(&to.revision),
            "{context}"
        );
    }
    assert_eq!(health.revisions.len(), 3);
    let by_release: Vec<(&str, usize)> = health
        .proxy_versions
        .iter()
        .map(|(v, n)| (v.as_str(), *n))
        .collect();
    assert_eq!(by_release, [("1.30.3", 1), ("1.31.1", 1)]);
    assert_eq!(health.upgrade.as_ref().map(|u| &u.to), Some(&to));

    // Run again: every cluster holds every step, nothing is installed or moved.
    let again = lab.istioctl(NEW);
    let (reporter, _) = Reporter::capturing(Format::Text);
    let upgrader = lab.upgrader(again.clone(), &clients, reporter);
    assert_eq!(
        upgrader.from_release(&to).await.unwrap(),
        from,
        "from the upgrade under way"
    );
    assert_eq!(upgrader.upgrade(&from, &to).await.unwrap(), Outcome::Done);
    assert!(changes(&again).is_empty(), "{:?}", again.calls());

    // Finish: the old revision goes, only its objects.
    let (reporter, _) = Reporter::capturing(Format::Text);
    let finisher = lab.istioctl(NEW);
    assert_eq!(
        lab.upgrader(finisher.clone(), &clients, reporter)
            .finish()
            .await
            .unwrap(),
        Outcome::Done
    );
    assert_eq!(
        changes(&finisher),
        ["cluster1 uninstall", "cluster2 uninstall", "cluster3 uninstall"]
    );
    for (context, server) in lab.pairs() {
        assert!(deployment(server, "istiod").is_none(), "{context}");
        assert!(webhook(server, "istio-sidecar-injector").is_none(), "{context}");
        assert!(deployment(server, "istiod-1-31-1").is_some(), "{context}");
        assert_eq!(
            rev_of(&deployment(server, "istio-eastwestgateway")),
            "1-31-1",
            "{context}: the gateway stays"
        );
        assert_eq!(
            rev_of(&webhook(server, "istio-revision-tag-default")),
            "1-31-1",
            "{context}"
        );
    }
    let state = lab.state();
    assert!(state.upgrade.is_none());
    assert_eq!(state.istio, Some(to));

    // `down --uninstall` finds meshctl's install record on istiod-1-31-1 and removes the control
    // plane installed under the IstioOperator's name, whatever its revision.
    let removed = lab.uninstall(lab.istioctl(NEW).as_ref()).await;
    for (cluster, what) in &removed {
        assert!(
            what.iter().any(|w| w.contains("istiod-1-31-1")),
            "{cluster}: {what:?}"
        );
        assert!(
            deployment(lab.server(cluster), "istiod-1-31-1").is_none(),
            "{cluster}"
        );
    }
}

#[tokio::test]
async fn a_control_plane_that_never_gets_ready_stops_the_upgrade_and_every_touched_cluster_goes_back() {
    let lab = lab(TWO_PRIMARIES);
    lab.build(OLD).await;
    let gateways_before: Vec<Vec<String>> = lab.pairs().iter().map(|(_, s)| gateways(s)).collect();
    let clients = Clients::new(Some(&lab.kubeconfig));
    let to = new_release();
    let new = Arc::new(PlayedIstioctl::new(NEW, &lab.pairs()).failing_install_in("cluster2"));
    let (reporter, said) = Reporter::capturing(Format::Text);
    let upgrader = lab.upgrader(new.clone(), &clients, reporter);
    // The old release's istioctl, as the command fetches it once it knows where the mesh comes from.
    let old = lab.istioctl(OLD);
    let _ = upgrader.tools_back.set(old.clone());
    let from = upgrader.from_release(&to).await.unwrap();
    let outcome = upgrader.upgrade(&from, &to).await.unwrap();
    let Outcome::RolledBack { cluster, reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(cluster, "cluster2");
    assert!(reason.contains("istiod-1-31-1"), "{reason}");
    // cluster1 had moved: it goes back after cluster2, last touched first.
    assert_eq!(
        changes(&new),
        [
            "cluster1 control-plane",
            "cluster1 tag",
            "cluster1 gateway",
            "cluster2 control-plane",
            "cluster2 uninstall",
            "cluster1 tag",
            "cluster1 uninstall"
        ]
    );
    // The gateway goes back to the old revision with the old release's istioctl (Istio's canary
    // upgrade: a revision's gateways are installed with that revision's istioctl).
    assert_eq!(changes(&old), ["cluster1 gateway"]);
    for (context, server) in lab.pairs() {
        assert!(deployment(server, "istiod-1-31-1").is_none(), "{context}");
        assert!(
            webhook(server, "istio-sidecar-injector-1-31-1").is_none(),
            "{context}"
        );
        assert_eq!(rev_of(&deployment(server, "istiod")), "default", "{context}");
        assert_eq!(
            rev_of(&webhook(server, "istio-revision-tag-default")),
            "default",
            "{context}"
        );
        assert_eq!(
            rev_of(&deployment(server, "istio-eastwestgateway")),
            "default",
            "{context}"
        );
    }
    // `uninstall --revision` prunes every gateway labelled with the revision: each gateway the
    // mesh ran before is there after the rollback, none lost with the revision.
    let gateways_after: Vec<Vec<String>> = lab.pairs().iter().map(|(_, s)| gateways(s)).collect();
    assert_eq!(gateways_after, gateways_before);
    let state = lab.state();
    assert!(state.upgrade.is_none() && state.istio.is_none(), "{state:?}");
    let text = said.lines().join("\n");
    assert!(
        text.contains("cluster2") && text.contains("upgrade stopped"),
        "{text}"
    );
}

#[tokio::test]
async fn an_upgrade_killed_mid_way_resumes_from_what_the_clusters_hold() {
    let lab = lab(TWO_PRIMARIES);
    lab.build(OLD).await;
    let clients = Clients::new(Some(&lab.kubeconfig));
    let to = new_release();
    // Killed while cluster2's injection moves: cluster1 done, cluster2's istiod-1-31-1 installed.
    let hanging = Arc::new(
        PlayedIstioctl::new(NEW, &lab.pairs())
            .hanging_on("tag set default --revision 1-31-1 --overwrite -y --context cluster2"),
    );
    let (reporter, _) = Reporter::capturing(Format::Text);
    let upgrader = lab.upgrader(hanging.clone(), &clients, reporter);
    let from = upgrader.from_release(&to).await.unwrap();
    tokio::select! {
        ended = upgrader.upgrade(&from, &to) => panic!("the hanging command ended: {ended:?}"),
        // The kill: the run is dropped where it stands.
        () = hanging.reached.notified() => {}
    }
    assert!(deployment(lab.server("cluster2"), "istiod-1-31-1").is_some());
    assert_eq!(
        rev_of(&webhook(lab.server("cluster2"), "istio-revision-tag-default")),
        "default"
    );

    let resumed = lab.istioctl(NEW);
    let (reporter, _) = Reporter::capturing(Format::Text);
    let upgrader = lab.upgrader(resumed.clone(), &clients, reporter);
    // The primaries disagree now; the recorded upgrade says where it comes from.
    assert_eq!(upgrader.from_release(&to).await.unwrap(), from);
    assert_eq!(upgrader.upgrade(&from, &to).await.unwrap(), Outcome::Done);
    assert_eq!(changes(&resumed), ["cluster2 tag", "cluster2 gateway"]);
    // Another target while this one is under way is refused.
    let other = IstioRelease {
        version: "1.31.2".into(),
        revision: Revision::of(&"1.31.2".parse().unwrap()),
    };
    let refused = upgrader.from_release(&other).await.unwrap_err();
    assert!(refused.to_string().contains("under way"), "{refused:#}");
}

#[tokio::test]
async fn a_primary_and_its_remote_move_together_with_istiod_exposed_as_the_new_revision() {
    let lab = lab(PRIMARY_REMOTE);
    lab.build(OLD).await;
    for (_, server) in lab.pairs() {
        server.put(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "shop", "namespace": "store", "generation": 1},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "shop"}},
                     "template": {"metadata": {"labels": {"app": "shop"}}, "spec": {"containers": [{"name": "shop", "image": "shop"}]}}},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}}));
    }
    let clients = Clients::new(Some(&lab.kubeconfig));
    let to = new_release();
    let new = lab.istioctl(NEW);
    let (reporter, _) = Reporter::capturing(Format::Text);
    let mut upgrader = lab.upgrader(new.clone(), &clients, reporter);
    upgrader.restart_namespaces = vec!["store".into()];
    let from = upgrader.from_release(&to).await.unwrap();
    assert_eq!(upgrader.upgrade(&from, &to).await.unwrap(), Outcome::Done);
    assert_eq!(
        changes(&new),
        [
            "cluster1 control-plane",
            "cluster1 tag",
            "cluster1 gateway",
            "cluster2 control-plane",
            "cluster2 tag",
            "cluster2 gateway"
        ],
        "the remote after its primary"
    );
    // The workloads asked for were restarted onto the new injection, in both clusters.
    for (context, server) in lab.pairs() {
        let shop = server.object("apps/v1", "deployments", "store", "shop").unwrap();
        assert!(
            shop["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
                .is_string(),
            "{context}: {shop:#}"
        );
    }
    let primary = lab.server("cluster1");
    let vs = primary
        .object(
            "networking.istio.io/v1",
            "virtualservices",
            "istio-system",
            "istiod-vs",
        )
        .expect("istiod exposed");
    // Any name but the old istiod's own reaches the new revision; the old one keeps its name
    // until `--finish`.
    for (port, name, to) in [
        (15012, "anything.example", "istiod-1-31-1"),
        (15012, "istiod-1-31-1.istio-system.svc", "istiod-1-31-1"),
        (15012, "istiod.istio-system.svc", "istiod"),
        (15017, "istiod-1-31-1.istio-system.svc", "istiod-1-31-1"),
    ] {
        assert_eq!(
            passed_through(primary, port, name),
            Some(format!("{to}.istio-system.svc.cluster.local")),
            "{port} {name}: {vs:#}"
        );
    }
    let remote = lab.server("cluster2");
    let service = remote
        .object("v1", "services", "istio-system", "istiod-1-31-1")
        .expect("the revision's istiod Service");
    assert!(service["metadata"]["annotations"]["meshctl.io/installed-operator-digest"].is_string());
    assert_eq!(rev_of(&webhook(remote, "istio-revision-tag-default")), "1-31-1");
    // The remote's injection calls its istiod Service of the new revision (backed by the primary's
    // gateway) on the remote's own path.
    let injector =
        webhook(remote, "istio-revision-tag-default").unwrap()["webhooks"][0]["clientConfig"]["service"]
            .clone();
    assert_eq!(injector["name"], "istiod-1-31-1");
    assert_eq!(injector["path"], "/inject/cluster/cluster2/net/network2");
    // Finish: the remote's old istiod Service and injector go too.
    let (reporter, _) = Reporter::capturing(Format::Text);
    lab.upgrader(lab.istioctl(NEW), &clients, reporter)
        .finish()
        .await
        .unwrap();
    assert!(
        remote
            .object("v1", "services", "istio-system", "istiod")
            .is_none()
    );
    assert!(webhook(remote, "istio-sidecar-injector").is_none());
    assert!(
        remote
            .object("v1", "services", "istio-system", "istiod-1-31-1")
            .is_some()
    );
    // And the old istiod's route: every name reaches the new one.
    assert_eq!(
        passed_through(primary, 15012, "istiod.istio-system.svc"),
        Some("istiod-1-31-1.istio-system.svc.cluster.local".into())
    );
}

/// Where the primary's east-west gateway passes a TLS connection for `server_name` on `port`: the
/// routes of its `istiod-gateway` VirtualServices, one filter chain per match (Istio
/// `pilot/pkg/networking/core/gateway.go`, `buildGatewayNetworkFiltersFromTLSRoutes`; a `*` match
/// becomes a chain without server names, `listener.go`), chosen as Envoy chooses
/// (`FilterChainManagerImpl`: the exact server name first, the chain without names last).
fn passed_through(primary: &MemoryApiServer, port: u16, server_name: &str) -> Option<String> {
    let mut catch_all = None;
    for vs in primary.objects("networking.istio.io/v1", "virtualservices", "istio-system") {
        for route in vs["spec"]["tls"].as_array().into_iter().flatten() {
            for m in route["match"].as_array().into_iter().flatten() {
                if m["port"] != port {
                    continue;
                }
                let host = route["route"][0]["destination"]["host"]
                    .as_str()
                    .map(String::from);
                let names: Vec<&str> = m["sniHosts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                if names.contains(&server_name) {
                    return host;
                }
                if names.contains(&"*") && catch_all.is_none() {
                    catch_all = host;
                }
            }
        }
    }
    catch_all
}

/// What a pod created now in `remote` is injected with, followed to where its proxy dials: the
/// remote's `default` tag webhook calls its Service through the primary's gateway (the API server
/// dials a webhook Service with the server name `<service>.<namespace>.svc`: kubernetes
/// `staging/src/k8s.io/apiserver/pkg/util/webhook/serviceresolver.go` and `client.go`), that
/// istiod injects its own `discoveryAddress` (`istio-discovery/templates/configmap.yaml`:
/// `istiod[-<rev>].istio-system.svc:15012` where istiod runs), and the proxy dials that Service in
/// the remote. Err names the first link that is missing.
fn remote_pod_reaches_its_istiod(
    primary: &MemoryApiServer,
    remote: &MemoryApiServer,
) -> Result<String, String> {
    let tag = webhook(remote, "istio-revision-tag-default").ok_or("no default tag in the remote")?;
    let service = tag["webhooks"][0]["clientConfig"]["service"]["name"]
        .as_str()
        .ok_or("the tag calls no Service")?
        .to_string();
    if remote
        .object("v1", "services", "istio-system", &service)
        .is_none()
    {
        return Err(format!("the injector's Service {service} is not in the remote"));
    }
    let injector = passed_through(primary, 15017, &format!("{service}.istio-system.svc"))
        .ok_or(format!("the gateway passes {service} nowhere"))?;
    let istiod = injector.split('.').next().unwrap_or_default().to_string();
    if primary
        .object("apps/v1", "deployments", "istio-system", &istiod)
        .is_none()
    {
        return Err(format!(
            "the gateway passes {service} to {istiod}, which does not run"
        ));
    }
    // The proxy dials `<istiod>.istio-system.svc:15012` in the remote, then the gateway again.
    if remote.object("v1", "services", "istio-system", &istiod).is_none() {
        return Err(format!(
            "injected by {istiod} (webhook Service {service}), the proxy dials {istiod}.istio-system.svc, which the remote does not have"
        ));
    }
    let xds = passed_through(primary, 15012, &format!("{istiod}.istio-system.svc"))
        .ok_or(format!("the gateway passes {istiod} nowhere on 15012"))?;
    if !xds.starts_with(&format!("{istiod}.")) {
        return Err(format!("the proxy of {istiod} is configured by {xds}"));
    }
    Ok(istiod)
}

/// While a primary and its remote move between revisions, one at a time, a pod created in the
/// remote at any moment is injected by an istiod that runs, and its proxy reaches that istiod:
/// forward, after the primary moved and before the remote's new revision is installed; back,
/// after the remote went back and before the primary does.
#[tokio::test]
async fn a_remotes_new_pods_reach_their_istiod_at_every_step_of_an_upgrade_and_its_rollback() {
    let lab = lab(PRIMARY_REMOTE);
    lab.build(OLD).await;
    let clients = Clients::new(Some(&lab.kubeconfig));
    let to = new_release();
    let (primary, remote) = (lab.server("cluster1"), lab.server("cluster2"));
    assert_eq!(
        remote_pod_reaches_its_istiod(primary, remote),
        Ok("istiod".into())
    );

    // Forward: stopped at the remote's install, the primary on the new revision.
    let hanging =
        Arc::new(PlayedIstioctl::new(NEW, &lab.pairs()).hanging_on("install -y --context cluster2 -f"));
    let (reporter, _) = Reporter::capturing(Format::Text);
    let upgrader = lab.upgrader(hanging.clone(), &clients, reporter);
    let from = upgrader.from_release(&to).await.unwrap();
    tokio::select! {
        ended = upgrader.upgrade(&from, &to) => panic!("the hanging command ended: {ended:?}"),
        () = hanging.reached.notified() => {}
    }
    assert_eq!(rev_of(&webhook(primary, "istio-revision-tag-default")), "1-31-1");
    assert_eq!(
        remote_pod_reaches_its_istiod(primary, remote),
        Ok("istiod".into())
    );

    // The rest of the upgrade: the remote on the new revision too.
    let (reporter, _) = Reporter::capturing(Format::Text);
    let upgrader = lab.upgrader(lab.istioctl(NEW), &clients, reporter);
    assert_eq!(upgrader.upgrade(&from, &to).await.unwrap(), Outcome::Done);
    assert_eq!(
        remote_pod_reaches_its_istiod(primary, remote),
        Ok("istiod-1-31-1".into())
    );

    // Back: stopped as the primary starts going back, the remote already on the old revision.
    let hanging = Arc::new(
        PlayedIstioctl::new(NEW, &lab.pairs())
            .hanging_on("tag set default --revision default --overwrite -y --context cluster1"),
    );
    let (reporter, _) = Reporter::capturing(Format::Text);
    let upgrader = lab.upgrader(hanging.clone(), &clients, reporter);
    tokio::select! {
        ended = upgrader.rollback() => panic!("the hanging command ended: {ended:?}"),
        () = hanging.reached.notified() => {}
    }
    assert!(
        remote
            .object("v1", "services", "istio-system", "istiod-1-31-1")
            .is_none()
    );
    assert_eq!(
        remote_pod_reaches_its_istiod(primary, remote),
        Ok("istiod".into())
    );
}

#[tokio::test]
async fn finishing_is_refused_while_pods_run_proxies_of_the_old_revision_and_rollback_needs_an_upgrade() {
    let lab = lab(TWO_PRIMARIES);
    lab.build(OLD).await;
    let clients = Clients::new(Some(&lab.kubeconfig));
    let (reporter, _) = Reporter::capturing(Format::Text);
    let refused = lab
        .upgrader(lab.istioctl(NEW), &clients, reporter)
        .rollback()
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("no upgrade is under way"),
        "{refused:#}"
    );

    let to = new_release();
    let (reporter, _) = Reporter::capturing(Format::Text);
    let upgrader = lab.upgrader(lab.istioctl(NEW), &clients, reporter);
    let from = upgrader.from_release(&to).await.unwrap();
    upgrader.upgrade(&from, &to).await.unwrap();
    // A workload injected before the move (the injector's status annotation names its revision).
    lab.server("cluster2").put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "helloworld-v1-7c9d8f6b5-abcde", "namespace": "sample",
                     "annotations": {"sidecar.istio.io/status": "{\"initContainers\":[\"istio-init\"],\"containers\":[\"istio-proxy\"],\"revision\":\"default\"}"}},
        "spec": {"containers": [{"name": "helloworld", "image": "helloworld"}]},
        "status": {"phase": "Running"}}));
    let finisher = lab.istioctl(NEW);
    let (reporter, _) = Reporter::capturing(Format::Text);
    let err = lab
        .upgrader(finisher.clone(), &clients, reporter)
        .finish()
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("cluster `cluster2`")
            && text.contains("sample/helloworld-v1-7c9d8f6b5-abcde")
            && text.contains("--restart-namespaces"),
        "{text}"
    );
    assert!(
        changes(&finisher).is_empty(),
        "nothing removed anywhere: {:?}",
        finisher.calls()
    );
    assert!(deployment(lab.server("cluster1"), "istiod").is_some());

    // --rollback instead. A pod the new revision injected stops it before that revision is
    // removed, naming the pod; restarted onto the old one, the rollback resumes.
    let stranded = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "shop-5f6d7c8b9-qwert", "namespace": "store",
                     "annotations": {"sidecar.istio.io/status": "{\"containers\":[\"istio-proxy\"],\"revision\":\"1-31-1\"}"}},
        "spec": {"containers": [{"name": "shop", "image": "shop"}]},
        "status": {"phase": "Running"}});
    lab.server("cluster2").put(stranded);
    let stopped = lab.istioctl(NEW);
    let (reporter, _) = Reporter::capturing(Format::Text);
    let err = lab
        .upgrader(stopped.clone(), &clients, reporter)
        .rollback()
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("cluster `cluster2`")
            && text.contains("store/shop-5f6d7c8b9-qwert")
            && text.contains("upgrade --rollback` again"),
        "{text}"
    );
    assert!(
        !changes(&stopped).iter().any(|c| c.contains("uninstall")),
        "{:?}",
        stopped.calls()
    );
    assert!(deployment(lab.server("cluster2"), "istiod-1-31-1").is_some());
    assert!(lab.state().upgrade.is_some(), "still under way: it resumes");
    lab.server("cluster2")
        .remove("v1", "pods", "store", "shop-5f6d7c8b9-qwert");

    // Both clusters back, last first.
    let back = lab.istioctl(NEW);
    let (reporter, _) = Reporter::capturing(Format::Text);
    assert_eq!(
        lab.upgrader(back.clone(), &clients, reporter)
            .rollback()
            .await
            .unwrap(),
        Outcome::Done
    );
    assert_eq!(
        changes(&back),
        [
            "cluster2 uninstall",
            "cluster1 tag",
            "cluster1 gateway",
            "cluster1 uninstall"
        ]
    );
    assert!(lab.state().upgrade.is_none());
}

#[tokio::test]
async fn a_jump_of_more_than_two_minor_releases_is_refused_before_anything_changes() {
    let lab = lab(TWO_PRIMARIES);
    lab.build("1.28.4").await;
    let clients = Clients::new(Some(&lab.kubeconfig));
    let tools = lab.istioctl(NEW);
    let (reporter, _) = Reporter::capturing(Format::Text);
    let err = lab
        .upgrader(tools.clone(), &clients, reporter)
        .from_release(&new_release())
        .await
        .unwrap_err();
    assert!(err.is::<meshctl::upgrade::Refusal>(), "a usage error: {err:#}");
    assert!(err.to_string().contains("two minor releases at most"), "{err:#}");
    assert!(changes(&tools).is_empty());
    assert!(lab.state().upgrade.is_none());
}

/// The gate itself: cluster2's new istiod does not sync cluster1 (its clusterz says `timeout`
/// while the old istiod's says `synced`). The upgrade stops there with istiod's words, and both
/// clusters go back; the old revision's gate passes.
#[tokio::test]
async fn a_new_istiod_that_does_not_sync_a_peer_fails_the_gate_and_the_mesh_goes_back() {
    let lab = lab(TWO_PRIMARIES);
    lab.build(OLD).await;
    lab.istiods[1].set_remote_cluster_status_of_revision("1-31-1", "cluster1", "timeout");
    let clients = Clients::new(Some(&lab.kubeconfig));
    let to = new_release();
    let new = lab.istioctl(NEW);
    let (reporter, said) = Reporter::capturing(Format::Text);
    let mut upgrader = lab.upgrader(new.clone(), &clients, reporter);
    upgrader.settings.timeout = Duration::from_secs(1);
    let from = upgrader.from_release(&to).await.unwrap();
    let outcome = upgrader.upgrade(&from, &to).await.unwrap();
    let Outcome::RolledBack { cluster, reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(cluster, "cluster2");
    assert!(
        reason.contains("gate") && reason.contains("cluster1 timeout"),
        "{reason}"
    );
    assert_eq!(
        changes(&new),
        [
            "cluster1 control-plane",
            "cluster1 tag",
            "cluster1 gateway",
            "cluster2 control-plane",
            "cluster2 tag",
            "cluster2 gateway",
            "cluster2 tag",
            "cluster2 gateway",
            "cluster2 uninstall",
            "cluster1 tag",
            "cluster1 gateway",
            "cluster1 uninstall"
        ]
    );
    for (context, server) in lab.pairs() {
        assert!(deployment(server, "istiod-1-31-1").is_none(), "{context}");
        assert_eq!(
            rev_of(&webhook(server, "istio-revision-tag-default")),
            "default",
            "{context}"
        );
    }
    let text = said.lines().join("\n");
    assert!(text.contains("upgrade stopped: gate: istiod-1-31-1"), "{text}");
}

/// A second upgrade, from a revisioned mesh: 1.31.0 (revision 1-31-0, after a first upgrade) to
/// 1.31.1. A namespace labelled with the old revision by name moves with the injection, and
/// `--finish` removes 1-31-0 by name.
#[tokio::test]
async fn an_upgrade_of_a_revisioned_mesh_moves_namespaces_pinned_to_the_old_revision() {
    let lab = lab(TWO_PRIMARIES);
    lab.build(OLD).await;
    let clients = Clients::new(Some(&lab.kubeconfig));
    let first = IstioRelease {
        version: "1.31.0".into(),
        revision: Revision::of(&"1.31.0".parse().unwrap()),
    };
    for tools in [lab.istioctl("1.31.0"), lab.istioctl("1.31.0")] {
        let (reporter, _) = Reporter::capturing(Format::Text);
        let upgrader = lab.upgrader(tools, &clients, reporter);
        if lab.state().upgrade.is_none() {
            let from = upgrader.from_release(&first).await.unwrap();
            assert_eq!(upgrader.upgrade(&from, &first).await.unwrap(), Outcome::Done);
        } else {
            assert_eq!(upgrader.finish().await.unwrap(), Outcome::Done);
        }
    }
    lab.server("cluster2")
        .put(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "shop", "labels": {"istio.io/rev": "1-31-0"}}}));
    lab.server("cluster2")
        .put(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "legacy", "labels": {"istio-injection": "enabled"}}}));

    let to = new_release();
    let tools = lab.istioctl(NEW);
    let (reporter, _) = Reporter::capturing(Format::Text);
    let upgrader = lab.upgrader(tools.clone(), &clients, reporter);
    let from = upgrader.from_release(&to).await.unwrap();
    assert_eq!(
        (from.version.as_str(), from.revision.label()),
        ("1.31.0", "1-31-0")
    );
    assert_eq!(upgrader.upgrade(&from, &to).await.unwrap(), Outcome::Done);
    let shop = lab
        .server("cluster2")
        .object("v1", "namespaces", "", "shop")
        .unwrap();
    assert_eq!(shop["metadata"]["labels"]["istio.io/rev"], "1-31-1");
    let legacy = lab
        .server("cluster2")
        .object("v1", "namespaces", "", "legacy")
        .unwrap();
    assert!(
        legacy["metadata"]["labels"].get("istio.io/rev").is_none(),
        "the tag serves it: {legacy}"
    );
    for (context, server) in lab.pairs() {
        assert_eq!(
            rev_of(&webhook(server, "istio-revision-tag-default")),
            "1-31-1",
            "{context}"
        );
    }
    let (reporter, _) = Reporter::capturing(Format::Text);
    let finisher = lab.istioctl(NEW);
    lab.upgrader(finisher.clone(), &clients, reporter)
        .finish()
        .await
        .unwrap();
    assert!(
        finisher
            .calls()
            .iter()
            .any(|c| c.contains("uninstall --revision 1-31-0")),
        "{:?}",
        finisher.calls()
    );
    for (context, server) in lab.pairs() {
        assert!(deployment(server, "istiod-1-31-0").is_none(), "{context}");
        assert!(deployment(server, "istiod-1-31-1").is_some(), "{context}");
    }
}

/// A cluster that does not answer is named before anything changes anywhere; isolated, it is left
/// out and the others upgrade.
#[tokio::test]
async fn a_cluster_that_does_not_answer_stops_the_upgrade_before_it_starts_unless_isolated() {
    let mut lab = lab(THREE_PRIMARIES);
    lab.build(OLD).await;
    lab.stop("cluster3");
    let clients = Clients::new(Some(&lab.kubeconfig));
    let to = new_release();
    let tools = lab.istioctl(NEW);
    let (reporter, _) = Reporter::capturing(Format::Text);
    let err = lab
        .upgrader(tools.clone(), &clients, reporter)
        .from_release(&to)
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("cluster `cluster3`") && text.contains("meshctl isolate"),
        "{text}"
    );
    assert!(changes(&tools).is_empty() && lab.state().upgrade.is_none());

    // Isolated (as `meshctl isolate` records it), it is left alone.
    meshctl::state::StateStore::load(&lab.dir.state())
        .unwrap()
        .update(|s| {
            s.isolated.insert("cluster3".into(), Default::default());
        })
        .unwrap();
    let (reporter, _) = Reporter::capturing(Format::Text);
    let upgrader = lab.upgrader(tools.clone(), &clients, reporter);
    let from = upgrader.from_release(&to).await.unwrap();
    assert_eq!(upgrader.upgrade(&from, &to).await.unwrap(), Outcome::Done);
    assert!(
        changes(&tools).iter().all(|c| !c.starts_with("cluster3")),
        "{:?}",
        changes(&tools)
    );
    assert_eq!(changes(&tools).len(), 6);
}

/// After an upgrade, `status` (the binary) probes what the mesh runs now: the istio phase is in
/// place on istiod-1-31-1, and the MESH section shows where injection points.
#[tokio::test]
async fn status_after_an_upgrade_probes_the_new_revision() {
    let lab = lab(TWO_PRIMARIES);
    lab.build(OLD).await;
    let clients = Clients::new(Some(&lab.kubeconfig));
    let to = new_release();
    let (reporter, _) = Reporter::capturing(Format::Text);
    let upgrader = lab.upgrader(lab.istioctl(NEW), &clients, reporter);
    let from = upgrader.from_release(&to).await.unwrap();
    upgrader.upgrade(&from, &to).await.unwrap();
    upgrader.finish().await.unwrap();
    let report = lab.status().await;
    let istio: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["phase"] == "istio")
        .collect();
    assert_eq!(istio.len(), 2, "{report:#}");
    for check in istio {
        assert_eq!(check["state"], "ok", "{check:#}");
    }
    for cluster in ["cluster1", "cluster2"] {
        assert_eq!(
            report["mesh"]["revisions"][cluster]["tag"], "1-31-1",
            "{report:#}"
        );
    }
}

/// A finish cut short removed the old revision from one cluster: `--rollback` is refused (there
/// is nothing to go back to there) and changes nothing; `--finish` completes it.
#[tokio::test]
async fn a_rollback_after_a_finish_began_is_refused_and_the_finish_completes() {
    let lab = lab(TWO_PRIMARIES);
    lab.build(OLD).await;
    let clients = Clients::new(Some(&lab.kubeconfig));
    let to = new_release();
    let (reporter, _) = Reporter::capturing(Format::Text);
    let upgrader = lab.upgrader(lab.istioctl(NEW), &clients, reporter);
    let from = upgrader.from_release(&to).await.unwrap();
    upgrader.upgrade(&from, &to).await.unwrap();
    // The finish, killed after cluster1.
    let hanging = Arc::new(
        PlayedIstioctl::new(NEW, &lab.pairs())
            .hanging_on("uninstall --revision default -y --context cluster2"),
    );
    let (reporter, _) = Reporter::capturing(Format::Text);
    let finisher = lab.upgrader(hanging.clone(), &clients, reporter);
    tokio::select! {
        ended = finisher.finish() => panic!("the hanging command ended: {ended:?}"),
        () = hanging.reached.notified() => {}
    }
    assert!(deployment(lab.server("cluster1"), "istiod").is_none());

    let tools = lab.istioctl(NEW);
    let (reporter, _) = Reporter::capturing(Format::Text);
    let err = lab
        .upgrader(tools.clone(), &clients, reporter)
        .rollback()
        .await
        .unwrap_err();
    assert!(err.is::<meshctl::upgrade::Refusal>(), "{err:#}");
    assert!(
        err.to_string()
            .contains("cluster `cluster1` no longer has revision default"),
        "{err:#}"
    );
    assert!(changes(&tools).is_empty(), "{:?}", tools.calls());

    let (reporter, _) = Reporter::capturing(Format::Text);
    assert_eq!(
        lab.upgrader(tools.clone(), &clients, reporter)
            .finish()
            .await
            .unwrap(),
        Outcome::Done
    );
    assert_eq!(changes(&tools), ["cluster2 uninstall"]);
    assert!(lab.state().upgrade.is_none());
}
