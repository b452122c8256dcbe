//! `loadgen deadlines`: the node's own clocks against idle attackers. N slow-loris
//! connections write half an upgrade request and nothing more; N more upgrade and never
//! send a login. Reports when the target closed each kind (min / median / max seconds after
//! the connection was opened) and what the silent ones got first (the login-timeout reply
//! `[5]`). Against a production node: 10 s and 60 s.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use clap::Args;
use edge_proto::login::LoginReply;
use serde::Serialize;

use crate::args::Common;
use crate::poller::{Poller, READ};
use crate::report;
use crate::wsclient::{Codec, Phase, upgrade_request};

/// `deadlines` options.
#[derive(Debug, Clone, Args)]
pub struct DeadlinesArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Connections of each kind.
    #[arg(long, default_value_t = 500)]
    pub connections: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 90.0)]
    pub timeout: f64,
}

/// Close times of one kind, seconds after connect.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Closes {
    /// Connections opened.
    pub opened: usize,
    /// Closed by the target.
    pub closed: usize,
    /// Earliest close.
    pub min_s: f64,
    /// Median close.
    pub median_s: f64,
    /// Latest close.
    pub max_s: f64,
}

/// What a deadlines run measured.
#[derive(Debug, Clone, Serialize)]
pub struct DeadlinesReport {
    /// Half an upgrade request, then silence.
    pub slow_loris: Closes,
    /// Upgraded, never logged in.
    pub silent_login: Closes,
    /// Silent ones whose first message was the login-timeout reply `[5]`.
    pub silent_got_reply_5: usize,
}

struct Conn {
    stream: TcpStream,
    opened: Instant,
    loris: bool,
    /// Silent ones: upgrade response, then the first frame (the login reply slot). Its
    /// login is never written.
    codec: Codec,
    closed: Option<f64>,
}

fn open(addr: SocketAddr, loris: bool) -> io::Result<Conn> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    if loris {
        stream.write_all(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")?;
    } else {
        stream.write_all(&upgrade_request("127.0.0.1"))?;
    }
    stream.set_nonblocking(true)?;
    let mut codec = Codec::new(Vec::new());
    codec.phase = Phase::Upgrading;
    Ok(Conn {
        stream,
        opened: Instant::now(),
        loris,
        codec,
        closed: None,
    })
}

impl Conn {
    /// Reads what arrived; records the close (end of stream or reset).
    fn on_readable(&mut self, scratch: &mut [u8]) {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => break,
                Ok(n) => self.codec.feed(&scratch[..n], |_, _| {}),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.closed = Some(self.opened.elapsed().as_secs_f64());
    }

    fn got_reply_5(&self) -> bool {
        self.codec.reply.is_some() && self.codec.reply == LoginReply::decode(&[5])
    }
}

fn summary(conns: &[Conn], loris: bool) -> Closes {
    let mut times: Vec<f64> = conns
        .iter()
        .filter(|c| c.loris == loris)
        .filter_map(|c| c.closed)
        .collect();
    times.sort_by(f64::total_cmp);
    let opened = conns.iter().filter(|c| c.loris == loris).count();
    Closes {
        opened,
        closed: times.len(),
        min_s: times.first().copied().unwrap_or(f64::NAN),
        median_s: times.get(times.len() / 2).copied().unwrap_or(f64::NAN),
        max_s: times.last().copied().unwrap_or(f64::NAN),
    }
}

/// Runs the scenario.
pub fn run(a: &DeadlinesArgs) -> anyhow::Result<()> {
    let c = &a.common;
    let mut poller = Poller::new(1024)?;
    let mut conns = Vec::with_capacity(2 * a.connections);
    for i in 0..2 * a.connections {
        let conn = open(c.target[i % c.target.len()], i % 2 == 0)?;
        poller.add(conn.stream.as_raw_fd(), i as u64, READ)?;
        conns.push(conn);
    }
    let mut scratch = vec![0u8; 64 * 1024];
    let start = Instant::now();
    while conns.iter().any(|c| c.closed.is_none()) && start.elapsed().as_secs_f64() < a.timeout {
        for ev in poller.wait(100)? {
            if let Some(conn) = conns.get_mut(ev.token as usize) {
                conn.on_readable(&mut scratch);
                if conn.closed.is_some() {
                    poller.delete(conn.stream.as_raw_fd());
                }
            }
        }
    }
    let r = DeadlinesReport {
        slow_loris: summary(&conns, true),
        silent_login: summary(&conns, false),
        silent_got_reply_5: conns.iter().filter(|c| !c.loris && c.got_reply_5()).count(),
    };
    let row = |k: &Closes| {
        format!(
            "{} / {} closed; {:.2} / {:.2} / {:.2} s (min / median / max)",
            k.closed, k.opened, k.min_s, k.median_s, k.max_s
        )
    };
    let rows = vec![
        ("slow loris", row(&r.slow_loris)),
        ("silent login", row(&r.silent_login)),
        (
            "got [5] first",
            format!("{} / {}", r.silent_got_reply_5, r.silent_login.opened),
        ),
    ];
    report::emit(c.json, "deadlines", &rows, &serde_json::to_value(&r)?);
    Ok(())
}
