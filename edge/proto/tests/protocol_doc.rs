//! Checks that the byte examples in `docs/protocol.md` are what this crate produces. Every
//! block between `<!-- example: NAME -->` and `<!-- /example -->` there is built here,
//! taken from the vectors the golden tests use (`common`, captured from the original) or
//! built with this crate's encoders, rendered as an annotated hex dump, and must match the
//! document exactly; a missing example or an unknown marker fails too. After a deliberate
//! change: `UPDATE_PROTOCOL_DOC=1 cargo test -p edge-proto --test protocol_doc`.

mod common;

use std::fmt::Write as _;

use base64::Engine as _;
use edge_proto::device::{self, Request, Sid};
use edge_proto::frame;
use edge_proto::link::{CometKind, Downstream};
use edge_proto::status::{StatusType, empty_status_body, write_status_message};
use edge_proto::{crc, link_auth, login, pubsub, ws};
use hmac::{Hmac, Mac};
use md5::Digest as _;

const REGENERATE: &str = "UPDATE_PROTOCOL_DOC=1 cargo test -p edge-proto --test protocol_doc";
const OPEN: &str = "<!-- example: ";
const CLOSE: &str = "<!-- /example -->";

// Layouts: `;`-separated fields, each `<length> <label>` (`*`: to the end). In a label,
// `{u}`, `{i}`, `{x}`, `{s}` and `{o}` stand for the field read as an unsigned or a signed
// little-endian number, in hex, as text, or as the opcode in its low 3 bits.
const FRAME: &str = "1 {p}byte 0 = {x}: opcode {o}; 1 {p}reserved; 2 {p}sequence = {u}; \
    4 {p}timestamp = {u}; 8 {p}destination id = {i}; 8 {p}source id = {i}";
const DATA: &str = "1 data flags = {x}; 1 data sequence = {u}; 2 device type = {u}; \
    2 message id = {x}; 2 body length = {u}; 1 header check = {x}; 1 body check = {x}; 2 reserved";
const STATUS: &str = "1 status type = {u}; 8 id = {i}; 1 payload length = {u}";
const REPLY: &str = "4 status = {i}; 16 sid";
const BODY: &str = "* body \"{s}\"";

/// Login replies and what they mean.
#[rustfmt::skip]
const LOGIN_REPLIES: [(login::LoginReply, &str); 8] = [
    (login::LoginReply::PhoneOk(1), "phone logged in as mobile id user + 1"),
    (login::LoginReply::DeviceOk, "device logged in"),
    (login::LoginReply::WrongParams, "malformed login string"),
    (login::LoginReply::WrongId, "id refused, or all 15 mobile ids in use"),
    (login::LoginReply::WrongTimestamp, "timestamp refused"),
    (login::LoginReply::LoginTimeout, "no login within 60 s"),
    (login::LoginReply::WrongMd5, "wrong signature"),
    (login::LoginReply::ServerError, "server error"),
];

/// The captured UDP exchanges (vectors `udp_<vector>_request`/`_reply`, whose replies the
/// golden tests rebuild): example name (`udp-<name>-request`/`-reply`), vector, request
/// and reply body layouts.
#[rustfmt::skip]
const UDP_EXCHANGES: [(&str, &str, &str, &str); 5] = [
    ("new-session", "E0_token", "8 MAC; 16 serial number", "8 zero"),
    ("register", "E1_register",
        "16 sid; 2 device type = {u}; 2 communication type = {u}; 4 production time = {u}; \
         8 MAC; 16 serial number; 260 signature (not checked); 2 name length = {u}; * name \"{s}\"",
        "8 device id = {i}; 64 cookie \"{s}\", NUL-padded"),
    ("login", "E2_login", "16 sid; 8 MAC; 64 cookie \"{s}\", NUL-padded", "1 heartbeat interval = {u} s"),
    ("rename", "E3_rename", "16 sid; 8 MAC; 1 name length = {u}; * name \"{s}\"", "8 MAC, echoed"),
    ("heartbeat", "E5_heartbeat", "16 sid; 8 device id = {i} (optional)", ""),
];

/// The examples built so far: name and text.
#[derive(Default)]
struct Examples(Vec<(String, String)>);

impl Examples {
    fn add(&mut self, name: &str, text: String) {
        self.0.push((name.to_owned(), text));
    }
}

fn direct(body: &str) -> String {
    format!("{}; {DATA}; {body}", FRAME.replace("{p}", ""))
}

fn forward(body: &str) -> String {
    let outer = FRAME.replace("{p}", "outer ");
    let inner = FRAME.replace("{p}", "inner ");
    format!("{outer}; 16 sid slot; {inner}; {DATA}; {body}")
}

fn hex(bytes: &[u8]) -> String {
    let words: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    words.join(" ")
}

fn fill(label: &str, field: &[u8]) -> String {
    let n = field.len().min(8);
    let mut le = [0u8; 8];
    le[..n].copy_from_slice(&field[..n]);
    let unsigned = u64::from_le_bytes(le);
    let shift = 64 - 8 * n as u32;
    let signed = (unsigned.checked_shl(shift).unwrap_or(0) as i64).checked_shr(shift);
    let text = field.split(|&b| b == 0).next().unwrap_or_default();
    label
        .replace("{u}", &unsigned.to_string())
        .replace("{i}", &signed.unwrap_or(0).to_string())
        .replace("{x}", &format!("{unsigned:#0w$x}", w = 2 + 2 * n))
        .replace("{o}", &(unsigned & 7).to_string())
        .replace("{s}", &text.escape_ascii().to_string())
}

/// An annotated dump of `bytes` by `layout`: one line per 8 bytes with its offset, the
/// field's label on its first line; a run of more than 16 equal bytes is `00 × 260`.
fn dump(bytes: &[u8], layout: &str) -> String {
    let (mut out, mut at) = (String::new(), 0);
    for field in layout.split(';').map(str::trim).filter(|f| !f.is_empty()) {
        let (len, label) = field.split_once(' ').expect("`<length> <label>`");
        let len = len.parse().unwrap_or(bytes.len() - at);
        let bytes = &bytes[at..at + len];
        let label = fill(label, bytes);
        if len > 16 && bytes.iter().all(|&b| b == bytes[0]) {
            let run = format!("{:02x} × {len}", bytes[0]);
            let _ = writeln!(out, "{at:>4}  {run:<23}  {label}");
        } else {
            for (i, chunk) in bytes.chunks(8).enumerate() {
                let label = if i == 0 { label.as_str() } else { "" };
                let line = format!("{:>4}  {:<23}  {label}", at + 8 * i, hex(chunk));
                let _ = writeln!(out, "{}", line.trim_end());
            }
        }
        at += len;
    }
    assert_eq!(at, bytes.len(), "the layout covers every byte: {layout}");
    out
}

/// A device request like the captured `template` with another sequence, source, message
/// id and body, sealed.
fn device_request(template: &[u8], seq: u16, src: i64, msg_id: u16, body: &[u8]) -> Vec<u8> {
    let mut out = [&template[..36], body].concat();
    out[2..4].copy_from_slice(&seq.to_le_bytes());
    out[16..24].copy_from_slice(&src.to_le_bytes());
    out[28..30].copy_from_slice(&msg_id.to_le_bytes());
    out[30..32].copy_from_slice(&(body.len() as u16).to_le_bytes());
    frame::seal(&mut out).unwrap();
    out
}

/// The login string (its signature computed by the crate), the login replies, close frames
/// and heartbeat frames of a WebSocket connection.
fn ws_examples(out: &mut Examples) {
    let (id, timestamp, timeout, salt) = (16, 1_795_522_893, 30, login::DEFAULT_SALT);
    let signed = format!("{id}|{timestamp}|{timeout}|{salt}");
    let digest = md5::Md5::digest(signed.as_bytes());
    let base64 = base64::engine::general_purpose::STANDARD.encode(digest);
    let signature = login::signature(id, timestamp, timeout, salt.as_bytes());
    assert_eq!(base64.as_bytes(), &signature[..]);
    let text = format!("{id}|{timestamp}|{timeout}|{base64}");
    let captured = common::ws_payload(common::bytes("ws_login_phone_request"));
    assert_eq!(text.as_bytes(), captured, "the captured login");
    let digest = hex(&digest);
    let lines = format!("text signed   {signed}\nMD5 of it     {digest}\n");
    let lines = lines + &format!("signature     {base64}\nlogin string  {text}\n");
    out.add("ws-login-string", lines);
    let mut replies = String::new();
    for (reply, meaning) in LOGIN_REPLIES {
        let (mut payload, mut frame) = (Vec::new(), Vec::new());
        reply.write_to(&mut payload);
        ws::write_frame(&mut frame, ws::OpCode::Binary, &payload);
        let payload = format!("{payload:?}");
        let _ = writeln!(replies, "{payload:<7}  {:<11}  {meaning}", hex(&frame));
    }
    out.add("ws-login-replies", replies);
    let mut closes = String::new();
    for code in [1000, 1001, 1002, 1008, 1009] {
        let mut frame = Vec::new();
        ws::write_close(&mut frame, code);
        let _ = writeln!(closes, "{code}  {}", hex(&frame));
    }
    let captured = hex(common::bytes("ws_login_wrong_params_after"));
    assert!(closes.starts_with(&format!("1000  {captured}\n")));
    out.add("ws-close-frames", closes);
    let client = common::bytes("ws_heartbeat_p");
    let server = common::bytes("ws_heartbeat_P");
    assert_eq!(common::ws_payload(client), b"p");
    let mut pong = Vec::new();
    ws::write_frame(&mut pong, ws::OpCode::Text, b"P");
    assert_eq!(pong, server);
    let (client, server) = (hex(client), hex(server));
    let lines = format!("phone   {client:<20}  text \"p\", masked with the key 37 fa 21 3d\n");
    let lines = lines + &format!("server  {server:<20}  text \"P\"\n");
    out.add("ws-heartbeat", lines);
}

/// The CRC-8 check value, the checks of a captured request, and the status and push messages.
fn message_examples(out: &mut Examples) {
    let request = common::bytes("udp_E0_token_request");
    let header = frame::header_check(request, frame::DIRECT_DATA_OFFSET).unwrap();
    let body = frame::body_check(request, frame::DIRECT_DATA_OFFSET, 24).unwrap();
    assert_eq!((header, body), (request[32], request[33]));
    let check = crc::crc8(b"123456789");
    let (e0, its) = ("0xE0 request of §5.4: crc8(bytes", "  (its byte");
    let lines = format!("crc8(\"123456789\")                               = {check:#04x}\n")
        + &format!("{e0} 0–31)          = {header:#04x}{its} 32)\n")
        + &format!("{e0} 34–35, 36–59)  = {body:#04x}{its} 33)\n");
    out.add("checks", lines);
    // A device online status as this proxy sends it, at the capture's time.
    let captured = common::ws_payload(common::bytes("relay_device_online_status_to_phone"));
    let ts = u32::from_le_bytes(captured[4..8].try_into().unwrap());
    let mut message = Vec::new();
    write_status_message(&mut message, ts, 0, -1, StatusType::DeviceOnline, -1);
    out.add("status-device-online", dump(&message, &direct(STATUS)));
    let (mut payload, mut channel) = (Vec::new(), Vec::new());
    let body = empty_status_body(StatusType::Invited, 987_654_321);
    pubsub::write_common_msg(&mut payload, &[16], &body);
    let publish = common::bytes("redis_push_0x36_publish");
    assert!(publish.windows(payload.len()).any(|w| w == payload));
    pubsub::write_common_msg_channel(&mut channel, 0x36);
    let channel = String::from_utf8(channel).unwrap();
    let payload = dump(&payload, &format!("3 ids, separator \"{{s}}\"; {STATUS}"));
    let publish = format!("PUBLISH {channel} <payload>\n{payload}");
    out.add("push-publish", publish);
    let push = common::ws_payload(common::bytes("push_0x36_received_by_phone"));
    out.add("push-to-phone", dump(&push, &direct(STATUS)));
}

/// The captured UDP exchanges, then a bind (answered 1002) and a state sync with its ACK,
/// which the capture has none of.
fn udp_examples(out: &mut Examples) {
    for (name, vector, request_body, reply_body) in UDP_EXCHANGES {
        let request = common::bytes(&format!("udp_{vector}_request"));
        let reply = common::bytes(&format!("udp_{vector}_reply"));
        let reply = dump(reply, &direct(&format!("{REPLY}; {reply_body}")));
        let request = dump(request, &direct(request_body));
        out.add(&format!("udp-{name}-request"), request);
        out.add(&format!("udp-{name}-reply"), reply);
    }
    let template = common::bytes("udp_E5_heartbeat_request");
    let sid = Sid::from_prefix(&common::bytes("udp_E5_heartbeat_reply")[40..]).unwrap();
    let bind = device_request(template, 7, 0, 0xE4, sid.as_bytes());
    let (mut refused, body) = (Vec::new(), device::status_body(1002, &sid));
    device::write_reply(&mut refused, &bind, &body).unwrap();
    out.add("udp-bind-request", dump(&bind, &direct("16 sid")));
    out.add("udp-bad-command-reply", dump(&refused, &direct(REPLY)));
    let state = [sid.as_bytes().as_slice(), &[0x01, 0x00]].concat();
    let sync = device_request(template, 8, -1, 0x30, &state);
    let parsed = Request::parse_datagram(&sync).unwrap().1;
    assert_eq!(parsed, Request::Upload { msg_id: 0x30, sid });
    // What the bus does once the upload is stored: the ACK flag set, both checks resealed.
    let mut ack = sync.clone();
    ack[frame::DIRECT_DATA_OFFSET] |= frame::DATA_ACK;
    frame::seal(&mut ack).unwrap();
    assert!(device::is_upload_ack(&ack) && !device::is_upload_ack(&sync));
    let layout = direct("16 sid; * state (device-defined)");
    out.add("udp-state-sync-request", dump(&sync, &layout));
    out.add("udp-state-sync-ack", dump(&ack, &layout));
}

/// The device's captured forward packet as phones get it from this proxy: the source set
/// to the session's device, the sid slot zeroed, the header check recomputed.
fn device_relay_to_phone() -> Vec<u8> {
    let mut message = common::bytes("relay_device_to_phone_sent_by_device").to_vec();
    message[16..24].copy_from_slice(&(-1i64).to_le_bytes());
    message[24..40].fill(0);
    message[72] = frame::header_check(&message, frame::FORWARD_DATA_OFFSET).unwrap();
    frame::verify_forward(&message).unwrap();
    message
}

/// The captured relays, and what this proxy makes of them.
fn relay_examples(out: &mut Examples) {
    let phone = common::ws_payload(common::bytes("relay_phone_to_device_sent_by_phone"));
    let received = common::bytes("relay_phone_to_device_received_by_device");
    let mut to_device = phone.clone();
    frame::patch_for_device(&mut to_device, 1, &received[24..40].try_into().unwrap()).unwrap();
    frame::verify_forward(&to_device).unwrap();
    let from_device = common::bytes("relay_device_to_phone_sent_by_device");
    out.add("phone-forward", dump(&phone, &forward(BODY)));
    out.add("udp-forward-to-device", dump(&to_device, &forward(BODY)));
    out.add("udp-forward-from-device", dump(from_device, &forward(BODY)));
    let to_phone = device_relay_to_phone();
    out.add("udp-forward-to-phone", dump(&to_phone, &forward(BODY)));
}

/// The captured upstream frame, the downstream frame of docs/protocol.md §6.4's relay, and an
/// authenticated opening with a known secret and nonces.
fn link_examples(out: &mut Examples) {
    let ids = "2 id count = {u}; 8 destination id = {i}; * the application message, unmodified";
    let up = common::bytes("msgbus_upstream_phone_to_device");
    let layout = format!("4 payload length = {{u}}; 8 source id = {{i}}; {ids}");
    let up = dump(up, &layout);
    out.add("link-upstream", up);
    // The captured frame with the relayed message as this proxy relays it (no sid).
    let mut down = Vec::new();
    Downstream::write(&mut down, &[17], &device_relay_to_phone()).unwrap();
    let captured = common::bytes("msgbus_downstream_device_to_phone");
    assert_eq!(down[..14], captured[..14]);
    let down = dump(&down, &format!("4 payload length = {{u}}; {ids}"));
    out.add("link-downstream", down);
    let (secret, kind) = (b"example secret", CometKind::Ws);
    let nc: [u8; 16] = std::array::from_fn(|i| i as u8);
    let nm: [u8; 16] = std::array::from_fn(|i| 0x10 + i as u8);
    let hello = link_auth::hello(kind, &nc);
    let challenge = link_auth::challenge(secret, kind, &nc, &nm);
    let proof = link_auth::answer(secret, kind, &nc, &challenge).unwrap();
    link_auth::verify_proof(secret, kind, &nc, &nm, &proof).unwrap();
    let tag = |label: &[u8]| {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(&[label, &[0], &nc, &nm].concat());
        mac.finalize().into_bytes().to_vec()
    };
    assert_eq!(challenge[17..], tag(b"cloudsocket link v1 msgbus"));
    assert_eq!(proof[..], tag(b"cloudsocket link v1 comet"));
    let hmac =
        |who| format!("32 HMAC-SHA256(secret, \"cloudsocket link v1 {who}\" · kind · Nc · Nm)");
    let first = "1 0xA0 | kind = {x}";
    let hello = dump(&hello, &format!("{first}; 16 comet nonce Nc"));
    let layout = format!("{first}; 16 msgbus nonce Nm; {}", hmac("msgbus"));
    let challenge = dump(&challenge, &layout);
    let proof = dump(&proof, &hmac("comet"));
    let text = "secret \"example secret\", kind 0 (WebSocket comet)\n\n".to_owned()
        + &format!("comet → msgbus, hello:\n{hello}\nmsgbus → comet, challenge:\n{challenge}\n")
        + &format!("comet → msgbus, proof:\n{proof}");
    out.add("link-auth", text);
}

/// The document with every example block replaced by its generated text, and the names of
/// the blocks that differed. Panics on a marker nothing here builds, or a missing one.
fn regenerate(doc: &str, examples: &[(String, String)]) -> (String, Vec<String>) {
    let mut parts = doc.split(OPEN);
    let mut out = parts.next().unwrap_or_default().to_owned();
    let (mut changed, mut seen) = (Vec::new(), Vec::new());
    for part in parts {
        let (name, rest) = part.split_once(" -->\n").expect("a marker line");
        let (old, after) = rest.split_once(CLOSE).expect("every example is closed");
        let Some((_, text)) = examples.iter().find(|(n, _)| n == name) else {
            panic!("docs/protocol.md has an example `{name}` that protocol_doc.rs does not build")
        };
        let block = format!("```text\n{text}```\n");
        if old != block {
            changed.push(name.to_owned());
        }
        seen.push(name);
        out += &format!("{OPEN}{name} -->\n{block}{CLOSE}{after}");
    }
    let missing = examples.iter().find(|(n, _)| !seen.contains(&n.as_str()));
    assert!(
        missing.is_none(),
        "docs/protocol.md lacks the example {missing:?}"
    );
    (out, changed)
}

#[test]
fn protocol_doc_examples_are_current() {
    let mut examples = Examples::default();
    ws_examples(&mut examples);
    message_examples(&mut examples);
    udp_examples(&mut examples);
    relay_examples(&mut examples);
    link_examples(&mut examples);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    let doc = std::fs::read_to_string(path).expect("docs/protocol.md is readable");
    let (updated, changed) = regenerate(&doc, &examples.0);
    if changed.is_empty() {
        return;
    }
    let changed = changed.join(", ");
    if std::env::var_os("UPDATE_PROTOCOL_DOC").is_some_and(|v| v == "1") {
        std::fs::write(path, updated).expect("docs/protocol.md is writable");
        eprintln!("docs/protocol.md: rewrote the examples {changed}");
    } else {
        panic!("docs/protocol.md: examples {changed} are out of date; run {REGENERATE}");
    }
}
