//! The systemd units under `deploy/systemd` (issue 16) against the real binary:
//!
//! - each unit: the keys a supervised node needs, limits at least what `cloudsocket tune`
//!   recommends, no secret on the command line, `systemd-analyze verify` where
//!   systemd-analyze is installed; and its example environment file: every variable
//!   commented and known to the binary, no secret given a value, and `ExecStart` expanded
//!   with it parses as the binary's flags (and, for a node, validates);
//! - `ExecReload` matches what SIGHUP does to each program: a node and a comet reload their
//!   TLS certificate (and a new handshake sees it), the msgbus and rmqkeeper keep SIGHUP's
//!   default action, so their units refuse a reload.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use edge::cli::{Cli, Command as Program, normalize_args};
use edge::config::Config;
use support::deploy::read;

/// Environment variables that hold secrets: never on a command line, never given a value
/// in an example file.
const SECRETS: [&str; 5] = [
    "CLOUDSOCKET_SALT",
    "CLOUDSOCKET_LINK_SECRET",
    "CLOUDSOCKET_ADMIN_TOKEN",
    "CLOUDSOCKET_ZK_AUTH",
    "CLOUDSOCKET_REDIS_PASSWORD",
];

/// The flags that take those secrets.
const SECRET_FLAGS: [&str; 4] = ["--salt", "--link-secret", "--admin-token", "--zk-auth"];

/// Each unit and the subcommand its `ExecStart` runs.
const UNITS: [(&str, &str); 4] = [
    ("cloudsocket-comet.service", "comet"),
    ("cloudsocket-msgbus.service", "msgbus"),
    ("cloudsocket-rmqkeeper.service", "rmqkeeper"),
    ("cloudsocket.service", "run"),
];

const BINARY: &str = "/usr/local/bin/cloudsocket";

// === systemd ===

/// A unit file's `(section, key) → values`, in order.
fn parse_unit(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    let mut logical = String::new();
    for line in text.lines() {
        let line = line.trim();
        if logical.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            logical.push_str(head);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        if let Some(name) = entry.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = entry
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {entry}"));
        out.entry((section.clone(), key.trim().to_owned()))
            .or_default()
            .push(value.trim().to_owned());
    }
    out
}

/// An example environment file: the active `NAME=value` lines, every name assigned on an
/// active or a commented-out (`#NAME=`) line, and the text of its comments.
struct EnvExample {
    active: BTreeMap<String, String>,
    documented: BTreeSet<String>,
    comments: String,
}

fn is_var_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn parse_env(text: &str) -> EnvExample {
    let mut env = EnvExample {
        active: BTreeMap::new(),
        documented: BTreeSet::new(),
        comments: String::new(),
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            match comment.split_once('=') {
                Some((name, _)) if is_var_name(name) => {
                    env.documented.insert(name.to_owned());
                }
                _ => {
                    env.comments.push_str(comment);
                    env.comments.push('\n');
                }
            }
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not NAME=value: {line}"));
        assert!(is_var_name(name), "{name}: not a variable name");
        env.active.insert(name.to_owned(), value.trim().to_owned());
        env.documented.insert(name.to_owned());
    }
    env
}

/// `ExecStart` as systemd runs it: `$NAME` split at whitespace, `${NAME}` one word.
fn expand(exec: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    let mut words = Vec::new();
    for word in exec.split_whitespace() {
        if let Some(name) = word.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
            words.push(env.get(name).cloned().unwrap_or_default());
        } else if let Some(name) = word.strip_prefix('$') {
            words.extend(
                env.get(name)
                    .map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                    .unwrap_or_default(),
            );
        } else {
            words.push(word.to_owned());
        }
    }
    words
}

/// A size as systemd reads `LimitMEMLOCK=` (`K`, `M`, `G`, `T`: powers of 1024).
fn parse_size(value: &str) -> u64 {
    if value == "infinity" {
        return u64::MAX;
    }
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let n: u64 = digits.parse().unwrap_or_else(|_| panic!("size {value}"));
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        other => panic!("size unit {other} in {value}"),
    };
    n << shift
}

/// What `cloudsocket tune` prints for `key` (`LimitNOFILE`, `LimitMEMLOCK`) on this host
/// for `connections` connections.
fn tune_recommends(key: &str, connections: u64) -> u64 {
    tuning::report(connections)
        .iter()
        .find_map(|check| {
            let rest = check.command.split(&format!("systemd: {key}=")).nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("`cloudsocket tune` prints no {key}"))
}

/// The long help of every program of the binary, together.
fn help_text() -> String {
    let mut command = Cli::command();
    command.build();
    ["run", "comet", "msgbus", "rmqkeeper"]
        .iter()
        .map(|name| {
            command
                .find_subcommand_mut(name)
                .unwrap_or_else(|| panic!("no subcommand {name}"))
                .render_long_help()
                .to_string()
        })
        .collect()
}

#[test]
fn systemd_units_have_what_a_supervised_node_needs() {
    let tune_nofile = tune_recommends("LimitNOFILE", 100_000);
    let tune_memlock = tune_recommends("LimitMEMLOCK", 100_000);
    let help = help_text();
    for (file, program) in UNITS {
        let unit = parse_unit(&read(&format!("systemd/{file}")));
        let one = |section: &str, key: &str| -> String {
            let values = unit
                .get(&(section.to_owned(), key.to_owned()))
                .unwrap_or_else(|| panic!("{file}: no {key}= in [{section}]"));
            values.last().unwrap().clone()
        };
        let exec = one("Service", "ExecStart");
        let words: Vec<&str> = exec.split_whitespace().collect();
        assert_eq!(words.first(), Some(&BINARY), "{file}: {exec}");
        assert_eq!(words.get(1), Some(&program), "{file}: {exec}");
        for word in &words {
            assert!(
                !SECRET_FLAGS.iter().any(|f| word.starts_with(f))
                    && !SECRETS.iter().any(|s| word.contains(s)),
                "{file}: a secret on the command line: {exec}"
            );
        }
        assert_eq!(one("Service", "Restart"), "on-failure", "{file}");
        // A node's unit follows an upgrade's new process: the old one says MAINPID=
        // (sd_notify) before it exits, which systemd takes from Type=notify services.
        let node = file.contains("comet") || file == "cloudsocket.service";
        let kind = one("Service", "Type");
        if node {
            assert_eq!(kind, "notify", "{file}: an upgrade needs Type=notify");
        } else {
            assert!(["exec", "simple"].contains(&kind.as_str()), "{file}");
        }
        assert_eq!(one("Service", "User"), "cloudsocket", "{file}");
        assert_eq!(one("Service", "KillSignal"), "SIGTERM", "{file}");
        assert!(!one("Service", "TimeoutStopSec").is_empty(), "{file}");
        assert!(!one("Service", "ExecReload").is_empty(), "{file}");
        for (key, value) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
        ] {
            assert_eq!(one("Service", key), value, "{file}: {key}");
        }
        let nofile: u64 = one("Service", "LimitNOFILE").parse().expect("LimitNOFILE");
        let memlock = parse_size(&one("Service", "LimitMEMLOCK"));
        if matches!(program, "comet" | "run") {
            assert!(
                nofile >= tune_nofile,
                "{file}: LimitNOFILE {nofile} < tune's {tune_nofile}"
            );
            // glommio's rings: 8 MiB a shard, up to the 64 shards a node runs.
            let most = tune_memlock.max(64 * (8 << 20));
            assert!(memlock >= most, "{file}: LimitMEMLOCK {memlock} < {most}");
        }

        // The environment file, and its example beside the unit.
        let env_file = one("Service", "EnvironmentFile");
        let name = env_file
            .strip_prefix("/etc/cloudsocket/")
            .unwrap_or_else(|| {
                panic!("{file}: EnvironmentFile={env_file} (required, in /etc/cloudsocket)")
            });
        let example = format!("systemd/{name}.example");
        let env = parse_env(&read(&example));
        for var in &env.documented {
            assert!(
                env.comments.contains(var.as_str()),
                "{example}: {var} is not explained"
            );
            assert!(
                var == "CLOUDSOCKET_ARGS" || help.contains(var.as_str()),
                "{example}: the binary knows no {var}"
            );
        }
        for secret in SECRETS {
            assert!(
                env.active.get(secret).is_none_or(|v| v.is_empty()),
                "{example}: an example must not give {secret} a value"
            );
        }
        let args = env
            .active
            .get("CLOUDSOCKET_ARGS")
            .unwrap_or_else(|| panic!("{example}: no CLOUDSOCKET_ARGS"));
        assert!(
            !args
                .split_whitespace()
                .any(|w| SECRET_FLAGS.iter().any(|f| w.starts_with(f))),
            "{example}: a secret flag in CLOUDSOCKET_ARGS (it shows in ps)"
        );

        // Paths the service writes lie in its StateDirectory.
        let state = unit
            .get(&("Service".to_owned(), "StateDirectory".to_owned()))
            .and_then(|v| v.last())
            .map(|dir| format!("/var/lib/{dir}/"));
        for path in args
            .split_whitespace()
            .filter(|w| w.starts_with("/var/lib/"))
        {
            let state = state
                .as_deref()
                .unwrap_or_else(|| panic!("{file}: {path} with no StateDirectory"));
            assert!(path.starts_with(state), "{file}: {path} outside {state}");
        }

        // ExecStart as systemd will run it parses as the binary's own flags.
        let argv = expand(&exec, &env.active);
        let cli = Cli::try_parse_from(normalize_args(
            std::iter::once("cloudsocket".to_owned()).chain(argv.iter().skip(1).cloned()),
        ))
        .unwrap_or_else(|e| panic!("{file} with {example}: {argv:?}: {e}"));
        let node = match (program, cli.command) {
            ("comet", Some(Program::Comet(args))) | ("run", Some(Program::Run(args))) => Some(args),
            ("msgbus", Some(Program::Msgbus(_))) | ("rmqkeeper", Some(Program::Rmqkeeper(_))) => {
                None
            }
            (_, other) => panic!("{file}: {argv:?} runs {other:?}"),
        };
        if let Some(mut args) = node {
            // The secrets the example documents, filled in as the real file will be.
            let filled = |var: &str| {
                env.documented
                    .contains(var)
                    .then(|| format!("{var}-from-the-environment-file"))
            };
            args.salt = args.salt.or(filled("CLOUDSOCKET_SALT"));
            args.link_secret = args.link_secret.or(filled("CLOUDSOCKET_LINK_SECRET"));
            args.admin_token = args.admin_token.or(filled("CLOUDSOCKET_ADMIN_TOKEN"));
            Config::from_args(&args).unwrap_or_else(|e| panic!("{file} with {example}: {e}"));
        }
    }
}

#[test]
fn systemd_analyze_verifies_the_units() {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !available {
        eprintln!("systemd-analyze is not installed: the units are checked by key only");
        return;
    }
    // verify wants ExecStart's program to exist: point it at the binary under test.
    let dir = std::env::temp_dir().join(format!("cloudsocket-deploy-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut paths = Vec::new();
    for (file, _) in UNITS {
        let text =
            read(&format!("systemd/{file}")).replace(BINARY, env!("CARGO_BIN_EXE_cloudsocket"));
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .expect("systemd-analyze runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_ours: Vec<&str> = stderr
        .lines()
        .filter(|line| UNITS.iter().any(|(file, _)| line.contains(file)))
        .collect();
    assert!(
        out.status.success() && about_ours.is_empty(),
        "systemd-analyze verify ({}):\n{stderr}",
        out.status
    );
}

// === SIGHUP ===

/// A child process, killed if the test ends before it does.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary with `args`, waits for its `listening: status` line, sends SIGHUP:
/// `None` if it is still running 3 s later (then stopped with SIGTERM), else the signal
/// that ended it.
fn sighup(args: &[&str]) -> Option<Option<i32>> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cloudsocket"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec. systemd starts a service
    // with SIGHUP at its default action and unblocked; a test runner started under nohup
    // (or with SIGHUP blocked) would otherwise pass its ignoring on to the child.
    unsafe {
        command.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGHUP);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            Ok(())
        });
    }
    let child = command.spawn().expect("start cloudsocket");
    let mut child = Running(child);
    let stdout = child.0.stdout.take().unwrap();
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with("listening: status") => break,
            Ok(_) => {}
            Err(_) => panic!("{args:?}: no `listening: status` line"),
        }
    }
    let pid = libc::pid_t::try_from(child.0.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid; it is still ours (not yet waited for).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(status) = child.0.try_wait().unwrap() {
            return Some(status.signal());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above; the drop of `child` then waits for it.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && child.0.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn reload_does_what_sighup_does() {
    let reloads: Vec<(&str, String)> = UNITS
        .iter()
        .map(|(file, _)| {
            let unit = parse_unit(&read(&format!("systemd/{file}")));
            let reload = unit[&("Service".to_owned(), "ExecReload".to_owned())]
                .last()
                .unwrap()
                .clone();
            (*file, reload)
        })
        .collect();
    let sends_hup = |reload: &str| reload.contains("-HUP") || reload.contains("SIGHUP");
    let tmp = std::env::temp_dir();
    let upload_log = tmp.join(format!("cloudsocket-deploy-hup-{}.log", std::process::id()));
    let spool = tmp.join(format!(
        "cloudsocket-deploy-hup-spool-{}",
        std::process::id()
    ));
    let any = "127.0.0.1:0";
    let node = sighup(&[
        "run",
        "--cores",
        "0",
        "--ports",
        any,
        "--hudp",
        any,
        "--hhttp",
        any,
        "--sh",
        any,
        "--upload-log",
        upload_log.to_str().unwrap(),
    ]);
    let msgbus = sighup(&[
        "msgbus",
        "--addr",
        any,
        "--sh",
        any,
        "--spool-dir",
        spool.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&upload_log);
    let _ = std::fs::remove_dir_all(&spool);
    for (file, reload) in &reloads {
        // rmqkeeper needs ZooKeeper to start; it shares the msgbus's signal handling.
        let after = if file.contains("msgbus") || file.contains("rmqkeeper") {
            msgbus
        } else {
            node
        };
        if sends_hup(reload) {
            assert_eq!(
                after, None,
                "{file}: ExecReload sends SIGHUP, but the program dies of it"
            );
        } else {
            assert_eq!(
                after,
                Some(Some(libc::SIGHUP)),
                "{file}: SIGHUP no longer ends the program (issue 15?): make ExecReload \
                 `/bin/kill -HUP $MAINPID` in deploy/systemd/*.service and update their \
                 comments and README"
            );
        }
    }
}

/// Whether a TLS handshake with `addr` presents `cert`.
fn presents(addr: std::net::SocketAddr, cert: &rustls::pki_types::CertificateDer<'static>) -> bool {
    use support::tls::client_config;
    let Ok(mut tcp) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(client_config(cert, false), name).unwrap();
    tls.complete_io(&mut tcp).is_ok()
        && tls.peer_certificates().and_then(|c| c.first()) == Some(cert)
}

#[test]
fn sighup_reloads_a_nodes_tls_certificate() {
    let dir = support::tls::tls_dir("sighup");
    let old = support::tls::make_cert(&dir);
    let any = "127.0.0.1:0";
    let upload_log = dir.join("uploads.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_cloudsocket"));
    command
        .args(["run", "--cores", "0", "--ports", any, "--tls-ports", any])
        .args(["--hudp", any, "--hhttp", any, "--sh", any])
        .arg("--tls-cert")
        .arg(dir.join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.join("key.pem"))
        .arg("--upload-log")
        .arg(&upload_log)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Running(command.spawn().expect("start cloudsocket"));
    let (tx, lines) = channel();
    for pipe in [
        Box::new(child.0.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.0.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let wait_for = |what: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line with {what:?}"),
            }
        }
    };
    let line = wait_for("wss://");
    let addr: std::net::SocketAddr = line
        .split("wss://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/ws"))
        .and_then(|a| a.parse().ok())
        .expect("the wss address");
    wait_for("listening: status");
    assert!(presents(addr, &old));
    let new = support::tls::make_cert(&dir);
    let pid = libc::pid_t::try_from(child.0.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid; it is still ours (not yet waited for).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    wait_for("SIGHUP: reloading the TLS certificate and key");
    wait_for("TLS certificate reloaded");
    assert!(
        presents(addr, &new),
        "a new handshake sees the new certificate"
    );
    assert_eq!(child.0.try_wait().unwrap(), None, "the node lives on");
    let _ = std::fs::remove_dir_all(&dir);
}
