//! Running a command in a sample pod through the exec API, and finding that pod with its sidecar.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};

use super::workloads::NAMESPACE;
use crate::kube::wait;
use crate::topology::Dataplane;

/// Runs `command` in a container of pod `pod` in the verify namespace, bounded by `timeout`, and
/// returns what it printed on stdout.
pub async fn exec(
    client: &kube::Client,
    pod: &str,
    container: &str,
    command: Vec<String>,
    timeout: Duration,
) -> Result<String> {
    tokio::time::timeout(timeout, exec_unbounded(client, pod, container, command))
        .await
        .map_err(|_| {
            anyhow!(
                "exec into pod {NAMESPACE}/{pod} ({container}) did not finish within {}s",
                timeout.as_secs()
            )
        })?
}

pub(super) async fn exec_unbounded(
    client: &kube::Client,
    pod: &str,
    container: &str,
    command: Vec<String>,
) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let params = AttachParams::default()
        .container(container)
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let mut attached = pods
        .exec(pod, command, &params)
        .await
        .with_context(|| format!("exec into pod {NAMESPACE}/{pod}"))?;
    // Both streams at once: kube buffers each in a small pipe, and a stream nobody reads blocks the
    // other (and the exec) once it fills.
    let (out, err) = (attached.stdout(), attached.stderr());
    let read = |stream: Option<_>| async move {
        let mut text = String::new();
        if let Some(mut s) = stream {
            tokio::io::AsyncReadExt::read_to_string(&mut s, &mut text).await?;
        }
        Ok::<String, std::io::Error>(text)
    };
    let (stdout, _stderr) = tokio::try_join!(read(out), read(err)).context("exec stream")?;
    let status = match attached.take_status() {
        Some(s) => s.await,
        None => None,
    };
    attached.join().await.context("exec stream")?;
    if let Some(s) = status.filter(|s| s.status.as_deref() == Some("Failure")) {
        bail!(
            "exec into pod {NAMESPACE}/{pod} ({container}) failed: {}",
            s.message.unwrap_or_default()
        );
    }
    Ok(stdout)
}

/// Whether a pod carries Istio's proxy: as a native sidecar (an init container named
/// `istio-proxy` with `restartPolicy: Always`, what Istio's injector produces since 1.28 on
/// Kubernetes 1.33 and later) or, with older injectors or `sidecar.istio.io/nativeSidecar:
/// "false"`, as an ordinary container.
pub fn has_sidecar(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers.iter().any(|c| c.name == "istio-proxy")
            || s.init_containers
                .iter()
                .flatten()
                .any(|c| c.name == "istio-proxy" && c.restart_policy.as_deref() == Some("Always"))
    })
}

/// A Running, Ready pod of the verification namespace labelled `selector`, once there is one.
pub(super) async fn ready_pod(
    client: &kube::Client,
    selector: &str,
    timeout: Duration,
) -> Result<Pod, wait::WaitError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let set = wait::until(&pods, wait::some_pod_ready(NAMESPACE, selector), timeout).await?;
    Ok(set
        .into_values()
        .find(wait::pod_is_ready)
        .expect("ready means one pod is ready"))
}

/// Whether istio-cni redirected an ambient pod's traffic to ztunnel: the annotation the node agent
/// sets once it has (cni/pkg/util/podutil.go, `PodRedirectionEnabled`).
pub fn redirected_to_ztunnel(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("ambient.istio.io/redirection"))
        .is_some_and(|v| v == "enabled")
}

/// What the pod's `ambient.istio.io/redirection` annotation says, for a person.
fn redirection_of(pod: &Pod) -> String {
    match pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("ambient.istio.io/redirection"))
    {
        Some(value) => format!("`{value}`"),
        None => "not set".into(),
    }
}

/// Waits for a running, ready pod matching `selector` and checks it is in the mesh: its sidecar,
/// or in an ambient mesh its traffic redirected to ztunnel.
pub async fn meshed_pod(
    client: &kube::Client,
    (cluster, dataplane): (&str, Dataplane),
    selector: &str,
    timeout: Duration,
) -> Result<String> {
    let pod = ready_pod(client, selector, timeout)
        .await
        .with_context(|| format!("cluster `{cluster}`"))?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    if dataplane == Dataplane::Ambient {
        if redirected_to_ztunnel(&pod) {
            return Ok(name);
        }
        // istio-cni marks a pod `pending` while no ztunnel on its node has taken it yet, and
        // `enabled` once one has (cni/pkg/util/podutil.go, `AnnotatePartiallyEnrolledPod`,
        // `AnnotateEnrolledPod`): a ready pod may be moments ahead of its redirection.
        let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        let redirected = wait::Condition::labelled(
            selector,
            format!("a ready pod `{selector}` redirected to ztunnel"),
            |set| {
                set.values()
                    .any(|p| wait::pod_is_ready(p) && redirected_to_ztunnel(p))
            },
            |set| {
                let seen: Vec<String> = set
                    .iter()
                    .map(|(n, p)| format!("{n}: {}", redirection_of(p)))
                    .collect();
                seen.join(", ")
            },
        );
        return match wait::until(&pods, redirected, timeout).await {
            Ok(set) => Ok(set
                .into_iter()
                .find(|(_, p)| wait::pod_is_ready(p) && redirected_to_ztunnel(p))
                .map(|(n, _)| n)
                .unwrap_or(name)),
            Err(wait::WaitError::Timeout { last_seen, .. }) => bail!(
                "cluster `{cluster}`: pod {NAMESPACE}/{name} is not in the ambient mesh (annotation ambient.istio.io/redirection, last seen: {last_seen}; istio-cni has not handed it to ztunnel), so ztunnel does not carry its calls\nhint: are istio-cni and ztunnel ready on its node (`meshctl status`, phase istio), and is namespace `{NAMESPACE}` labelled istio.io/dataplane-mode=ambient?"
            ),
            Err(e) => Err(anyhow::Error::new(e).context(format!("cluster `{cluster}`"))),
        };
    }
    if !has_sidecar(&pod) {
        bail!(
            "cluster `{cluster}`: pod {NAMESPACE}/{name} has no istio-proxy sidecar, so it cannot cross networks\nhint: is istiod's injector running (`meshctl status`), and is namespace `{NAMESPACE}` labelled istio-injection=enabled?"
        );
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pod spec of `kubectl get pod -o yaml` after Istio 1.28+ injected a native sidecar: the
    /// shape of Istio's injection template (`manifests/charts/istio-control/istio-discovery/files/
    /// injection-template.yaml`, `{{ if .NativeSidecars }}`) and of the pods its golden files and
    /// users show: `istio-init` then `istio-proxy` (restartPolicy Always) in `initContainers`, and
    /// `sidecar.istio.io/status` listing both as init containers with `"containers":null`.
    const NATIVE_SIDECAR_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: curl-5b5c7bcd6b-x7kfz
  namespace: sample
  annotations:
    sidecar.istio.io/status: '{"initContainers":["istio-init","istio-proxy"],"containers":null,"volumes":["workload-socket","credential-socket","workload-certs","istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert","istio-ca-crl"],"imagePullSecrets":null,"revision":"default"}'
spec:
  initContainers:
  - name: istio-init
    image: docker.io/istio/proxyv2:1.31.1
    args: [istio-iptables, -p, "15001", -z, "15006", -u, "1337", -m, REDIRECT]
  - name: istio-proxy
    image: docker.io/istio/proxyv2:1.31.1
    args: [proxy, sidecar, --domain, $(POD_NAMESPACE).svc.cluster.local]
    restartPolicy: Always
    ports:
    - {containerPort: 15090, name: http-envoy-prom, protocol: TCP}
  containers:
  - name: curl
    image: curlimages/curl
    command: [/bin/sleep, infinity]
"#;

    #[test]
    fn a_native_sidecar_counts_as_the_proxy_and_a_plain_init_container_does_not() {
        let native: Pod = serde_saphyr::from_str(NATIVE_SIDECAR_POD).unwrap();
        assert!(has_sidecar(&native), "Istio 1.28+ on Kubernetes 1.33+");
        // The pre-1.28 shape (Istio's golden `hello-multi.yaml.injected`): a second container.
        let mut classic = native.clone();
        let spec = classic.spec.as_mut().unwrap();
        let mut proxy = spec.init_containers.as_mut().unwrap().pop().unwrap();
        proxy.restart_policy = None;
        spec.containers.push(proxy.clone());
        assert!(has_sidecar(&classic));
        // An init container that runs to completion is no proxy.
        let mut init_only = native.clone();
        init_only.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[1].restart_policy = None;
        assert!(!has_sidecar(&init_only));
    }
}
