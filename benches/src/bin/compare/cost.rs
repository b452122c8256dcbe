//! `compare --matrix`, `--scaling` and `--latency`: the runs that report the servers' cost
//! and latency (issue 13), each against a fresh server, one alive at a time, in
//! alternating order. Asked for together (`benches/run --table`), they run as sections of
//! one table, and a later section takes what the matrix already measured instead of
//! measuring it again: each server's flood peak, and on a 2-core host the one-core scaling
//! row.

use std::time::Instant;

use benches::compare::median_of;

use super::{Cli, SERVERS, loadgen, loadgen_on, start, start_on, target_args};

/// loadgen's arguments for `server`: [`target_args`] and its pid.
fn server_args(server: &super::Server, base: i64) -> impl Iterator<Item = String> {
    target_args(server, base)
        .into_iter()
        .chain(["--server-pid".into(), server.child.id().to_string()])
}

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
    args.extend(server_args(&server, base));
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

/// What the matrix measured that a later section would otherwise measure again.
#[derive(Debug, Default)]
pub(super) struct Known {
    /// Each server's flood peak: ws→ws window 32, 200 pairs, 76 B (msgs/s, median).
    flood_peak: Option<[f64; 2]>,
    /// Each server's (msgs/s, µs/msg) for ws→ws window 8, 76 B, 5 000 pairs, the load on
    /// one core with one thread: the scaling section's one-core row on a 2-core host.
    one_core: Option<[(f64, f64); 2]>,
}

/// `--matrix`, `--latency` and `--scaling`, those asked for, in that order; with more than
/// one, each under its own heading and followed by its duration.
pub(super) fn run_sections(cli: &Cli) -> anyhow::Result<()> {
    let several =
        usize::from(cli.matrix) + usize::from(cli.latency.is_some()) + usize::from(cli.scaling) > 1;
    let section = |title: &str, run: &mut dyn FnMut() -> anyhow::Result<()>| {
        if several {
            println!("\n## {title}\n");
        }
        let started = Instant::now();
        run()?;
        if several {
            println!("\n(section: {:.0} s)", started.elapsed().as_secs_f64());
        }
        anyhow::Ok(())
    };
    let mut known = Known::default();
    if cli.matrix {
        section("Matrix", &mut || {
            known = run_matrix(cli)?;
            Ok(())
        })?;
    }
    if let Some(svg) = &cli.latency {
        section("Open-loop latency", &mut || {
            run_latency(cli, svg, known.flood_peak)
        })?;
    }
    if cli.scaling {
        section("Scaling", &mut || run_scaling(cli, known.one_core))?;
    }
    Ok(())
}

/// `--matrix`: every cell, alternating rounds, then one system-call run per server.
fn run_matrix(cli: &Cli) -> anyhow::Result<Known> {
    use benches::matrix::{Path, Side, cells, header, row};
    use std::io::Write as _;
    let started = Instant::now();
    let mut known = Known::default();
    println!("{}", header());
    let mut base = 10_000i64;
    let wanted =
        |c: &benches::matrix::Cell| cli.only.as_ref().is_none_or(|o| c.label().contains(o));
    for cell in cells(cli.full).into_iter().filter(wanted) {
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
        let med = |side: usize, p: &str| median_of(&sides[side].rounds, p);
        match (cell.path, cell.window, cell.size, cell.pairs) {
            (Path::WsToWs, 32, 76, 200) => {
                let peaks = [0, 1].map(|s| med(s, "/throughput_msgs_s"));
                // A cell whose rounds all failed leaves the latency section to measure.
                known.flood_peak = peaks
                    .iter()
                    .all(|p| p.is_finite() && *p > 0.0)
                    .then_some(peaks);
            }
            (Path::WsToWs, 8, 76, 5000) => {
                let figures = [0, 1].map(|s| {
                    (
                        med(s, "/throughput_msgs_s"),
                        med(s, "/server_cpu_us_per_msg"),
                    )
                });
                known.one_core = figures
                    .iter()
                    .all(|(rate, cpu)| rate.is_finite() && cpu.is_finite())
                    .then_some(figures);
            }
            _ => {}
        }
    }
    println!(
        "({} rounds per cell, A/B order alternating, a fresh server per round; {:.0} s in all)",
        cli.rounds,
        started.elapsed().as_secs_f64()
    );
    Ok(known)
}

/// `--scaling`: relay (ws→ws, window 8, 76 B, 5000 pairs) with the servers on 1, 2, 4 and
/// 8 cores — those this host has with at least one left for the load, which gets the rest.
/// On a 2-core host the one-core row is the matrix's cell of the same load when `one_core`
/// brings it (the same runs: one server core, the load on the other, one load thread).
fn run_scaling(cli: &Cli, one_core: Option<[(f64, f64); 2]>) -> anyhow::Result<()> {
    let online = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "| server cores | msgs/s cloudsocket | msgs/s peer | server µs/msg cloudsocket | server µs/msg peer |\n|---|---|---|---|---|"
    );
    for n in [1usize, 2, 4, 8] {
        if let (1, 2, Some([a, b])) = (n, online, one_core) {
            println!("| 1 | {:.0} | {:.0} | {:.3} | {:.3} |", a.0, b.0, a.1, b.1);
            continue;
        }
        if n >= online {
            println!(
                "| {n} | (needs {} cores: this host has {online}) | | | |",
                n + 1
            );
            continue;
        }
        let (server_cores, load_cores) = (format!("0-{}", n - 1), format!("{n}-{}", online - 1));
        let load_threads = (online - n).to_string();
        let mut reports: [Vec<String>; 2] = [Vec::new(), Vec::new()];
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
                ]
                .iter()
                .map(ToString::to_string)
                .chain(["--duration".into(), cli.cell_seconds.to_string()])
                .chain(server_args(
                    &server,
                    10_000 + 200_000 * (round * 2 + side) as i64,
                ))
                .collect();
                reports[side].push(loadgen_on(cli, &load_cores, &args)?);
                drop(server);
            }
        }
        let rate = |side: usize| median_of(&reports[side], "/throughput_msgs_s");
        let cpu = |side: usize| median_of(&reports[side], "/server_cpu_us_per_msg");
        println!(
            "| {n} | {:.0} | {:.0} | {:.3} | {:.3} |",
            rate(0),
            rate(1),
            cpu(0),
            cpu(1)
        );
    }
    if online == 2 && one_core.is_some() {
        println!(
            "\n(the one-core row is the matrix's ws→ws w8 76 B 5000 pairs cell: on this host the same runs)"
        );
    }
    Ok(())
}

/// A relay run (ws→ws, 200 pairs, 76 B) against a fresh server `side`, paced at `rate`
/// (0: flood at window 32); its loadgen JSON.
fn relay_at(cli: &Cli, side: usize, rate: u64, seconds: f64, base: i64) -> anyhow::Result<String> {
    let (name, ws, admin, udp) = SERVERS[side];
    let server = start(cli, name, ws, admin, udp)?;
    let args: Vec<String> = [
        "relay".to_string(),
        "--pairs".into(),
        "200".into(),
        "--size".into(),
        "76".into(),
        "--window".into(),
        "32".into(),
        "--rate".into(),
        rate.to_string(),
        "--warmup".into(),
        "2".into(),
        "--duration".into(),
        seconds.to_string(),
    ]
    .into_iter()
    .chain(server_args(&server, base))
    .collect();
    let text = loadgen(cli, &args)?;
    eprintln!(
        "[latency {name} at {rate}] {}",
        text.chars().take(160).collect::<String>()
    );
    drop(server);
    Ok(text)
}

/// `--latency`: open-loop relay at fixed rates both servers sustain (20 k, 100 k, 200 k
/// msgs/s) and at 50 % and 70 % of each server's own flood peak (`known_peak`, the matrix's,
/// or measured here); prints a markdown table and writes the plot (p50 and p99 against
/// offered load) to `svg`.
fn run_latency(
    cli: &Cli,
    svg: &std::path::Path,
    known_peak: Option<[f64; 2]>,
) -> anyhow::Result<()> {
    use benches::compare::extract;
    use benches::stats::median;
    let mut base = 5_000_000i64;
    let mut next_base = || {
        base += 200_000;
        base
    };
    let mut peaks = [Vec::new(), Vec::new()];
    for round in 0..if known_peak.is_some() { 0 } else { cli.rounds } {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let flood = relay_at(cli, side, 0, 5.0, next_base())?;
            peaks[side].push(extract(&flood, "/throughput_msgs_s"));
        }
    }
    let peak = known_peak.unwrap_or([median(&peaks[0]), median(&peaks[1])]);
    // (label, rate per side)
    let mut rates: Vec<(String, [u64; 2])> = [20_000u64, 100_000, 200_000]
        .iter()
        .map(|&r| (format!("{} k", r / 1000), [r, r]))
        .collect();
    for fraction in [0.5, 0.7] {
        let own = peak.map(|p| (p * fraction) as u64);
        rates.push((format!("{:.0} % of own peak", fraction * 100.0), own));
    }
    println!(
        "flood peak (window 32, 200 pairs, 76 B{}): cloudsocket {:.0}, tokio-peer {:.0} msgs/s\n",
        if known_peak.is_some() {
            "; the matrix's cell"
        } else {
            ""
        },
        peak[0],
        peak[1]
    );
    println!(
        "| offered | server | achieved msgs/s | p50 µs | p99 µs | p99.9 µs | late / skipped | server µs/msg | server busy % | send lag p99 µs |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut curves: [Vec<(f64, [f64; 2])>; 2] = [Vec::new(), Vec::new()];
    for (label, rate) in &rates {
        let mut reports = [Vec::new(), Vec::new()];
        for round in 0..cli.rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let seconds = cli.cell_seconds;
                reports[side].push(relay_at(cli, side, rate[side], seconds, next_base())?);
            }
        }
        for side in [0, 1] {
            let fig = |p: &str| median_of(&reports[side], p);
            let (p50, p99, p999) = (
                fig("/latency/p50_us"),
                fig("/latency/p99_us"),
                fig("/latency/p999_us"),
            );
            println!(
                "| {label} ({}) | {} | {:.0} | {p50:.0} | {p99:.0} | {p999:.0} | {:.0} / {:.0} | {:.3} | {:.0} | {:.0} |",
                rate[side],
                SERVERS[side].0,
                fig("/throughput_msgs_s"),
                fig("/late"),
                fig("/skipped"),
                fig("/server_cpu_us_per_msg"),
                fig("/server/cpu_util") * 100.0,
                fig("/send_lag/p99_us"),
            );
            curves[side].push((rate[side] as f64, [p50, p99]));
        }
    }
    let mut plot = Vec::new();
    for side in [0, 1] {
        let mut points = curves[side].clone();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (stat, dashed) in [(1, false), (0, true)] {
            plot.push((
                format!(
                    "{} {}",
                    SERVERS[side].0,
                    if stat == 1 { "p99" } else { "p50" }
                ),
                dashed,
                points
                    .iter()
                    .map(|(x, p)| (*x, p[stat]))
                    .collect::<Vec<_>>(),
            ));
        }
    }
    let curves: Vec<benches::svg_load::Curve<'_>> = plot
        .iter()
        .map(|(label, dashed, points)| benches::svg_load::Curve {
            label,
            dashed: *dashed,
            points: points.clone(),
        })
        .collect();
    let title = "relay ws→ws, 200 pairs, 76 B, open loop: latency against offered load";
    std::fs::write(svg, benches::svg_load::render(title, &curves))?;
    println!("\n(plot: {})", svg.display());
    Ok(())
}
