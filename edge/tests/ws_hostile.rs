//! Hostile and failing terminals against a two-shard node: refused logins and upgrades,
//! malformed and oversized frames, control frames, a slow reader, device offline status,
//! and the SIGTERM drain of the real binary.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edge_proto::ws::OpCode;
use support::*;
use tungstenite::Message;

/// Sends `login` as a text frame; returns the reply bytes and the close code that follows.
fn refused(addr: SocketAddr, login: &str) -> (Vec<u8>, Option<u16>) {
    let mut ws = connect(addr);
    ws.send(Message::text(login)).unwrap();
    let reply = next_data(&mut ws).expect("login reply");
    (reply, close_code(&mut ws))
}

fn signed(id: i64, ts: u64) -> String {
    login_string_at(id, ts)
}

#[test]
fn login_refusals_reply_and_close() {
    let node = node();
    let ws = node.ws_addrs[0];
    let now = unix_now();

    assert_eq!(
        refused(ws, "garbage"),
        (vec![1], Some(1000)),
        "wrong params"
    );
    assert_eq!(counter(&node, |s| &s.login_wrong_params), 1);

    let good = signed(16, now);
    let (head, sig) = good.rsplit_once('|').unwrap();
    let flipped: String = sig
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    assert_eq!(
        refused(ws, &format!("{head}|{flipped}")),
        (vec![6], Some(1000)),
        "wrong signature"
    );
    assert_eq!(counter(&node, |s| &s.login_wrong_md5), 1);

    assert_eq!(
        refused(ws, &signed(16, now - 120)),
        (vec![4], Some(1000)),
        "expired"
    );
    assert_eq!(
        refused(ws, &signed(16, now + 120)),
        (vec![4], Some(1000)),
        "future"
    );
    assert_eq!(
        refused(ws, &signed(16, 0)),
        (vec![4], Some(1000)),
        "zero refused by default"
    );
    assert_eq!(counter(&node, |s| &s.login_wrong_timestamp), 3);

    assert_eq!(
        refused(ws, &signed(17, now)),
        (vec![3], Some(1000)),
        "phone id not a multiple of 16"
    );
    assert_eq!(refused(ws, &signed(0, now)), (vec![3], Some(1000)), "id 0");
    assert_eq!(counter(&node, |s| &s.login_wrong_id), 2);
    assert_eq!(counter(&node, |s| &s.login_ok), 0);

    // The node still serves after all of that.
    assert_node_serves(&node, 1600, -1600);
    node.shutdown();
}

#[test]
fn zero_timestamp_allowed_when_configured() {
    let node = node_with(|c| c.allow_zero_timestamp = true);
    let mut ws = connect(node.ws_addrs[0]);
    ws.send(Message::text(signed(16, 0))).unwrap();
    assert_eq!(next_data(&mut ws).unwrap(), vec![0, 1]);
    ws.send(Message::text("p")).unwrap();
    assert_eq!(next_data(&mut ws).unwrap(), b"P");
    node.shutdown();
}

#[test]
fn sixteenth_phone_of_a_user_is_refused() {
    let node = node();
    let ws = node.ws_addrs[0];
    let mut phones = Vec::new();
    let mut mobiles = Vec::new();
    for _ in 1..=15 {
        let (p, reply) = login(ws, 160);
        assert_eq!(reply.len(), 2, "{reply:?}");
        assert_eq!(reply[0], 0);
        mobiles.push(reply[1]);
        phones.push(p);
    }
    mobiles.sort_unstable();
    assert_eq!(mobiles, (1..=15).collect::<Vec<u8>>());
    assert_eq!(refused(ws, &login_string(160)), (vec![3], Some(1000)));
    assert_eq!(counter(&node, |s| &s.login_wrong_id), 1);
    // One leaves; its mobile id is free again.
    drop(phones.pop());
    assert!(eventually(|| {
        let (mut p, reply) = login(ws, 160);
        let ok = reply.len() == 2 && reply[0] == 0;
        if ok {
            phones.push(p);
        } else {
            let _ = p.close(None);
        }
        ok
    }));
    node.shutdown();
}

fn status_line(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    text.lines().next().unwrap_or("").to_owned()
}

#[test]
fn upgrade_refusals() {
    let node = node();
    let ws = node.ws_addrs[0];
    assert!(status_line(ws, &upgrade_request("GET", "/nope", 13)).starts_with("HTTP/1.1 404"));
    assert!(status_line(ws, &upgrade_request("POST", "/ws", 13)).starts_with("HTTP/1.1 405"));
    assert!(status_line(ws, &upgrade_request("GET", "/ws", 8)).starts_with("HTTP/1.1 400"));
    assert!(status_line(ws, "NONSENSE\r\n\r\n").starts_with("HTTP/1.1 400"));
    assert_eq!(counter(&node, |s| &s.ws_upgrade_refused), 4);
    assert_node_serves(&node, 16, -1);
    node.shutdown();
}

#[test]
fn malformed_frames_are_counted_and_survived() {
    let node = node_with(|c| c.max_message = 1024);
    let ws = node.ws_addrs[0];

    // Unmasked client frames are accepted: login and heartbeat.
    let mut raw = Raw::connect(ws);
    raw.send_unmasked(OpCode::Text, login_string(16).as_bytes());
    assert_eq!(raw.next_data().unwrap(), vec![0, 1]);
    raw.send_unmasked(OpCode::Text, b"p");
    assert_eq!(raw.next_data().unwrap(), b"P");
    // RSV1 set: protocol error.
    raw.send_raw(&[0x80 | 0x40 | 0x2, 0x00]);
    assert_eq!(raw.close_code(), Some(1002));
    assert_eq!(counter(&node, |s| &s.malformed_frames), 1);
    assert_node_serves(&node, 32, -2);

    // A reserved opcode before login: protocol error too.
    let mut raw = Raw::connect(ws);
    raw.send_raw(&[0x83, 0x00]);
    assert_eq!(raw.close_code(), Some(1002));
    assert_eq!(counter(&node, |s| &s.malformed_frames), 2);

    // Above max_message: 1009, refused from the head alone.
    let mut raw = Raw::connect(ws);
    assert_eq!(raw.login(48), vec![0, 1]);
    raw.send_masked(OpCode::Binary, &message(3, -3, &[7u8; 2000]));
    assert_eq!(raw.close_code(), Some(1009));
    assert_eq!(counter(&node, |s| &s.oversized_frames), 1);
    assert_node_serves(&node, 64, -4);

    // Exactly max_message is fine (no destination: dropped, connection kept).
    let mut raw = Raw::connect(ws);
    assert_eq!(raw.login(80), vec![0, 1]);
    raw.send_masked(OpCode::Binary, &message(3, -5, &[7u8; 1024 - 24]));
    raw.send_masked(OpCode::Text, b"p");
    assert_eq!(raw.next_data().unwrap(), b"P");

    // A message shorter than 16 bytes after login: closed.
    let mut raw = Raw::connect(ws);
    assert_eq!(raw.login(96), vec![0, 1]);
    raw.send_masked(OpCode::Binary, &[1u8; 10]);
    assert_eq!(raw.close_code(), Some(1002));
    assert_eq!(counter(&node, |s| &s.drop_short_message), 1);
    assert_node_serves(&node, 112, -7);

    // Garbage after a good frame in the same write.
    let mut raw = Raw::connect(ws);
    let mut bytes = Vec::new();
    edge_proto::ws::write_client_frame(
        &mut bytes,
        OpCode::Text,
        login_string(128).as_bytes(),
        [1, 2, 3, 4],
    );
    bytes.extend_from_slice(&[0xff; 32]);
    raw.send_raw(&bytes);
    // The login answer may or may not come before the close; the close is 1002 either way.
    assert_eq!(raw.close_code(), Some(1002));
    assert!(counter(&node, |s| &s.malformed_frames) >= 3);
    assert_node_serves(&node, 144, -9);
    node.shutdown();
}

#[test]
fn ping_pong_and_close_echo() {
    let node = node();
    let ws = node.ws_addrs[0];
    // Before login.
    let mut raw = Raw::connect(ws);
    raw.send_masked(OpCode::Ping, b"early");
    assert_eq!(raw.next(), Got::Frame(0xA, b"early".to_vec()));
    assert_eq!(raw.login(16), vec![0, 1]);
    raw.send_masked(OpCode::Ping, b"hello ping");
    assert_eq!(raw.next(), Got::Frame(0xA, b"hello ping".to_vec()));
    raw.send_unmasked(OpCode::Ping, b"");
    assert_eq!(raw.next(), Got::Frame(0xA, Vec::new()));
    // A pong from the client is ignored.
    raw.send_masked(OpCode::Pong, b"x");
    raw.send_masked(OpCode::Text, b"p");
    assert_eq!(raw.next(), Got::Frame(0x1, b"P".to_vec()));
    raw.send_masked(OpCode::Close, &1000u16.to_be_bytes());
    assert_eq!(raw.next(), Got::Close(Some(1000)));
    assert_eq!(raw.next(), Got::End);
    assert!(eventually(|| node
        .metrics
        .render_app_json()
        .contains("\"ConnOnline\":0")));

    // Close codes other than 1000/1001 are answered with 1000.
    let mut raw = Raw::connect(ws);
    assert_eq!(raw.login(32), vec![0, 1]);
    raw.send_masked(OpCode::Close, &4000u16.to_be_bytes());
    assert_eq!(raw.next(), Got::Close(Some(1000)));
    node.shutdown();
}

#[test]
fn device_offline_reaches_bound_phone() {
    let node = node();
    let ws = node.ws_addrs[0];
    let (code, text) = http(
        node.status_addr,
        "POST",
        "/admin/bind?device=-5&user=80",
        b"",
    );
    assert_eq!(code, 200, "{text}");
    let (mut phone, reply) = login(ws, 80);
    assert_eq!(reply, vec![0, 1]);
    let (device, reply) = login(ws, -5);
    assert_eq!(reply, vec![0]);
    next_status(&mut phone, 9).expect("online status");
    drop(device); // the socket just goes away
    let offline = next_status(&mut phone, 10).expect("offline status");
    assert_eq!(offline.len(), 46);
    assert_eq!(u16::from_le_bytes([offline[28], offline[29]]), 0x36);
    assert_eq!(offline[36], 10);
    assert_eq!(i64::from_le_bytes(offline[37..45].try_into().unwrap()), -5);

    // And again with a clean close frame from the device.
    let (mut device, _) = login(ws, -5);
    next_status(&mut phone, 9).expect("online again");
    device.close(None).unwrap();
    let _ = device.read();
    next_status(&mut phone, 10).expect("offline again");
    node.shutdown();
}

#[test]
fn slow_reader_is_closed_while_others_flow() {
    let node = node_with(|c| {
        c.max_outbound = 64 * 1024;
        c.max_message = 16 * 1024;
    });
    let ws = node.ws_addrs[0];
    for (d, u) in [(-1, 16), (-2, 32)] {
        let (code, text) = http(
            node.status_addr,
            "POST",
            &format!("/admin/bind?device={d}&user={u}"),
            b"",
        );
        assert_eq!(code, 200, "{text}");
    }
    // Phone A: a tiny receive buffer, and it never reads after login.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&ws.into()).unwrap();
    let mut a = Raw::upgrade(sock.into());
    assert_eq!(a.login(16), vec![0, 1]);
    let (mut b, reply) = login(ws, 32);
    assert_eq!(reply, vec![0, 1]);
    let (mut d, _) = login(ws, -1);
    let (mut d2, _) = login(ws, -2);
    next_status(&mut b, 9).expect("online status");

    let big = message(3, 0, &[0x5a; 8 * 1024]);
    let started = Instant::now();
    let mut sent = 0;
    let mut exchanges = 0;
    while counter(&node, |s| &s.slow_reader_closed) == 0 {
        assert!(
            sent < 5000 && started.elapsed() < Duration::from_secs(20),
            "slow reader never closed ({sent} sent)"
        );
        d.send(Message::binary(big.clone())).unwrap();
        sent += 1;
        if sent % 25 == 0 {
            let m = message(3, -2, format!("b {sent}").as_bytes());
            b.send(Message::binary(m.clone())).unwrap();
            assert_eq!(next_data(&mut d2).unwrap(), m);
            let back = message(3, 0, format!("d2 {sent}").as_bytes());
            d2.send(Message::binary(back.clone())).unwrap();
            assert_eq!(next_not_status(&mut b).unwrap(), back);
            exchanges += 1;
        }
    }
    assert!(
        sent * big.len() > 64 * 1024,
        "closed only after the bound was passed"
    );
    assert!(exchanges > 0 || sent < 25);
    // B and its device still flow after A is gone.
    for i in 0..10 {
        let m = message(3, -2, format!("after {i}").as_bytes());
        b.send(Message::binary(m.clone())).unwrap();
        assert_eq!(next_data(&mut d2).unwrap(), m);
    }
    // A's stream is intact: status messages, then whole copies of the message, then
    // the end (a 1008 close frame when it could still be written after the queue).
    let mut whole = 0;
    let end = loop {
        match a.next() {
            Got::Frame(2, payload) if whole == 0 && is_status(&payload) => {}
            Got::Frame(2, payload) => {
                assert_eq!(payload, big, "frame {whole} intact");
                whole += 1;
            }
            other => break other,
        }
    };
    assert!(whole > 0);
    assert!(matches!(end, Got::Close(Some(1008)) | Got::End), "{end:?}");
    assert!(eventually(|| node
        .metrics
        .render_app_json()
        .contains("\"ConnOnline\":3")));
    node.shutdown();
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn sigterm_drains_with_1001_and_exits_zero() {
    let ws_port = free_tcp_port();
    let sh_port = free_tcp_port();
    let dir = std::env::temp_dir().join(format!("cloudsocket-drain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloudsocket"))
        .args([
            "run",
            "--cores",
            "0",
            "--ports",
            &format!(":{ws_port}"),
            "--sh",
            &format!("127.0.0.1:{sh_port}"),
        ])
        .args([
            "--hudp",
            &format!("127.0.0.1:{}", free_udp_port()),
            "--hhttp",
            &format!("127.0.0.1:{}", free_tcp_port()),
        ])
        .arg("--upload-log")
        .arg(dir.join("uploads.log"))
        .env_remove("CLOUDSOCKET_CORES")
        .env_remove("CLOUDSOCKET_SALT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cloudsocket");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let ready = loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => {
                let done = line.starts_with("listening: status");
                seen.push(line);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    if !ready {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "no listening lines: {seen:?}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        seen.iter()
            .any(|l| l.contains(&format!("ws://0.0.0.0:{ws_port}/ws"))),
        "{seen:?}"
    );

    let addr: SocketAddr = format!("127.0.0.1:{ws_port}").parse().unwrap();
    let (mut phone, reply) = login(addr, 16);
    assert_eq!(reply, vec![0, 1]);

    // SAFETY: signalling our own child by its pid.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    assert_eq!(close_code(&mut phone), Some(1001));

    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running 5 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn slow_loris_and_silent_logins_are_closed_on_time() {
    // The deadlines are 10 s and 60 s in production; shortened here, same code path.
    let node = node_with(|c| {
        c.handshake_timeout_secs = 1;
        c.login_timeout_secs = 2;
    });
    let addr = node.ws_addrs[0];
    // Slow loris: half an upgrade request, then nothing.
    let opened = std::time::Instant::now();
    let mut loris = std::net::TcpStream::connect(addr).unwrap();
    loris
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    std::io::Write::write_all(&mut loris, b"GET /ws HTTP/1.1\r\nHost: x\r\n").unwrap();
    // Upgraded but never logs in: gets reply 5 (login timeout) and a close.
    let mut silent = connect(addr);
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    assert_eq!(
        std::io::Read::read(&mut loris, &mut buf).unwrap_or(0),
        0,
        "slow loris closed without a reply"
    );
    // The one-second clock rounds up: a deadline never fires before its time (it did,
    // by up to a second, before `deadline_in`).
    assert!(
        opened.elapsed() >= std::time::Duration::from_secs(1),
        "closed early: {:?}",
        opened.elapsed()
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    assert_eq!(next_data(&mut silent), Some(vec![5]), "login timeout reply");
    assert!(eventually(|| counter(&node, |m| &m.handshake_timeout) == 1
        && counter(&node, |m| &m.login_timeout) == 1));
    node.shutdown();
}

#[test]
fn a_frame_and_the_end_of_stream_read_in_one_wake_still_close_the_session() {
    // The last frame and the FIN usually arrive before the shard wakes: one edge for
    // both. A short read must not end the reading there, or the session would linger
    // (its mobile id held) until its read deadline.
    let node = node();
    let online = |node: &edge::node::Node| -> i64 {
        node.metrics
            .shards
            .iter()
            .map(|s| s.ws_online.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    };
    for k in 1..=20 {
        let mut phone = Raw::connect(node.ws_addrs[0]);
        assert_eq!(phone.login(16 * (100 + k)), vec![0, 1]);
        let mut bytes = Vec::new();
        edge_proto::ws::write_client_frame(&mut bytes, OpCode::Text, b"p", [1, 2, 3, 4]);
        phone.send_raw(&bytes);
        phone.stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(
            eventually(|| online(&node) == 0),
            "phone {k}: the session outlived its end of stream"
        );
    }
    node.shutdown();
}
