//! Silent partitions for tests: a network namespace joined to ours by a veth pair, and
//! blackhole routes on both sides that drop every packet between them (no RST, no FIN,
//! no ICMP — this kernel has no `netem`). Processes started inside with [`Net::inside`]
//! are killed, and the namespace and routes removed, when the [`Net`] is dropped.
//!
//! Needs root and `ip` (iproute2), as `scripts/test` runs; without them a test fails
//! and says so.
#![allow(dead_code, reason = "each test target uses only some of these helpers")]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};

/// Runs `ip args…`, panicking with what to do when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("`ip` (iproute2) is needed: {e}; run the tests with scripts/test, as root")
    });
    assert!(
        out.status.success(),
        "ip {}: {} (network namespaces need root: run scripts/test as root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespace, the veth pair and the processes inside; all removed on drop.
pub struct Net {
    /// The namespace's name.
    pub ns: String,
    /// Our end's address.
    pub ours: String,
    /// The namespace's address.
    pub theirs: String,
    children: Vec<Child>,
}

impl Net {
    /// A namespace `<prefix><n>` with the /30 `10.<octet>.<n % 250>.0` between us.
    pub fn new(prefix: &str, octet: u8, n: u32) -> Net {
        let net = Net {
            ns: format!("{prefix}{n}"),
            ours: format!("10.{octet}.{}.1", n % 250),
            theirs: format!("10.{octet}.{}.2", n % 250),
            children: Vec::new(),
        };
        let (a, b) = (format!("{prefix}{n}a"), format!("{prefix}{n}b"));
        ip(&["netns", "add", &net.ns]);
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ip(&["link", "set", &b, "netns", &net.ns]);
        ip(&["addr", "add", &format!("{}/30", net.ours), "dev", &a]);
        ip(&["link", "set", &a, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &net.ns, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{}/30", net.theirs), "dev", &b]);
        inside(&["link", "set", &b, "up"]);
        inside(&["link", "set", "lo", "up"]);
        net
    }

    /// A command that runs `program` inside the namespace; spawn it with [`Net::spawn`].
    pub fn inside(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns, program]);
        command
    }

    /// Spawns `command`; the process is killed when the namespace goes.
    pub fn spawn(&mut self, command: &mut Command) {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?} in {}: {e}", self.ns));
        self.children.push(child);
    }

    /// Drops every packet between the two sides (`true`), or lets them through again.
    pub fn partition(&self, on: bool) {
        let verb = if on { "add" } else { "del" };
        ip(&["route", verb, "blackhole", &format!("{}/32", self.theirs)]);
        let ours = format!("{}/32", self.ours);
        let args = [
            "netns",
            "exec",
            &self.ns,
            "ip",
            "route",
            verb,
            "blackhole",
            &ours,
        ];
        ip(&args);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["route", "del", "blackhole", &format!("{}/32", self.theirs)])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// Forwards connections on `listen` to `to`, from threads of this process; the address
/// it listens on.
pub fn forward(listen: &str, to: String) -> SocketAddr {
    let listener = TcpListener::bind(listen).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for inbound in listener.incoming().flatten() {
            let Ok(outbound) = TcpStream::connect(&to) else {
                continue;
            };
            for (mut from, mut into) in [
                (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                (outbound, inbound),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    addr
}

/// The same forwarder as [`forward`], as a Python program to run inside the namespace
/// (`python3 -c FORWARDER listen_host listen_port to_host to_port`).
pub const FORWARDER: &str = r#"
import socket, sys, threading
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            b.sendall(d)
    except OSError: pass
    for s in (a, b):
        try: s.shutdown(socket.SHUT_RDWR)
        except OSError: pass
l = socket.create_server((sys.argv[1], int(sys.argv[2])))
while True:
    c, _ = l.accept()
    try: u = socket.create_connection((sys.argv[3], int(sys.argv[4])))
    except OSError:
        c.close(); continue
    for a, b in ((c, u), (u, c)):
        threading.Thread(target=pump, args=(a, b), daemon=True).start()
"#;
