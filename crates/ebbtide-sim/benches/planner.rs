//! Release-mode benchmark of the planner against the baselines on the real
//! September 2020 Travis CI month, at several SLA targets for the `high`
//! class (push and pull-request builds).
//!
//! `cargo bench -p ebbtide-sim --bench planner`
//!
//! For each target it replays `examples/travis-sim.toml` under Ebbtide's
//! defaults and under the idle-count and per-job baselines over their
//! grids, and prints Ebbtide's worst-class attainment, cost and its
//! breakdown, launches per job, and the cheapest baseline setting that
//! reaches 99 % in every class. `SLAS=10,60` (seconds) picks the targets,
//! `COVERAGE=0.999` sets the pools' warm-headroom coverage, `DAYS=7`
//! replays only the first days, `DATA=…` names the shared data.

use std::path::PathBuf;
use std::time::Duration;

use ebbtide_sim::{Policy, RunReport, SimParams, Trace, TravisClasses};

const GOAL: f64 = 0.99;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn baselines() -> Vec<Policy> {
    let idle = [0u32, 5, 10, 20, 40, 80].map(|n| Policy::IdleCount {
        idle_count: n,
        idle_time: Duration::from_secs(600),
        max_use_count: None,
    });
    let per_job = [0u32, 5, 10, 20, 40].map(|w| Policy::PerJob { warm: w });
    idle.into_iter().chain(per_job).collect()
}

fn run_all(
    policies: &[Policy],
    trace: &Trace,
    cluster: &ebbtide_config::ClusterConfig,
    params: &SimParams,
) -> Vec<RunReport> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out = std::sync::Mutex::new(vec![None; policies.len()]);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(policy) = policies.get(i) else { break };
                    let r = ebbtide_sim::simulate(trace, cluster, params, policy, &mut |_| {})
                        .expect("simulation");
                    out.lock().expect("lock")[i] = Some(r);
                }
            });
        }
    });
    out.into_inner()
        .expect("lock")
        .into_iter()
        .map(|r| r.expect("every run finished"))
        .collect()
}

fn dollars(micros: i64) -> String {
    ebbtide_sim::report::dollars(micros)
}

fn main() {
    let data = std::env::var("DATA").map_or_else(|_| root().join("../shared/data"), PathBuf::from);
    let slas: Vec<u64> = std::env::var("SLAS")
        .unwrap_or_else(|_| "10,30,60,300".into())
        .split(',')
        .map(|s| s.trim().parse().expect("SLAS: seconds, comma-separated"))
        .collect();
    let text = std::fs::read_to_string(root().join("examples/travis-sim.toml")).expect("config");
    let base = ebbtide_sim::world::parse(&text, &["aws"]).expect("examples/travis-sim.toml");
    let classes = TravisClasses {
        interactive: "high".into(),
        scheduled: "low".into(),
    };
    let mut trace =
        ebbtide_sim::read_travis(&data.join("traces/travis_2020-09.csv"), &classes).expect("trace");
    if let Some(days) = std::env::var("DAYS")
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
    {
        trace.truncate_to(Duration::from_secs(days * 86_400));
    }
    let shape = base.engine.pools[0].shape.name.clone();
    let params = SimParams::from_shared_data(&data, "us-east-1", &shape, 1).expect("shared data");
    println!(
        "{} jobs, seed 1, goal {:.0} % in every class",
        trace.jobs.len(),
        GOAL * 100.0
    );
    for sla in slas {
        let mut cluster = base.clone();
        let high = cluster
            .engine
            .classes
            .iter_mut()
            .find(|c| c.name == "high")
            .expect("class high");
        high.sla_target = Duration::from_secs(sla);
        if let Some(c) = std::env::var("COVERAGE")
            .ok()
            .and_then(|c| c.parse::<f64>().ok())
        {
            for p in &mut cluster.engine.pools {
                p.headroom = ebbtide_core::HeadroomPolicy::Auto {
                    coverage_milli: (c * 1000.0).round() as u32,
                };
            }
        }
        let began = std::time::Instant::now();
        let mut policies = vec![Policy::Ebbtide];
        policies.extend(baselines());
        let runs = run_all(&policies, &trace, &cluster, &params);
        let me = &runs[0];
        let waits: Vec<String> = me
            .classes
            .iter()
            .map(|c| {
                format!(
                    "{} {:.2} % (p95 {:.0} s)",
                    c.class,
                    c.sla_attainment * 100.0,
                    c.wait_p95_s
                )
            })
            .collect();
        println!(
            "\nhigh-class target {sla} s ({:.0} s of replays)",
            began.elapsed().as_secs_f64()
        );
        println!(
            "  ebbtide: {}; {} (spot {}, on-demand {}); {:.0} idle h, {:.0} boot h; {:.2} launches per job, {} launch failures",
            waits.join(", "),
            dollars(me.cost_micros),
            dollars(me.cost_spot_micros),
            dollars(me.cost_on_demand_micros),
            me.idle_worker_hours,
            me.boot_worker_hours,
            me.launches as f64 / me.jobs.max(1) as f64,
            me.launch_failures
        );
        for kind in ["idle-count", "per-job"] {
            let best = runs[1..]
                .iter()
                .filter(|r| r.policy.starts_with(kind) && r.min_attainment() >= GOAL)
                .min_by_key(|r| r.cost_micros);
            let top = runs[1..]
                .iter()
                .filter(|r| r.policy.starts_with(kind))
                .max_by(|a, b| a.min_attainment().total_cmp(&b.min_attainment()))
                .map(|r| format!("{} {:.2} %", r.policy, r.min_attainment() * 100.0))
                .unwrap_or_default();
            match best {
                Some(r) => println!(
                    "  {kind}: cheapest reaching the goal {} at {} (worst class {:.2} %)",
                    r.policy,
                    dollars(r.cost_micros),
                    r.min_attainment() * 100.0
                ),
                None => println!("  {kind}: no setting reaches the goal (best: {top})"),
            }
        }
    }
}
