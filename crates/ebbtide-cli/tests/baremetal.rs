//! End to end with owned hosts first in the chain: three real OpenSSH
//! hosts in network namespaces (two slots each) make pool `metal`, a local
//! pool `rented` comes after it. A burst fills the hosts and spills to the
//! rented pool; one host's link is cut while its jobs run, its jobs are
//! requeued and finish elsewhere, it is shown quarantined and is
//! re-admitted when the link is back; a trickle afterwards runs on the
//! hosts while the rented workers retire; the cost report books the hosts
//! as committed capacity, apart from the rented workers. Every job's own
//! side effects (a line per attempt in a shared file) are counted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ebbtide_provider_baremetal::testhosts::TestHosts;
use serde_json::{Value, json};

mod support;

const KEY: &str = "metal-key-0123456789abcdef";
const OPS: &str = "metal-ops-0123456789abcdef";

fn config(hosts: &TestHosts, dir: &std::path::Path) -> String {
    let inventory = hosts.inventory_toml(dir);
    format!(
        r#"
[server]
cluster = "e2e-metal-{pid}"
http_listen = "127.0.0.1:0"
grpc_listen = "{grpc}:0"
data_dir = "{data}"
tick = "200ms"
reconcile_interval = "1s"
orphan_grace = "2s"
on_stop = "terminate"

[engine]
heartbeat_timeout = "5s"
default_job_duration = "3s"

[[classes]]
name = "high"
sla_target = "1m"

[[tenants]]
name = "demo"
api_key = "{KEY}"

[[operators]]
name = "oncall"
api_key = "{OPS}"

[[pools]]
name = "metal"
provider = "baremetal"
kind = "dynamic"
min = 0
max = 6
preference = 0
# The same idle timeout as the rented pool: that rented workers retire
# first is the engine's chain rule, not this setting.
idle_timeout = "3s"
boot_estimate = "1s"
on_demand_price = 0.05
labels = ["linux"]
[pools.shape]
name = "metal-slot"
cpu_millis = 1000
memory_mib = 1024
[pools.scaling]
scale_up_cooldown = "0s"
scale_down_cooldown = "1s"
down_stabilization = "1s"

[[pools]]
name = "rented"
provider = "local"
kind = "dynamic"
min = 0
max = 8
preference = 1
idle_timeout = "3s"
boot_estimate = "1s"
on_demand_price = 0.20
labels = ["linux"]
[pools.shape]
name = "process"
cpu_millis = 1000
memory_mib = 512
[pools.scaling]
scale_up_cooldown = "0s"
scale_down_cooldown = "1s"
down_stabilization = "1s"

[providers.baremetal]
user = "root"
private_key = "{client_key}"
agent_path = "{agent}"
connect_timeout = "2s"
command_timeout = "20s"
min_free_disk_gb = 0
{inventory}
[providers.baremetal.pools.metal]
"#,
        pid = std::process::id(),
        grpc = hosts.scheduler_address(),
        data = dir.join("data").display(),
        client_key = hosts.client_key.display(),
        agent = env!("CARGO_BIN_EXE_ebbtide"),
    )
}

/// A job that marks its start and its end in `marks`, one file each per
/// attempt (`JOB-ATTEMPT.start`, `JOB-ATTEMPT.end`), appending a line so
/// an attempt that ran twice shows two.
fn marked_job(marks: &std::path::Path, seconds: u32) -> Value {
    let m = marks.display();
    json!({
        "class": "high",
        "labels": ["linux"],
        "command": format!(
            "f={m}/$EBBTIDE_JOB_ID-$EBBTIDE_ATTEMPT; echo x >> $f.start; sleep {seconds}; echo x >> $f.end"
        ),
    })
}

/// Polls the fleet view until `done` says so.
async fn wait_status(
    http: &str,
    what: &str,
    limit: Duration,
    log: impl Fn() -> String,
    mut done: impl FnMut(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let s = support::status(http, OPS).await;
        if done(&s) {
            return s;
        }
        assert!(
            start.elapsed() < limit,
            "{what} did not happen in {limit:?}; status {s:#}\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The UTC day of `t`, as `ebbtide cost report` takes it.
fn day_of(t: std::time::SystemTime) -> String {
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    ebbtide_cost_report::Day::of_millis(u64::try_from(ms).expect("fits")).to_string()
}

fn pool<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["pools"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == name))
        .unwrap_or(&Value::Null)
}

fn host_state(status: &Value, name: &str) -> String {
    status["hosts"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["name"] == name))
        .map_or_else(String::new, |h| {
            h["state"].as_str().unwrap_or("").to_string()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_fills_the_owned_hosts_spills_over_survives_a_cut_host_and_ebbs_back() {
    let test_start = std::time::SystemTime::now();
    let hosts = TestHosts::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    // Jobs may run as an unprivileged user: the marks directory must be
    // reachable and writable for them (a file per attempt, so no job
    // writes into another user's file).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks).expect("marks dir");
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let scheduler = support::Scheduler::start(dir.path(), &config(&hosts, dir.path()));
    let http = scheduler.http.clone();
    let log = || scheduler.log();

    eprintln!("[{:?}] step 1", test_start.elapsed().unwrap_or_default());
    // 1. A burst of 14 jobs: 6 slots on the hosts, the rest spill over.
    let mut jobs = Vec::new();
    for _ in 0..14 {
        jobs.push(support::submit(&http, KEY, marked_job(&marks, 6)).await);
    }
    let spilled = wait_status(
        &http,
        "the burst filling the hosts and spilling",
        Duration::from_secs(60),
        log,
        |s| pool(s, "metal")["busy"] == 6 && pool(s, "rented")["busy"].as_u64() >= Some(1),
    )
    .await;
    let metal_busy = pool(&spilled, "metal")["busy"].clone();
    let rented_busy = pool(&spilled, "rented")["busy"].clone();

    eprintln!("[{:?}] step 2", test_start.elapsed().unwrap_or_default());
    // 2. Cut host2 while its two jobs run.
    let victim = &hosts.hosts[2];
    let on_victim: BTreeSet<u64> = spilled["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| {
            w["instance"]
                .as_str()
                .is_some_and(|i| i.starts_with(&format!("{}/", victim.name)))
        })
        .flat_map(|w| w["jobs"].as_array().cloned().unwrap_or_default())
        .filter_map(|j| j.as_u64())
        .collect();
    assert_eq!(
        on_victim.len(),
        2,
        "two jobs on {}: {spilled:#}",
        victim.name
    );
    victim.cut();
    let cut = Instant::now();
    let quarantined = wait_status(
        &http,
        "the cut host's quarantine",
        Duration::from_secs(30),
        log,
        |s| host_state(s, &victim.name) == "quarantined",
    )
    .await;
    let noticed = cut.elapsed();
    let why = quarantined["hosts"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["name"] == victim.name.as_str()))
        .map(|h| h["reason"].to_string())
        .unwrap_or_default();
    assert!(why.contains("unreachable"), "{why}");
    // `ebbtide status` shows it in its HOST table, with the reason.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ebbtide"))
        .arg("status")
        .env("EBBTIDE_URL", &http)
        .env("EBBTIDE_API_KEY", OPS)
        .output()
        .expect("ebbtide status");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("{} ", victim.name)))
        .unwrap_or_else(|| panic!("no row for {} in:\n{table}", victim.name));
    assert!(
        row.contains("baremetal") && row.contains("quarantined") && row.contains("unreachable"),
        "{row}"
    );
    assert!(table.contains("HOST"), "{table}");
    // The metric follows within a refresh (about a second).
    let series = format!(
        "ebbtide_host_state{{provider=\"baremetal\",host=\"{}\",state=\"quarantined\"}} 1",
        victim.name
    );
    let start = Instant::now();
    loop {
        let m = support::metrics(&http).await;
        if m.contains(&series) {
            break;
        }
        let hosts: Vec<&str> = m.lines().filter(|l| l.contains("ebbtide_host_")).collect();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no {series} in {hosts:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    eprintln!("[{:?}] step 3", test_start.elapsed().unwrap_or_default());
    // 3. Every job finishes; the cut host's are requeued and run elsewhere.
    let start = Instant::now();
    for id in &jobs {
        loop {
            let j = support::job(&http, KEY, *id).await;
            if j["status"] == "succeeded" {
                break;
            }
            assert!(
                j["status"] != "failed" && start.elapsed() < Duration::from_secs(120),
                "job {id} did not finish: {j}\n{}\n{}",
                support::job_log(&http, KEY, *id).await,
                log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let drained = Instant::now();

    eprintln!("[{:?}] step 4", test_start.elapsed().unwrap_or_default());
    // 4. As the burst ebbs, a trickle (a one-second job every half
    // second) keeps running on the owned hosts while the rented workers,
    // idle, retire.
    let mut trickle = Vec::new();
    let mut rented_gone = None;
    let mut last = Value::Null;
    let trickle_start = Instant::now();
    for _ in 0..24 {
        trickle.push(support::submit(&http, KEY, marked_job(&marks, 1)).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = support::status(&http, OPS).await;
        last = s.clone();
        let rented = pool(&s, "rented");
        let live = ["booting", "idle", "busy", "requested"]
            .iter()
            .map(|k| rented[k].as_u64().unwrap_or(0))
            .sum::<u64>();
        if live == 0 && rented_gone.is_none() {
            rented_gone = Some((trickle_start.elapsed(), pool(&s, "metal").clone()));
        }
    }
    let (gone_after, metal_then) = rented_gone.unwrap_or_else(|| {
        panic!(
            "the rented workers never all retired during the trickle; last status {last:#}\n{}",
            log()
        )
    });
    let metal_live = ["idle", "busy"]
        .iter()
        .map(|k| metal_then[k].as_u64().unwrap_or(0))
        .sum::<u64>();
    assert!(
        metal_live >= 1,
        "owned workers stay while rented ones retire: {metal_then}"
    );
    for id in &trickle {
        let start = Instant::now();
        while support::job(&http, KEY, *id).await["status"] != "succeeded" {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "trickle job {id}\n{}",
                log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    eprintln!("[{:?}] step 5", test_start.elapsed().unwrap_or_default());
    // 5. The link comes back: the host passes its check and is re-admitted.
    victim.restore();
    wait_status(
        &http,
        "the host's re-admission",
        Duration::from_secs(30),
        log,
        |s| host_state(s, &victim.name) == "ready",
    )
    .await;

    eprintln!("[{:?}] step 6", test_start.elapsed().unwrap_or_default());
    // 6. Count from the jobs' own marks: every job ended; an attempt ends
    // at most once; only the cut host's jobs needed a second attempt.
    let mut ends: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    let mut text = String::new();
    for entry in std::fs::read_dir(&marks).expect("marks") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        text += &format!("{name}\n");
        let Some(stem) = name.strip_suffix(".end") else {
            continue;
        };
        let (job, attempt) = stem.split_once('-').expect("JOB-ATTEMPT");
        let lines = std::fs::read_to_string(marks.join(&name))
            .expect("mark")
            .lines()
            .count();
        for _ in 0..lines {
            ends.entry(job.parse().expect("id"))
                .or_default()
                .push(attempt.parse().expect("attempt"));
        }
    }
    let mut ran_twice = 0;
    for id in jobs.iter().chain(&trickle) {
        let attempts = ends.get(id).cloned().unwrap_or_default();
        assert!(!attempts.is_empty(), "job {id} never ended:\n{text}");
        let distinct: BTreeSet<u32> = attempts.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            attempts.len(),
            "job {id} ran an attempt twice: {attempts:?}"
        );
        if attempts.len() > 1 {
            // The cut host's agent, alive behind the cut, finished the
            // first attempt too; no other job may have run twice.
            assert!(
                on_victim.contains(id),
                "job {id} ran twice but was not on the cut host"
            );
            ran_twice += 1;
        }
    }
    let mut requeued = Vec::new();
    for id in &on_victim {
        if support::job(&http, KEY, *id).await["attempts"].as_u64() > Some(1) {
            requeued.push(*id);
        }
    }
    assert_eq!(
        requeued.len(),
        2,
        "the cut host's jobs were requeued: {requeued:?}"
    );

    eprintln!("[{:?}] step 7", test_start.elapsed().unwrap_or_default());
    // 7. A clean stop, then the cost report: owned hosts are committed
    // capacity, the rented workers standard, each with its own cost.
    drop(scheduler);
    let (from, to) = (day_of(test_start), day_of(std::time::SystemTime::now()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ebbtide"))
        .args(["cost", "report", "--config"])
        .arg(dir.path().join("cluster.toml"))
        .args(["--from", &from, "--to", &to, "--out"])
        .arg(dir.path().join("reports"))
        .output()
        .expect("cost report");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv_path = stdout
        .split_whitespace()
        .find(|w| w.ends_with(".csv"))
        .unwrap_or_else(|| panic!("no CSV named in: {stdout}"));
    let mut reader = csv::Reader::from_path(csv_path).expect("csv");
    let header = reader.headers().expect("header").clone();
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    let (category, provider, cost) = (
        col("PricingCategory"),
        col("ProviderName"),
        col("BilledCost"),
    );
    let mut by_category: BTreeMap<(String, String), f64> = BTreeMap::new();
    for record in reader.records() {
        let r = record.expect("row");
        *by_category
            .entry((r[category].to_string(), r[provider].to_string()))
            .or_default() += r[cost].parse::<f64>().unwrap_or(0.0);
    }
    let owned = by_category
        .get(&("Committed".to_string(), "Owned hosts".to_string()))
        .copied()
        .unwrap_or(0.0);
    let rented: f64 = by_category
        .iter()
        .filter(|((c, _), _)| c == "Standard")
        .map(|(_, v)| v)
        .sum();
    assert!(
        owned > 0.0 && rented > 0.0,
        "owned and rented apart: {by_category:?}"
    );
    println!(
        "burst: metal busy {metal_busy}, rented busy {rented_busy}; {ran_twice} of the cut host's 2 jobs also finished there behind the cut; cut noticed after {noticed:?}; burst drained {:?} after the cut; rented all retired {gone_after:?} into the trickle; cost owned ${owned:.6}, rented ${rented:.6}",
        drained.duration_since(cut)
    );
}
