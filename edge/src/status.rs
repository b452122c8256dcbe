//! The status and admin HTTP endpoint (`--sh`, loopback by default), run as glommio
//! tasks on the endpoints thread (`endpoints`): `/` (the live status page, `status_page.html`), `/stat` (the
//! original's index and `type=app` counters), `/metrics` (Prometheus), and the admin calls `/admin/bind`, `/admin/unbind`, `/admin/push` that
//! go to the bus sidecar. With `--admin-token`, `/admin/*` needs `Authorization: Bearer`;
//! `/stat` and `/metrics` stay open. Also the `udpaddr` endpoint of docs/protocol.md §9.2.
//!
//! HTTP itself (parsing, deadlines, connection caps) is [`crate::http`]. It reads counters
//! and sends admin requests; it holds no node state.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bus::messages::{Admin, AdminRequest};
use crossbeam_channel::Sender;
use glommio::net::{TcpListener, TcpStream};

use crate::http::{Gate, HttpCounters, Read, read_request, respond};
pub use crate::http::{Request, parse_head};
use crate::metrics::{NodeMetrics, bump};

/// The live status page (`GET /`): plain HTML and JavaScript reading `/metrics` once a
/// second, compiled into the binary.
const STATUS_PAGE: &str = include_str!("status_page.html");

/// The status endpoint, ready to serve.
pub struct StatusServer {
    /// The bound listening socket.
    pub listener: OwnedFd,
    /// Every shard's counters.
    pub metrics: NodeMetrics,
    /// Where admin requests go.
    pub admin: Sender<AdminRequest>,
    /// The bearer token `/admin/*` needs, if any.
    pub admin_token: Option<String>,
}

/// Reads a message id with automatic base detection (`0x36`, `54`, `066`), like the
/// `PubCommonMsg:<id>` channel names.
pub fn parse_msg_id(text: &str) -> Option<u16> {
    let text = text.trim();
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        u16::from_str_radix(hex, 16).ok()
    } else if text.len() > 1 && text.starts_with('0') {
        u16::from_str_radix(&text[1..], 8).ok()
    } else {
        text.parse().ok()
    }
}

/// What to do for a request: an immediate answer, or an admin request for the bus.
pub enum Route {
    /// Status code, content type, body.
    Answer(u16, &'static str, String),
    /// Forward to the bus and answer with its reply.
    Admin(Admin),
}

/// Routes a request (pure, for tests). With `token` set, `/admin/*` without it is 401.
pub fn route(request: &Request, metrics: &NodeMetrics, token: Option<&str>) -> Route {
    if let Some(token) = token
        && request.path.starts_with("/admin/")
        && !request
            .bearer
            .as_deref()
            .is_some_and(|presented| edge_proto::secret::eq(token.as_bytes(), presented.as_bytes()))
    {
        bump(&metrics.http.unauthorized);
        return Route::Answer(
            401,
            "text/plain",
            "admin calls need the bearer token\n".into(),
        );
    }
    let bad = |why: &str| Route::Answer(400, "text/plain", format!("{why}\n"));
    let pair = || -> Option<(i64, i64)> {
        Some((
            request.param("device")?.parse().ok()?,
            request.param("user")?.parse().ok()?,
        ))
    };
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/stat") => match request.param("type") {
            None => Route::Answer(200, "text/html", "<html><body><a href=\"/\">status</a> <a href=\"/stat?type=app\">app</a> <a href=\"/metrics\">metrics</a></body></html>\n".into()),
            Some("app") => Route::Answer(200, "application/json", metrics.render_app_json()),
            Some(_) => Route::Answer(404, "text/plain", "unknown type\n".into()),
        },
        ("GET", "/") => Route::Answer(200, "text/html; charset=utf-8", STATUS_PAGE.into()),
        ("GET", "/metrics") => Route::Answer(200, "text/plain; version=0.0.4", metrics.render_prometheus()),
        ("POST", "/admin/bind") => match pair() {
            Some((device, user)) => Route::Admin(Admin::Bind { device, user }),
            None => bad("need device=<id>&user=<id>"),
        },
        ("POST", "/admin/unbind") => match pair() {
            Some((device, user)) => Route::Admin(Admin::Unbind { device, user }),
            None => bad("need device=<id>&user=<id>"),
        },
        ("POST", "/admin/push") => {
            let ids: Option<Vec<i64>> = request.param("ids").map(|v| v.split(',').filter_map(|i| i.trim().parse().ok()).collect());
            match (ids, request.param("msgid").and_then(parse_msg_id)) {
                (Some(ids), Some(msg_id)) if !ids.is_empty() => {
                    Route::Admin(Admin::Push { ids, msg_id, body: request.body.clone() })
                }
                _ => bad("need ids=<id,id,...>&msgid=<n> and the body to push"),
            }
        }
        (_, "/stat" | "/metrics" | "/admin/bind" | "/admin/unbind" | "/admin/push") => {
            Route::Answer(405, "text/plain", "method not allowed\n".into())
        }
        _ => Route::Answer(404, "text/plain", "not found\n".into()),
    }
}

impl StatusServer {
    /// Serves until the listener fails.
    pub async fn serve(self) {
        // SAFETY: the descriptor is a bound, listening TCP socket we own.
        let listener = unsafe { TcpListener::from_raw_fd(self.listener.into_raw_fd()) };
        let (gate, token) = (Gate::default(), self.admin_token.map(Rc::<str>::from));
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    let Some(admitted) = gate.admit(&self.metrics.http) else {
                        continue;
                    };
                    let metrics = self.metrics.clone();
                    let admin = self.admin.clone();
                    let token = token.clone();
                    glommio::spawn_local(async move {
                        let _ = handle(stream, metrics, admin, token.as_deref()).await;
                        drop(admitted);
                    })
                    .detach();
                }
                Err(e) => {
                    tracing::warn!("status endpoint: accept: {e}");
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn handle(
    mut stream: TcpStream,
    metrics: NodeMetrics,
    admin: Sender<AdminRequest>,
    token: Option<&str>,
) -> std::io::Result<()> {
    let request = match read_request(&mut stream, &metrics.http).await {
        Read::Request(request) => request,
        Read::Bad(why) => {
            return respond(&mut stream, 400, "text/plain", &format!("{why}\n")).await;
        }
        Read::Gone => return Ok(()),
    };
    match route(&request, &metrics, token) {
        Route::Answer(code, kind, body) => respond(&mut stream, code, kind, &body).await,
        Route::Admin(_) if metrics.upgrade.in_progress.load(Ordering::Relaxed) => {
            // Its effect could land in a shard that already handed its state over.
            respond(
                &mut stream,
                503,
                "text/plain",
                "upgrading: retry in a second\n",
            )
            .await
        }
        Route::Admin(a) => {
            let (tx, rx) = crossbeam_channel::bounded(1);
            if admin
                .try_send(AdminRequest {
                    admin: a,
                    reply: tx,
                })
                .is_err()
            {
                return respond(&mut stream, 503, "text/plain", "bus busy\n").await;
            }
            for _ in 0..5000 {
                match rx.try_recv() {
                    Ok(Ok(text)) => {
                        return respond(&mut stream, 200, "text/plain", &format!("{text}\n")).await;
                    }
                    Ok(Err(text)) => {
                        return respond(&mut stream, 400, "text/plain", &format!("{text}\n")).await;
                    }
                    Err(_) => glommio::timer::sleep(Duration::from_millis(1)).await,
                }
            }
            respond(&mut stream, 504, "text/plain", "bus did not answer\n").await
        }
    }
}

/// The `udpaddr` endpoint of docs/protocol.md §9.2 on `--hhttp`. It asks every shard's
/// session table (no side map to keep in step).
pub struct UdpAddrServer {
    /// The bound listening socket.
    pub listener: OwnedFd,
    /// Every shard's inbox.
    pub shards: Vec<bus::messages::ShardInbox>,
    /// Where its refusals are counted.
    pub counters: Arc<HttpCounters>,
}

/// What a `udpaddr` request asks: the device id, or the answer to give right away.
pub fn udpaddr_request(request: &Request) -> Result<i64, (u16, String)> {
    if request.path != "/api/device/udpaddr" {
        return Err((404, "404 page not found\n".into()));
    }
    if request.method != "GET" {
        return Err((405, String::new()));
    }
    request
        .param("deviceId")
        .and_then(|d| d.parse::<i64>().ok())
        .ok_or_else(|| (404, "404 page not found\n".into()))
}

/// The JSON answer, byte-compatible with the original (keys in Go's sorted order).
pub fn udpaddr_answer(found: Option<SocketAddr>) -> String {
    match found {
        Some(addr) => format!("{{\"deviceAddr\":\"{addr}\",\"status\":0}}"),
        None => "{\"status\":1}".into(),
    }
}

impl UdpAddrServer {
    /// Serves until the listener fails.
    pub async fn serve(self) {
        // SAFETY: the descriptor is a bound, listening TCP socket we own.
        let listener = unsafe { TcpListener::from_raw_fd(self.listener.into_raw_fd()) };
        let (shards, gate) = (Rc::new(self.shards), Gate::default());
        loop {
            let Ok(mut stream) = listener.accept().await else {
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Some(admitted) = gate.admit(&self.counters) else {
                continue;
            };
            let (shards, counters) = (shards.clone(), self.counters.clone());
            glommio::spawn_local(async move {
                let _admitted = admitted;
                let Read::Request(request) = read_request(&mut stream, &counters).await else {
                    return;
                };
                let (code, body) = match udpaddr_request(&request) {
                    Err(answer) => answer,
                    Ok(device) => (200, udpaddr_answer(ask_shards(&shards, device).await)),
                };
                let _ = respond(&mut stream, code, "application/json; charset=utf-8", &body).await;
            })
            .detach();
        }
    }
}

/// Asks every shard for `device`'s address; the first that holds it answers.
async fn ask_shards(shards: &[bus::messages::ShardInbox], device: i64) -> Option<SocketAddr> {
    let (tx, rx) = crossbeam_channel::bounded(shards.len().max(1));
    let mut asked = 0;
    for shard in shards {
        if shard
            .send(bus::messages::ToShard::AddrQuery {
                device,
                reply: tx.clone(),
            })
            .is_ok()
        {
            asked += 1;
        }
    }
    let mut answered = 0;
    for _ in 0..2000 {
        while let Ok(answer) = rx.try_recv() {
            if answer.is_some() {
                return answer;
            }
            answered += 1;
        }
        if answered >= asked {
            return None;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// Binds the status listener (one socket, served by the endpoints thread).
pub fn bind(addr: SocketAddr) -> std::io::Result<OwnedFd> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    // SAFETY: sole ownership of the descriptor moves into the OwnedFd.
    Ok(unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Request {
        parse_head(text.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn heads_and_queries() {
        let r =
            req("POST /admin/push?ids=16%2C-1&msgid=0x36 HTTP/1.1\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(r.path, "/admin/push");
        assert_eq!(r.param("ids"), Some("16,-1"));
        assert_eq!(crate::http::percent_decode("a%2cb%zz+%4"), "a,b%zz %4");
        assert!(parse_head(b"GET / HTTP/1.1\r\n").unwrap().is_none());
        assert!(parse_head(b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n").is_err());
    }

    #[test]
    fn msg_ids_with_bases() {
        assert_eq!(parse_msg_id("0x36"), Some(0x36));
        assert_eq!(parse_msg_id("54"), Some(54));
        assert_eq!(parse_msg_id("066"), Some(54));
        assert_eq!(parse_msg_id("0"), Some(0));
        assert_eq!(parse_msg_id("70000"), None);
    }

    #[test]
    fn routes() {
        let m = NodeMetrics::new(1);
        assert!(matches!(
            route(
                &req("POST /admin/bind?device=-1&user=16 HTTP/1.1\r\n\r\n"),
                &m,
                None
            ),
            Route::Admin(Admin::Bind {
                device: -1,
                user: 16
            })
        ));
        assert!(matches!(
            route(&req("POST /admin/bind?device=x HTTP/1.1\r\n\r\n"), &m, None),
            Route::Answer(400, ..)
        ));
        assert!(matches!(
            route(&req("GET /stat?type=app HTTP/1.1\r\n\r\n"), &m, None),
            Route::Answer(200, ..)
        ));
        assert!(matches!(
            route(&req("GET /nope HTTP/1.1\r\n\r\n"), &m, None),
            Route::Answer(404, ..)
        ));
        assert!(matches!(
            route(&req("GET /admin/push HTTP/1.1\r\n\r\n"), &m, None),
            Route::Answer(405, ..)
        ));
    }
}
