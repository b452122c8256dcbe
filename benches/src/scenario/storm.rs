//! `loadgen storm`: connect + upgrade + login rate. Opens N phones with at most
//! `--concurrency` mid-handshake, closes them all (RST), and re-establishes them, `--rounds`
//! times; reports connections/s and the time to re-establish N.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::args::{Common, split};
use crate::fleet::{Fleet, open_all};
use crate::report::{self, Counters, Progress};

/// `storm` options.
#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Connections per round.
    #[arg(long, default_value_t = 5000)]
    pub connections: usize,
    /// Mid-handshake connections per thread.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Load threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Rounds (the first opens, the rest re-establish).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Pause between rounds, ms (for the target to see the closes before the same ids log
    /// in again; 0 for refused logins, which hold nothing).
    #[arg(long, default_value_t = 500)]
    pub pause_ms: u64,
}

/// One round.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// Logged in.
    pub ok: usize,
    /// Failed.
    pub failed: usize,
    /// Seconds until the last login.
    pub seconds: f64,
    /// Logins per second.
    pub conns_per_s: f64,
}

/// Runs the scenario.
pub fn run(a: &StormArgs) -> anyhow::Result<()> {
    let c = &a.common;
    let counters = Arc::new(Counters::default());
    let _progress = Progress::start("storm", counters.clone());
    let mut rounds = Vec::new();
    let mut notes = Vec::new();
    // Server CPU over every round: connect, upgrade, login, and (in the pause after each
    // round) close.
    let window = (!c.server_pid.is_empty())
        .then(|| crate::server_cost::Window::begin(&c.server_pid, false, Duration::ZERO));
    for _ in 0..a.rounds {
        let start = Instant::now();
        let handles: Vec<_> = split(a.connections, a.threads)
            .into_iter()
            .map(|range| {
                let (a, counters) = (a.clone(), counters.clone());
                std::thread::spawn(move || -> anyhow::Result<(Fleet, f64)> {
                    let c = &a.common;
                    let ids: Vec<i64> = range.map(|i| c.user(i)).collect();
                    let mut fleet = Fleet::new()?;
                    counters.sent.fetch_add(ids.len() as u64, Ordering::Relaxed);
                    open_all(
                        &mut fleet,
                        &c.target,
                        &ids,
                        c.salt.as_bytes(),
                        a.concurrency,
                        Duration::from_secs(60),
                    )?;
                    let t = start.elapsed().as_secs_f64();
                    counters
                        .done
                        .fetch_add(fleet.ready as u64, Ordering::Relaxed);
                    counters
                        .errors
                        .fetch_add(fleet.failed as u64, Ordering::Relaxed);
                    Ok((fleet, t))
                })
            })
            .collect();
        let mut fleets = Vec::new();
        let mut seconds: f64 = 0.0;
        for h in handles {
            let (f, t) = h
                .join()
                .map_err(|_| anyhow::anyhow!("storm thread panicked"))??;
            seconds = seconds.max(t);
            fleets.push(f);
        }
        let ok: usize = fleets.iter().map(|f| f.ready).sum();
        let failed: usize = fleets.iter().map(|f| f.failed).sum();
        for f in &mut fleets {
            notes.append(&mut f.errors);
            f.close_all();
        }
        rounds.push(Round {
            ok,
            failed,
            seconds,
            conns_per_s: ok as f64 / seconds,
        });
        // Let the target notice the closes before the same ids log in again.
        std::thread::sleep(Duration::from_millis(a.pause_ms));
    }
    let cost = window
        .map(crate::server_cost::Window::end)
        .unwrap_or_default();
    drop(_progress);
    for n in notes.iter().take(5) {
        eprintln!("storm: {n}");
    }
    let rates: Vec<f64> = rounds.iter().map(|r| r.conns_per_s).collect();
    let best = rates.iter().copied().fold(0.0, f64::max);
    let mut rows = vec![("connections", a.connections.to_string())];
    let labels: Vec<String> = (0..rounds.len())
        .map(|i| {
            if i == 0 {
                "open".into()
            } else {
                format!("re-establish {i}")
            }
        })
        .collect();
    for (l, r) in labels.iter().zip(&rounds) {
        rows.push((
            l.as_str(),
            format!(
                "{} ok, {} failed, {:.3} s, {:.0} conn/s",
                r.ok, r.failed, r.seconds, r.conns_per_s
            ),
        ));
    }
    rows.push(("best", format!("{best:.0} conn/s")));
    let total: usize = rounds.iter().map(|r| r.ok).sum();
    let per_conn = cost.us_per(total as u64);
    if let Some(us) = per_conn {
        rows.push(("server CPU per connection", format!("{us:.1} µs")));
    }
    let value = serde_json::json!({ "rounds": rounds, "best_conns_per_s": best,
        "errors": rounds.iter().map(|r| r.failed).sum::<usize>(),
        "server_cpu_us_per_conn": per_conn, "server": cost });
    report::emit(c.json, "storm", &rows, &value);
    Ok(())
}
