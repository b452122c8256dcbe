//! The msgbus against strangers (no services needed): with `--link-secret`, only comets
//! that prove the secret link, and plain, wrong or stalled openings are closed and counted;
//! without one, the original's opening still works (old comets) and is counted; links are
//! capped; `/usermap` needs the status token and a silent client does not hold the status
//! endpoint.

mod msgbus_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bus::msgbus::Msgbus;
use edge_proto::link::CometKind;
use edge_proto::link_auth;
use msgbus_support::{FakeComet, config, eventually, tcp_from};

const WAIT: Duration = Duration::from_secs(10);
const SECRET: &[u8] = b"correct horse battery staple";

fn with_secret(name: &str) -> Msgbus {
    let mut config = config(name);
    config.link_secret = Some(SECRET.to_vec());
    Msgbus::start(config).unwrap()
}

/// True when the msgbus closed `stream` (EOF or reset) before `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}

#[test]
fn with_a_secret_only_comets_that_prove_it_link() {
    let bus = with_secret("guard-secret");
    let m = bus.metrics();
    // The original's opening: refused.
    let mut plain = tcp_from(bus.local_addr(), "127.0.0.31", None);
    plain.write_all(&[0]).unwrap();
    assert!(closed_within(&mut plain, WAIT));
    // A proof made with another secret: refused.
    let mut forger = tcp_from(bus.local_addr(), "127.0.0.32", None);
    let nonce = [3u8; link_auth::NONCE_LEN];
    forger
        .write_all(&link_auth::hello(CometKind::Ws, &nonce))
        .unwrap();
    let mut challenge = [0u8; link_auth::CHALLENGE_LEN];
    forger.read_exact(&mut challenge).unwrap();
    assert!(link_auth::answer(b"guess", CometKind::Ws, &nonce, &challenge).is_err());
    forger.write_all(&[0u8; link_auth::PROOF_LEN]).unwrap();
    assert!(closed_within(&mut forger, WAIT));
    eventually(WAIT, "two refusals", || {
        m.unauthenticated.load(Ordering::Relaxed) == 2
    });
    assert_eq!(m.comets.load(Ordering::Relaxed), 0);
    // The right secret: linked.
    let _comet = FakeComet::connect_authenticated(bus.local_addr(), "127.0.0.33", 1, SECRET);
    eventually(WAIT, "the comet linked", || {
        m.comets.load(Ordering::Relaxed) == 1
    });
    assert_eq!(m.link_secret.load(Ordering::Relaxed), 1);
    bus.shutdown();
}

#[test]
fn a_stalled_opening_is_closed_after_five_seconds() {
    let bus = with_secret("guard-stall");
    let mut silent = tcp_from(bus.local_addr(), "127.0.0.34", None);
    let started = Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(15)));
    let after = started.elapsed();
    assert!(
        after >= Duration::from_secs(4) && after < Duration::from_secs(8),
        "{after:?}"
    );
    let timeouts = &bus.metrics().handshake_timeouts;
    eventually(WAIT, "counted", || timeouts.load(Ordering::Relaxed) == 1);
    bus.shutdown();
}

#[test]
fn without_a_secret_old_comets_link_and_are_counted() {
    let bus = Msgbus::start(config("guard-plain")).unwrap();
    let m = bus.metrics();
    let _old = FakeComet::connect(bus.local_addr(), "127.0.0.35", 0);
    eventually(WAIT, "the old comet linked", || {
        m.comets.load(Ordering::Relaxed) == 1
    });
    assert_eq!(m.plain_links.load(Ordering::Relaxed), 1);
    assert_eq!(m.link_secret.load(Ordering::Relaxed), 0);
    // A comet with a secret cannot be answered: refused, not half-linked.
    let mut new = tcp_from(bus.local_addr(), "127.0.0.36", None);
    new.write_all(&link_auth::hello(CometKind::Ws, &[1; 16]))
        .unwrap();
    assert!(closed_within(&mut new, WAIT));
    eventually(WAIT, "refused", || {
        m.unauthenticated.load(Ordering::Relaxed) == 1
    });
    bus.shutdown();
}

#[test]
fn links_beyond_the_cap_are_refused_and_counted() {
    let mut config = config("guard-cap");
    config.max_links = 2;
    let bus = Msgbus::start(config).unwrap();
    let _a = FakeComet::connect(bus.local_addr(), "127.0.0.37", 0);
    let _b = FakeComet::connect(bus.local_addr(), "127.0.0.38", 0);
    let mut third = tcp_from(bus.local_addr(), "127.0.0.39", None);
    assert!(closed_within(&mut third, WAIT), "closed at once");
    let refused = &bus.metrics().links_refused;
    eventually(WAIT, "counted", || refused.load(Ordering::Relaxed) == 1);
    bus.shutdown();
}

fn get(bus: &Msgbus, path: &str, auth: &str) -> String {
    let mut stream = TcpStream::connect(bus.status_addr().unwrap()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn usermap_needs_the_token_and_a_silent_client_holds_nothing() {
    let mut config = config("guard-status");
    config.status_token = Some("t0ken".into());
    let bus = Msgbus::start(config).unwrap();
    // A client that connects and says nothing: the next requests are served anyway.
    let _silent = TcpStream::connect(bus.status_addr().unwrap()).unwrap();
    let started = Instant::now();
    assert!(get(&bus, "/usermap", "").starts_with("HTTP/1.1 401"));
    assert!(get(&bus, "/usermap", "Authorization: Bearer nope\r\n").starts_with("HTTP/1.1 401"));
    let ok = get(&bus, "/usermap", "Authorization: Bearer t0ken\r\n");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(get(&bus, "/stat?type=app", "").starts_with("HTTP/1.1 200"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not held by the silent client"
    );
    assert_eq!(bus.metrics().status_unauthorized.load(Ordering::Relaxed), 2);
    // A head that is not HTTP: a 400, counted, like the node's endpoints.
    let mut garbage = TcpStream::connect(bus.status_addr().unwrap()).unwrap();
    garbage.set_read_timeout(Some(WAIT)).unwrap();
    garbage.write_all(b"GARBAGE\0\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = garbage.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert_eq!(bus.metrics().status_bad.load(Ordering::Relaxed), 1);
    bus.shutdown();
}

#[test]
fn an_authenticated_comet_that_goes_silent_is_dropped() {
    let bus = with_secret("guard-silent");
    let m = bus.metrics();
    // A comet that links, then never writes again (no pings: its process hangs).
    let mut comet = FakeComet::connect_authenticated(bus.local_addr(), "127.0.0.40", 0, SECRET);
    eventually(WAIT, "linked", || m.comets.load(Ordering::Relaxed) == 1);
    let linked = Instant::now();
    // The msgbus pings it meanwhile (FakeComet::recv skips them): nothing else arrives.
    assert!(comet.recv(Duration::from_millis(1500)).is_none());
    eventually(Duration::from_secs(15), "dropped for silence", || {
        m.comets.load(Ordering::Relaxed) == 0
    });
    let after = linked.elapsed();
    assert!(after >= Duration::from_secs(4), "dropped after {after:?}");
    bus.shutdown();
}
