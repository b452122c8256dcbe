//! `tokio-peer`: a straightforward, reasonably optimised tokio + tokio-tungstenite
//! implementation of cloudsocket's surface, to compare against: WebSocket `/ws` with the
//! same login and frames, `POST /admin/{bind,unbind,push}` and `GET /stat?type=app` on a
//! status port, phone↔device relay by docs/protocol.md §4, and UDP 0xE0/0xE1/0xE2/0xE5 plus forward
//! packets (builtin register: a stable negative id per MAC, cookie `<id>|token`).
//!
//! One task per connection plus a writer task draining a bounded queue (batched flushes);
//! tungstenite buffers are kept small (4 KiB read, no write buffering) because the default
//! 128 KiB read buffer would make the idle comparison meaningless (conn-memory.md).
//! Not a product: no upload log, no heartbeat deadlines, no drain.

mod http;
mod hub;
mod udp;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use edge_proto::login::{LoginReply, LoginRequest};
use futures_util::{SinkExt, StreamExt};
use hub::Hub;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};

#[derive(Parser, Debug)]
#[command(
    name = "tokio-peer",
    about = "tokio + tokio-tungstenite peer of cloudsocket"
)]
struct Cli {
    /// WebSocket ports (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1234,1235")]
    port: Vec<u16>,
    /// Status/admin address.
    #[arg(long, default_value = "127.0.0.1:29999")]
    sh: String,
    /// UDP port (0 = none).
    #[arg(long, default_value_t = 7999)]
    udp_port: u16,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Login salt.
    #[arg(long, default_value = edge_proto::login::DEFAULT_SALT)]
    salt: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(serve(cli))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let hub = Arc::new(Hub::new(cli.salt.into_bytes()));
    for port in &cli.port {
        let listener = TcpListener::bind(("0.0.0.0", *port)).await?;
        eprintln!("tokio-peer: WebSocket on :{port}/ws");
        let hub = hub.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(connection(hub.clone(), stream));
                    }
                    Err(e) => {
                        eprintln!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    if cli.udp_port != 0 {
        let sock = Arc::new(tokio::net::UdpSocket::bind(("0.0.0.0", cli.udp_port)).await?);
        eprintln!("tokio-peer: UDP on :{}", cli.udp_port);
        let _ = hub.udp_socket.set(sock.clone());
        tokio::spawn(udp::serve(hub.clone(), sock));
    }
    eprintln!("tokio-peer: status on {}", cli.sh);
    http::serve(hub, &cli.sh).await
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(65536))
        .max_frame_size(Some(65536))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn connection(hub: Arc<Hub>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    // The callback's shape is tungstenite's; its error type is too.
    #[allow(clippy::result_large_err)]
    let check_path = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() == edge_proto::ws::PATH {
            Ok(resp)
        } else {
            let mut e = ErrorResponse::new(None);
            *e.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
            Err(e)
        }
    };
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(config()));
    let Ok(Ok(ws)) = tokio::time::timeout(Duration::from_secs(10), handshake).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let first = match tokio::time::timeout(Duration::from_secs(60), stream.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => Bytes::from(t),
        Ok(Some(Ok(Message::Binary(b)))) => b,
        _ => return,
    };
    let (id, key, reply) = match login(&hub, &first) {
        Ok(v) => v,
        Err(reply) => {
            let mut out = Vec::new();
            reply.write_to(&mut out);
            let _ = sink.send(Message::Binary(out.into())).await;
            let _ = sink.close().await;
            return;
        }
    };
    let mut out = Vec::new();
    reply.write_to(&mut out);
    if sink.send(Message::Binary(out.into())).await.is_err() {
        release(&hub, id, reply);
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Message>(1024);
    let conn = hub.register(key, tx.clone());
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.feed(m).await.is_err() {
                return;
            }
            while let Ok(m) = rx.try_recv() {
                if sink.feed(m).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let mut ids = Vec::new();
    while let Some(Ok(m)) = stream.next().await {
        let payload = match m {
            Message::Binary(b) => b,
            Message::Text(t) => Bytes::from(t),
            Message::Close(_) => break,
            _ => continue,
        };
        if payload.as_ref() == b"p" {
            let _ = tx.try_send(Message::Text("P".into()));
            continue;
        }
        hub.msgs_in
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if payload.len() < 16 {
            break;
        }
        if key < 0 && payload[0] & 0x07 != 3 {
            continue; // an upload: the peer has no upload log
        }
        let dst = i64::from_le_bytes(payload[8..16].try_into().unwrap_or_default());
        ids.clear();
        hub.destinations(key, dst, &mut ids);
        hub.route(&ids, &payload);
    }
    hub.unregister(key, conn);
    release(&hub, id, reply);
    drop(tx);
    writer.abort();
}

/// Verifies a login; returns (login id, session key, reply) or the refusal.
fn login(hub: &Hub, first: &[u8]) -> Result<(i64, i64, LoginReply), LoginReply> {
    let req = LoginRequest::parse(first).map_err(|_| LoginReply::WrongParams)?;
    req.verify(&hub.salt, unix_now(), false)
        .map_err(|r| r.reply())?;
    match req.id {
        id if id < 0 => Ok((id, id, LoginReply::DeviceOk)),
        id if id > 0 && id % 16 == 0 => {
            let k = hub.take_mobile(id).ok_or(LoginReply::WrongId)?;
            Ok((id, id + i64::from(k), LoginReply::PhoneOk(k)))
        }
        _ => Err(LoginReply::WrongId),
    }
}

fn release(hub: &Hub, id: i64, reply: LoginReply) {
    if let LoginReply::PhoneOk(k) = reply {
        hub.release_mobile(id, k);
    }
}
