//! Plays the data plane for `meshctl verify` tests: answers the curl client's calls the way Istio
//! routes them, decided from what is really in the fake clusters. A remote cluster is reachable only
//! when the caller's cluster holds its remote secret and the remote cluster has an east-west gateway
//! with an IP and the cross-network Gateway; so a broken `up` makes `verify` fail. With the locality
//! DestinationRule, a caller is served locally while its local instance is healthy, else by the
//! failover region. `drain_listeners` in a helloworld sidecar makes that instance fail.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::fake_api::FakeCluster;
use super::fake_api::server::{ExecRequest, ExecResult};

fn helloworld_pod(c: &FakeCluster, drained: &HashSet<String>) -> Option<(String, String)> {
    c.list("", "pods").into_iter().find_map(|p| {
        let name = p["metadata"]["name"].as_str()?.to_string();
        (p["metadata"]["namespace"] == "sample"
            && p["metadata"]["labels"]["app"] == "helloworld"
            && !drained.contains(&name))
        .then(|| {
            (
                name,
                p["metadata"]["labels"]["version"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
    })
}

fn region(c: &FakeCluster) -> String {
    c.list("", "nodes")
        .first()
        .and_then(|n| {
            n["metadata"]["labels"]["topology.kubernetes.io/region"]
                .as_str()
                .map(String::from)
        })
        .unwrap_or_default()
}

fn wired(from: &FakeCluster, to: &FakeCluster) -> bool {
    from.get(
        "",
        "secrets",
        "istio-system",
        &format!("istio-remote-secret-{}", to.name),
    )
    .is_some()
        && to
            .get("", "services", "istio-system", "istio-eastwestgateway")
            .is_some_and(|s| s["status"]["loadBalancer"]["ingress"][0]["ip"].is_string())
        && to
            .get(
                "networking.istio.io",
                "gateways",
                "istio-system",
                "cross-network-gateway",
            )
            .is_some()
}

/// The text of curl's `-w '…'` in `command`, with `\n` turned into newlines as curl does.
fn write_out_format(command: &str) -> String {
    command
        .split("-w '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_default()
        .replace("\\n", "\n")
}

/// Installs the data-plane behaviour on every cluster.
pub fn install(clusters: &[Arc<FakeCluster>]) {
    let drained: Arc<Mutex<HashSet<String>>> = Arc::default();
    let counter = Arc::new(Mutex::new(0usize));
    for (i, me) in clusters.iter().enumerate() {
        let (all, drained, counter) = (clusters.to_vec(), drained.clone(), counter.clone());
        let handler = move |req: &ExecRequest| -> ExecResult {
            let command = req.command.join(" ");
            if req.container == "istio-proxy" && command.contains("drain_listeners") {
                drained.lock().unwrap().insert(req.pod.clone());
                return ExecResult {
                    stdout: "OK\n".into(),
                    ..Default::default()
                };
            }
            if !command.contains("helloworld.sample:5000/hello") {
                return ExecResult {
                    stderr: format!("sh: unexpected command: {command}"),
                    exit_code: 127,
                    ..Default::default()
                };
            }
            let calls: usize = command
                .split("seq 1 ")
                .nth(1)
                .and_then(|r| r.split(')').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            let drained = drained.lock().unwrap().clone();
            let me = &all[i];
            let local = helloworld_pod(me, &drained);
            let remotes: Vec<(String, String, String)> = all
                .iter()
                .enumerate()
                .filter(|(j, other)| *j != i && wired(me, other))
                .filter_map(|(_, other)| helloworld_pod(other, &drained).map(|(p, v)| (p, v, region(other))))
                .collect();
            let rule: Option<Value> = me.get(
                "networking.istio.io",
                "destinationrules",
                "sample",
                "helloworld-failover",
            );
            let targets: Vec<(String, String)> = match rule {
                Some(dr) if dr["spec"]["trafficPolicy"]["outlierDetection"].is_object() => match &local {
                    Some(l) => vec![l.clone()],
                    None => {
                        let my_region = region(me);
                        let to = dr["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"]["failover"]
                            .as_array()
                            .and_then(|rules| rules.iter().find(|r| r["from"] == my_region.as_str()))
                            .and_then(|r| r["to"].as_str().map(String::from));
                        let preferred: Vec<(String, String)> = remotes
                            .iter()
                            .filter(|r| Some(&r.2) == to.as_ref())
                            .map(|r| (r.0.clone(), r.1.clone()))
                            .collect();
                        if preferred.is_empty() {
                            remotes.iter().map(|r| (r.0.clone(), r.1.clone())).collect()
                        } else {
                            preferred
                        }
                    }
                },
                _ => local
                    .into_iter()
                    .chain(remotes.iter().map(|r| (r.0.clone(), r.1.clone())))
                    .collect(),
            };
            // What curl prints per call: the body, then its `-w` text with the status filled in.
            let write_out = write_out_format(&command);
            let mut out = String::new();
            let mut next = counter.lock().unwrap();
            for _ in 0..calls {
                if targets.is_empty() {
                    // Envoy answers itself when no endpoint is left: 503, body without a newline.
                    out.push_str("no healthy upstream");
                    out.push_str(&write_out.replace("%{http_code}", "503"));
                } else {
                    let (pod, version) = &targets[*next % targets.len()];
                    *next += 1;
                    // helloworld's app.py: `Hello version: %s, instance: %s\n`.
                    out.push_str(&format!("Hello version: {version}, instance: {pod}\n"));
                    out.push_str(&write_out.replace("%{http_code}", "200"));
                }
            }
            ExecResult {
                stdout: out,
                ..Default::default()
            }
        };
        me.set_exec_handler(Arc::new(handler));
    }
}
