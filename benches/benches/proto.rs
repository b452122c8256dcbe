//! criterion micro-benchmarks of the pure protocol code on the hot paths: frame header
//! decode, CRC-8, login verify, UDP command parse + reply build, msgbus link framing and
//! WebSocket `next_frame`. Figures are ns/op; see `benches/RESULTS.md`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use edge_proto::device::{Request, Sid, status_body, write_reply};
use edge_proto::frame::{DirectSpec, FrameHeader, write_direct};
use edge_proto::link::{LinkDecoder, Upstream};
use edge_proto::login::{DEFAULT_SALT, LoginRequest, signature};
use edge_proto::ws::{self, OpCode};

fn heartbeat_datagram() -> Vec<u8> {
    let mut body = [0u8; 24];
    body[..16].copy_from_slice(&[7; 16]);
    let mut out = Vec::new();
    let spec = DirectSpec {
        seq: 5,
        timestamp: 1,
        dst: 0,
        src: -1,
        msg_id: 0xE5,
        body: &body,
    };
    write_direct(&mut out, &spec).expect("small body");
    out
}

fn benches(c: &mut Criterion) {
    let packet = heartbeat_datagram();
    c.bench_function("frame_header_decode", |b| {
        b.iter(|| FrameHeader::decode(black_box(&packet)))
    });
    let kb = vec![0xa5u8; 1024];
    c.bench_function("crc8_64B", |b| {
        b.iter(|| edge_proto::crc::crc8(black_box(&kb[..64])))
    });
    c.bench_function("crc8_1KiB", |b| {
        b.iter(|| edge_proto::crc::crc8(black_box(&kb)))
    });

    let now = 1_700_000_000u64;
    let sig = signature(16, now, 60, DEFAULT_SALT.as_bytes());
    let mut login = format!("16|{now}|60|").into_bytes();
    login.extend_from_slice(&sig);
    c.bench_function("login_parse_verify", |b| {
        b.iter(|| {
            let r = LoginRequest::parse(black_box(&login)).expect("valid");
            r.verify(DEFAULT_SALT.as_bytes(), now, false)
        })
    });

    let mut out = Vec::with_capacity(128);
    c.bench_function("udp_heartbeat_parse_reply", |b| {
        b.iter(|| {
            let (_, req) = Request::parse_datagram(black_box(&packet)).expect("valid");
            let Request::Heartbeat { sid, .. } = req else {
                unreachable!()
            };
            out.clear();
            write_reply(&mut out, &packet, &status_body(0, &Sid(sid.0))).expect("reply");
            out.len()
        })
    });

    let message = vec![0x83u8; 64];
    let mut framed = Vec::new();
    Upstream::write(&mut framed, -1, &[17, 18, 19], &message).expect("small");
    c.bench_function("link_write_upstream", |b| {
        b.iter(|| {
            let mut v = Vec::with_capacity(128);
            Upstream::write(&mut v, -1, black_box(&[17, 18, 19]), &message).expect("small");
            v
        })
    });
    c.bench_function("link_decode", |b| {
        b.iter(|| {
            LinkDecoder::new(65536)
                .decode(black_box(&framed))
                .map(|(_, used)| used)
        })
    });

    let mut wire = Vec::new();
    ws::write_client_frame(&mut wire, OpCode::Binary, &[0x83; 48], [1, 2, 3, 4]);
    let mut buf = wire.clone();
    c.bench_function("ws_next_frame_48B_masked", |b| {
        b.iter(|| {
            buf.copy_from_slice(&wire);
            ws::next_frame(black_box(&mut buf), 65536).map(|f| f.map(|f| f.consumed))
        })
    });
}

criterion_group!(proto, benches);
criterion_main!(proto);
