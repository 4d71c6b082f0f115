//! `ebbtide submit | jobs | logs`: the job API from a terminal.

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
    /// Only jobs in this status.
    #[arg(long)]
    status: Option<String>,
}

/// Arguments of `ebbtide logs`.
#[derive(clap::Args)]
pub struct LogsArgs {
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
        let path = match &a.status {
            Some(s) => format!("/v1/jobs?status={s}"),
            None => "/v1/jobs".into(),
        };
        let list: Value = call(&a.api, reqwest::Method::GET, &path, None)
            .await?
            .json()
            .await?;
        println!(
            "{:>8} {:<10} {:<10} {:>5}  command",
            "id", "class", "status", "exit"
        );
        for j in list["jobs"].as_array().into_iter().flatten() {
            println!(
                "{:>8} {:<10} {:<10} {:>5}  {}",
                j["id"].as_u64().unwrap_or(0),
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

pub fn logs(a: LogsArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let text = call(
            &a.api,
            reqwest::Method::GET,
            &format!("/v1/jobs/{}/logs", a.id),
            None,
        )
        .await?
        .text()
        .await?;
        print!("{text}");
        Ok(())
    })
}
