//! Golden vectors captured on the wire from the original system (`data/vectors.json`,
//! format in `data/vectors.md`), loaded for the integration tests.
#![allow(dead_code)]

use std::sync::OnceLock;

/// One captured vector: its name and exact bytes (run 1), plus run 2 where they differ.
#[derive(Debug, Clone)]
pub struct Vector {
    pub name: String,
    pub transport: String,
    pub bytes: Vec<u8>,
    pub other_run: Option<Vec<u8>>,
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Every vector in the capture.
pub fn all() -> &'static [Vector] {
    static ALL: OnceLock<Vec<Vector>> = OnceLock::new();
    ALL.get_or_init(|| {
        let text = include_str!("../data/vectors.json");
        let json: serde_json::Value = serde_json::from_str(text).expect("vectors.json parses");
        json["vectors"]
            .as_array()
            .expect("vectors array")
            .iter()
            .map(|v| Vector {
                name: v["name"].as_str().unwrap().to_owned(),
                transport: v["transport"].as_str().unwrap().to_owned(),
                bytes: unhex(v["hex"].as_str().unwrap()),
                other_run: v.get("hex_other_run").and_then(|h| h.as_str()).map(unhex),
            })
            .collect()
    })
}

/// The bytes of the vector called `name` (panics if there is none: a typo in a test).
pub fn bytes(name: &str) -> &'static [u8] {
    &all()
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no vector named {name}"))
        .bytes
}

/// Removes the WebSocket frame header (and unmasks) from a captured single-frame WS vector.
pub fn ws_payload(frame: &[u8]) -> Vec<u8> {
    let masked = frame[1] & 0x80 != 0;
    let mut len = (frame[1] & 0x7f) as usize;
    let mut at = 2;
    if len == 126 {
        len = u16::from_be_bytes([frame[2], frame[3]]) as usize;
        at = 4;
    } else if len == 127 {
        len = u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize;
        at = 10;
    }
    if masked {
        let key = [frame[at], frame[at + 1], frame[at + 2], frame[at + 3]];
        at += 4;
        frame[at..at + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect()
    } else {
        frame[at..at + len].to_vec()
    }
}

/// Re-encodes a parsed packet from its decoded headers (a round-trip check).
pub fn reencode(packet: &edge_proto::frame::Packet<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    match packet {
        edge_proto::frame::Packet::Direct(p) => {
            p.frame().write_to(&mut out);
            p.data().write_to(&mut out);
        }
        edge_proto::frame::Packet::Forward(p) => {
            p.outer().write_to(&mut out);
            out.extend_from_slice(p.sid_slot());
            p.inner().write_to(&mut out);
            p.data().write_to(&mut out);
        }
    }
    out.extend_from_slice(packet.body());
    out
}
