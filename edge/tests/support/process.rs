//! A node as a process of its own (`cloudsocket run` or `comet`), for the upgrade tests:
//! its listening addresses read from its output, `cloudsocket upgrade` against it, and
//! the pid checks around an upgrade.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// A node process and its addresses.
pub struct Proc {
    pub child: Child,
    pub ws: SocketAddr,
    pub udp: SocketAddr,
    pub wss: Option<SocketAddr>,
    pub status: SocketAddr,
    _lines: Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addr_after(line: &str, prefix: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix(prefix)?;
    rest.split('/').next()?.parse().ok()
}

/// Starts `cloudsocket <args>` on two shards with every listener on an ephemeral loopback
/// port (`args` names the program and may add flags), once it says where it listens.
pub fn spawn_node(args: &[OsString]) -> Proc {
    let any = "127.0.0.1:0";
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloudsocket"))
        .args(args)
        .args([
            "--cores", "0-1", "--ports", any, "--hudp", any, "--hhttp", any, "--sh", any,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cloudsocket");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut ws, mut wss, mut udp, mut status) = (None, None, None, None);
    while status.is_none() {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the node's listening lines");
        ws = ws.or(addr_after(&line, "listening: WebSocket ws://"));
        wss = wss.or(addr_after(&line, "listening: WebSocket over TLS wss://"));
        udp = udp.or(addr_after(&line, "listening: UDP devices udp://"));
        status = status.or(addr_after(&line, "listening: status http://"));
    }
    Proc {
        child,
        ws: ws.unwrap(),
        wss,
        udp: udp.unwrap(),
        status: status.unwrap(),
        _lines: lines,
    }
}

/// `cloudsocket upgrade` against `pid`: exit code and output.
pub fn upgrade(pid: u32, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cloudsocket"))
        .args(["upgrade", "--pid", &pid.to_string()])
        .args(extra)
        .output()
        .expect("run cloudsocket upgrade");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), text)
}

/// The new process's pid in `cloudsocket upgrade`'s "upgraded: pid A -> B, …" line.
pub fn new_pid(out: &str) -> u32 {
    out.split("-> ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.trim().parse().ok())
        .expect("the new pid")
}

/// Whether process `pid` exists.
pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// Waits (at most 5 s) for the old process of an upgrade to exit; its status.
pub fn exited(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the old process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}
