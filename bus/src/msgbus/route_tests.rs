//! Unit tests of the routing core: one `Router`, inputs in, outputs checked as
//! `(link, ids, message)` triples.

use super::*;
use edge_proto::frame::{DirectSpec, write_direct};

const WS_A: LinkId = LinkId(1);
const WS_B: LinkId = LinkId(2);
const UDP_C: LinkId = LinkId(3);

fn router() -> Router {
    let mut r = Router::new(RouterConfig {
        udp_fallback: true,
        names_max: 16,
        park_ms: 5_000,
        park_max: 1_000,
        park_max_bytes: 1 << 20,
    });
    for (link, name, kind) in [
        (WS_A, "10.0.0.1", CometKind::Ws),
        (WS_B, "10.0.0.2", CometKind::Ws),
        (UDP_C, "10.0.0.3", CometKind::Udp),
    ] {
        r.handle_input(Input::CometUp { link, name, kind });
    }
    r
}

fn pubkey(r: &mut Router, text: &str) {
    r.handle_input(Input::PubKey(text.as_bytes()));
}

fn upstream(r: &mut Router, from: LinkId, src: i64, ids: &[i64], message: &[u8]) {
    let mut frame = Vec::new();
    Upstream::write(&mut frame, src, ids, message).unwrap();
    r.handle_input(Input::Upstream {
        link: from,
        payload: &frame[4..],
    });
}

type Sent = (LinkId, Vec<i64>, Vec<u8>);

/// Drains the outputs: sends as `(link, ids, message)`, uploads separately.
fn drain(r: &mut Router) -> (Vec<Sent>, Vec<Upload>) {
    let (mut sends, mut uploads) = (Vec::new(), Vec::new());
    while let Some(out) = r.poll_output() {
        match out {
            Output::Send { link, frame } => {
                let down = Downstream::decode(&frame[4..]).unwrap();
                sends.push((link, down.ids.iter().collect(), down.message.to_vec()));
            }
            Output::Upload(u) => uploads.push(u),
        }
    }
    sends.sort();
    (sends, uploads)
}

fn direct(src: i64, msg_id: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let spec = DirectSpec {
        seq: 1,
        timestamp: 1_700_000_000,
        dst: 0,
        src,
        msg_id,
        body,
    };
    write_direct(&mut out, &spec).unwrap();
    out
}

#[test]
fn phones_grouped_per_comet_with_only_their_ids() {
    let mut r = router();
    pubkey(&mut r, "17|10.0.0.1|1");
    pubkey(&mut r, "18|10.0.0.2|1");
    pubkey(&mut r, "19|10.0.0.1|1");
    upstream(&mut r, UDP_C, 0, &[17, 18, 19, 20], b"m");
    let (sends, _) = drain(&mut r);
    assert_eq!(
        sends,
        [
            (WS_A, vec![17, 19], b"m".to_vec()),
            (WS_B, vec![18], b"m".to_vec())
        ]
    );
    assert_eq!(r.stats().drops_for(DropReason::NoHolder), 1);
}

#[test]
fn device_goes_to_its_holder_with_ids_written() {
    let mut r = router();
    pubkey(&mut r, "-5|10.0.0.2|1");
    pubkey(&mut r, "-6|10.0.0.1|1");
    upstream(&mut r, WS_A, 17, &[-5, -6], b"x");
    let (sends, uploads) = drain(&mut r);
    assert_eq!(
        sends,
        [
            (WS_A, vec![-6], b"x".to_vec()),
            (WS_B, vec![-5], b"x".to_vec())
        ]
    );
    assert!(uploads.is_empty(), "a positive source never uploads");
    assert_eq!(r.stats().udp_fallback, 0);
}

#[test]
fn unknown_device_falls_back_to_a_stable_udp_comet() {
    let mut r = router();
    upstream(&mut r, WS_A, 17, &[-9], b"x");
    upstream(&mut r, WS_A, 17, &[-9], b"y");
    let (sends, _) = drain(&mut r);
    assert_eq!(
        sends,
        [
            (UDP_C, vec![-9], b"x".to_vec()),
            (UDP_C, vec![-9], b"y".to_vec())
        ]
    );
    r.handle_input(Input::CometDown { link: UDP_C });
    upstream(&mut r, WS_A, 17, &[-9], b"z");
    assert_eq!(drain(&mut r).0, []);
    assert_eq!(r.stats().drops_for(DropReason::NoHolder), 1);
}

#[test]
fn offline_reset_and_link_loss() {
    let mut r = router();
    pubkey(&mut r, "17|10.0.0.1|1");
    pubkey(&mut r, "18|10.0.0.1|1");
    pubkey(&mut r, "17|10.0.0.1|0");
    assert_eq!(r.user_map_len(), 1, "empty entries are removed");
    pubkey(&mut r, "0|10.0.0.1|0");
    assert_eq!(r.user_map_len(), 0);
    pubkey(&mut r, "18|10.0.0.2|1");
    r.handle_input(Input::CometDown { link: WS_B });
    upstream(&mut r, UDP_C, 0, &[18, 0], b"m");
    assert_eq!(drain(&mut r).0, []);
    assert_eq!(r.stats().parked, 1, "waits for 10.0.0.2 to come back");
    r.handle_input(Input::Tick { now_ms: 5_001 });
    assert_eq!(r.stats().parked, 0);
    assert_eq!(r.stats().drops_for(DropReason::CometNotLinked), 1);
    assert_eq!(r.stats().drops_for(DropReason::ZeroId), 1);
    pubkey(&mut r, "garbage");
    assert_eq!(r.stats().drops_for(DropReason::BadPubKey), 1);
}

#[test]
fn frames_wait_for_a_holder_that_has_not_linked_yet() {
    // A msgbus that just restarted: the user map is loaded, only comet A has dialled back.
    let mut r = router();
    r.handle_input(Input::Tick { now_ms: 1_000 });
    pubkey(&mut r, "-5|10.0.0.2|1");
    pubkey(&mut r, "-6|10.0.0.1|1");
    r.handle_input(Input::CometDown { link: WS_B });
    upstream(&mut r, WS_A, 17, &[-5, -6], b"1");
    upstream(&mut r, WS_A, 17, &[-5], b"2");
    assert_eq!(drain(&mut r).0, [(WS_A, vec![-6], b"1".to_vec())]);
    assert_eq!(r.stats().udp_fallback, 0, "a known holder is waited for");
    r.handle_input(Input::Tick { now_ms: 4_000 });
    let back = LinkId(12);
    r.handle_input(Input::CometUp {
        link: back,
        name: "10.0.0.2",
        kind: CometKind::Ws,
    });
    let mut got = Vec::new();
    while let Some(Output::Send { link, frame }) = r.poll_output() {
        let down = Downstream::decode(&frame[4..]).unwrap();
        got.push((
            link,
            down.ids.iter().collect::<Vec<_>>(),
            down.message.to_vec(),
        ));
    }
    assert_eq!(
        got,
        [
            (back, vec![-5], b"1".to_vec()),
            (back, vec![-5], b"2".to_vec())
        ],
        "in order, on the new link"
    );
    assert_eq!(r.stats().parked, 0);
    r.handle_input(Input::Tick { now_ms: 60_000 });
    assert_eq!(r.stats().drops_for(DropReason::CometNotLinked), 0);
}

#[test]
fn parked_frames_are_bounded() {
    let mut r = Router::new(RouterConfig {
        udp_fallback: false,
        names_max: 4,
        park_ms: 5_000,
        park_max: 2,
        park_max_bytes: 1 << 20,
    });
    pubkey(&mut r, "18|10.0.0.9|1");
    for message in [b"a", b"b", b"c"] {
        upstream(&mut r, WS_A, 0, &[18], message);
    }
    assert_eq!(r.stats().parked, 2);
    assert_eq!(
        r.stats().drops_for(DropReason::CometNotLinked),
        1,
        "the oldest"
    );
}

#[test]
fn newest_link_of_a_name_wins_and_old_close_keeps_it() {
    let mut r = router();
    let again = LinkId(9);
    r.handle_input(Input::CometUp {
        link: again,
        name: "10.0.0.1",
        kind: CometKind::Ws,
    });
    pubkey(&mut r, "17|10.0.0.1|1");
    r.handle_input(Input::CometDown { link: WS_A });
    upstream(&mut r, UDP_C, 0, &[17], b"m");
    assert_eq!(drain(&mut r).0, [(again, vec![17], b"m".to_vec())]);
    assert_eq!(r.link_count(), 3);
}

#[test]
fn reload_replaces_the_map() {
    let mut r = router();
    pubkey(&mut r, "17|10.0.0.1|1");
    let snapshot = vec![("10.0.0.2".to_owned(), vec![18, -5])];
    r.handle_input(Input::Reload(&snapshot));
    let mut map: Vec<_> = r
        .user_map()
        .map(|(id, names)| (id, names.join(",")))
        .collect();
    map.sort();
    assert_eq!(
        map,
        [(-5, "10.0.0.2".to_owned()), (18, "10.0.0.2".to_owned())]
    );
}

#[test]
fn upload_with_resealed_ack_routed_after_confirm() {
    let mut r = router();
    pubkey(&mut r, "-5|10.0.0.2|1");
    pubkey(&mut r, "17|10.0.0.1|1");
    let msg = direct(-5, 54, b"temp=21");
    upstream(&mut r, WS_B, -5, &[17], &msg);
    let (sends, uploads) = drain(&mut r);
    assert_eq!(sends, [(WS_A, vec![17], msg.clone())]);
    let [upload] = &uploads[..] else {
        panic!("one upload expected: {uploads:?}")
    };
    assert_eq!((upload.msg_id, upload.src, upload.origin), (54, -5, WS_B));
    let ack = upload.ack.clone().unwrap();
    assert_eq!(ack[24], msg[24] | 0x40);
    edge_proto::frame::verify_direct(&ack).unwrap();
    r.handle_input(Input::Uploaded {
        src: -5,
        origin: WS_B,
        ack: &ack,
    });
    assert_eq!(drain(&mut r).0, [(WS_B, vec![-5], ack)]);
}

#[test]
fn upload_rules() {
    let mut r = router();
    // Forward packets (opcode 3) are relayed, never uploaded.
    let mut fwd = direct(-5, 54, b"");
    fwd[0] = 0x83;
    upstream(&mut r, WS_A, -5, &[], &fwd);
    // Too short for a message id.
    upstream(&mut r, WS_A, -5, &[], &[0x82; 10]);
    // Unsealable (declared body longer than present): uploaded, no ACK.
    let mut bad = direct(-5, 7, b"abc");
    bad.pop();
    upstream(&mut r, WS_A, -5, &[], &bad);
    let (_, uploads) = drain(&mut r);
    assert_eq!(uploads.len(), 1);
    assert_eq!((uploads[0].msg_id, uploads[0].ack.is_none()), (7, true));
    assert_eq!(r.stats().drops_for(DropReason::UploadTooShort), 1);
    assert_eq!(r.stats().drops_for(DropReason::AckUnsealable), 1);
    // An ACK for a device on no linked comet whose origin link is gone is counted.
    r.handle_input(Input::CometDown { link: UDP_C });
    r.handle_input(Input::Uploaded {
        src: -77,
        origin: LinkId(99),
        ack: b"a",
    });
    assert_eq!(r.stats().drops_for(DropReason::AckUnroutable), 1);
}

#[test]
fn bad_payload_counted_and_duplicates_merged() {
    let mut r = router();
    r.handle_input(Input::Upstream {
        link: WS_A,
        payload: &[1, 2, 3],
    });
    assert_eq!(r.stats().drops_for(DropReason::BadPayload), 1);
    pubkey(&mut r, "17|10.0.0.1|1");
    upstream(&mut r, UDP_C, 0, &[17, 17], b"m");
    assert_eq!(drain(&mut r).0, [(WS_A, vec![17], b"m".to_vec())]);
    assert_eq!(r.stats().upstream_in, 2);
}

#[test]
fn name_table_is_bounded() {
    let mut r = Router::new(RouterConfig {
        udp_fallback: false,
        names_max: 2,
        park_ms: 5_000,
        park_max: 1_000,
        park_max_bytes: 1 << 20,
    });
    pubkey(&mut r, "1|a|1");
    pubkey(&mut r, "2|b|1");
    pubkey(&mut r, "3|c|1");
    assert_eq!(r.stats().drops_for(DropReason::TooManyComets), 1);
    pubkey(&mut r, "0|a|0");
    pubkey(&mut r, "3|c|1");
    assert_eq!(r.user_map_len(), 2, "a's name was collected and reused");
}
