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
//!
//! The systemd units are checked in `deploy_units.rs`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use clap::Parser;
use edge::cli::{Cli, Command as Program};
use edge::config::Config;
use serde_json::Value;
use support::deploy::{deploy, read};

/// The prefixes of the metric families this project exports.
const PREFIXES: [&str; 3] = ["cloudsocket_", "process_", "msgbus_"];

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
