//! The fuzz harness inside `cargo test`: replays the kept corpus
//! (`benches/fuzz/corpus/<target>/`) and the seeds of every target, then runs a short
//! deterministic fuzz pass (100 000 inputs per target). Any panic or broken invariant fails
//! the test with the input in hex; reproduce with
//! `cargo run --release -p benches --bin fuzz -- --target <name> --seed <seed>`.
//! No timing assertions: the pass is bounded by its input count only.

use benches::fuzz::{RunOptions, read_corpus, repo_corpus, run_one, run_target, target, targets};

fn hex(input: &[u8]) -> String {
    input.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn corpus_folders_name_targets() {
    let root = repo_corpus();
    let dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("benches/fuzz/corpus exists")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!dirs.is_empty(), "the corpus is empty");
    for name in dirs {
        assert!(
            target(&name).is_some(),
            "corpus folder {name} names no target"
        );
    }
}

#[test]
fn corpus_and_seeds_replay_clean() {
    let mut replayed = 0;
    let mut failures = Vec::new();
    for t in targets::ALL {
        let corpus = read_corpus(&repo_corpus().join(t.name));
        let inputs = (t.seeds)()
            .into_iter()
            .map(|b| ("seed".to_owned(), b))
            .chain(
                corpus
                    .into_iter()
                    .map(|(p, b)| (p.display().to_string(), b)),
            );
        for (from, input) in inputs {
            replayed += 1;
            if let Err((panicked, why)) = run_one(t, &input) {
                failures.push(format!(
                    "{} ({from}): {} {why}\n  input {}",
                    t.name,
                    if panicked { "PANIC" } else { "invariant" },
                    hex(&input)
                ));
            }
        }
    }
    assert!(replayed > targets::ALL.len(), "nothing replayed");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn short_fuzz_run_finds_nothing() {
    let mut failures = Vec::new();
    for t in targets::ALL {
        // Each tls_records input builds two rustls sessions: about a hundred times the
        // cost of the others, so fewer in this test (the `fuzz` binary runs it longer).
        let iterations = if t.name == "tls_records" {
            3_000
        } else {
            100_000
        };
        let options = RunOptions {
            iterations,
            seed: 0x0c10_d50c,
            corpus: None,
            crashes: None,
            max_time: None,
        };
        let report = run_target(t, &options);
        assert!(
            report.inputs >= iterations,
            "{}: only {} inputs",
            t.name,
            report.inputs
        );
        for (why, input) in &report.failures {
            failures.push(format!("{}: {why}\n  input {}", t.name, hex(input)));
        }
        assert_eq!(report.crashes(), 0, "{}: {}", t.name, failures.join("\n"));
    }
}
