//! `compare --matrix` and `--scaling`: the runs that report the servers' cost (issue 13),
//! each against a fresh server, one alive at a time, in alternating order.

use std::time::Instant;

use super::{Cli, SERVERS, loadgen, loadgen_on, start, start_on};

/// One matrix run against a fresh server `side`: its loadgen JSON.
fn matrix_run(
    cli: &Cli,
    cell: &benches::matrix::Cell,
    side: usize,
    base: i64,
    (warmup, seconds, syscalls): (f64, f64, bool),
) -> anyhow::Result<String> {
    let (name, ws, admin, udp) = SERVERS[side];
    let server = start(cli, name, ws, admin, udp)?;
    let mut args = cell.loadgen_args(warmup, seconds, &format!("127.0.0.1:{udp}"));
    args.extend([
        "--json".into(),
        "--target".into(),
        format!("127.0.0.1:{},127.0.0.1:{}", ws[0], ws[1]),
        "--admin".into(),
        format!("127.0.0.1:{admin}"),
        "--base-id".into(),
        base.to_string(),
        "--server-pid".into(),
        server.child.id().to_string(),
    ]);
    if syscalls {
        args.push("--syscalls".into());
    }
    let text = loadgen(cli, &args)?;
    eprintln!(
        "[{} {name}{}] {}",
        cell.label(),
        if syscalls { " syscalls" } else { "" },
        text.chars().take(160).collect::<String>()
    );
    drop(server);
    Ok(text)
}

/// `--matrix`: every cell, alternating rounds, then one system-call run per server.
pub(super) fn run_matrix(cli: &Cli) -> anyhow::Result<()> {
    use benches::matrix::{Path, Side, cells, header, row};
    use std::io::Write as _;
    let started = Instant::now();
    println!("{}", header());
    let mut base = 10_000i64;
    for cell in cells(cli.full) {
        let mut sides = [Side::default(), Side::default()];
        for round in 0..cli.rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                base += 200_000;
                let timing = (2.0, cli.cell_seconds, false);
                sides[side]
                    .rounds
                    .push(matrix_run(cli, &cell, side, base, timing)?);
            }
        }
        if cell.path != Path::Connect {
            for side in [0, 1] {
                base += 200_000;
                let run = matrix_run(cli, &cell, side, base, (1.0, 3.0, true))?;
                sides[side].syscalls = Some(run);
            }
        }
        println!("{}", row(&cell, &sides[0], &sides[1]));
        let _ = std::io::stdout().flush();
    }
    println!(
        "({} rounds per cell, A/B order alternating, a fresh server per round; {:.0} s in all)",
        cli.rounds,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `--scaling`: relay (ws→ws, window 8, 76 B, 5000 pairs) with the servers on 1, 2, 4 and
/// 8 cores — those this host has with at least one left for the load, which gets the rest.
pub(super) fn run_scaling(cli: &Cli) -> anyhow::Result<()> {
    let online = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "| server cores | msgs/s cloudsocket | msgs/s peer | server µs/msg cloudsocket | server µs/msg peer |\n|---|---|---|---|---|"
    );
    for n in [1usize, 2, 4, 8] {
        if n >= online {
            println!(
                "| {n} | (needs {} cores: this host has {online}) | | | |",
                n + 1
            );
            continue;
        }
        let (server_cores, load_cores) = (format!("0-{}", n - 1), format!("{n}-{}", online - 1));
        let load_threads = (online - n).to_string();
        let mut figures: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
        for round in 0..cli.rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let (name, ws, admin, udp) = SERVERS[side];
                let server = start_on(cli, name, (ws, admin, udp), &server_cores, n)?;
                let args: Vec<String> = [
                    "relay",
                    "--pairs",
                    "5000",
                    "--window",
                    "8",
                    "--size",
                    "76",
                    "--warmup",
                    "2",
                    "--threads",
                    &load_threads,
                    "--json",
                    "--server-pid",
                ]
                .iter()
                .map(ToString::to_string)
                .chain([
                    server.child.id().to_string(),
                    "--duration".into(),
                    cli.cell_seconds.to_string(),
                    "--target".into(),
                    format!("127.0.0.1:{},127.0.0.1:{}", ws[0], ws[1]),
                    "--admin".into(),
                    format!("127.0.0.1:{admin}"),
                    "--base-id".into(),
                    (10_000 + 200_000 * (round * 2 + side) as i64).to_string(),
                ])
                .collect();
                let text = loadgen_on(cli, &load_cores, &args)?;
                drop(server);
                figures[side].push((
                    benches::compare::extract(&text, "/throughput_msgs_s"),
                    benches::compare::extract(&text, "/server_cpu_us_per_msg"),
                ));
            }
        }
        let med = |v: Vec<f64>| benches::stats::spread(&v).map_or(f64::NAN, |s| s.median);
        let col = |side: usize, rate: bool| {
            med(figures[side]
                .iter()
                .map(|&(r, c)| if rate { r } else { c })
                .collect())
        };
        println!(
            "| {n} | {:.0} | {:.0} | {:.3} | {:.3} |",
            col(0, true),
            col(1, true),
            col(0, false),
            col(1, false)
        );
    }
    Ok(())
}
