//! UDP session write-behind against a real Redis: the exact Go JSON shape
//! (vector `redis_session_value`), the TTL, the device index keys, coalescing, and
//! deletion when the session ends (sparing a newer session of the same device).

mod cluster_support;

use bus::messages::{ToBus, UdpSessionState};
use cluster_support::{Harness, config, eventually, redis_con, unique_ip, unique_user};
use edge_proto::device::Sid;
use redis::Commands;

fn state(sid: [u8; 16], device: i64, sidx: u16) -> UdpSessionState {
    UdpSessionState {
        sid,
        device,
        addr: "127.0.0.1:45009".parse().unwrap(),
        last_heartbeat_unix_nanos: 1_795_522_895_378_557_011,
        sidx,
        ridx: 5,
        bound: vec![16],
    }
}

fn sid_for(user: i64, tag: u8) -> [u8; 16] {
    let mut sid = [tag; 16];
    sid[..8].copy_from_slice(&user.to_le_bytes());
    sid
}

#[test]
fn sessions_are_written_behind_in_the_go_shape() {
    let mut con = redis_con();
    let mut cfg = config(&unique_ip());
    cfg.udp = true;
    cfg.udp_timeout_secs = 30;
    let node = Harness::start(cfg, 1);
    let device = -unique_user();
    let sid = sid_for(device, 1);
    let text = Sid(sid).to_string();
    for sidx in [7, 8, 1] {
        node.requests
            .send(ToBus::UdpSession(state(sid, device, sidx)))
            .unwrap();
    }
    let key = format!("sess:dev:{text}");
    eventually("session written", || con.exists::<_, bool>(&key).unwrap());
    let json: String = con.get(&key).unwrap();
    assert_eq!(
        json,
        r#"{"DeviceID":-1,"Addr":{"IP":"127.0.0.1","Port":45009,"Zone":""},"LastHeartbeat":"2026-11-24T12:21:35.378557011Z","Sidx":1,"Ridx":5,"BindedUsers":[16]}"#
            .replacen("-1", &device.to_string(), 1)
    );
    let ttl: i64 = con.ttl(&key).unwrap();
    assert!((1..=30).contains(&ttl), "{ttl}");
    let by_device: String = con.get(format!("sess:dev:sid:{device}")).unwrap();
    assert_eq!(by_device, text);
    let addr: String = con.hget("device:adr", device).unwrap();
    assert_eq!(addr, "127.0.0.1:45009");

    // A newer session of the same device: the old one's end spares the device's keys.
    let newer = sid_for(device, 2);
    node.requests
        .send(ToBus::UdpSession(state(newer, device, 1)))
        .unwrap();
    eventually("newer session indexed", || {
        con.get::<_, String>(format!("sess:dev:sid:{device}"))
            .unwrap()
            == Sid(newer).to_string()
    });
    node.requests
        .send(ToBus::UdpSessionGone { sid, device })
        .unwrap();
    eventually("old session deleted", || {
        !con.exists::<_, bool>(&key).unwrap()
    });
    let still: bool = con.hexists("device:adr", device).unwrap();
    assert!(still, "the newer session keeps device:adr");

    node.requests
        .send(ToBus::UdpSessionGone { sid: newer, device })
        .unwrap();
    eventually("newer session deleted", || {
        !con.exists::<_, bool>(format!("sess:dev:sid:{device}"))
            .unwrap()
    });
    let gone: bool = con.hexists("device:adr", device).unwrap();
    assert!(!gone);
    let no_key: bool = con.exists(format!("sess:dev:{}", Sid(newer))).unwrap();
    assert!(!no_key);
}

#[test]
fn a_session_before_login_has_no_device_keys() {
    let mut con = redis_con();
    let node = Harness::start(config(&unique_ip()), 1);
    let sid = sid_for(unique_user(), 3);
    let mut anonymous = state(sid, 0, 0);
    anonymous.bound.clear();
    node.requests.send(ToBus::UdpSession(anonymous)).unwrap();
    let key = format!("sess:dev:{}", Sid(sid));
    eventually("session written", || con.exists::<_, bool>(&key).unwrap());
    let json: String = con.get(&key).unwrap();
    assert!(json.starts_with(r#"{"DeviceID":0,"#) && json.ends_with(r#""BindedUsers":null}"#));
    let index: bool = con.exists("sess:dev:sid:0").unwrap();
    assert!(!index);
    node.requests
        .send(ToBus::UdpSessionGone { sid, device: 0 })
        .unwrap();
    eventually("deleted", || !con.exists::<_, bool>(&key).unwrap());
}
