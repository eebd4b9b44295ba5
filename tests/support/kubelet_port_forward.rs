//! The kubelet's side of `pods/<name>/portforward` over WebSocket, for the stand-ins that answer
//! it (the in-process API server, the real-server tests' proxy; envtest has no kubelet). It
//! follows kubernetes `pkg/kubelet/cri/streaming/portforward/websocket.go`,
//! `handleWebSocketStreams`: subprotocol `v4.channel.k8s.io`; per requested port a pair of
//! channels, data `2i` and error `2i+1`, each opened by one frame holding the port as a
//! little-endian u16; what the client sends on the data channel goes to the pod's port and what
//! the port answers comes back on it; a port that cannot be reached says so once on its error
//! channel; the connection closes when every port's stream has ended.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{SinkExt as _, StreamExt as _};
use hyper::Request;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio_tungstenite::tungstenite::protocol::{Message, Role};

/// Connects to a port of the pod, as the kubelet dials `localhost:<port>` in the pod's network
/// namespace: a byte stream, or why nothing answers there.
pub type PodPorts = Arc<dyn Fn(u16) -> BoxFuture<'static, Result<DuplexStream, String>> + Send + Sync>;

/// Accepts the upgrade of `request` (a `pods/<name>/portforward?ports=…` request) and forwards its
/// ports to `pod`. Returns the headers of the `101 Switching Protocols` answer, or the status and
/// message of a refusal, as the kubelet refuses a request without ports or a WebSocket offer.
pub fn accept(
    request: &mut Request<Incoming>,
    pod: PodPorts,
) -> Result<http::response::Builder, (u16, String)> {
    let query = request.uri().query().unwrap_or_default().to_string();
    let ports: Vec<u16> = super::query_values(&query, "ports")
        .iter()
        .flat_map(|v| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| (400, format!("unable to parse {p:?} as a port")))
        })
        .collect::<Result<_, _>>()?;
    if ports.is_empty() {
        return Err((400, "query parameter \"port\" is required".into()));
    }
    let key = request
        .headers()
        .get("sec-websocket-key")
        .and_then(|k| k.to_str().ok())
        .map(str::to_string)
        .ok_or((400, "port forwarding needs a WebSocket upgrade".to_string()))?;
    let offered = request
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !offered.split(',').any(|p| p.trim() == "v4.channel.k8s.io") {
        return Err((400, format!("no supported port-forward protocol in {offered:?}")));
    }
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        forward(ws, ports, pod).await;
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Ok(http::Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", accept)
        .header("sec-websocket-protocol", "v4.channel.k8s.io"))
}

async fn forward<S>(ws: tokio_tungstenite::WebSocketStream<S>, ports: Vec<u16>, pod: PodPorts)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let frame = |channel: usize, bytes: &[u8]| Message::binary([&[channel as u8][..], bytes].concat());
    for (i, port) in ports.iter().enumerate() {
        for channel in [2 * i, 2 * i + 1] {
            if sink.send(frame(channel, &port.to_le_bytes())).await.is_err() {
                return;
            }
        }
    }
    let (from_pod, mut to_client) = tokio::sync::mpsc::channel::<(usize, Option<Vec<u8>>)>(16);
    let mut writers = Vec::new();
    let mut open = 0;
    for (i, port) in ports.iter().enumerate() {
        match pod(*port).await {
            Ok(stream) => {
                let (mut reader, writer) = tokio::io::split(stream);
                writers.push(Some(writer));
                open += 1;
                let from_pod = from_pod.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 16 * 1024];
                    loop {
                        match reader.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if from_pod.send((2 * i, Some(buffer[..n].to_vec()))).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = from_pod.send((2 * i, None)).await;
                });
            }
            Err(why) => {
                writers.push(None);
                let _ = sink.send(frame(2 * i + 1, why.as_bytes())).await;
            }
        }
    }
    drop(from_pod);
    while open > 0 {
        tokio::select! {
            message = source.next() => match message {
                Some(Ok(Message::Binary(bytes))) if !bytes.is_empty() => {
                    let channel = bytes[0] as usize;
                    if let Some(Some(writer)) = writers.get_mut(channel / 2).filter(|_| channel.is_multiple_of(2)) {
                        let _ = writer.write_all(&bytes[1..]).await;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            chunk = to_client.recv() => match chunk {
                Some((channel, Some(bytes))) => {
                    if sink.send(frame(channel, &bytes)).await.is_err() {
                        return;
                    }
                }
                Some((_, None)) => open -= 1,
                None => break,
            },
        }
    }
    let _ = sink.close().await;
}
