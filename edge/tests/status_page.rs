//! The live status page (`GET /` on the status port, issue 16) in headless Chromium (Debian's
//! `chromium`, which `scripts/test` installs): a two-shard node with a phone sending to a
//! device about a thousand messages a second while the page runs for four seconds of
//! (virtual) time. The page must have refreshed several times from `/metrics`, shown the
//! two connections, and seen the message counters move.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::*;
use tungstenite::Message;

/// The value of `attribute="…"` or of the element `id="…">…<` in the dumped DOM.
fn find<'a>(dom: &'a str, needle: &str, end: char) -> Option<&'a str> {
    let at = dom.find(needle)? + needle.len();
    let rest = &dom[at..];
    Some(&rest[..rest.find(end)?])
}

fn number(dom: &str, needle: &str, end: char) -> u64 {
    find(dom, needle, end)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no number after {needle:?} in the page:\n{dom}"))
}

/// Loads `url` in headless Chromium for `budget_ms` of virtual time; the DOM afterwards.
fn chromium_dom(url: &str, budget_ms: u32) -> String {
    let profile = std::env::temp_dir().join(format!("cs-chromium-{}", std::process::id()));
    let out = Command::new("timeout")
        .args([
            "120",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
        ])
        .args([
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
        ])
        .args(["--disable-component-update", "--disable-sync", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg(url)
        .output()
        .expect("timeout (coreutils)");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed ({}): {} — it is needed for this test: run the tests with scripts/test, which installs Debian's chromium",
        out.status,
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_status_page_renders_live_figures_in_chromium() {
    let node = node();
    let user = 16 * 77_001;
    let device_id = -77_001;
    let (code, _) = http(
        node.status_addr,
        "POST",
        &format!("/admin/bind?device={device_id}&user={user}"),
        b"",
    );
    assert_eq!(code, 200);
    let (mut phone, reply) = login(node.ws_addrs[0], user);
    assert_eq!(reply.first(), Some(&0));
    let (mut device, reply) = login(node.ws_addrs[0], device_id);
    assert_eq!(reply.first(), Some(&0));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let m = message(3, device_id, b"page");
                if phone.send(Message::binary(m)).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let reader = {
        let stop = stop.clone();
        device
            .get_mut()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = device.read();
            }
        })
    };

    let dom = chromium_dom(&format!("http://{}/", node.status_addr), 4000);
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    reader.join().unwrap();

    assert!(
        dom.contains("<h1>cloudsocket node</h1>"),
        "the page:\n{dom}"
    );
    let updates = number(&dom, "data-updates=\"", '"');
    let changes = number(&dom, "data-changes=\"", '"');
    assert!(updates >= 3, "refreshed {updates} times in 4 s");
    assert!(
        changes >= 1,
        "the message counters never moved ({updates} refreshes)"
    );
    assert_eq!(
        number(&dom, "id=\"total-conns\">", '<'),
        2,
        "two connections"
    );
    for shard in 0..2 {
        assert!(
            dom.contains(&format!("id=\"shard-{shard}\"")),
            "row of shard {shard}"
        );
    }
    assert!(
        find(&dom, "id=\"error\">", '<').is_some_and(str::is_empty),
        "no error shown"
    );
    node.shutdown();
}
