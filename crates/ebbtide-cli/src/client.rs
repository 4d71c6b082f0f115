//! `ebbtide submit | jobs | cancel`: the job API from a terminal.

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Where the API is and who we are.
#[derive(clap::Args)]
pub struct Api {
    /// Job API base URL.
    #[arg(long, env = "EBBTIDE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API key: a tenant's (its own jobs and queue) or an operator's (the
    /// whole fleet and every tenant's jobs).
    #[arg(long, env = "EBBTIDE_API_KEY")]
    api_key: String,
}

/// Arguments of `ebbtide submit`.
#[derive(clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    api: Api,
    /// Priority class.
    #[arg(long, default_value = "high")]
    class: String,
    /// Timeout in seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// Labels the worker must have.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// The shell command.
    command: String,
}

/// Arguments of `ebbtide jobs`.
#[derive(clap::Args)]
pub struct JobsArgs {
    #[command(flatten)]
    api: Api,
    /// Only jobs in this status (queued, assigned, running, succeeded,
    /// failed, cancelled, lost, rejected).
    #[arg(long)]
    status: Option<String>,
    /// At most this many (1 to 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Only jobs with a larger id: the next page after the last id shown.
    #[arg(long)]
    after: Option<u64>,
    /// Only this tenant's jobs (an operator key; a tenant sees only its own).
    #[arg(long)]
    tenant: Option<String>,
}

/// Arguments of `ebbtide drain`.
#[derive(clap::Args)]
pub struct DrainArgs {
    #[command(flatten)]
    api: Api,
    /// The worker (its id in `ebbtide status`).
    worker: u64,
}

/// Arguments of `ebbtide cancel`.
#[derive(clap::Args)]
pub struct CancelArgs {
    #[command(flatten)]
    api: Api,
    /// The job.
    id: u64,
}

pub(crate) async fn call(
    api: &Api,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<reqwest::Response> {
    let client = reqwest::Client::new();
    let mut req = client
        .request(method, format!("{}{path}", api.url.trim_end_matches('/')))
        .bearer_auth(&api.api_key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach {}", api.url))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        bail!("{status}: {text}");
    }
    Ok(resp)
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn submit(a: SubmitArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let mut body = json!({ "class": a.class, "command": a.command, "labels": a.labels });
        if let Some(t) = a.timeout {
            body["timeout_s"] = json!(t);
        }
        let job: Value = call(&a.api, reqwest::Method::POST, "/v1/jobs", Some(body))
            .await?
            .json()
            .await?;
        println!("{}", job["id"]);
        Ok(())
    })
}

pub fn jobs(a: JobsArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let mut query = vec![format!("limit={}", a.limit)];
        if let Some(s) = &a.status {
            query.push(format!("status={s}"));
        }
        if let Some(after) = a.after {
            query.push(format!("after={after}"));
        }
        if let Some(t) = &a.tenant {
            query.push(format!("tenant={t}"));
        }
        let path = format!("/v1/jobs?{}", query.join("&"));
        let list: Value = call(&a.api, reqwest::Method::GET, &path, None)
            .await?
            .json()
            .await?;
        println!(
            "{:>8} {:<12} {:<10} {:<10} {:>5}  command",
            "id", "tenant", "class", "status", "exit"
        );
        for j in list["jobs"].as_array().into_iter().flatten() {
            println!(
                "{:>8} {:<12} {:<10} {:<10} {:>5}  {}",
                j["id"].as_u64().unwrap_or(0),
                j["tenant"].as_str().unwrap_or(""),
                j["class"].as_str().unwrap_or(""),
                j["status"].as_str().unwrap_or(""),
                j["exit_code"]
                    .as_i64()
                    .map_or("-".into(), |c| c.to_string()),
                j["command"].as_str().unwrap_or("")
            );
        }
        Ok(())
    })
}

pub fn drain(a: DrainArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        call(
            &a.api,
            reqwest::Method::POST,
            &format!("/v1/workers/{}/drain", a.worker),
            None,
        )
        .await?;
        println!(
            "drain of worker {} requested: it takes no new job, finishes what it runs, then is terminated",
            a.worker
        );
        Ok(())
    })
}

pub fn cancel(a: CancelArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        call(
            &a.api,
            reqwest::Method::POST,
            &format!("/v1/jobs/{}/cancel", a.id),
            None,
        )
        .await?;
        println!("cancel of job {} requested", a.id);
        Ok(())
    })
}
