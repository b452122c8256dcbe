//! `compare`: starts cloudsocket (A) and the tokio peer (B) pinned to one server core,
//! runs the same loadgen scenarios against each, alternating A/B for `--rounds` rounds with
//! the load pinned to another core, and prints each figure's medians and the A/B ratio
//! (min / median / max). Loopback only; bounded; stops exactly what it started.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use benches::compare::{FIGURES, extract, header, row};
use clap::Parser;

mod cost;

#[derive(Parser, Debug)]
#[command(name = "compare")]
struct Cli {
    /// Rounds of A/B.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Scenarios: relay, relay70, storm, idle, push, udp.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "relay,relay70,storm,idle"
    )]
    scenarios: Vec<String>,
    /// Relay pairs.
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Storm connections.
    #[arg(long, default_value_t = 4000)]
    connections: usize,
    /// Idle steps.
    #[arg(long, default_value = "1000,3000,6000")]
    idle_steps: String,
    /// Core for the servers.
    #[arg(long, default_value_t = 1)]
    server_core: usize,
    /// Core for the load.
    #[arg(long, default_value_t = 0)]
    load_core: usize,
    /// Directory with the release binaries (loadgen, tokio-peer, cloudsocket).
    #[arg(long, default_value = "target/release")]
    bin: String,
    /// The cloudsocket binary (default: <bin>/cloudsocket).
    #[arg(long)]
    cloudsocket: Option<String>,
    /// Run the workload matrix (`benches::matrix`) instead of `--scenarios`: a fresh
    /// server per round, one alive at a time, server CPU per message; prints a markdown
    /// table.
    #[arg(long)]
    matrix: bool,
    /// With `--matrix`: every cell (about an hour) instead of the default set (under 30
    /// minutes on 2 cores).
    #[arg(long)]
    full: bool,
    /// With `--matrix`: only the cells whose label contains this.
    #[arg(long)]
    only: Option<String>,
    /// Relay throughput with the servers on 1, 2, 4, 8 cores (those this host has, the
    /// load on the rest); prints a markdown table.
    #[arg(long)]
    scaling: bool,
    /// Open-loop latency against offered load for both servers; writes the plot (SVG) here
    /// and prints a markdown table. `--matrix`, `--latency` and `--scaling` together run as
    /// the sections of one table (`benches/run --table`), later ones reusing the matrix's
    /// flood peaks and, on a 2-core host, its one-core relay cell.
    #[arg(long, value_name = "SVG")]
    latency: Option<std::path::PathBuf>,
    /// With `--matrix`, `--scaling` or `--latency`: measured seconds per round (after a
    /// 2 s warm-up).
    #[arg(long, default_value_t = 10.0)]
    cell_seconds: f64,
}

struct Server {
    name: &'static str,
    child: Child,
    ws: [u16; 2],
    admin: u16,
    udp: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(6);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(
    cli: &Cli,
    name: &'static str,
    ws: [u16; 2],
    admin: u16,
    udp: u16,
) -> anyhow::Result<Server> {
    start_on(cli, name, (ws, admin, udp), &cli.server_core.to_string(), 1)
}

/// Starts server `name` on the cores `core` lists (`taskset` syntax), `threads` of them.
fn start_on(
    cli: &Cli,
    name: &'static str,
    (ws, admin, udp): ([u16; 2], u16, u16),
    core: &str,
    threads: usize,
) -> anyhow::Result<Server> {
    let core = core.to_string();
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &core]);
    if name == "cloudsocket" {
        cmd.arg(
            cli.cloudsocket
                .clone()
                .unwrap_or_else(|| format!("{}/cloudsocket", cli.bin)),
        )
        .args(["run", "--cores", &core])
        .args(["--ports", &format!(":{},:{}", ws[0], ws[1])])
        .args([
            "--sh",
            &format!("127.0.0.1:{admin}"),
            "--hudp",
            &format!(":{udp}"),
        ])
        .args(["--upload-log", "/tmp/compare-uploads.log"]);
    } else {
        cmd.arg(format!("{}/tokio-peer", cli.bin))
            .args(["--threads", &threads.to_string()])
            .args(["--port", &format!("{},{}", ws[0], ws[1])])
            .args([
                "--sh",
                &format!("127.0.0.1:{admin}"),
                "--udp-port",
                &udp.to_string(),
            ]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {name}"))?;
    let server = Server {
        name,
        child,
        ws,
        admin,
        udp,
    };
    let end = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", admin)).is_err() {
        if Instant::now() > end {
            bail!("{name} did not open its status port");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(server)
}

fn scenario_args(cli: &Cli, scenario: &str, s: &Server, base: i64) -> Vec<String> {
    let mut v: Vec<String> = match scenario {
        "relay" | "relay70" => {
            let mut v = vec![
                "relay".into(),
                "--pairs".into(),
                cli.pairs.to_string(),
                "--duration".into(),
                cli.duration.to_string(),
            ];
            if scenario == "relay70" {
                v.extend(["--find-peak".into(), "2".into()]);
            }
            v
        }
        "storm" => vec![
            "storm".into(),
            "--connections".into(),
            cli.connections.to_string(),
            "--rounds".into(),
            "2".into(),
        ],
        "idle" => vec![
            "idle".into(),
            "--pid".into(),
            s.child.id().to_string(),
            "--steps".into(),
            cli.idle_steps.clone(),
        ],
        "push" => vec![
            "push".into(),
            "--phones".into(),
            "1000".into(),
            "--duration".into(),
            cli.duration.to_string(),
        ],
        _ => vec![
            "udp".into(),
            "--sessions".into(),
            "1000".into(),
            "--duration".into(),
            cli.duration.to_string(),
            "--udp-target".into(),
            format!("127.0.0.1:{}", s.udp),
        ],
    };
    v.extend(target_args(s, base));
    v
}

/// loadgen's arguments for server `s`: JSON out, its addresses, the id base.
fn target_args(s: &Server, base: i64) -> [String; 7] {
    [
        "--json".into(),
        "--target".into(),
        format!("127.0.0.1:{},127.0.0.1:{}", s.ws[0], s.ws[1]),
        "--admin".into(),
        format!("127.0.0.1:{}", s.admin),
        "--base-id".into(),
        base.to_string(),
    ]
}

/// The two servers: name, WebSocket ports, admin port, UDP port.
const SERVERS: [(&str, [u16; 2], u16, u16); 2] = [
    ("cloudsocket", [21234, 21235], 39999, 27999),
    ("tokio-peer", [22234, 22235], 39998, 28999),
];

/// Runs loadgen pinned to the load core; its JSON report (trimmed).
fn loadgen(cli: &Cli, args: &[String]) -> anyhow::Result<String> {
    loadgen_on(cli, &cli.load_core.to_string(), args)
}

/// Runs loadgen pinned to the cores `cores` lists; its JSON report (trimmed).
fn loadgen_on(cli: &Cli, cores: &str, args: &[String]) -> anyhow::Result<String> {
    let out = Command::new("taskset")
        .args(["-c", cores, &format!("{}/loadgen", cli.bin)])
        .args(args)
        .stderr(Stdio::null())
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.matrix || cli.scaling || cli.latency.is_some() {
        return cost::run_sections(&cli);
    }
    let servers = [
        start(&cli, "cloudsocket", [21234, 21235], 39999, 27999)?,
        start(&cli, "tokio-peer", [22234, 22235], 39998, 28999)?,
    ];
    let deadline = Instant::now() + Duration::from_secs(40 * 60);
    let mut results: Vec<(String, [Vec<f64>; 2])> = Vec::new();
    let mut base = 10_000i64;
    for scenario in &cli.scenarios {
        let mut reports: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        for round in 0..cli.rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                if Instant::now() > deadline {
                    bail!("time budget exhausted");
                }
                let s = &servers[side];
                base += 200_000;
                let out = Command::new("taskset")
                    .args([
                        "-c",
                        &cli.load_core.to_string(),
                        &format!("{}/loadgen", cli.bin),
                    ])
                    .args(scenario_args(&cli, scenario, s, base))
                    .stderr(Stdio::null())
                    .output()?;
                let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
                eprintln!(
                    "[{scenario} round {round} {}] {}",
                    s.name,
                    text.chars().take(200).collect::<String>()
                );
                reports[side].push(text);
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        for f in FIGURES.iter().filter(|f| f.scenario == scenario.as_str()) {
            let vals = [0, 1].map(|side| {
                reports[side]
                    .iter()
                    .map(|r| extract(r, f.pointer))
                    .collect::<Vec<_>>()
            });
            results.push((f.label.to_string(), vals));
        }
    }
    println!("{}", header());
    for (label, [a, b]) in &results {
        println!("{}", row(label, a, b));
    }
    println!(
        "(ratio = cloudsocket / tokio-peer per round; {} rounds, A/B order alternating)",
        cli.rounds
    );
    drop(servers);
    Ok(())
}
