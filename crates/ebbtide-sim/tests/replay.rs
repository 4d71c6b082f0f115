//! Replays whose answers are known: by hand, by seed, and by bound.

use std::collections::HashMap;
use std::time::Duration;

use ebbtide_config::ClusterConfig;
use ebbtide_core::{Micros, PricePerHour};
use ebbtide_sim::shortage::ShortageModel;
use ebbtide_sim::{Policy, SimParams, Trace, TraceJob, clairvoyant, lower_bound, simulate};
use proptest::prelude::*;

const CONFIG: &str = r#"
[[classes]]
name = "high"
sla_target = "60s"

[[classes]]
name = "low"
sla_target = "15m"

[[pools]]
name = "od"
provider = "sim"
kind = "dynamic"
max = 50
idle_timeout = "30s"
boot_estimate = "30s"
on_demand_price = 0.096
[pools.shape]
name = "m5.large"
cpu_millis = 2000
memory_mib = 8192
[pools.scaling]
scale_up_cooldown = "0s"
scale_down_cooldown = "0s"
down_stabilization = "0s"
"#;

const T0: u64 = 1_600_000_000_000;

fn cluster() -> ClusterConfig {
    ebbtide_sim::world::parse(CONFIG, &["sim"]).expect("test config")
}

fn job(at_s: u64, dur_s: u64, class: &str) -> TraceJob {
    TraceJob {
        submit_ms: T0 + at_s * 1000,
        duration: Duration::from_secs(dur_s),
        tenant: "t".into(),
        class: class.into(),
        labels: vec![],
        cpu_millis: 0,
        memory_mib: 0,
    }
}

fn trace(jobs: Vec<TraceJob>) -> Trace {
    let mut t = Trace {
        jobs,
        skipped: vec![],
    };
    t.jobs.sort_by_key(|j| j.submit_ms);
    t
}

/// Replays `t`, checking the engine's invariants after every event.
fn run(t: &Trace, params: &SimParams, policy: &Policy) -> ebbtide_sim::RunReport {
    let checked = SimParams {
        check_every: Some(1),
        ..params.clone()
    };
    simulate(t, &cluster(), &checked, policy, &mut |_| {}).expect("simulation runs")
}

fn targets() -> HashMap<String, Duration> {
    [
        ("high".to_string(), Duration::from_secs(60)),
        ("low".to_string(), Duration::from_secs(900)),
    ]
    .into()
}

#[test]
fn a_single_job_costs_exactly_its_boot_plus_run_time() {
    let t = trace(vec![job(0, 600, "high")]);
    let r = run(
        &t,
        &SimParams::deterministic(Duration::from_secs(30)),
        &Policy::Ebbtide,
    );
    // Launched on arrival, registered 30 s later, runs 600 s, the run ends
    // when it finishes: 630 s at $0.096/h.
    assert_eq!(r.cost_micros, 96_000 * 630 / 3600);
    assert_eq!(r.classes[0].wait_p50_s, 30.0);
    assert_eq!(r.classes[0].sla_attainment, 1.0);
    assert_eq!(r.launches, 1);
    let oracle = lower_bound(
        &t,
        &targets(),
        1,
        PricePerHour(Micros(96_000)),
        Duration::from_secs(30),
    );
    assert_eq!(
        oracle.cost_micros, r.cost_micros,
        "one job, one boot: Ebbtide is optimal here"
    );
    let b = r.breakdown;
    assert_eq!(
        (b.running_micros, b.boot_micros, b.idle_micros),
        (96_000 * 600 / 3600, 96_000 * 30 / 3600, 0)
    );
    assert_eq!(
        b.on_demand_premium_micros, 0,
        "no spot price to compare with"
    );
    let upper = clairvoyant(
        &t,
        PricePerHour(Micros(96_000)),
        Duration::from_secs(30),
        Duration::ZERO,
    );
    assert_eq!(upper.cost_micros, r.cost_micros, "the bounds meet");
}

/// The test pool, all spot above a base of none.
fn spot_cluster() -> ClusterConfig {
    let text = format!(
        "{CONFIG}[pools.market]\non_demand_base = 0\nspot_percent = 100\nspot_fallback_for = \"2m\"\n"
    );
    ebbtide_sim::world::parse(&text, &["sim"]).expect("config")
}

fn spot_world(shortages: ShortageModel) -> SimParams {
    let mut p = SimParams::deterministic(Duration::from_secs(30));
    p.spot_zones = vec![
        ("zone-a".into(), PricePerHour(Micros(32_000))),
        ("zone-b".into(), PricePerHour(Micros(35_000))),
    ];
    p.shortages = shortages;
    p.min_billing = Duration::from_secs(60);
    p.check_every = Some(1);
    p
}

#[test]
fn a_regional_spot_shortage_sends_urgent_launches_on_demand_and_prices_the_premium() {
    let cluster = spot_cluster();
    let t = trace((0..6).map(|i| job(i * 400, 300, "high")).collect());
    let open = simulate(
        &t,
        &cluster,
        &spot_world(ShortageModel::NONE),
        &Policy::Ebbtide,
        &mut |_| {},
    )
    .expect("runs");
    assert_eq!(open.cost_on_demand_micros, 0, "spot has room: all spot");
    assert_eq!(open.breakdown.on_demand_premium_micros, 0);
    let short = ShortageModel {
        region_share: 0.99,
        region_mean: Duration::from_secs(30 * 86_400),
        ..ShortageModel::NONE
    };
    let r = simulate(
        &t,
        &cluster,
        &spot_world(short),
        &Policy::Ebbtide,
        &mut |_| {},
    )
    .expect("runs");
    assert!(
        r.launch_failures > 0,
        "spot calls fail while the region is short"
    );
    assert!(
        r.cost_on_demand_micros > 0,
        "the SLA cannot wait two minutes"
    );
    assert_eq!(r.min_attainment(), 1.0);
    let b = r.breakdown;
    assert!(b.on_demand_premium_micros > 0);
    let parts = b.running_micros + b.boot_micros + b.idle_micros + b.on_demand_premium_micros;
    assert!(
        (parts - r.cost_micros).abs() <= 3 * r.launches as i64,
        "the parts add up to the whole, within a few µ$ of rounding per instance: {parts} vs {}",
        r.cost_micros
    );
}

#[test]
fn a_job_arriving_while_arrivals_are_recent_reuses_the_idle_worker() {
    // Thirty jobs boot (30 s) and run 30→230 s; thirty more arrive at
    // 240 s. Thirty arrivals in the last ten minutes put the next one
    // 20 s away, less than a 30 s boot, and nothing is left busy to free
    // up: the first idle worker is worth keeping (the second would wait
    // 40 s), the other 29 go at once. The kept one takes a job of the
    // second burst, and only 29 more boot for it.
    let mut jobs: Vec<_> = (0..30).map(|_| job(0, 200, "high")).collect();
    jobs.extend((0..30).map(|_| job(240, 600, "high")));
    let t = trace(jobs);
    let r = run(
        &t,
        &SimParams::deterministic(Duration::from_secs(30)),
        &Policy::Ebbtide,
    );
    assert_eq!(r.launches, 59, "one idle worker takes a second-burst job");
    assert_eq!(r.classes[0].wait_p50_s, 30.0, "the others waited a boot");
    assert!(
        r.classes[0].wait_p99_s < 60.0,
        "no job waited more than its boot: {}",
        r.classes[0].wait_p99_s
    );
}

#[test]
fn a_lone_job_is_not_worth_an_idle_worker_waiting_for_the_next() {
    // A boots (30 s), runs 30→230 s; B arrives at 240 s. One arrival in ten
    // minutes puts the next ten minutes away, twenty boots' worth of idle
    // time: the worker goes at once and B boots its own.
    let t = trace(vec![job(0, 200, "high"), job(240, 600, "high")]);
    let r = run(
        &t,
        &SimParams::deterministic(Duration::from_secs(30)),
        &Policy::Ebbtide,
    );
    assert_eq!(r.launches, 2);
    assert_eq!(r.cost_micros, 96_000 * 230 / 3600 + 96_000 * 630 / 3600);
}

#[test]
fn an_idle_worker_no_recent_arrival_needs_is_retired_at_once() {
    // A runs 30→730 s; by then its arrival is over ten minutes old, so the
    // idle worker goes at once and B (at 760 s) boots a fresh one.
    let t = trace(vec![job(0, 700, "high"), job(760, 100, "high")]);
    let r = run(
        &t,
        &SimParams::deterministic(Duration::from_secs(30)),
        &Policy::Ebbtide,
    );
    assert_eq!(r.launches, 2);
    assert_eq!(r.cost_micros, 96_000 * 730 / 3600 + 96_000 * 130 / 3600);
}

#[test]
fn the_same_seed_gives_byte_identical_json() {
    let mut params = SimParams::deterministic(Duration::from_secs(25));
    params.boot_samples = vec![
        Duration::from_secs(22),
        Duration::from_secs(26),
        Duration::from_secs(30),
    ];
    params.boot_jitter = Duration::from_secs(2);
    params.throttle_rate = 0.05;
    params.seed = 42;
    let t = trace(
        (0..200)
            .map(|i| {
                job(
                    i * 7 % 3600,
                    60 + i * 13 % 900,
                    if i % 5 == 0 { "low" } else { "high" },
                )
            })
            .collect(),
    );
    let a = serde_json::to_string(&run(&t, &params, &Policy::Ebbtide)).expect("json");
    let b = serde_json::to_string(&run(&t, &params, &Policy::Ebbtide)).expect("json");
    assert_eq!(a, b);
    params.seed = 43;
    let c = serde_json::to_string(&run(&t, &params, &Policy::Ebbtide)).expect("json");
    assert_ne!(a, c, "the seed matters");
}

#[test]
fn an_unknown_class_in_the_trace_is_an_error_naming_it() {
    let t = trace(vec![job(0, 10, "urgent")]);
    let err = simulate(
        &t,
        &cluster(),
        &SimParams::deterministic(Duration::from_secs(30)),
        &Policy::Ebbtide,
        &mut |_| {},
    )
    .expect_err("unknown class");
    assert!(err.to_string().contains("\"urgent\""), "{err}");
}

fn policies() -> Vec<Policy> {
    vec![
        Policy::Ebbtide,
        Policy::Fixed { instances: 4 },
        Policy::IdleCount {
            idle_count: 1,
            idle_time: Duration::from_secs(120),
            max_use_count: None,
        },
        Policy::PerJob { warm: 1 },
        Policy::QueueTarget {
            jobs_per_instance: 1,
            scale_in_cooldown: Duration::from_secs(60),
        },
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_oracle_is_never_above_a_policy_that_met_every_sla(
        jobs in proptest::collection::vec((0u64..3600, 1u64..1200, any::<bool>()), 1..40),
        seed in 0u64..1000,
    ) {
        let t = trace(jobs.into_iter().map(|(a, d, high)| job(a, d, if high { "high" } else { "low" })).collect());
        let mut params = SimParams::deterministic(Duration::from_secs(26));
        params.boot_samples = vec![Duration::from_secs(22), Duration::from_secs(30)];
        params.boot_jitter = Duration::from_secs(1);
        params.api_latency = Duration::from_secs(1);
        params.throttle_rate = 0.05;
        params.seed = seed;
        let price = PricePerHour(Micros(96_000));
        let oracle = lower_bound(&t, &targets(), 1, price, params.min_boot());
        let work_only = lower_bound(&t, &HashMap::new(), 1, price, params.min_boot());
        let upper = clairvoyant(&t, price, params.mean_boot(), params.min_billing);
        prop_assert!(oracle.cost_micros <= upper.cost_micros, "lower {} > clairvoyant {}", oracle.cost_micros, upper.cost_micros);
        for p in policies() {
            let r = run(&t, &params, &p);
            prop_assert!(work_only.cost_micros <= r.cost_micros, "{}: {} < work bound {}", r.policy, r.cost_micros, work_only.cost_micros);
            if r.min_attainment() >= 1.0 {
                prop_assert!(oracle.cost_micros <= r.cost_micros, "{}: {} < oracle {}", r.policy, r.cost_micros, oracle.cost_micros);
            }
        }
    }
}

#[test]
fn a_native_trace_is_read_in_arrival_order_and_a_bad_row_names_its_line() {
    let dir = tempfile_dir();
    let good = dir.join("good.csv");
    std::fs::write(
        &good,
        "submit_s,duration_s,tenant,class,labels\n20,5,a,high,linux;docker\n10.5,1,b,low,\n",
    )
    .expect("write");
    let t = ebbtide_sim::read_native(&good).expect("valid trace");
    assert_eq!(t.jobs.len(), 2);
    assert_eq!(t.jobs[0].submit_ms, 10_500, "sorted by arrival");
    assert_eq!(
        t.jobs[1].labels,
        vec!["linux".to_string(), "docker".to_string()]
    );
    let bad = dir.join("bad.csv");
    std::fs::write(
        &bad,
        "submit_s,duration_s,tenant,class\n1,2,a,high\n1,two,a,high\n",
    )
    .expect("write");
    let err = ebbtide_sim::read_native(&bad).expect_err("bad duration");
    assert!(err.to_string().contains("line 3"), "{err}");
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ebbtide-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
