//! `tokio-peer`: an idiomatic, carefully tuned tokio implementation of cloudsocket's
//! surface, to compare against: WebSocket `/ws` with the same login and frames,
//! `POST /admin/{bind,unbind,push}` and `GET /stat?type=app` on a status port, phone↔device
//! relay by docs/protocol.md §4, and UDP 0xE0/0xE1/0xE2/0xE5 plus forward packets (builtin
//! register: a stable negative id per MAC, cookie `<id>|token`).
//!
//! Shaped like cloudsocket's shards (benches/peers/README.md says what is and is not the
//! same): one thread per core, pinned, each with its own `current_thread` runtime, a
//! `LocalSet`, its own `SO_REUSEPORT` listeners and its own state in an `Rc` (no lock on the
//! message path; other threads are reached through bounded mpsc inboxes). One task per
//! connection `select!`s on its socket and its wake: reads go into the thread's shared read
//! buffer and are parsed with edge-proto's frame codec (the node's own); frames for a
//! connection are appended to its outbox and written with one `write_all` per wake.
//! `--tls-ports` adds `wss://` listeners: tokio-rustls's `TlsAcceptor` (the node's own
//! rustls `ServerConfig`) in front of the same connection task, generic over the stream.
//! mimalloc is the global allocator. Not a product: no upload log, no heartbeat deadlines,
//! no drain, no clustering.

mod http;
mod hub;
mod udp;

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use edge_proto::login::{LoginReply, LoginRequest};
use edge_proto::ws::{self, OpCode};
use hub::{Cmd, Conn, Hub, MAX_PAYLOAD, Shared};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tuning::cores::{CoreList, CoreSpec};

#[global_allocator]
static GLOBAL: tuning::Allocator = tuning::Allocator;

#[derive(Parser, Debug)]
#[command(name = "tokio-peer", about = "tokio peer of cloudsocket")]
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
    /// Runtime threads, one per core, pinned to the first cores this process may use
    /// (`taskset` narrows them). Ignored with --cores.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Cores to run threads on, as cloudsocket's `--cores`: `0-3`, `0,2,4-7` or `all`
    /// (one thread per core, pinned).
    #[arg(long)]
    cores: Option<String>,
    /// Login salt.
    #[arg(long, default_value = edge_proto::login::DEFAULT_SALT)]
    salt: String,
    /// `wss://` ports (comma-separated; none by default): TLS, then the same `/ws`.
    #[arg(long, value_delimiter = ',')]
    tls_ports: Vec<u16>,
    /// PEM certificate chain for `--tls-ports`.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or RSA) for `--tls-ports`.
    #[arg(long)]
    tls_key: Option<PathBuf>,
}

/// From the accept to the end of the WebSocket upgrade (TLS handshake included), as the
/// node's upgrade deadline.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one runtime thread starts with.
struct Parts {
    index: usize,
    core: usize,
    listeners: Vec<std::net::TcpListener>,
    tls_listeners: Vec<std::net::TcpListener>,
    udp: Option<std::net::UdpSocket>,
    status: Option<std::net::TcpListener>,
    inbox: mpsc::Receiver<Cmd>,
    /// The TLS acceptor (one `ServerConfig` shared by every thread), with `--tls-ports`.
    tls: Option<TlsAcceptor>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cores = cores(&cli)?;
    let n = cores.len();
    if n > hub::MAX_THREADS {
        bail!("at most {} threads", hub::MAX_THREADS);
    }
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel(hub::INBOX)).unzip();
    let shared = Arc::new(Shared::new(cli.salt.clone().into_bytes(), senders));
    let tls = tls_acceptor(&cli)?;
    let mut parts = Vec::with_capacity(n);
    for (index, (core, inbox)) in cores.iter().zip(receivers).enumerate() {
        let listeners = cli
            .port
            .iter()
            .map(|p| tcp_listener(SocketAddr::from(([0, 0, 0, 0], *p)), n > 1))
            .collect::<io::Result<Vec<_>>>()
            .context("WebSocket listener")?;
        let tls_listeners = cli
            .tls_ports
            .iter()
            .map(|p| tcp_listener(SocketAddr::from(([0, 0, 0, 0], *p)), n > 1))
            .collect::<io::Result<Vec<_>>>()
            .context("TLS WebSocket listener")?;
        parts.push(Parts {
            index,
            core: *core,
            listeners,
            tls_listeners,
            udp: None,
            status: None,
            inbox,
            tls: tls.clone(),
        });
    }
    if cli.udp_port != 0 {
        let sock = std::net::UdpSocket::bind(("0.0.0.0", cli.udp_port)).context("UDP socket")?;
        sock.set_nonblocking(true)?;
        parts[0].udp = Some(sock);
        eprintln!("tokio-peer: UDP on :{} (thread 0)", cli.udp_port);
    }
    let status =
        std::net::TcpListener::bind(&cli.sh).with_context(|| format!("--sh {}", cli.sh))?;
    status.set_nonblocking(true)?;
    parts[0].status = Some(status);
    for port in &cli.port {
        eprintln!("tokio-peer: WebSocket on :{port}/ws");
    }
    for port in &cli.tls_ports {
        eprintln!("tokio-peer: WebSocket over TLS on :{port}/ws");
    }
    eprintln!("tokio-peer: status on {}", cli.sh);
    eprintln!(
        "tokio-peer: {n} thread(s) on core(s) {}",
        CoreList::from_iter(cores)
    );
    let threads: Vec<_> = parts
        .into_iter()
        .map(|p| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("peer-{}", p.index))
                .spawn(move || run_thread(shared, p))
        })
        .collect::<io::Result<_>>()?;
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a runtime thread panicked"))??;
    }
    Ok(())
}

/// The cores to run on: `--cores` as cloudsocket reads it, else the first `--threads` cores
/// this process may use.
fn cores(cli: &Cli) -> anyhow::Result<Vec<usize>> {
    let online = CoreList::online().context("sched_getaffinity")?;
    if let Some(text) = &cli.cores {
        let spec: CoreSpec = text.parse().context("--cores")?;
        let plan = tuning::cores::plan(&spec.resolve(&online), &online, 0).context("--cores")?;
        return Ok(plan.shards);
    }
    let cores: Vec<usize> = online.iter().take(cli.threads.max(1)).collect();
    if cores.len() < cli.threads {
        bail!(
            "--threads {}: only {} core(s) available ({online})",
            cli.threads,
            cores.len()
        );
    }
    Ok(cores)
}

/// The `wss://` acceptor for `--tls-ports`: the node's own server configuration
/// (`edge::tls`, read once, not watched for reloads): rustls's `ring` provider with X25519
/// first, TLS 1.3 and 1.2, ticket resumption under rotating keys, two TLS 1.3 tickets.
fn tls_acceptor(cli: &Cli) -> anyhow::Result<Option<TlsAcceptor>> {
    if cli.tls_ports.is_empty() {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) else {
        bail!("--tls-ports needs --tls-cert and --tls-key");
    };
    let tls = edge::tls::ServerTls::load(cert, key).context("--tls-cert/--tls-key")?;
    Ok(Some(TlsAcceptor::from(tls.config())))
}

/// A non-blocking listener, backlog 4096 (as cloudsocket's); `SO_REUSEPORT` when several
/// threads listen on the same port.
fn tcp_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

fn run_thread(shared: Arc<Shared>, parts: Parts) -> anyhow::Result<()> {
    if let Err(e) = tuning::cores::pin_current_thread(parts.core) {
        eprintln!(
            "tokio-peer: thread {} not pinned to core {}: {e}",
            parts.index, parts.core
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let hub = Rc::new(Hub::new(parts.index, shared));
        for listener in parts.listeners {
            let listener = TcpListener::from_std(listener)?;
            tokio::task::spawn_local(accept(hub.clone(), listener, None));
        }
        for listener in parts.tls_listeners {
            let listener = TcpListener::from_std(listener)?;
            tokio::task::spawn_local(accept(hub.clone(), listener, parts.tls.clone()));
        }
        if let Some(sock) = parts.udp {
            let sock = Rc::new(tokio::net::UdpSocket::from_std(sock)?);
            tokio::task::spawn_local(udp::serve(hub.clone(), sock));
        }
        if let Some(status) = parts.status {
            tokio::task::spawn_local(http::serve(hub.clone(), TcpListener::from_std(status)?));
        }
        hub.serve_inbox(parts.inbox).await;
        Ok(())
    })
}

/// Accepts connections: plain ones go straight to [`connection`], those of a TLS listener
/// through the TLS handshake first ([`tls_connection`]).
async fn accept(hub: Rc<Hub>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let deadline = Instant::now() + UPGRADE_TIMEOUT;
                match &tls {
                    None => {
                        tokio::task::spawn_local(connection(hub.clone(), stream, deadline));
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        tokio::task::spawn_local(tls_connection(
                            hub.clone(),
                            acceptor,
                            stream,
                            deadline,
                        ));
                    }
                }
            }
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads the upgrade request into `buf` and answers it; `Some(bytes of the request)` once
/// upgraded, `None` after a refusal.
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> io::Result<Option<usize>> {
    loop {
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
        let mut out = Vec::new();
        let consumed = match ws::parse_upgrade(buf) {
            Ok(None) => continue,
            Ok(Some(up)) => {
                ws::write_accept(&mut out, up.key.as_bytes(), up.protocol);
                Some(up.consumed)
            }
            Err(e) => {
                ws::write_http_error(&mut out, e);
                None
            }
        };
        stream.write_all(&out).await?;
        return Ok(consumed);
    }
}

/// Reads the first data frame (the login string) into `buf` (after the upgrade); returns
/// where its payload lies and the frame's length.
async fn first_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> io::Result<Option<(std::ops::Range<usize>, usize)>> {
    loop {
        match ws::next_frame(buf, MAX_PAYLOAD) {
            Ok(Some(f)) if matches!(f.opcode, OpCode::Text | OpCode::Binary) => {
                return Ok(Some((f.payload, f.consumed)));
            }
            Ok(Some(f)) if f.opcode == OpCode::Close => return Ok(None),
            Ok(Some(f)) => {
                buf.drain(..f.consumed);
                continue;
            }
            Ok(None) => {}
            Err(_) => return Ok(None),
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// A `wss://` connection: the TLS handshake (tokio-rustls, rustls's buffered
/// `ServerConnection`), within the upgrade deadline, then the same task as a plain one.
async fn tls_connection(hub: Rc<Hub>, acceptor: TlsAcceptor, stream: TcpStream, deadline: Instant) {
    let Ok(Ok(stream)) = tokio::time::timeout_at(deadline, acceptor.accept(stream)).await else {
        return;
    };
    connection(hub, stream, deadline).await;
}

/// One connection's task, over a `TcpStream` or a TLS stream over one: upgrade (by
/// `deadline`), login, then reads and outbox flushes until it closes.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    hub: Rc<Hub>,
    mut stream: S,
    deadline: Instant,
) {
    let mut buf = Vec::with_capacity(1024);
    let upgraded = tokio::time::timeout_at(deadline, upgrade(&mut stream, &mut buf));
    let Ok(Ok(Some(consumed))) = upgraded.await else {
        return;
    };
    buf.drain(..consumed);
    let first = tokio::time::timeout(Duration::from_secs(60), first_frame(&mut stream, &mut buf));
    let Ok(Ok(Some((payload, consumed)))) = first.await else {
        return;
    };
    let (id, key, reply) = match login(&hub.shared, &buf[payload]) {
        Ok(v) => v,
        Err(reply) => {
            let mut out = Vec::new();
            let mut body = Vec::new();
            reply.write_to(&mut body);
            ws::write_frame(&mut out, OpCode::Binary, &body);
            ws::write_close(&mut out, ws::CLOSE_NORMAL);
            let _ = stream.write_all(&out).await;
            return;
        }
    };
    // What the client sent after its login waits for the first read, like a partial frame.
    buf.drain(..consumed);
    let mut carry = buf;
    carry.shrink_to_fit();
    let conn = Rc::new(Conn::default());
    let mut body = Vec::new();
    reply.write_to(&mut body);
    hub.queue(&conn, OpCode::Binary, &body);
    hub.join(key, conn.clone()).await;
    let mut alive = carry.is_empty() || process(&hub, &conn, key, &mut carry, 0);
    while alive {
        if flush(&hub, &conn, &mut stream).await.is_err() {
            break;
        }
        tokio::select! {
            biased;
            read = read_scratch(&hub, &mut stream, &carry) => {
                alive = match read {
                    Ok(0) | Err(_) => false,
                    Ok(n) => process(&hub, &conn, key, &mut carry, n),
                };
            }
            () = conn.wake.notified() => {}
        }
    }
    let _ = flush(&hub, &conn, &mut stream).await;
    hub.leave(key, &conn).await;
    if let LoginReply::PhoneOk(k) = reply {
        hub.shared.release_mobile(id, k);
    }
}

/// Reads from the socket into the thread's shared read buffer, after the bytes `carry`
/// holds over from the last read. The buffer is borrowed only inside one poll, so every
/// connection of the thread shares it; the caller parses it before it next yields.
/// `poll_read` (not `readable` + `try_read`) keeps tokio's "a short read drained the socket"
/// rule: one `recv` per wake.
/// Over TLS, tokio-rustls reads ciphertext into rustls's own buffer and copies the
/// decrypted bytes from rustls's plaintext buffer into the shared one.
fn read_scratch<'a, S: AsyncRead + Unpin>(
    hub: &'a Hub,
    stream: &'a mut S,
    carry: &'a [u8],
) -> impl Future<Output = io::Result<usize>> + 'a {
    poll_fn(move |cx| {
        let mut scratch = hub.scratch.borrow_mut();
        scratch[..carry.len()].copy_from_slice(carry);
        let mut rb = ReadBuf::new(&mut scratch[carry.len()..]);
        match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// Handles the frames in the shared read buffer (`carry` then `n` new bytes) and keeps a
/// trailing partial frame in `carry`; `false` when the connection should close. With `n` 0
/// the bytes are taken from `carry` itself (what followed the login).
fn process(hub: &Hub, conn: &Conn, key: i64, carry: &mut Vec<u8>, n: usize) -> bool {
    let mut scratch = hub.scratch.borrow_mut();
    let len = carry.len() + n;
    if n == 0 {
        scratch[..len].copy_from_slice(carry);
    }
    let buf = &mut scratch[..len];
    let mut at = 0;
    let mut alive = true;
    while alive && at < len {
        let frame = match ws::next_frame(&mut buf[at..], MAX_PAYLOAD) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                close(hub, conn, e.close_code());
                return false;
            }
        };
        let payload = &buf[at + frame.payload.start..at + frame.payload.end];
        at += frame.consumed;
        alive = match frame.opcode {
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                on_message(hub, conn, key, payload)
            }
            OpCode::Ping => {
                hub.queue(conn, OpCode::Pong, payload);
                true
            }
            OpCode::Pong => true,
            OpCode::Close => {
                close(
                    hub,
                    conn,
                    ws::parse_close_payload(payload).unwrap_or(ws::CLOSE_NORMAL),
                );
                false
            }
        };
    }
    carry.clear();
    carry.extend_from_slice(&buf[at..]);
    if carry.is_empty() && carry.capacity() > 0 {
        *carry = Vec::new(); // an idle connection holds no read buffer
    }
    alive
}

fn close(hub: &Hub, conn: &Conn, code: u16) {
    hub.queue(conn, OpCode::Close, &code.to_be_bytes());
}

/// One data message from session `key`: the heartbeat `p`, or a message to relay.
fn on_message(hub: &Hub, conn: &Conn, key: i64, payload: &[u8]) -> bool {
    if payload == b"p" {
        hub.queue(conn, OpCode::Text, b"P");
        return true;
    }
    hub.counters()
        .msgs_in
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if payload.len() < 16 {
        return false;
    }
    if key < 0 && payload[0] & 0x07 != 3 {
        return true; // an upload: the peer has no upload log
    }
    hub.relay(key, payload);
    true
}

/// Writes the outbox: one `write_all` per batch of frames queued since the last flush,
/// then one `flush` if anything was written. Over TLS, `write_all` seals the batch into
/// rustls's outgoing buffer and writes what the socket takes; the `flush` writes whatever
/// is left there (a no-op on a plain `TcpStream`).
async fn flush<S: AsyncWrite + Unpin>(hub: &Hub, conn: &Conn, stream: &mut S) -> io::Result<()> {
    let mut wrote = false;
    loop {
        let out = hub.take_outbox(conn);
        if out.is_empty() {
            break;
        }
        let written = stream.write_all(&out).await;
        hub.recycle(out);
        written?;
        wrote = true;
    }
    if wrote {
        stream.flush().await?;
    }
    Ok(())
}

/// Verifies a login; returns (login id, session key, reply) or the refusal.
fn login(shared: &Shared, first: &[u8]) -> Result<(i64, i64, LoginReply), LoginReply> {
    let req = LoginRequest::parse(first).map_err(|_| LoginReply::WrongParams)?;
    req.verify(&shared.salt, unix_now(), false)
        .map_err(|r| r.reply())?;
    match req.id {
        id if id < 0 => Ok((id, id, LoginReply::DeviceOk)),
        id if id > 0 && id % 16 == 0 => {
            let k = shared.take_mobile(id).ok_or(LoginReply::WrongId)?;
            Ok((id, id + i64::from(k), LoginReply::PhoneOk(k)))
        }
        _ => Err(LoginReply::WrongId),
    }
}
