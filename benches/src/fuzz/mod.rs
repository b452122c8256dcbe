//! A small, dependency-free fuzzer on stable Rust for every decoder of `edge-proto` and the
//! node's own parsers (`fuzz` binary, `benches/tests/fuzz_*.rs`).
//!
//! Inputs are golden vectors (`edge/proto/tests/data/vectors.json`), synthetic seeds built
//! with the crate's encoders, and the kept corpus (`benches/fuzz/corpus/<target>/`), mutated
//! by a deterministic splitmix64 PRNG (same `--seed`, same inputs). Each target checks
//! invariants (round trips, borrowed ranges inside the input, `consumed ≤ len`), not only
//! "no panic"; a panic or a broken invariant is a **failure**, caught per input
//! (`catch_unwind`) and saved. There is no coverage instrumentation: an input whose
//! *outcome* (the target's result kind, e.g. which error variant) was not seen before joins
//! the in-memory pool and, with `--corpus`, is written out.

pub mod targets;

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What one input did: `Ok(feature)` (a small code for the outcome kind), or the broken
/// invariant.
pub type Outcome = Result<u64, String>;

/// A fuzz target.
#[derive(Clone, Copy)]
pub struct Target {
    /// Name (`--target`, the corpus folder).
    pub name: &'static str,
    /// Seeds: golden vectors and encoder-built inputs.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Runs one input and checks the invariants.
    pub check: fn(&[u8]) -> Outcome,
}

/// The result of a run over one target.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Target name.
    pub target: &'static str,
    /// Inputs tried.
    pub inputs: u64,
    /// Inputs that panicked.
    pub panics: u64,
    /// Inputs that broke an invariant (without panicking).
    pub violations: u64,
    /// Distinct outcome kinds seen.
    pub features: usize,
    /// Inputs written to the corpus directory.
    pub saved: usize,
    /// The first few failures: (message, input).
    pub failures: Vec<(String, Vec<u8>)>,
    /// Wall time.
    pub elapsed: Duration,
}

impl Report {
    /// Panics plus invariant violations.
    pub fn crashes(&self) -> u64 {
        self.panics + self.violations
    }
}

// === PRNG ===

/// splitmix64: tiny, fast, good enough to drive mutations, and deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x853c_49e6_748f_ea9b)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; 0 gives 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability 1/n.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}

/// A cheap hash of any value (outcome features).
pub fn feature_of<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

// === mutation ===

const INTERESTING_8: [u8; 9] = [0, 1, 0x7f, 0x80, 0xff, b'|', b'\r', b'\n', b':'];
const INTERESTING_16: [u16; 7] = [0, 1, 125, 126, 127, 0x7fff, 0xffff];
const INTERESTING_32: [u32; 6] = [0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 65_536];
const TOKENS: [&[u8]; 14] = [
    b"\r\n",
    b"\r\n\r\n",
    b"|",
    b",",
    b":",
    b"0x",
    b"-",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"18446744073709551616",
    b"Sec-WebSocket-Key: ",
    b"Content-Length: ",
    b"%",
    b"\xff\xfe",
];

/// Applies 1–8 random mutations to `input` (splicing from `pool`), keeping it ≤ `max_len`.
pub fn mutate(rng: &mut Rng, input: &[u8], pool: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut out = input.to_vec();
    let rounds = 1 + rng.below(8);
    for _ in 0..rounds {
        let len = out.len();
        match rng.below(16) {
            0 if len > 0 => {
                let at = rng.below(len);
                out[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                out[at] = rng.byte();
            }
            2 if len > 0 => {
                let at = rng.below(len);
                out[at] = INTERESTING_8[rng.below(INTERESTING_8.len())];
            }
            3 if len > 1 => {
                let at = rng.below(len - 1);
                let v = INTERESTING_16[rng.below(INTERESTING_16.len())];
                let bytes = if rng.one_in(2) {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                out[at..at + 2].copy_from_slice(&bytes);
            }
            4 if len > 3 => {
                let at = rng.below(len - 3);
                let v = INTERESTING_32[rng.below(INTERESTING_32.len())];
                let bytes = if rng.one_in(2) {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                out[at..at + 4].copy_from_slice(&bytes);
            }
            5 if len > 0 => {
                // delete a range
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(16));
                out.drain(at..at + n);
            }
            6 => {
                // insert random bytes
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                out.splice(at..at, bytes);
            }
            7 if len > 0 => {
                // duplicate a range
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                let copy = out[at..at + n].to_vec();
                let to = rng.below(len + 1);
                out.splice(to..to, copy);
            }
            8 => {
                // truncate
                out.truncate(rng.below(len + 1));
            }
            9 => {
                let at = rng.below(len + 1);
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            10 if !pool.is_empty() => {
                // splice a piece of another input
                let other = &pool[rng.below(pool.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let n = 1 + rng.below(other.len() - from);
                    let at = rng.below(len + 1);
                    let cut = rng.below(len - at + 1).min(n);
                    out.splice(at..at + cut, other[from..from + n].iter().copied());
                }
            }
            11 if len > 0 => {
                // arithmetic on a byte
                let at = rng.below(len);
                let delta = (rng.below(35) as i16 - 17) as u8;
                out[at] = out[at].wrapping_add(delta);
            }
            12 if len > 1 => {
                // swap two bytes
                let (a, b) = (rng.below(len), rng.below(len));
                out.swap(a, b);
            }
            13 if len > 0 => {
                // an ASCII digit or letter (text formats)
                let at = rng.below(len);
                const CHARS: &[u8] = b"0123456789abcdefxX-+ .|,:=%/?&";
                out[at] = CHARS[rng.below(CHARS.len())];
            }
            14 => {
                // append random bytes
                let n = 1 + rng.below(32);
                out.extend((0..n).map(|_| rng.byte()));
            }
            _ => {
                if rng.one_in(64) {
                    // a wholly random input now and then
                    let n = rng.below(256);
                    out = (0..n).map(|_| rng.byte()).collect();
                }
            }
        }
        out.truncate(max_len);
    }
    out
}

// === golden vectors ===

/// One golden vector.
#[derive(Debug, Clone)]
pub struct Golden {
    /// Its name.
    pub name: String,
    /// Its transport (`ws-text`, `udp`, `tcp-msgbus`, …).
    pub transport: String,
    /// Its bytes (run 1).
    pub bytes: Vec<u8>,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// Every golden vector of the original system's capture.
pub fn golden() -> &'static [Golden] {
    static ALL: OnceLock<Vec<Golden>> = OnceLock::new();
    ALL.get_or_init(|| {
        let text = include_str!("../../../edge/proto/tests/data/vectors.json");
        let json: serde_json::Value = serde_json::from_str(text).expect("vectors.json parses");
        json["vectors"]
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|v| Golden {
                        name: v["name"].as_str().unwrap_or_default().to_owned(),
                        transport: v["transport"].as_str().unwrap_or_default().to_owned(),
                        bytes: unhex(v["hex"].as_str().unwrap_or_default()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Golden vectors whose name or transport matches `pred`.
pub fn golden_where(pred: impl Fn(&Golden) -> bool) -> Vec<Vec<u8>> {
    golden()
        .iter()
        .filter(|g| pred(g))
        .map(|g| g.bytes.clone())
        .collect()
}

// === runner ===

/// Longest input the mutator produces.
pub const MAX_INPUT: usize = 4096;
/// Most files one run writes into a target's corpus folder.
pub const MAX_SAVED: usize = 48;
/// In-memory pool size.
const POOL_MAX: usize = 512;

/// Reads every file of `dir` (missing folder: none).
pub fn read_corpus(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect()
}

/// Runs `check` on `input`, turning a panic into a failure message.
pub fn run_one(target: &Target, input: &[u8]) -> Result<u64, (bool, String)> {
    match catch_unwind(AssertUnwindSafe(|| (target.check)(input))) {
        Ok(Ok(feature)) => Ok(feature),
        Ok(Err(why)) => Err((false, why)),
        Err(payload) => {
            let why = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned());
            Err((true, format!("panic: {why}")))
        }
    }
}

/// Silences the default panic message while `f` runs (panics are caught and reported).
pub fn quiet_panics<R>(f: impl FnOnce() -> R) -> R {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = f();
    std::panic::set_hook(previous);
    result
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Inputs to try (seeds and corpus included).
    pub iterations: u64,
    /// PRNG seed.
    pub seed: u64,
    /// Corpus folder root: `<dir>/<target>/` is read first and new outcomes are written there.
    pub corpus: Option<PathBuf>,
    /// Where failing inputs are written (`<dir>/<target>/`).
    pub crashes: Option<PathBuf>,
    /// Stop after this long even if `iterations` are not done.
    pub max_time: Option<Duration>,
}

fn save(dir: &Path, input: &[u8]) -> bool {
    let name = format!("{:016x}", feature_of(input));
    std::fs::create_dir_all(dir).is_ok() && std::fs::write(dir.join(name), input).is_ok()
}

/// Fuzzes one target.
pub fn run_target(target: &Target, options: &RunOptions) -> Report {
    let started = Instant::now();
    let mut rng = Rng::new(options.seed ^ feature_of(target.name));
    let mut report = Report {
        target: target.name,
        ..Report::default()
    };
    let mut seen = HashSet::new();
    let corpus_dir = options.corpus.as_ref().map(|d| d.join(target.name));
    let crash_dir = options.crashes.as_ref().map(|d| d.join(target.name));
    let mut pool: Vec<Vec<u8>> = (target.seeds)();
    if let Some(dir) = &corpus_dir {
        pool.extend(read_corpus(dir).into_iter().map(|(_, b)| b));
    }
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let initial = pool.len();
    let record = |report: &mut Report,
                  seen: &mut HashSet<u64>,
                  pool: &mut Vec<Vec<u8>>,
                  rng: &mut Rng,
                  input: Vec<u8>,
                  fresh: bool| {
        report.inputs += 1;
        match run_one(target, &input) {
            Ok(feature) => {
                if seen.insert(feature) && fresh {
                    if let Some(dir) = &corpus_dir
                        && report.saved < MAX_SAVED
                        && input.len() <= 1024
                        && save(dir, &input)
                    {
                        report.saved += 1;
                    }
                    if pool.len() < POOL_MAX {
                        pool.push(input);
                    } else {
                        let at = initial + rng.below(POOL_MAX - initial.min(POOL_MAX - 1));
                        if let Some(slot) = pool.get_mut(at) {
                            *slot = input;
                        }
                    }
                }
            }
            Err((panicked, why)) => {
                if panicked {
                    report.panics += 1;
                } else {
                    report.violations += 1;
                }
                if let Some(dir) = &crash_dir {
                    save(dir, &input);
                }
                if report.failures.len() < 8 {
                    report.failures.push((why, input));
                }
            }
        }
    };
    quiet_panics(|| {
        for input in pool.clone() {
            record(&mut report, &mut seen, &mut pool, &mut rng, input, false);
        }
        while report.inputs < options.iterations {
            if report.inputs.is_multiple_of(4096)
                && options.max_time.is_some_and(|t| started.elapsed() >= t)
            {
                break;
            }
            let base = &pool[rng.below(pool.len())];
            let input = mutate(&mut rng, base, &pool, MAX_INPUT);
            record(&mut report, &mut seen, &mut pool, &mut rng, input, true);
        }
    });
    report.features = seen.len();
    report.elapsed = started.elapsed();
    report
}

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    targets::ALL.iter().find(|t| t.name == name).copied()
}

/// The repository's corpus root (`benches/fuzz/corpus`).
pub fn repo_corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}
