//! The deployment artifacts under `deploy/` (issue 16) against the real thing:
//!
//! - every metric the Grafana dashboard (`deploy/grafana/cloudsocket.json`: panel targets
//!   and template variables) and the Prometheus alert rules (`deploy/prometheus/alerts.yml`,
//!   `expr:`) name is exported: `cloudsocket_*` and `process_*` names by a cluster comet and,
//!   except `cloudsocket_cluster_*`, by an embedded node; `msgbus_*` names by a msgbus. All
//!   three start in this process with no services (the comet's Redis and msgbus are closed
//!   ports, so its cluster families are there, at zero);
//! - the dashboard's shape (schema, the `DS_PROMETHEUS` and `instance` variables, every
//!   query filtered by its instance variable, a TLS row) and every alert's `summary`,
//!   `description` and `severity`; `promtool check rules` where promtool is installed;
//! - each systemd unit in `deploy/systemd`: the keys a supervised node needs, limits at
//!   least what `cloudsocket tune` recommends, no secret on the command line,
//!   `systemd-analyze verify` where systemd-analyze is installed; and its example
//!   environment file: every variable commented and known to the binary, no secret given
//!   a value, and `ExecStart` expanded with it parses as the binary's flags (and, for a
//!   node, validates);
//! - `ExecReload` matches what SIGHUP does to the node and the msgbus today.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use edge::cli::{Cli, Command as Program, normalize_args};
use edge::config::Config;
use serde_json::Value;

/// The prefixes of the metric families this project exports.
const PREFIXES: [&str; 3] = ["cloudsocket_", "process_", "msgbus_"];

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

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn read(path: &str) -> String {
    let path = deploy(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// === metric names ===

/// The names in a PromQL expression that start with one of [`PREFIXES`].
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| PREFIXES.iter().any(|p| word.starts_with(p)))
        .map(str::to_owned)
        .collect()
}

/// What one `/metrics` answer exports: the name of every sample, and the type of every
/// family that declares one.
#[derive(Default)]
struct Exported {
    samples: BTreeSet<String>,
    types: BTreeMap<String, String>,
}

impl Exported {
    fn parse(text: &str) -> Exported {
        let mut out = Exported::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                    out.types.insert(name.to_owned(), kind.to_owned());
                }
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                out.samples.insert(name.to_owned());
            }
        }
        out
    }

    /// Whether `name` is exported: a sample name, or a histogram's (summary's) base name
    /// or one of its `_bucket`/`_sum`/`_count` series.
    fn has(&self, name: &str) -> bool {
        if self.samples.contains(name) {
            return true;
        }
        let is = |base: &str, kinds: &[&str]| {
            self.types
                .get(base)
                .is_some_and(|kind| kinds.contains(&kind.as_str()))
        };
        if is(name, &["histogram", "summary"]) {
            return true;
        }
        if let Some(base) = name.strip_suffix("_bucket") {
            return is(base, &["histogram"]);
        }
        ["_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| is(base, &["histogram", "summary"]))
        })
    }
}

fn dashboard() -> Value {
    serde_json::from_str(&read("grafana/cloudsocket.json")).expect("the dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// `(panel title, expr)` of every panel target.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((
                    panel["title"].as_str().unwrap_or("?").to_owned(),
                    expr.to_owned(),
                ));
            }
        }
    }
    out
}

/// The queries of the template variables (`definition`, and `query` as text or object).
fn variable_queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for query in [
            &variable["definition"],
            &variable["query"],
            &variable["query"]["query"],
        ] {
            if let Some(text) = query.as_str() {
                out.push(text.to_owned());
            }
        }
    }
    out
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The `expr:` of every rule: the rest of the line, or the block (`|`, `>`) under it.
fn alert_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if !(rest.starts_with('|') || rest.starts_with('>')) {
            out.push(rest.to_owned());
            continue;
        }
        let mut block = String::new();
        while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > indent(line)) {
            if !lines[i].trim_start().starts_with('#') {
                block.push_str(lines[i].trim());
                block.push('\n');
            }
            i += 1;
        }
        out.push(block);
    }
    out
}

/// `(alert name, its lines)` of every rule.
fn alert_rules(yaml: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in yaml.lines() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            out.push((name.trim().to_owned(), String::new()));
        } else if trimmed.starts_with("- name:") {
            out.push((String::new(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out.retain(|(name, _)| !name.is_empty());
    out
}

/// A port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn get_metrics(addr: std::net::SocketAddr) -> Exported {
    let (code, text) = support::http(addr, "GET", "/metrics", b"");
    assert_eq!(code, 200, "/metrics on {addr}: {text}");
    Exported::parse(&text)
}

/// What an embedded node exports.
fn embedded_metrics() -> Exported {
    let node = support::node();
    let exported = get_metrics(node.status_addr);
    node.shutdown();
    exported
}

/// What a cluster comet exports. Its cluster part comes from the command line, as
/// `cloudsocket comet --rh … --msgbus …` builds it; both are closed ports, so the comet
/// runs with no link and no Redis, and exports its cluster families at zero.
fn comet_metrics() -> Exported {
    let dead = format!("127.0.0.1:{}", closed_port());
    let cli = Cli::try_parse_from([
        "cloudsocket",
        "comet",
        "--rh",
        &dead,
        "--msgbus",
        &dead,
        "--salt",
        "deploy-artifacts",
    ])
    .expect("comet flags parse");
    let Some(Program::Comet(args)) = cli.command else {
        panic!("`comet` parses to Command::Comet");
    };
    let cluster = Config::from_args(&args)
        .expect("comet flags validate")
        .cluster
        .expect("--rh makes a cluster comet");
    let mut config = Config::for_tests(2);
    config.cluster = Some(cluster);
    let comet = edge::node::Node::start(config).expect("comet starts");
    let exported = get_metrics(comet.status_addr);
    comet.shutdown();
    exported
}

/// What a msgbus exports (no Redis, no broker).
fn msgbus_metrics() -> Exported {
    let spool = std::env::temp_dir().join(format!(
        "cloudsocket-deploy-artifacts-spool-{}",
        std::process::id()
    ));
    let mut config = bus::msgbus::Config::new("127.0.0.1:0", spool.clone());
    config.status = Some("127.0.0.1:0".to_owned());
    let msgbus = bus::msgbus::Msgbus::start(config).expect("msgbus starts");
    let exported = get_metrics(msgbus.status_addr().expect("status endpoint"));
    msgbus.shutdown();
    let _ = std::fs::remove_dir_all(&spool);
    exported
}

#[test]
fn dashboard_and_alerts_name_only_exported_metrics() {
    let dashboard = dashboard();
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut note = |name: String, place: String| {
        used.entry(name).or_default().insert(place);
    };
    for (title, expr) in dashboard_exprs(&dashboard) {
        for name in metric_names(&expr) {
            note(name, format!("dashboard panel {title:?}"));
        }
    }
    for query in variable_queries(&dashboard) {
        for name in metric_names(&query) {
            note(name, "dashboard variable".to_owned());
        }
    }
    for expr in alert_exprs(&read("prometheus/alerts.yml")) {
        for name in metric_names(&expr) {
            note(name, "alerts.yml".to_owned());
        }
    }
    // The scan must find what the artifacts are about, or it proves nothing.
    for expected in [
        "cloudsocket_ws_connections",
        "cloudsocket_udp_sessions",
        "cloudsocket_drops_total",
        "cloudsocket_shard_turn_max_us",
        "cloudsocket_shard_slow_turns_total",
        "cloudsocket_default_salt",
        "cloudsocket_cluster_links_up",
        "process_cpu_seconds_total",
        "msgbus_spool_records",
    ] {
        assert!(
            used.contains_key(expected),
            "{expected} is not used: the scan is broken"
        );
    }
    assert!(used.len() > 60, "only {} names found", used.len());

    let (embedded, comet, msgbus) = (embedded_metrics(), comet_metrics(), msgbus_metrics());
    let mut missing = Vec::new();
    for (name, places) in &used {
        let mut want: Vec<(&str, &Exported)> = Vec::new();
        if name.starts_with("msgbus_") {
            want.push(("a msgbus", &msgbus));
        } else {
            want.push(("a cluster comet", &comet));
            if !name.starts_with("cloudsocket_cluster_") {
                want.push(("an embedded node", &embedded));
            }
        }
        for (who, exported) in want {
            if !exported.has(name) {
                missing.push(format!(
                    "{name} (used by {places:?}) is not exported by {who}"
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics the artifacts name but nothing exports:\n{}",
        missing.join("\n")
    );
    // The cluster families are the comet's alone, as the dashboard's Cluster row says.
    assert!(
        !embedded
            .samples
            .iter()
            .any(|n| n.starts_with("cloudsocket_cluster_"))
    );
}

#[test]
fn the_dashboard_is_importable_and_filtered_by_instance() {
    let dashboard = dashboard();
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(variable("DS_PROMETHEUS")["type"], "datasource");
    assert_eq!(variable("DS_PROMETHEUS")["query"], "prometheus");
    assert_eq!(variable("instance")["type"], "query");
    assert_eq!(variable("msgbus")["type"], "query");

    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "{title}: id repeated"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24, "{title}: wider than the dashboard");
        let Some(targets) = panel["targets"].as_array() else {
            continue;
        };
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{title}: data source"
        );
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let expr = target["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: {expr} names no metric of ours");
            if names.iter().any(|n| !n.starts_with("msgbus_")) {
                assert!(expr.contains("instance=~\"$instance\""), "{title}: {expr}");
            }
            if names.iter().any(|n| n.starts_with("msgbus_")) {
                assert!(expr.contains("instance=~\"$msgbus\""), "{title}: {expr}");
            }
        }
    }

    let all = panels(&dashboard);
    let tls = all
        .iter()
        .position(|p| p["type"] == "row" && p["title"] == "TLS")
        .expect("a row titled TLS");
    // The TLS row charts the handshakes (by version, resumed, failed) and their time.
    let exprs: Vec<&str> = all[tls + 1..]
        .iter()
        .take_while(|p| p["type"] != "row")
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    for name in [
        "cloudsocket_tls_handshakes_tls13_total",
        "cloudsocket_tls_resumptions_total",
        "cloudsocket_tls_handshake_errors_total",
        "cloudsocket_tls_handshake_seconds_bucket",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(name)),
            "the TLS row charts {name}"
        );
    }
}

#[test]
fn every_alert_says_what_to_do() {
    let yaml = read("prometheus/alerts.yml");
    let rules = alert_rules(&yaml);
    assert!(rules.len() >= 6, "{} rules", rules.len());
    let mut names = BTreeSet::new();
    for (name, body) in &rules {
        assert!(names.insert(name.clone()), "{name}: repeated");
        for key in ["expr:", "severity:", "summary:", "description:"] {
            assert!(body.contains(key), "{name}: no {key}");
        }
        let description = body.split("description:").nth(1).unwrap_or_default();
        assert!(
            description.len() > 100,
            "{name}: a description says what to do"
        );
    }
    assert_eq!(alert_exprs(&yaml).len(), rules.len(), "one expr per rule");
    for wanted in [
        "CloudsocketDropsRising",
        "CloudsocketMsgbusLinkDown",
        "MsgbusSpoolGrowing",
        "CloudsocketSlowShardTurns",
        "CloudsocketDefaultSalt",
        "CloudsocketRestarted",
    ] {
        assert!(names.contains(wanted), "no alert {wanted}");
    }
    match Command::new("promtool").arg("--version").output() {
        Ok(out) if out.status.success() => {
            let check = Command::new("promtool")
                .args(["check", "rules"])
                .arg(deploy("prometheus/alerts.yml"))
                .output()
                .expect("promtool runs");
            assert!(
                check.status.success(),
                "promtool check rules:\n{}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
        }
        _ => eprintln!("promtool is not installed: alerts.yml checked by this test's scan only"),
    }
}

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
        assert!(
            ["exec", "simple"].contains(&one("Service", "Type").as_str()),
            "{file}"
        );
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
