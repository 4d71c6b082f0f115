//! Observability checked with the real Prometheus tools (Debian's
//! `prometheus` package: `promtool` and `prometheus`): the alert rules and
//! their unit tests, the live `/metrics` of a scheduler after a workload
//! (lint-clean, parseable, values matching what happened), every PromQL
//! expression of the dashboards, and a real Prometheus scraping the
//! scheduler.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;

const KEY: &str = "demo-key-0123456789abcdef";
const TEAM_B: &str = "team-b-key-0123456789abcdef";

/// `promtool ARGS...`, returning (success, stdout + stderr).
fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`) must be installed");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
    }
    let out = child.wait_with_output().expect("promtool");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Metric names the scheduler declares (telemetry.rs), the contract.
fn declared_metrics() -> BTreeSet<String> {
    let src =
        std::fs::read_to_string(support::root().join("crates/ebbtide-server/src/telemetry.rs"))
            .expect("telemetry.rs");
    src.lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .filter(|n| n.starts_with("ebbtide_"))
        .map(str::to_string)
        .collect()
}

/// Metric names the docs table lists.
fn documented_metrics() -> BTreeSet<String> {
    let doc =
        std::fs::read_to_string(support::root().join("docs/metrics.md")).expect("docs/metrics.md");
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

/// The base metric a sample belongs to (histogram series carry suffixes).
fn base_name(sample: &str) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(b) = sample.strip_suffix(suffix) {
            return b.to_string();
        }
    }
    sample.to_string()
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests_and_name_existing_runbooks() {
    let dir = support::root().join("deploy/prometheus");
    let rules = dir.join("ebbtide-alerts.yml");
    let (ok, out) = promtool(&["check", "rules", rules.to_str().expect("path")], None);
    assert!(ok, "{out}");
    let (ok, out) = promtool(
        &[
            "test",
            "rules",
            dir.join("ebbtide-alerts.test.yml").to_str().expect("path"),
        ],
        None,
    );
    assert!(ok && out.contains("SUCCESS"), "{out}");
    let text = std::fs::read_to_string(&rules).expect("rules");
    let alerts: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 12, "{alerts:?}");
    let tests = std::fs::read_to_string(dir.join("ebbtide-alerts.test.yml")).expect("tests");
    for alert in &alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "alert {alert} has no unit test"
        );
    }
    for runbook in text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url: "))
    {
        let path = support::root().join(runbook.trim_matches('"'));
        assert!(path.exists(), "runbook {} is missing", path.display());
    }
    // Every metric a rule uses is one the scheduler exports.
    let declared = declared_metrics();
    for name in metric_names(&text) {
        assert!(
            declared.contains(&name),
            "alert rules use unknown metric {name}"
        );
    }
}

/// `ebbtide_*` identifiers in a text (PromQL), as base metric names.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("ebbtide_") {
        let start = i + at;
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |e| start + e);
        if !preceded {
            out.insert(base_name(&text[start..end]));
        }
        i = end;
    }
    out
}

#[test]
fn the_metrics_table_lists_exactly_the_declared_metrics() {
    assert_eq!(documented_metrics(), declared_metrics());
}

#[test]
fn every_dashboard_expression_is_valid_promql_over_exported_metrics() {
    let dir = support::root().join("deploy/grafana/dashboards");
    let declared = declared_metrics();
    let mut exprs = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("dashboards") {
        let path = entry.expect("entry").path();
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read"))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for panel in d["panels"].as_array().expect("panels") {
            for t in panel["targets"].as_array().expect("targets") {
                let e = t["expr"].as_str().expect("expr").to_string();
                for name in metric_names(&e) {
                    assert!(
                        declared.contains(&name),
                        "{}: panel {:?} uses {name}, which Ebbtide does not export",
                        path.display(),
                        panel["title"]
                    );
                }
                exprs.push(e);
            }
        }
    }
    assert!(exprs.len() >= 20, "{} expressions", exprs.len());
    // Dashboard variables become concrete values so promtool can parse.
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            json!({
                "record": format!("dashboard:expr_{i}"),
                "expr": e.replace("$__rate_interval", "5m").replace("$pool", ".*"),
            })
        })
        .collect();
    let file = tempfile::NamedTempFile::new().expect("tmp");
    let yaml =
        serde_json::to_string(&json!({ "groups": [{ "name": "dashboards", "rules": rules }] }))
            .expect("json");
    std::fs::write(file.path(), yaml).expect("write");
    let (ok, out) = promtool(
        &["check", "rules", file.path().to_str().expect("path")],
        None,
    );
    assert!(ok, "{out}");
}

fn local_config(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(support::root().join("examples/local.toml"))
        .expect("examples/local.toml")
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:8081", "127.0.0.1:0")
        .replace(
            "data_dir = \".ebbtide\"",
            &format!("data_dir = \"{}\"", dir.join("data").display()),
        )
        .replace("tick = \"1s\"", "tick = \"200ms\"");
    let path = dir.join("local.toml");
    std::fs::write(&path, text).expect("config");
    path
}

async fn submit(http: &str, key: &str, class: &str) -> u64 {
    support::submit(http, key, json!({ "class": class, "command": "echo hi" })).await
}

async fn metrics_text(http: &str) -> String {
    support::metrics(http).await
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.samples.iter().find_map(|s| {
        let matches = s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v));
        match (&s.value, matches) {
            (prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v), true) => {
                Some(*v)
            }
            (prometheus_parse::Value::Untyped(v), true) => Some(*v),
            _ => None,
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn live_metrics_after_a_workload_are_lint_clean_parseable_and_true() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = local_config(dir.path());
    let (child, http) = support::serve(&config, &dir.path().join("serve.log"));
    let mut reaper = support::Reaper::new(&dir.path().join("data"));
    reaper.children.push(child);
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(submit(&http, KEY, "high").await);
    }
    for _ in 0..2 {
        ids.push(submit(&http, TEAM_B, "low").await);
    }
    let start = Instant::now();
    let scrape = loop {
        let text = metrics_text(&http).await;
        let lines: Vec<std::io::Result<String>> = text.lines().map(|l| Ok(l.to_string())).collect();
        let scrape =
            prometheus_parse::Scrape::parse(lines.into_iter()).expect("the exposition parses");
        let done = sample(
            &scrape,
            "ebbtide_jobs_finished_total",
            &[("tenant", "demo"), ("outcome", "succeeded")],
        ) == Some(5.0)
            && sample(
                &scrape,
                "ebbtide_jobs_finished_total",
                &[("tenant", "team-b"), ("outcome", "succeeded")],
            ) == Some(2.0);
        if done {
            let (ok, out) = promtool(&["check", "metrics"], Some(&text));
            assert!(
                ok && out.trim().is_empty(),
                "promtool check metrics: {out}\n{text}"
            );
            let documented = documented_metrics();
            for s in &scrape.samples {
                assert!(
                    documented.contains(&base_name(&s.metric)),
                    "{} is exported but not in docs/metrics.md",
                    s.metric
                );
            }
            break scrape;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "workload never finished:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let count = |name: &str, labels: &[(&str, &str)]| sample(&scrape, name, labels).unwrap_or(-1.0);
    assert_eq!(
        count(
            "ebbtide_jobs_submitted_total",
            &[("tenant", "demo"), ("class", "high")]
        ),
        5.0
    );
    assert_eq!(
        count(
            "ebbtide_jobs_submitted_total",
            &[("tenant", "team-b"), ("class", "low")]
        ),
        2.0
    );
    assert_eq!(
        count(
            "ebbtide_jobs_started_total",
            &[("tenant", "demo"), ("class", "high")]
        ),
        5.0
    );
    assert_eq!(
        count(
            "ebbtide_sla_started_within_target_total",
            &[("class", "high")]
        ),
        5.0
    );
    assert_eq!(
        count("ebbtide_sla_target_seconds", &[("class", "high")]),
        30.0
    );
    assert_eq!(
        count("ebbtide_pool_max_instances", &[("pool", "burst")]),
        8.0
    );
    assert_eq!(
        count("ebbtide_pool_warm_instances", &[("pool", "warm")]),
        1.0
    );
    assert!(
        count(
            "ebbtide_launches_total",
            &[("provider", "local"), ("pool", "warm")]
        ) >= 1.0
    );
    assert!(
        count(
            "ebbtide_provider_calls_total",
            &[("provider", "local"), ("operation", "launch")]
        ) >= 1.0
    );
    // Histograms: 7 waits recorded across the two classes.
    let waits: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "ebbtide_queue_wait_seconds_count")
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Untyped(v) | prometheus_parse::Value::Counter(v) => Some(v),
            _ => None,
        })
        .sum();
    let wait_count = if waits > 0.0 {
        waits
    } else {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == "ebbtide_queue_wait_seconds")
            .filter_map(|s| match &s.value {
                prometheus_parse::Value::Histogram(h) => h.last().map(|b| b.count),
                _ => None,
            })
            .sum()
    };
    assert_eq!(wait_count, 7.0, "seven queue waits recorded");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_the_scheduler_and_answers_a_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = local_config(dir.path());
    let (child, http) = support::serve(&config, &dir.path().join("serve.log"));
    let mut reaper = support::Reaper::new(&dir.path().join("data"));
    reaper.children.push(child);
    submit(&http, KEY, "high").await;
    let target = http.trim_start_matches("http://").to_string();
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let web = free.local_addr().expect("addr").to_string();
    drop(free);
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ebbtide\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .expect("prometheus config");
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).expect("log"))
        .spawn()
        .expect("prometheus (Debian package `prometheus`) must be installed");
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prometheus = Kill(prometheus);
    let start = Instant::now();
    loop {
        let answer = reqwest::get(format!(
            "http://{web}/api/v1/query?query=ebbtide_jobs_submitted_total%7Btenant%3D%22demo%22%7D"
        ))
        .await;
        if let Ok(r) = answer
            && let Ok(v) = r.json::<Value>().await
            && v["data"]["result"][0]["value"][1] == "1"
        {
            assert_eq!(v["data"]["result"][0]["metric"]["job"], "ebbtide");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Prometheus never answered: {}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
