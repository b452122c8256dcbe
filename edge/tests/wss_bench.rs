//! A measurement, not a check (ignored by default; `benches/RESULTS.md` records its output):
//! the node runs as its own process on core 1 (`cloudsocket run --cores 1`, release build
//! when run with `--release`), this process on core 0 opens logged-in phones to it, and
//!
//! 1. memory per idle logged-in connection, `ws` and `wss` (a fresh node each), as slopes
//!    from 5 000 to `WSS_BENCH_CONNS` (default 15 000) connections, so one-time allocations
//!    of the first thousands are left out: user space (the node's RSS), and the kernel's
//!    (slab caches and TCP buffer pages, when run as root: both ends of a loopback
//!    connection are this kernel's sockets, so the delta is per two sockets);
//! 2. server CPU per TLS handshake, full and resumed: the node's utime+stime over 2 000 of
//!    each (connect, handshake, close), from `/proc/<pid>/stat`.
//!
//! ```sh
//! taskset -c 0 cargo test --release -p edge --test wss_bench -- --ignored --nocapture
//! ```

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::Message;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Node {
    child: Child,
    ws: SocketAddr,
    wss: SocketAddr,
    status: SocketAddr,
}

impl Node {
    fn start(dir: &Path) -> Node {
        let (ws, wss, status) = (free_port(), free_port(), free_port());
        let mut child = Command::new("taskset")
            .args([
                "-c",
                "1",
                env!("CARGO_BIN_EXE_cloudsocket"),
                "run",
                "--cores",
                "1",
            ])
            .args(["--ports", &format!("127.0.0.1:{ws}")])
            .args(["--tls-ports", &format!("127.0.0.1:{wss}")])
            .arg("--tls-cert")
            .arg(dir.join("cert.pem"))
            .arg("--tls-key")
            .arg(dir.join("key.pem"))
            .args(["--sh", &format!("127.0.0.1:{status}")])
            .args(["--hudp", &format!("127.0.0.1:{}", free_port())])
            .args(["--hhttp", &format!("127.0.0.1:{}", free_port())])
            .arg("--upload-log")
            .arg(dir.join("uploads.log"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("taskset and the cloudsocket binary");
        let out = BufReader::new(child.stdout.take().unwrap());
        for line in out.lines() {
            if line.unwrap_or_default().starts_with("listening: status") {
                break;
            }
        }
        Node {
            child,
            ws: format!("127.0.0.1:{ws}").parse().unwrap(),
            wss: format!("127.0.0.1:{wss}").parse().unwrap(),
            status: format!("127.0.0.1:{status}").parse().unwrap(),
        }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    /// utime + stime of the node, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn login_string(id: i64) -> String {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // A 300 s heartbeat period: idle phones stay up for the whole measurement.
    let sig = edge_proto::login::signature(id, ts, 300, edge_proto::login::DEFAULT_SALT.as_bytes());
    format!("{id}|{ts}|300|{}", std::str::from_utf8(&sig).unwrap())
}

fn client_config(cert: &CertificateDer<'static>, resume: bool) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    #[allow(deprecated, reason = "the server's provider: ring")]
    let mut provider = rustls::crypto::ring::default_provider();
    // As phones' TLS stacks do: X25519 first (ring's default list starts with P-384).
    provider
        .kx_groups
        .sort_by_key(|g| g.name() != rustls::NamedGroup::X25519);
    let provider = Arc::new(provider);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resume {
        config.resumption = Resumption::disabled();
    }
    Arc::new(config)
}

enum Phone {
    Plain(Box<tungstenite::WebSocket<TcpStream>>),
    Tls(Box<tungstenite::WebSocket<StreamOwned<ClientConnection, TcpStream>>>),
}

fn tls_stream(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> StreamOwned<ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    StreamOwned::new(ClientConnection::new(config.clone(), name).unwrap(), tcp)
}

fn phone(node: &Node, tls: Option<&Arc<ClientConfig>>, id: i64) -> Phone {
    let mut phone = match tls {
        Some(config) => {
            let stream = tls_stream(node.wss, config);
            let (ws, _) = tungstenite::client(format!("ws://{}/ws", node.wss), stream).unwrap();
            Phone::Tls(Box::new(ws))
        }
        None => {
            let tcp = TcpStream::connect(node.ws).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            Phone::Plain(Box::new(
                tungstenite::client(format!("ws://{}/ws", node.ws), tcp)
                    .unwrap()
                    .0,
            ))
        }
    };
    let login = Message::text(login_string(id));
    let reply = match &mut phone {
        Phone::Plain(ws) => ws.send(login).and_then(|()| ws.read()),
        Phone::Tls(ws) => ws.send(login).and_then(|()| ws.read()),
    };
    assert!(reply.is_ok(), "login of {id}: {reply:?}");
    phone
}

/// An idle slope: user-space bytes per connection (the node's RSS), and kernel bytes per
/// socket (both ends of each loopback connection are sockets of this kernel, so the delta
/// is halved), between 5 000 and `total` logged-in phones; and the RSS at both points.
struct Slope {
    user: f64,
    kernel: Option<f64>,
    rss_kib: (u64, u64),
}

fn idle_slope(node: &Node, tls: Option<&Arc<ClientConfig>>, total: usize) -> Slope {
    let mut phones = Vec::with_capacity(total);
    let (mut at_5k, mut kernel_5k) = (0, None);
    for i in 0..total {
        phones.push(phone(node, tls, 16 * (i as i64 + 1)));
        if i + 1 == 5_000 {
            std::thread::sleep(Duration::from_millis(500));
            (at_5k, kernel_5k) = (node.rss_kib(), tuning::memory::kernel_bytes());
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let (at_total, kernel_total) = (node.rss_kib(), tuning::memory::kernel_bytes());
    let span = (total - 5_000) as f64;
    let kernel = kernel_5k
        .zip(kernel_total)
        .map(|(a, b)| (b as f64 - a as f64) / (2.0 * span));
    drop(phones);
    Slope {
        user: (at_total - at_5k) as f64 * 1024.0 / span,
        kernel,
        rss_kib: (at_5k, at_total),
    }
}

/// Server CPU (µs) per connect + TLS handshake + WebSocket upgrade + close, over `n`,
/// and the rate the client managed. (The upgrade's answer also carries the TLS 1.3 tickets
/// a resuming client keeps.)
fn handshake_cost(node: &Node, config: &Arc<ClientConfig>, n: usize) -> (f64, f64) {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (before, started) = (node.cpu_ticks(), Instant::now());
    for _ in 0..n {
        let stream = tls_stream(node.wss, config);
        let (mut ws, _) = tungstenite::client(format!("ws://{}/ws", node.wss), stream).unwrap();
        let _ = ws.close(None);
    }
    let took = started.elapsed().as_secs_f64();
    let cpu = (node.cpu_ticks() - before) as f64 / hz;
    (cpu * 1e6 / n as f64, n as f64 / took)
}

/// A counter's total over the shards in the node's `/metrics`.
fn metric(node: &Node, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(node.status).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
#[ignore = "a measurement: run it with --release --ignored --nocapture (see the file's doc)"]
fn idle_memory_and_handshake_cost_of_wss() {
    let total: usize = std::env::var("WSS_BENCH_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15_000);
    let dir = std::env::temp_dir().join(format!("cs-wss-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let der = cert.der().clone();
    let fresh = client_config(&der, false);
    if let Ok(n) = std::env::var("WSS_BENCH_HANDSHAKES_ONLY") {
        // For a profiler: only handshakes, `n` of each kind, on one node.
        let n: usize = n.parse().unwrap_or(20_000);
        let node = Node::start(&dir);
        println!("node pid {}", node.child.id());
        let (full_us, _) = handshake_cost(&node, &fresh, n);
        let (resumed_us, _) = handshake_cost(&node, &client_config(&der, true), n);
        println!("handshakes only: full {full_us:.0} us, resuming {resumed_us:.0} us");
        return;
    }
    for round in 0..2 {
        let node = Node::start(&dir);
        let report = |kind: &str, s: &Slope| {
            let kernel = s
                .kernel
                .map_or("unreadable".to_owned(), |k| format!("{k:.0} B/socket"));
            let (a, b) = s.rss_kib;
            println!(
                "round {round} {kind}: user {:.0} B/conn, kernel {kernel} (RSS {a} KiB at 5000, {b} KiB at {total})",
                s.user
            );
        };
        report("ws ", &idle_slope(&node, None, total));
        drop(node);
        let node = Node::start(&dir);
        report("wss", &idle_slope(&node, Some(&fresh), total));
        let (full_us, full_rate) = handshake_cost(&node, &fresh, 2_000);
        let resuming = client_config(&der, true);
        let resumed_before = metric(&node, "cloudsocket_tls_resumptions_total");
        let (resumed_us, resumed_rate) = handshake_cost(&node, &resuming, 2_000);
        let resumed = metric(&node, "cloudsocket_tls_resumptions_total") - resumed_before;
        println!(
            "round {round} connect+handshake+upgrade+close: full {full_us:.0} us server CPU each ({full_rate:.0}/s), resuming {resumed_us:.0} us ({resumed_rate:.0}/s; {resumed} of 2000 resumed)"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
