//! Fuzz targets: Session JSON, msgbus spool records, the node's HTTP heads, comet.conf and addresses.

use super::*;

// === session JSON (an encoder: its output must be valid JSON carrying the fields) ===

pub(super) fn seeds_session() -> Vec<Vec<u8>> {
    let mut s = vec![0u8; 63];
    s[..16].copy_from_slice(&[0xab; 16]);
    s[16..24].copy_from_slice(&(-1i64).to_le_bytes());
    s[24] = 0;
    s[25..29].copy_from_slice(&[127, 0, 0, 1]);
    s[41..43].copy_from_slice(&7999u16.to_le_bytes());
    s[43..59].copy_from_slice(&1_795_522_895_378_557_011u128.to_le_bytes());
    vec![
        s.clone(),
        [&s[..], &16i64.to_le_bytes()[..], &32i64.to_le_bytes()[..]].concat(),
    ]
}

pub(super) fn check_session(data: &[u8]) -> Outcome {
    let mut raw = [0u8; 63];
    let n = data.len().min(raw.len());
    raw[..n].copy_from_slice(&data[..n]);
    let tail = data.get(63..).unwrap_or_default();
    let mut sid = [0u8; 16];
    sid.copy_from_slice(&raw[..16]);
    let device = i64::from_le_bytes(raw[16..24].try_into().unwrap_or_default());
    let ip = if raw[24] & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(raw[25], raw[26], raw[27], raw[28]))
    } else {
        IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(&raw[25..41]).unwrap_or_default(),
        ))
    };
    let port = u16::from_le_bytes([raw[41], raw[42]]);
    let nanos = u128::from_le_bytes(raw[43..59].try_into().unwrap_or_default());
    // Realistic clocks (up to year 9999) and, now and then, any u128.
    let nanos = if raw[24] & 2 == 0 {
        nanos % 253_402_300_800_000_000_000
    } else {
        nanos
    };
    let bound: Vec<i64> = tail
        .chunks_exact(8)
        .take(64)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    let state = bus::messages::UdpSessionState {
        sid,
        device,
        addr: SocketAddr::new(ip, port),
        last_heartbeat_unix_nanos: nanos,
        sidx: u16::from_le_bytes([raw[59], raw[60]]),
        ridx: u16::from_le_bytes([raw[61], raw[62]]),
        bound: bound.clone(),
    };
    let json = bus::cluster::session_json(&state);
    let value: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| format!("session JSON does not parse: {e}: {json}"))?;
    ensure!(
        value["DeviceID"].as_i64() == Some(device),
        "DeviceID in {json}"
    );
    ensure!(
        value["Addr"]["Port"].as_u64() == Some(u64::from(port)),
        "Port in {json}"
    );
    let ip_text = value["Addr"]["IP"].as_str().unwrap_or_default();
    let back: Option<IpAddr> = ip_text.parse().ok();
    let same_ip = match (ip, back) {
        (IpAddr::V6(v6), Some(IpAddr::V4(v4))) => v6.to_ipv4_mapped() == Some(v4),
        (a, Some(b)) => a == b,
        _ => false,
    };
    ensure!(same_ip, "IP {ip_text} for {ip}");
    ensure!(
        value["Sidx"].as_u64() == Some(u64::from(state.sidx)),
        "Sidx"
    );
    ensure!(
        value["Ridx"].as_u64() == Some(u64::from(state.ridx)),
        "Ridx"
    );
    let users: Vec<i64> = value["BindedUsers"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_i64()).collect())
        .unwrap_or_default();
    ensure!(users == bound, "BindedUsers");
    ensure!(
        bound.is_empty() == value["BindedUsers"].is_null(),
        "null for no users"
    );
    let time = value["LastHeartbeat"].as_str().unwrap_or_default();
    ensure!(time == bus::cluster::rfc3339_nanos(nanos), "LastHeartbeat");
    if nanos < 253_402_300_800_000_000_000 {
        ensure!(
            time.len() >= 20 && time.ends_with('Z') && &time[4..5] == "-",
            "RFC 3339 shape {time}"
        );
    }
    // The sid's text form round-trips too.
    let text = Sid(sid).text();
    ensure!(
        Sid::parse_text(text.as_str()) == Ok(Sid(sid)),
        "sid text round trip"
    );
    let _ = Sid::parse_text(&String::from_utf8_lossy(tail));
    Ok(u64::from(bound.is_empty()) | (u64::from(ip.is_ipv4()) << 1))
}

// === msgbus spool records ===

pub(super) fn seeds_spool() -> Vec<Vec<u8>> {
    let mut a = Vec::new();
    bus::msgbus::spool::encode_record(&mut a, 1_700_000_000_000, 0x30, b"upload body");
    let mut b = a.clone();
    bus::msgbus::spool::encode_record(&mut b, 1, 0x31, &[0xff; 100]);
    vec![a, b]
}

pub(super) fn check_spool(data: &[u8]) -> Outcome {
    use bus::msgbus::spool::{decode_record, encode_record};
    let mut at = 0;
    let mut records = 0u64;
    while let Some((record, used)) = decode_record(&data[at..]) {
        ensure!(used > 0 && used <= data.len() - at, "used {used}");
        let mut out = Vec::new();
        encode_record(&mut out, record.unix_ms, record.msg_id, &record.message);
        ensure!(out == data[at..at + used], "spool record round trip");
        at += used;
        records += 1;
    }
    Ok(records.min(3))
}

// === the node's HTTP request heads (status and udpaddr endpoints) ===

pub(super) fn seeds_http() -> Vec<Vec<u8>> {
    let mut seeds = golden_where(|g| g.transport == "http" && g.name.ends_with("request"));
    seeds.push(
        b"POST /admin/push?ids=16,17&msgid=0x36 HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789"
            .to_vec(),
    );
    seeds.push(b"GET /stat?type=app&x=%41%zz+y HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
    seeds
}

pub(super) fn check_http(data: &[u8]) -> Outcome {
    match edge::status::parse_head(data) {
        Ok(Some((request, head, body))) => {
            ensure!(head <= data.len(), "head {head} > len {}", data.len());
            let end = &data[..head];
            ensure!(
                end.ends_with(b"\n\r\n") || end.ends_with(b"\n\n"),
                "head end"
            );
            ensure!(body <= 1024 * 1024, "body {body} above the cap");
            ensure!(request.body.is_empty(), "body filled by parse_head");
            let again = edge::status::parse_head(&data[..head]);
            let same = matches!(&again, Ok(Some((r, h, b))) if *h == head && *b == body
                && r.path == request.path && r.method == request.method && r.query == request.query);
            ensure!(same, "the head alone parses differently");
            for (_, v) in &request.query {
                let _ = edge::status::parse_msg_id(v);
            }
            let metrics = edge::metrics::NodeMetrics::new(1);
            let _ = edge::status::route(&request, &metrics, Some("token"));
            Ok(1 + request.query.len().min(3) as u64 + 4 * u64::from(body > 0))
        }
        Ok(None) => Ok(0),
        Err(why) => Ok(feature_of(why)),
    }
}

// === comet.conf and addresses ===

pub(super) fn seeds_conf() -> Vec<Vec<u8>> {
    vec![
        b"args=\"-lip=127.0.0.2 -ports=:1234,:1235 -rh=127.0.0.1:6379 -logtostderr -v=2\"\n"
            .to_vec(),
        b"-type=udp\n-hudp=:7999 --uto=40 '-zks=127.0.0.1:2181'".to_vec(),
    ]
}

pub(super) fn check_conf(data: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(data);
    let args = edge::cli::conf_file_args(&text);
    for arg in &args {
        ensure!(arg.starts_with("--") && arg.len() > 2, "argument {arg:?}");
        ensure!(
            text.contains(&arg[2..]),
            "argument {arg:?} not from the file"
        );
    }
    let normalized = edge::cli::normalize_args(args.clone());
    ensure!(
        normalized.len() == args.len(),
        "normalize changed the count"
    );
    Ok(args.len().min(4) as u64)
}

pub(super) fn seeds_addr() -> Vec<Vec<u8>> {
    [
        ":1234",
        "127.0.0.1:29999",
        "localhost:80",
        "[::1]:8081",
        ":0",
        "host:1",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

pub(super) fn check_addr(data: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(data);
    let ip = data
        .len()
        .is_multiple_of(2)
        .then_some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    match edge::config::parse_addr("--fuzz", &text, ip) {
        Ok(addr) => {
            if let Some(port) = text.strip_prefix(':') {
                ensure!(port.parse::<u16>() == Ok(addr.port()), "port of {text:?}");
                ensure!(Some(addr.ip()) == ip || ip.is_none(), "ip of {text:?}");
            } else {
                ensure!(text.ends_with(&addr.port().to_string()), "port of {text:?}");
            }
            Ok(1 + u64::from(addr.is_ipv6()))
        }
        Err(e) => Ok(err_feature(12, &e)),
    }
}
