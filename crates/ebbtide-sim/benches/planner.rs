//! Release-mode benchmark of the planner against the baselines on the real
//! September 2020 Travis CI month, at several SLA targets for the `high`
//! class (push and pull-request builds).
//!
//! `cargo bench -p ebbtide-sim --bench planner`
//!
//! For each seed and target it replays `examples/travis-sim.toml` under
//! Ebbtide's defaults and under the idle-count and per-job baselines over
//! their whole grids (`ebbtide_sim::sweep`), and prints:
//! - Ebbtide's attainment and p95 wait per class, its cost broken into
//!   running, boot, idle and on-demand premium, launches per job, and how
//!   long its replay took;
//! - the proven lower bound and the clairvoyant schedule (an upper bound),
//!   and Ebbtide's cost against each;
//! - per family, the cheapest setting reaching 99 % in every class, its
//!   cost-versus-p95 frontier, and any setting that dominates Ebbtide
//!   (cheaper and at least as fast at the p95 in every class);
//! - at the end, one summary row per target and seed.
//!
//! `SLAS=10,60` (seconds) picks the targets, `SEEDS=1,2,3,4` the seeds,
//! `BASELINES=0` replays Ebbtide alone (to try a change quickly),
//! `CONFIG=…` replays another configuration than the example,
//! `COVERAGE=0.999` sets the pools' warm-headroom coverage, `DAYS=7`
//! replays only the first days, `DATA=…` names the shared data, and
//! `CHARTS=docs/sim` writes each target's frontier chart (first seed) there.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ebbtide_sim::chart::FrontierSeries;
use ebbtide_sim::sweep::{self, p95};
use ebbtide_sim::{Policy, RunReport, SimParams, Trace, TravisClasses};

const GOAL: f64 = 0.99;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs every policy on two threads; results in `policies` order, each with
/// the wall time of its own replay.
fn run_all(
    policies: &[Policy],
    trace: &Trace,
    cluster: &ebbtide_config::ClusterConfig,
    params: &SimParams,
) -> Vec<(RunReport, Duration)> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out = std::sync::Mutex::new(vec![None; policies.len()]);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(policy) = policies.get(i) else { break };
                    let began = Instant::now();
                    let r = ebbtide_sim::simulate(trace, cluster, params, policy, &mut |_| {})
                        .expect("simulation");
                    out.lock().expect("lock")[i] = Some((r, began.elapsed()));
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

fn list(var: &str, default: &str) -> Vec<u64> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{var}: numbers, comma-separated"))
        })
        .collect()
}

struct Summary {
    sla: u64,
    seed: u64,
    attainment: f64,
    cost: i64,
    vs_baseline: Option<f64>,
    vs_clairvoyant: f64,
    dominated_by: usize,
}

fn main() {
    let data = std::env::var("DATA").map_or_else(|_| root().join("../shared/data"), PathBuf::from);
    let slas = list("SLAS", "10,30,60,300");
    let seeds = list("SEEDS", "1");
    let charts = std::env::var("CHARTS").ok().map(PathBuf::from);
    let config = std::env::var("CONFIG")
        .map_or_else(|_| root().join("examples/travis-sim.toml"), PathBuf::from);
    let text = std::fs::read_to_string(&config).expect("config");
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
    let families: Vec<(&str, Vec<Policy>)> = if std::env::var("BASELINES").as_deref() == Ok("0") {
        Vec::new()
    } else {
        vec![
            ("idle-count", sweep::idle_count_grid()),
            ("per-job", sweep::per_job_grid()),
        ]
    };
    let mut policies = vec![Policy::Ebbtide];
    for (_, grid) in &families {
        policies.extend(grid.iter().cloned());
    }
    println!(
        "{} jobs, seeds {seeds:?}, goal {:.0} % in every class, {} policies per target",
        trace.jobs.len(),
        GOAL * 100.0,
        policies.len()
    );
    let mut summary = Vec::new();
    for &seed in &seeds {
        let params =
            SimParams::from_shared_data(&data, "us-east-1", &shape, seed).expect("shared data");
        for &sla in &slas {
            let cluster = scenario(&base, sla);
            let began = Instant::now();
            let runs = run_all(&policies, &trace, &cluster, &params);
            let (me, my_time) = (&runs[0].0, runs[0].1);
            let others: Vec<RunReport> = runs[1..].iter().map(|(r, _)| r.clone()).collect();
            let pool = &cluster.engine.pools[0];
            let cheapest = params
                .min_spot_price()
                .map_or(pool.on_demand_price, |s| s.min(pool.on_demand_price));
            let targets = cluster
                .engine
                .classes
                .iter()
                .map(|c| (c.name.clone(), c.sla_target))
                .collect();
            let lower = ebbtide_sim::lower_bound(
                &trace,
                &targets,
                pool.capacity_per_instance,
                cheapest,
                params.min_boot(),
            );
            let upper =
                ebbtide_sim::clairvoyant(&trace, cheapest, params.mean_boot(), params.min_billing);
            println!(
                "\nseed {seed}, high-class target {sla} s ({:.0} s of replays; ebbtide's own replay {:.1} s)",
                began.elapsed().as_secs_f64(),
                my_time.as_secs_f64()
            );
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
            let b = me.breakdown;
            println!(
                "  ebbtide: {}; {} = running {} + boot {} + idle {} + on-demand premium {}; {:.2} launches per job, {} launch failures, {} reclaimed",
                waits.join(", "),
                dollars(me.cost_micros),
                dollars(b.running_micros),
                dollars(b.boot_micros),
                dollars(b.idle_micros),
                dollars(b.on_demand_premium_micros),
                me.launches as f64 / me.jobs.max(1) as f64,
                me.launch_failures,
                me.reclaimed_instances
            );
            let ratio = |a: i64, b: i64| a as f64 / b.max(1) as f64;
            println!(
                "  lower bound {} ({:.2}×), clairvoyant {} ({:.2}×; {} instances)",
                dollars(lower.cost_micros),
                ratio(me.cost_micros, lower.cost_micros),
                dollars(upper.cost_micros),
                ratio(me.cost_micros, upper.cost_micros),
                upper.instances
            );
            let mut best_cost: Option<i64> = None;
            let mut series = Vec::new();
            let mut offset = 0;
            for (family, grid) in &families {
                let mine = &others[offset..offset + grid.len()];
                offset += grid.len();
                match sweep::cheapest_meeting(mine, GOAL) {
                    Some(r) => {
                        best_cost = Some(best_cost.map_or(r.cost_micros, |c| c.min(r.cost_micros)));
                        println!(
                            "  {family}: cheapest reaching the goal {} at {} (worst class {:.2} %; ebbtide {:.2}× it)",
                            r.policy,
                            dollars(r.cost_micros),
                            r.min_attainment() * 100.0,
                            ratio(me.cost_micros, r.cost_micros)
                        );
                    }
                    None => {
                        let top = mine
                            .iter()
                            .max_by(|a, b| a.min_attainment().total_cmp(&b.min_attainment()))
                            .map(|r| format!("{} {:.2} %", r.policy, r.min_attainment() * 100.0))
                            .unwrap_or_default();
                        println!("  {family}: no setting reaches the goal (best: {top})");
                    }
                }
                let line: Vec<String> = sweep::frontier(mine, "high")
                    .iter()
                    .map(|r| {
                        format!(
                            "{} {} p95 {:.0} s{}",
                            r.policy,
                            dollars(r.cost_micros),
                            p95(r, "high"),
                            if r.min_attainment() >= GOAL {
                                ""
                            } else {
                                " (misses)"
                            }
                        )
                    })
                    .collect();
                println!("    frontier (cost vs high p95): {}", line.join("; "));
                series.push(FrontierSeries { family, runs: mine });
            }
            let dominating = sweep::dominating(me, &others, GOAL);
            match dominating.first() {
                None => println!(
                    "  no baseline setting is both cheaper and as fast at the p95 in every class"
                ),
                Some(_) => println!(
                    "  DOMINATED by {}",
                    dominating
                        .iter()
                        .map(|r| format!("{} at {}", r.policy, dollars(r.cost_micros)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
            if let Some(dir) = &charts
                && seed == seeds[0]
            {
                let path = dir.join(format!("frontier-{sla}s.svg"));
                ebbtide_sim::chart::frontier(
                    &format!("September 2020 Travis month, high-class target {sla} s, seed {seed}"),
                    "high",
                    sla as f64,
                    GOAL,
                    me,
                    &series,
                    &path,
                )
                .expect("chart");
                println!("  wrote {}", path.display());
            }
            summary.push(Summary {
                sla,
                seed,
                attainment: me.min_attainment(),
                cost: me.cost_micros,
                vs_baseline: best_cost.map(|c| ratio(me.cost_micros, c)),
                vs_clairvoyant: ratio(me.cost_micros, upper.cost_micros),
                dominated_by: dominating.len(),
            });
        }
    }
    println!(
        "\n| target | seed | worst class | cost | × cheapest baseline ≥ 99 % | × clairvoyant | dominated by |"
    );
    println!("|---|---|---|---|---|---|---|");
    for s in &summary {
        println!(
            "| {} s | {} | {:.2} % | {} | {} | {:.2} | {} |",
            s.sla,
            s.seed,
            s.attainment * 100.0,
            dollars(s.cost),
            s.vs_baseline
                .map_or("none reaches it".into(), |r| format!("{r:.2}")),
            s.vs_clairvoyant,
            s.dominated_by
        );
    }
}

/// The example configuration with the high class's target at `sla` seconds
/// (and `COVERAGE` applied).
fn scenario(base: &ebbtide_config::ClusterConfig, sla: u64) -> ebbtide_config::ClusterConfig {
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
    cluster
}
