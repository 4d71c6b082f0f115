//! `ebbtide explain JOB`: why a job is still waiting.

use std::fmt::Write as _;

use ebbtide_server::ExplainReport;

use crate::client::{Api, call, runtime};
use crate::status::{span, table, time_of_day};

/// Arguments of `ebbtide explain`.
#[derive(clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    api: Api,
    /// Print the API's JSON instead.
    #[arg(long)]
    json: bool,
    /// The job.
    id: u64,
}

pub fn run(a: ExplainArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let value: serde_json::Value = call(
            &a.api,
            reqwest::Method::GET,
            &format!("/v1/jobs/{}/explain", a.id),
            None,
        )
        .await?
        .json()
        .await?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            print!("{}", render(&serde_json::from_value(value)?));
        }
        Ok(())
    })
}

/// The explanation as an operator reads it: the job, what holds it, then
/// the pools that can run it with the planner's latest word on each.
pub fn render(e: &ExplainReport) -> String {
    let mut out = String::new();
    let where_ = match e.worker {
        Some(w) => format!(" on worker {w}"),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "job {} ({}, class {}): {}{where_}, {} since submission against a {} target; {} attempt(s) so far",
        e.id,
        e.tenant,
        e.class,
        e.state,
        span(e.waited_ms / 1000),
        span(e.sla_target_s as u64),
        e.attempts
    );
    let labels = if e.labels.is_empty() {
        "none".to_string()
    } else {
        e.labels.join(", ")
    };
    let _ = writeln!(
        out,
        "needs {} mCPU, {} MiB, labels: {labels}; {} job(s) of its class queued ahead of it\n",
        e.cpu_millis, e.memory_mib, e.ahead_in_class
    );
    if e.holdups.is_empty() {
        let _ = writeln!(out, "nothing holds it: it is on a worker");
    } else {
        let _ = writeln!(out, "held by:");
        for h in &e.holdups {
            let _ = writeln!(out, "  - {h}");
        }
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = e
        .pools
        .iter()
        .map(|p| {
            vec![
                p.pool.clone(),
                p.free_slots.to_string(),
                p.desired.to_string(),
                format!("{}/{}", p.existing, p.max),
                p.booting.to_string(),
                p.first_ready_in_s
                    .map_or_else(|| "-".into(), |s| format!("in {}", span(s))),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "POOL",
            "FREE",
            "DESIRED",
            "EXISTING/MAX",
            "BOOTING",
            "FIRST READY",
        ],
        &rows,
    );
    for p in &e.pools {
        if let Some(d) = &p.last_decision {
            let _ = writeln!(
                out,
                "{}: last decision at {}: {}",
                p.pool,
                time_of_day(d.at_ms),
                d.summary
            );
        }
    }
    out
}
