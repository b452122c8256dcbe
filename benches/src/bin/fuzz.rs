//! `fuzz`: mutation fuzzing of every `edge-proto` decoder and the node's own parsers, on
//! stable Rust, deterministic per `--seed`.
//!
//! ```text
//! fuzz [--target NAME|all] [--iterations N] [--seed S] [--corpus DIR] [--crashes DIR]
//!      [--max-seconds T] [--list]
//! ```
//! Prints one line per target (inputs, crashes, outcome kinds, time, inputs/s) and exits 1
//! if any input panicked or broke an invariant; failing inputs go to `--crashes`
//! (default `target/fuzz-crashes`). With `--corpus benches/fuzz/corpus` the kept corpus is
//! read as seeds and inputs with new outcomes are added to it.

use std::path::PathBuf;
use std::time::Duration;

use benches::fuzz::{RunOptions, run_target, target, targets};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Fuzz edge-proto's decoders and the node's parsers")]
struct Args {
    /// Target name, or `all`.
    #[arg(long, default_value = "all")]
    target: String,
    /// Inputs per target.
    #[arg(long, default_value_t = 1_000_000)]
    iterations: u64,
    /// PRNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Corpus root: `<DIR>/<target>/` is read as seeds and receives new inputs.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Where failing inputs are written.
    #[arg(long, default_value = "target/fuzz-crashes")]
    crashes: PathBuf,
    /// Stop each target after this many seconds.
    #[arg(long)]
    max_seconds: Option<u64>,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
}

fn main() {
    let args = Args::parse();
    if args.list {
        for t in targets::ALL {
            println!("{}", t.name);
        }
        return;
    }
    let chosen: Vec<_> = if args.target == "all" {
        targets::ALL.to_vec()
    } else {
        args.target
            .split(',')
            .map(|name| {
                target(name).unwrap_or_else(|| {
                    eprintln!("unknown target {name} (see --list)");
                    std::process::exit(2)
                })
            })
            .collect()
    };
    let options = RunOptions {
        iterations: args.iterations,
        seed: args.seed,
        corpus: args.corpus,
        crashes: Some(args.crashes),
        max_time: args.max_seconds.map(Duration::from_secs),
    };
    println!(
        "{:<14} {:>12} {:>8} {:>9} {:>6} {:>9} {:>12}",
        "target", "inputs", "crashes", "outcomes", "saved", "seconds", "inputs/s"
    );
    let (mut total, mut crashes) = (0u64, 0u64);
    for t in &chosen {
        let report = run_target(t, &options);
        let secs = report.elapsed.as_secs_f64();
        println!(
            "{:<14} {:>12} {:>8} {:>9} {:>6} {:>9.1} {:>12.0}",
            report.target,
            report.inputs,
            report.crashes(),
            report.features,
            report.saved,
            secs,
            report.inputs as f64 / secs.max(1e-9)
        );
        for (why, input) in &report.failures {
            let hex: String = input.iter().take(64).map(|b| format!("{b:02x}")).collect();
            println!("  FAIL {why}\n       input ({} bytes) {hex}", input.len());
        }
        total += report.inputs;
        crashes += report.crashes();
    }
    println!(
        "total inputs {total}, crashes {crashes}, seed {}",
        options.seed
    );
    if crashes > 0 {
        std::process::exit(1);
    }
}
