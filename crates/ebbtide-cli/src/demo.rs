//! `ebbtide demo`: Ebbtide on its embedded defaults, end to end, in one
//! command. Starts the scheduler with `examples/local.toml` (SQLite and
//! local agent processes in a temporary directory), submits a burst of jobs
//! for two tenants, and shows workers launching, jobs flowing and the burst
//! pool shrinking back.

use std::time::{Duration, Instant};

use anyhow::Context;
use ebbtide_provider::Provider;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

const DEFAULT_CONFIG: &str = include_str!("../../../examples/local.toml");

/// Arguments of `ebbtide demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Jobs in the burst.
    #[arg(long, default_value_t = 40)]
    jobs: u32,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("ebbtide-demo-{}", std::process::id()));
    let mut config =
        crate::plugins::parse(DEFAULT_CONFIG).context("embedded examples/local.toml")?;
    config.server.data_dir = dir.clone();
    config.server.http_listen = "127.0.0.1:0".into();
    config.server.grpc_listen = "127.0.0.1:0".into();
    let keys = config.api_keys.clone();
    let operator = config
        .operator_keys
        .first()
        .map(|k| k.key.clone())
        .context("the embedded examples/local.toml names an operator")?;
    let cluster = config.server.cluster.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let infrastructure = crate::plugins::infrastructure(&config).await?;
        let server = ebbtide_server::start(config, infrastructure).await?;
        let base = format!("http://{}", server.http_addr);
        println!(
            "ebbtide demo: scheduler on {base}, worker API on {}, data in {}",
            server.grpc_addr,
            dir.display()
        );
        let outcome = burst(&base, &keys, &operator, args.jobs).await;
        server.shutdown().await;
        // Stop the agents the demo started.
        let local =
            ebbtide_provider_local::LocalProvider::new(ebbtide_provider_local::LocalConfig {
                cluster,
                program: std::env::current_exe()?,
                args: vec![],
                state_dir: dir.join("local-instances"),
                work_root: ebbtide_provider_local::work_root_for(&dir),
                job_user: None,
                orphan_timeout: std::time::Duration::from_secs(600),
            })?;
        let left: Vec<_> = local
            .list()
            .await?
            .into_iter()
            .map(|i| i.instance)
            .collect();
        local.terminate(&left).await?;
        let _ = std::fs::remove_dir_all(ebbtide_provider_local::work_root_for(&dir));
        let _ = std::fs::remove_dir_all(&dir);
        outcome
    })
}

/// Submits `jobs` jobs round-robin over the tenants' keys and follows them
/// with the operator's fleet view until all are done.
async fn burst(
    base: &str,
    keys: &[ebbtide_config::ApiKey],
    operator: &str,
    jobs: u32,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..jobs {
        let key = &keys[i as usize % keys.len()];
        let secs = 1 + i % 4;
        let body = json!({ "class": if i % 5 == 0 { "low" } else { "high" }, "command": format!("sleep {secs}; echo job {i} done") });
        let r = http
            .post(format!("{base}/v1/jobs"))
            .bearer_auth(&key.key)
            .json(&body)
            .send()
            .await?;
        let r = r.error_for_status()?;
        let j: Value = r.json().await?;
        ids.push((key.key.clone(), j["id"].as_u64().unwrap_or(0)));
    }
    println!("submitted {jobs} jobs for {} tenants", keys.len());
    let bar = ProgressBar::new(u64::from(jobs));
    bar.set_style(
        ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} done  {msg}")
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .progress_chars("=> "),
    );
    let start = Instant::now();
    let mut all_done_at = None;
    let mut last_print = Instant::now() - Duration::from_secs(10);
    loop {
        let mut done = 0;
        for (key, id) in &ids {
            let j: Value = http
                .get(format!("{base}/v1/jobs/{id}"))
                .bearer_auth(key)
                .send()
                .await?
                .json()
                .await?;
            if !["queued", "assigned", "running"].contains(&j["status"].as_str().unwrap_or("")) {
                done += 1;
            }
        }
        let status: Value = http
            .get(format!("{base}/v1/status"))
            .bearer_auth(operator)
            .send()
            .await?
            .json()
            .await?;
        let pools: Vec<String> = status["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let n = |k: &str| p[k].as_u64().unwrap_or(0);
                format!(
                    "{}: desired {} booting {} idle {} busy {}",
                    p["name"].as_str().unwrap_or("?"),
                    n("desired"),
                    n("requested") + n("booting"),
                    n("idle"),
                    n("busy")
                )
            })
            .collect();
        bar.set_position(done);
        let line = format!("queued {} | {}", status["queued"], pools.join(" | "));
        if bar.is_hidden() && last_print.elapsed() >= Duration::from_secs(2) {
            // Not a terminal: plain lines instead of a live bar.
            println!(
                "[{:>5.1}s] {done}/{jobs} done  {line}",
                start.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        bar.set_message(line);
        let burst_left: u64 = status["pools"][1]
            .as_object()
            .map(|p| {
                ["requested", "booting", "idle", "busy", "retiring"]
                    .iter()
                    .map(|k| p[*k].as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        if done == u64::from(jobs) && all_done_at.is_none() {
            all_done_at = Some(start.elapsed());
            let msg = format!(
                "all {jobs} jobs finished after {:.1}s; waiting for the burst pool to scale back down",
                start.elapsed().as_secs_f64()
            );
            if bar.is_hidden() {
                println!("{msg}")
            } else {
                bar.println(msg)
            }
        }
        if all_done_at.is_some() && burst_left == 0 {
            let msg = format!(
                "burst pool back to 0 after {:.1}s",
                start.elapsed().as_secs_f64()
            );
            if bar.is_hidden() {
                println!("{msg}")
            }
            bar.finish_with_message(msg);
            break;
        }
        if start.elapsed() > Duration::from_secs(180) {
            bar.abandon_with_message("gave up after 3 minutes");
            anyhow::bail!("the demo did not finish in 3 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (key, id) = &ids[0];
    let log = http
        .get(format!("{base}/v1/jobs/{id}/logs"))
        .bearer_auth(key)
        .send()
        .await?
        .text()
        .await?;
    println!("output of job {id}: {}", log.trim());
    Ok(())
}
