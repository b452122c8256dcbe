//! The status endpoint against strangers: `/admin/*` needs the bearer token when one is
//! set (`/stat` and `/metrics` stay open), at most `http::MAX_CONNS` connections are served
//! at once (the rest closed and counted), and a request must arrive whole within
//! `http::REQUEST_DEADLINE`, however slowly it dribbles in.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::*;

fn request(addr: SocketAddr, head: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out)
}

fn bind_with(addr: SocketAddr, auth: &str) -> (u16, String) {
    request(
        addr,
        &format!("POST /admin/bind?device=-5&user=16 HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
    )
}

#[test]
fn admin_calls_need_the_token_when_one_is_set() {
    let node = node_with(|c| c.admin_token = Some("s3cret-token".into()));
    let addr = node.status_addr;
    let (code, answer) = bind_with(addr, "");
    assert_eq!(code, 401, "{answer}");
    assert!(answer.contains("WWW-Authenticate: Bearer"));
    assert_eq!(bind_with(addr, "Authorization: Bearer wrong\r\n").0, 401);
    assert_eq!(
        bind_with(addr, "Authorization: Basic czNjcmV0LXRva2Vu\r\n").0,
        401
    );
    assert_eq!(
        bind_with(addr, "Authorization: Bearer s3cret-token\r\n").0,
        200
    );
    assert_eq!(
        bind_with(addr, "authorization: bearer s3cret-token\r\n").0,
        200
    );
    assert_eq!(node.metrics.http.unauthorized.load(Ordering::Relaxed), 3);
    assert_eq!(
        http(addr, "GET", "/stat?type=app", b"").0,
        200,
        "/stat stays open"
    );
    let (code, metrics) = http(addr, "GET", "/metrics", b"");
    assert_eq!(code, 200, "/metrics stays open");
    assert!(metrics.contains("cloudsocket_http_refused_total{reason=\"unauthorized\"} 3"));
    assert!(metrics.contains("cloudsocket_default_salt 1"));
    node.shutdown();
}

#[test]
fn connections_beyond_the_cap_are_closed_and_counted() {
    let node = node();
    let addr = node.status_addr;
    let idle: Vec<TcpStream> = (0..edge::http::MAX_CONNS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // Each idle connection is admitted once the endpoint accepts it; the next is refused.
    assert!(eventually(|| {
        let mut extra = TcpStream::connect(addr).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let _ = extra.write_all(b"GET /stat HTTP/1.1\r\n\r\n");
        let mut buf = [0u8; 64];
        matches!(extra.read(&mut buf), Ok(0) | Err(_))
    }));
    assert!(node.metrics.http.busy.load(Ordering::Relaxed) >= 1);
    drop(idle);
    assert!(eventually(|| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(b"GET /stat HTTP/1.1\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.starts_with("HTTP/1.1 200")
    }));
    node.shutdown();
}

#[test]
fn a_dribbling_request_is_cut_off_at_the_deadline() {
    let node = node();
    let mut s = TcpStream::connect(node.status_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let started = Instant::now();
    s.write_all(b"GET /stat HTTP/1.1\r\n").unwrap();
    let mut buf = [0u8; 256];
    let cut = loop {
        // A header byte at a time, well inside any per-read timeout.
        if s.write_all(b"X").is_err() {
            break started.elapsed();
        }
        match s.read(&mut buf) {
            Ok(0) => break started.elapsed(),
            Ok(_) => panic!("answered a request that never ended"),
            Err(_) => {}
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never cut off");
    };
    assert!(cut >= edge::http::REQUEST_DEADLINE, "cut after {cut:?}");
    assert!(eventually(|| node
        .metrics
        .http
        .timeouts
        .load(Ordering::Relaxed)
        == 1));
    node.shutdown();
}

#[test]
fn forty_thousand_requests_leave_the_endpoints_serving() {
    // One at a time, so each accept wakes the endpoints again: more wakes than glommio
    // 0.9's task reference count holds (32 767). A task that re-polled the `udpaddr`
    // listener's pending accept on every wake of the status listener leaked a waker
    // reference each time and died (`loadgen idle` binding 40 000 UDP devices found it).
    let node = node();
    let addr = node.status_addr;
    for _ in 0..40_000 {
        assert_eq!(request(addr, "GET /stat HTTP/1.1\r\n\r\n").0, 200);
    }
    node.shutdown();
}
