//! `ebbtide simulate`: replay a trace, print a comparison table, write JSON
//! and an SVG chart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use clap::ValueEnum;
use ebbtide_sim::{
    ClairvoyantReport, OracleReport, Policy, RunReport, SimParams, Trace, TravisClasses,
};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

/// Arguments of `ebbtide simulate`.
#[derive(clap::Args)]
pub struct Args {
    /// Cluster configuration (the same TOML as the server's).
    #[arg(long)]
    config: PathBuf,
    /// Job trace (CSV).
    #[arg(long)]
    trace: PathBuf,
    /// Trace format; `auto` recognises the Travis CI month by its header.
    #[arg(long, value_enum, default_value = "auto")]
    format: Format,
    /// Class for Travis push/pull_request builds.
    #[arg(long, default_value = "high")]
    interactive_class: String,
    /// Class for Travis cron/api builds.
    #[arg(long, default_value = "low")]
    scheduled_class: String,
    /// Directory with the real data (boot times, prices, reclamations).
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// AWS region whose prices and Spot Advisor bucket to use.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Seed for every random draw.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Replay only the first N days of the trace.
    #[arg(long)]
    days: Option<u64>,
    /// Compare against the baselines at their default settings.
    #[arg(long)]
    compare: bool,
    /// Tune each baseline's main knob to its cheapest setting that reaches
    /// Ebbtide's attainment (implies --compare).
    #[arg(long)]
    sweep: bool,
    /// Write the full report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the timeline chart (SVG) here.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Parallel runs.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Check the engine's invariants after every N-th event; a violation
    /// stops the run and names the event (slower: N = 1 checks them all).
    #[arg(long, value_name = "N")]
    check: Option<u64>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Auto,
    Native,
    Travis,
}

#[derive(Serialize)]
struct Output<'a> {
    trace: String,
    jobs: usize,
    skipped_rows: usize,
    seed: u64,
    oracle: &'a OracleReport,
    clairvoyant: &'a ClairvoyantReport,
    runs: &'a [RunReport],
    best_baselines: Vec<(&'a str, Option<&'a str>)>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let cluster = ebbtide_sim::world::parse(&text, &crate::plugins::PROVIDERS.names())
        .map_err(|errors| anyhow::anyhow!("{}: {errors}", args.config.display()))?;
    let Some(pool) = cluster.engine.pools.first().cloned() else {
        bail!("{}: no pools to simulate", args.config.display())
    };
    let mut trace = load_trace(&args, &cluster)?;
    if let Some(days) = args.days {
        trace.truncate_to(std::time::Duration::from_secs(days * 86_400));
    }
    if trace.jobs.is_empty() {
        bail!("{}: no jobs to replay", args.trace.display());
    }
    let mut params =
        SimParams::from_shared_data(&args.data, &args.region, &pool.shape.name, args.seed)
            .with_context(|| format!("reading simulation data from {}", args.data.display()))?;
    params.check_every = args.check;
    eprintln!(
        "replaying {} jobs from {} ({} rows skipped), seed {}",
        trace.jobs.len(),
        args.trace.display(),
        trace.skipped.len(),
        args.seed
    );

    let targets: HashMap<String, std::time::Duration> = cluster
        .engine
        .classes
        .iter()
        .map(|c| (c.name.clone(), c.sla_target))
        .collect();
    let cheapest = params
        .min_spot_price()
        .map_or(pool.on_demand_price, |s| s.min(pool.on_demand_price));
    let oracle = ebbtide_sim::lower_bound(
        &trace,
        &targets,
        pool.capacity_per_instance,
        cheapest,
        params.min_boot(),
    );
    let upper = ebbtide_sim::clairvoyant(&trace, cheapest, params.mean_boot(), params.min_billing);

    let ebbtide = run_all(&[Policy::Ebbtide], &trace, &cluster, &params, args.jobs)?;
    let mut runs = ebbtide;
    let mut best = Vec::new();
    if args.compare || args.sweep {
        let peak = runs[0].peak_fleet as u32;
        let grid = ebbtide_sim::sweep::baseline_grid(peak.max(1));
        let policies: Vec<Policy> = if args.sweep {
            grid.iter().flat_map(|(_, p)| p.clone()).collect()
        } else {
            default_baselines(peak.max(1))
        };
        let baseline_runs = run_all(&policies, &trace, &cluster, &params, args.jobs)?;
        let goal = runs[0].min_attainment();
        if args.sweep {
            for (kind, settings) in &grid {
                let labels: Vec<String> = settings.iter().map(Policy::label).collect();
                let mine: Vec<RunReport> = baseline_runs
                    .iter()
                    .filter(|r| labels.contains(&r.policy))
                    .cloned()
                    .collect();
                let pick =
                    ebbtide_sim::sweep::cheapest_meeting(&mine, goal).map(|r| r.policy.clone());
                best.push((*kind, pick));
            }
        }
        runs.extend(baseline_runs);
    }

    println!("{}", ebbtide_sim::table(&runs, Some(oracle.cost_micros)));
    println!(
        "oracle lower bound: {} (W = {:.0} job-hours, K = {} overlapping mandatory jobs, boot ≥ {:.1}s, price ≥ {}/h)",
        ebbtide_sim::report::dollars(oracle.cost_micros),
        oracle.work_hours,
        oracle.peak_mandatory_jobs,
        oracle.min_boot_s,
        ebbtide_sim::report::dollars(oracle.price_micros_per_hour)
    );
    println!(
        "clairvoyant schedule (every job started on arrival, an upper bound): {} ({} instances, boot {:.1}s, idle {:.0} h)",
        ebbtide_sim::report::dollars(upper.cost_micros),
        upper.instances,
        upper.boot_s,
        upper.idle_hours
    );
    if args.sweep {
        let goal = runs[0].min_attainment();
        println!(
            "cheapest baseline settings reaching ebbtide's attainment ({:.2}% in every class):",
            goal * 100.0
        );
        for (kind, pick) in &best {
            match pick
                .as_deref()
                .and_then(|p| runs.iter().find(|r| r.policy == p))
            {
                Some(r) => println!(
                    "  {kind:<13} {:<34} {}  (ebbtide is {:.1}% cheaper)",
                    r.policy,
                    ebbtide_sim::report::dollars(r.cost_micros),
                    (1.0 - runs[0].cost_micros as f64 / r.cost_micros as f64) * 100.0
                ),
                None => println!("  {kind:<13} no setting in the grid reached it"),
            }
        }
    }
    let best_refs: Vec<(&str, Option<&str>)> =
        best.iter().map(|(k, p)| (*k, p.as_deref())).collect();
    if let Some(path) = &args.json {
        let out = Output {
            trace: args.trace.display().to_string(),
            jobs: trace.jobs.len(),
            skipped_rows: trace.skipped.len(),
            seed: args.seed,
            oracle: &oracle,
            clairvoyant: &upper,
            runs: &runs,
            best_baselines: best_refs,
        };
        let text = serde_json::to_string_pretty(&out)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.chart {
        // With a sweep, draw Ebbtide and each baseline's best setting only.
        let drawn: Vec<RunReport> = if args.sweep {
            runs.iter()
                .filter(|r| {
                    r.policy == "ebbtide"
                        || best
                            .iter()
                            .any(|(_, p)| p.as_deref() == Some(r.policy.as_str()))
                })
                .cloned()
                .collect()
        } else {
            runs.clone()
        };
        ebbtide_sim::chart::draw(&drawn, path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn default_baselines(peak: u32) -> Vec<Policy> {
    use std::time::Duration;
    vec![
        Policy::Fixed { instances: peak },
        Policy::IdleCount {
            idle_count: 5,
            idle_time: Duration::from_secs(600),
            max_use_count: None,
        },
        Policy::PerJob { warm: 5 },
        Policy::QueueTarget {
            jobs_per_instance: 1,
            scale_in_cooldown: Duration::from_secs(300),
        },
    ]
}

fn load_trace(args: &Args, cluster: &ebbtide_config::ClusterConfig) -> anyhow::Result<Trace> {
    let travis = match args.format {
        Format::Travis => true,
        Format::Native => false,
        Format::Auto => {
            let head = std::fs::read_to_string(&args.trace)
                .with_context(|| format!("reading {}", args.trace.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            head.contains("build_id")
        }
    };
    for class in [&args.interactive_class, &args.scheduled_class] {
        if travis && !cluster.engine.classes.iter().any(|c| &c.name == class) {
            bail!(
                "class {class:?} is not defined in {}",
                args.config.display()
            );
        }
    }
    let trace = if travis {
        let classes = TravisClasses {
            interactive: args.interactive_class.clone(),
            scheduled: args.scheduled_class.clone(),
        };
        ebbtide_sim::read_travis(&args.trace, &classes)?
    } else {
        ebbtide_sim::read_native(&args.trace)?
    };
    Ok(trace)
}

/// Runs policies on up to `jobs` threads, each with a progress bar; results
/// come back in the order of `policies` whatever the finishing order.
fn run_all(
    policies: &[Policy],
    trace: &Trace,
    cluster: &ebbtide_config::ClusterConfig,
    params: &SimParams,
    jobs: usize,
) -> anyhow::Result<Vec<RunReport>> {
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>34} [{bar:30}] {percent:>3}% {elapsed}")
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .progress_chars("=> ");
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<RunReport, ebbtide_sim::SimError>>>> =
        Mutex::new((0..policies.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(policies.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(policy) = policies.get(i) else { break };
                    let bar = bars.add(
                        ProgressBar::new(100)
                            .with_style(style.clone())
                            .with_prefix(policy.label()),
                    );
                    let r = ebbtide_sim::simulate(trace, cluster, params, policy, &mut |f| {
                        bar.set_position((f * 100.0) as u64)
                    });
                    bar.finish();
                    if let Ok(mut all) = results.lock() {
                        all[i] = Some(r);
                    }
                }
            });
        }
    });
    let all = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a simulation thread panicked"))?;
    all.into_iter()
        .map(|r| {
            r.ok_or_else(|| anyhow::anyhow!("a simulation did not run"))
                .and_then(|r| r.map_err(Into::into))
        })
        .collect()
}
