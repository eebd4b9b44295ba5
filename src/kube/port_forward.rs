//! One HTTP GET to a port of a pod through the API server's `pods/portforward`, the way
//! `kubectl port-forward` and istioctl reach a pod: the bytes arrive on the pod's own loopback
//! interface. A server that trusts only local callers (istiod's debug endpoints) answers there,
//! where the API server's service proxy, which connects from the API server's address, is refused.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the pod answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAnswer {
    /// The HTTP status code.
    pub status: u16,
    pub body: Vec<u8>,
}

/// `GET path` on `port` of pod `namespace/name`, bounded by `bound`. The error says what failed on
/// the way, in a user's words.
pub async fn http_get(
    client: &Client,
    namespace: &str,
    pod: &str,
    port: u16,
    path: &str,
    bound: Duration,
) -> Result<PodAnswer, String> {
    tokio::time::timeout(bound, get(client, namespace, pod, port, path))
        .await
        .map_err(|_| format!("no answer within {}s", bound.as_secs()))?
}

/// The JSON answer to `GET path` of every running pod of `app` (`selector` names its labels:
/// `app=<app>` and any more) in `namespace`, asked at once, each on the port `port_of` says, as
/// istioctl asks istiod's pods (Istio `pkg/kube/client.go`, `AllDiscoveryDo`) and ztunnel's: a pod
/// that cannot be asked fails the whole, since its share would be missing. Each answer comes with
/// its pod, `<namespace>/<name>`.
pub async fn json_of_every_pod<T: serde::de::DeserializeOwned>(
    client: &Client,
    (namespace, app, selector): (&str, &str, &str),
    port_of: impl Fn(&Pod) -> u16,
    path: &str,
    bound: Duration,
) -> Result<Vec<(String, T)>, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let running = kube::api::ListParams::default()
        .labels(selector)
        .fields("status.phase=Running");
    let listed = pods
        .list(&running)
        .await
        .map_err(|e| format!("cannot list {app}'s pods: {}", super::human_reason(&e)))?
        .items;
    if listed.is_empty() {
        return Err(format!("no running {app} pod in {namespace} (labels {selector})"));
    }
    let asked = listed.iter().map(|pod| {
        let port = port_of(pod);
        async move {
            let name = pod.metadata.name.clone().unwrap_or_default();
            match http_get(client, namespace, &name, port, path, bound).await {
                Ok(a) if a.status == 200 => serde_json::from_slice(&a.body)
                    .map(|value| (format!("{namespace}/{name}"), value))
                    .map_err(|e| format!("pod {name}: its {path} is not the expected JSON: {e}")),
                Ok(a) => Err(format!("pod {name} answered {} to {path}", a.status)),
                Err(e) => Err(format!("pod {name}: {e}")),
            }
        }
    });
    let (answers, refusals): (Vec<_>, Vec<_>) = futures::future::join_all(asked)
        .await
        .into_iter()
        .partition(Result::is_ok);
    if !refusals.is_empty() {
        return Err(refusals
            .into_iter()
            .filter_map(Result::err)
            .collect::<Vec<_>>()
            .join("; "));
    }
    Ok(answers.into_iter().filter_map(Result::ok).collect())
}

async fn get(
    client: &Client,
    namespace: &str,
    pod: &str,
    port: u16,
    path: &str,
) -> Result<PodAnswer, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut forwarder = pods
        .portforward(pod, &[port])
        .await
        .map_err(|e| format!("port-forward refused: {}", super::human_reason(&e)))?;
    let mut stream = forwarder
        .take_stream(port)
        .ok_or_else(|| format!("port-forward gave no stream for port {port}"))?;
    let errors = forwarder.take_error(port);
    // HTTP/1.0: the server ends its answer by closing the connection, so the whole answer is what
    // arrives before the end of the stream. The write side stays open until then: closing it would
    // end the forwarding before the answer arrives.
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: localhost:{port}\r\nAccept: application/json\r\nUser-Agent: meshctl\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("port-forward to port {port}: {e}"))?;
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw).await;
    drop(stream);
    if raw.is_empty() {
        // Nothing came back: the kubelet says why on the port's error channel (nothing listens,
        // the pod is gone).
        let said = match errors {
            Some(error) => tokio::time::timeout(Duration::from_secs(1), error)
                .await
                .ok()
                .flatten(),
            None => None,
        };
        forwarder.abort();
        return Err(match (said, read) {
            (Some(message), _) => format!("port-forward to port {port}: {message}"),
            (None, Err(e)) => format!("port-forward to port {port}: {e}"),
            (None, Ok(_)) => format!("port {port} closed the connection without an answer"),
        });
    }
    forwarder.abort();
    parse_answer(&raw)
}

/// The status and body of a raw HTTP/1 answer.
pub fn parse_answer(raw: &[u8]) -> Result<PodAnswer, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: `{status_line}`"))?;
    Ok(PodAnswer {
        status,
        body: raw[split + 4..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_answer;

    #[test]
    fn an_answer_is_split_into_status_and_body() {
        let answer =
            parse_answer(b"HTTP/1.0 401 Unauthorized\r\nDate: x\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!((answer.status, answer.body.len()), (401, 0));
        let answer =
            parse_answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[{\"id\":\"a\"}]")
                .unwrap();
        assert_eq!(
            (answer.status, answer.body.as_slice()),
            (200, &b"[{\"id\":\"a\"}]"[..])
        );
        assert!(parse_answer(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
