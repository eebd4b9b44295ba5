//! What a converged `up` asks of each cluster: every fact one cluster holds for the others is read
//! once per run, however many clusters compare with it, and one list answers for every remote
//! secret. Counted on the in-process API servers, whose request logs see every read.

mod support;

use meshctl::executor::RunEnd;
use meshctl::plan::Phase;
use support::istio_lab::lab;

const MESH: &str = "provider: existing
clusters:
  - {network: network1, apiServer: 'https://10.0.0.1:6443'}
  - {network: network2, apiServer: 'https://10.0.0.2:6443'}
  - {network: network3, apiServer: 'https://10.0.0.3:6443'}
  - {network: network4, apiServer: 'https://10.0.0.4:6443'}
";

const PHASES: [Phase; 5] = support::istio_lab::MULTI_PRIMARY_PHASES;

#[tokio::test]
async fn a_converged_up_reads_each_clusters_facts_once() {
    let lab = lab(MESH);
    let cas = support::fixed_cas(&lab.mesh);
    let (end, _, said) = lab.run("1.31.1", &PHASES, cas.clone()).await;
    assert_eq!(end, RunEnd::Finished { changed: true }, "{}", said.join("\n"));
    let before: Vec<usize> = lab.servers.iter().map(|(_, s)| s.requests().len()).collect();
    let (end, _, said) = lab.run("1.31.1", &PHASES, cas).await;
    assert_eq!(end, RunEnd::Finished { changed: false }, "{}", said.join("\n"));
    for ((context, server), from) in lab.servers.iter().zip(before) {
        let asked: Vec<String> = server.requests().into_iter().skip(from).collect();
        let writes: Vec<&String> = asked.iter().filter(|r| !r.starts_with("GET ")).collect();
        assert!(writes.is_empty(), "{context}: {writes:?}");
        // Its CA is compared with the secret for it in three other clusters: read once.
        let ca_reads = asked
            .iter()
            .filter(|r| r.contains("/configmaps/kube-root-ca.crt"))
            .count();
        assert_eq!(ca_reads, 1, "{context}: {asked:#?}");
        // Its three peers' secrets come from the one list of remote secrets.
        let by_name = asked
            .iter()
            .filter(|r| r.contains("/secrets/istio-remote-secret-"))
            .count();
        assert_eq!(by_name, 0, "{context}: {asked:#?}");
    }
}
