//! `ebbtide status`: the fleet (operator key) or your own queue and jobs
//! (tenant key), as tables, as JSON for scripts, or refreshed in place.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use ebbtide_server::{StatusReport, TenantStatus};
use serde_json::Value;

use crate::client::{Api, call, runtime};

/// Arguments of `ebbtide status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    api: Api,
    /// Print the API's JSON instead of tables.
    #[arg(long, conflicts_with = "watch")]
    json: bool,
    /// Redraw in place until interrupted, like `top`.
    #[arg(long)]
    watch: bool,
    /// How often `--watch` redraws.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    interval: Duration,
}

/// What `/v1/status` answered: the fleet, or a tenant's own slice.
enum View {
    Fleet(Box<StatusReport>),
    Tenant(TenantStatus),
}

fn parse(value: Value) -> anyhow::Result<View> {
    if value.get("tenant").is_some() {
        Ok(View::Tenant(serde_json::from_value(value)?))
    } else {
        Ok(View::Fleet(Box::new(serde_json::from_value(value)?)))
    }
}

pub fn run(a: StatusArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        loop {
            let value: Value = call(&a.api, reqwest::Method::GET, "/v1/status", None)
                .await?
                .json()
                .await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(());
            }
            let screen = match parse(value)? {
                View::Fleet(f) => render_fleet(&f),
                View::Tenant(t) => render_tenant(&t),
            };
            if !a.watch {
                print!("{screen}");
                return Ok(());
            }
            // Home, draw, clear what the last screen left below.
            print!("\x1b[H{}\x1b[J", screen.replace('\n', "\x1b[K\n"));
            use std::io::Write as _;
            std::io::stdout().flush()?;
            tokio::select! {
                () = tokio::time::sleep(a.interval) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    })
}

/// `2026-12-01 20:05:12 UTC`.
fn wall_clock(at_ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(at_ms);
    let text = humantime::format_rfc3339_seconds(t).to_string();
    text.replace('T', " ").replace('Z', " UTC")
}

/// `20:05:12`.
pub(crate) fn time_of_day(at_ms: u64) -> String {
    let secs = (at_ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `45s`, `3m05s`, `2h07m`.
pub(crate) fn span(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs / 60 % 60),
    }
}

fn dollars(d: f64) -> String {
    if d != 0.0 && d.abs() < 0.01 {
        format!("${d:.4}")
    } else {
        format!("${d:.2}")
    }
}

/// A table with a header row, columns as wide as their widest cell.
pub(crate) fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, w) in cells.zip(&widths) {
            let _ = write!(text, "{cell:<w$}  ");
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(out, &mut header.iter().copied());
    for row in rows {
        line(out, &mut row.iter().map(String::as_str));
    }
}

fn queue_rows(queue: &[ebbtide_server::QueueReport], with_tenant: bool) -> Vec<Vec<String>> {
    queue
        .iter()
        .map(|q| {
            let mut row = vec![q.class.clone()];
            if with_tenant {
                row.push(q.tenant.clone());
            }
            row.extend([
                q.queued.to_string(),
                span(q.oldest_wait_ms / 1000),
                span(q.sla_target_s as u64),
                if q.over_target { "LATE" } else { "ok" }.to_string(),
            ]);
            row
        })
        .collect()
}

fn running_rows(
    running: &[ebbtide_server::RunningJobReport],
    with_tenant: bool,
) -> Vec<Vec<String>> {
    running
        .iter()
        .map(|r| {
            let mut row = vec![r.id.to_string()];
            if with_tenant {
                row.push(r.tenant.clone());
            }
            row.extend([
                r.class.clone(),
                r.worker.to_string(),
                r.attempt.to_string(),
                r.state.clone(),
                span(r.for_s),
            ]);
            row
        })
        .collect()
}

/// The jobs on workers and the queue, with a tenant column for operators.
fn jobs_and_queue(
    out: &mut String,
    running: &[ebbtide_server::RunningJobReport],
    queue: &[ebbtide_server::QueueReport],
    with_tenant: bool,
) {
    let tenant: &[&str] = if with_tenant { &["TENANT"] } else { &[] };
    if running.is_empty() {
        let _ = writeln!(out, "no jobs on workers");
    } else {
        let header: Vec<&str> = ["JOB"]
            .iter()
            .chain(tenant)
            .chain(&["CLASS", "WORKER", "ATTEMPT", "STATE", "FOR"])
            .copied()
            .collect();
        table(out, &header, &running_rows(running, with_tenant));
    }
    out.push('\n');
    if queue.is_empty() {
        let _ = writeln!(out, "queue empty");
    } else {
        let header: Vec<&str> = ["CLASS"]
            .iter()
            .chain(tenant)
            .chain(&["QUEUED", "OLDEST WAIT", "TARGET", "SLA"])
            .copied()
            .collect();
        table(out, &header, &queue_rows(queue, with_tenant));
    }
}

/// The fleet as tables: a header line, pools, workers, running jobs, the
/// queue against its targets, and the latest decisions with their reasons.
pub fn render_fleet(s: &StatusReport) -> String {
    let mut out = String::new();
    let today = s.cost.today_usd.map_or_else(|| "-".to_string(), dollars);
    let _ = writeln!(
        out,
        "ebbtide fleet at {}: {} queued, {} on workers; {}/h now, {} today, {} since start\n",
        wall_clock(s.at_ms),
        s.queued,
        s.on_workers,
        dollars(s.cost.rate_per_hour_usd),
        today,
        dollars(s.cost.since_start_usd)
    );
    let pools: Vec<Vec<String>> = s
        .pools
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.provider.clone(),
                format!("{}/{}", p.desired, p.max),
                p.requested.to_string(),
                p.booting.to_string(),
                p.idle.to_string(),
                p.busy.to_string(),
                p.retiring.to_string(),
                p.free_slots.to_string(),
                format!("{:.0}s", p.boot_estimate_s),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "POOL",
            "PROVIDER",
            "DESIRED",
            "REQ",
            "BOOT",
            "IDLE",
            "BUSY",
            "RETIRING",
            "FREE",
            "BOOT TIME",
        ],
        &pools,
    );
    out.push('\n');
    let workers: Vec<Vec<String>> = s
        .workers
        .iter()
        .map(|w| {
            let state = match &w.draining_because {
                Some(why) => format!("{} ({why})", w.state),
                None => w.state.clone(),
            };
            let jobs: Vec<String> = w.jobs.iter().map(u64::to_string).collect();
            vec![
                w.id.to_string(),
                w.pool.clone(),
                w.market.clone(),
                w.zone.clone().unwrap_or_else(|| "-".into()),
                state,
                if jobs.is_empty() {
                    "-".into()
                } else {
                    jobs.join(",")
                },
                w.up_s.map_or_else(|| "-".into(), span),
                w.jobs_served.to_string(),
                dollars(w.cost_usd),
            ]
        })
        .collect();
    if workers.is_empty() {
        let _ = writeln!(out, "no workers");
    } else {
        table(
            &mut out,
            &[
                "WORKER", "POOL", "MARKET", "ZONE", "STATE", "JOBS", "UP", "SERVED", "COST",
            ],
            &workers,
        );
    }
    out.push('\n');
    if !s.hosts.is_empty() {
        let hosts: Vec<Vec<String>> = s
            .hosts
            .iter()
            .map(|h| {
                vec![
                    h.name.clone(),
                    h.provider.clone(),
                    h.state.clone(),
                    format!("{}/{}", h.workers, h.slots),
                    h.last_boot_s
                        .map_or_else(|| "-".into(), |b| format!("{b:.0}s")),
                    h.reason.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        table(
            &mut out,
            &["HOST", "PROVIDER", "STATE", "WORKERS", "BOOT", "WHY"],
            &hosts,
        );
        out.push('\n');
    }
    jobs_and_queue(&mut out, &s.running, &s.queue, true);
    out.push('\n');
    if s.decisions.is_empty() {
        let _ = writeln!(out, "no scaling decisions yet");
    } else {
        let _ = writeln!(out, "RECENT DECISIONS (newest first)");
        for d in s.decisions.iter().take(8) {
            let _ = writeln!(
                out,
                "{}  {:<10} {:<13} {}",
                time_of_day(d.at_ms),
                d.pool,
                d.kind,
                d.summary
            );
        }
    }
    out
}

/// A tenant's own queue and jobs.
pub fn render_tenant(s: &TenantStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tenant {} at {}: {} queued, {} on workers\n",
        s.tenant,
        wall_clock(s.at_ms),
        s.queued,
        s.on_workers
    );
    jobs_and_queue(&mut out, &s.running, &s.queue, false);
    out
}
