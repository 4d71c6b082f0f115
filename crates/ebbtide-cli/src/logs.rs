//! `ebbtide logs JOB [--follow]`: a job's output a page at a time, each
//! attempt's output under a label once the job ran more than once, and
//! followed until the job is finished.

use std::io::Write as _;
use std::time::Duration;

use serde_json::Value;

use crate::client::{Api, call, runtime};

/// Bytes asked for per page.
const PAGE: u64 = 1 << 20;
/// How often `--follow` asks for more once it has read everything.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Arguments of `ebbtide logs`.
#[derive(clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    api: Api,
    /// Keep printing new output until the job is finished.
    #[arg(long, short)]
    follow: bool,
    /// The job.
    id: u64,
}

/// Where a printed log stands: the next offset to ask for, and the attempt
/// whose output was printed last.
struct Cursor {
    offset: u64,
    attempt: Option<u32>,
    /// Whether attempts are labelled: from the start when the job already
    /// ran more than once, and from the second attempt on otherwise.
    label: bool,
}

pub fn run(a: LogsArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let job = get_job(&a).await?;
        let mut cursor = Cursor {
            offset: 0,
            attempt: None,
            label: job["attempts"].as_u64().is_some_and(|n| n > 1),
        };
        loop {
            // The status first, then the output: everything a finished job
            // wrote is stored before its final status.
            let finished = a.follow && is_final(&get_job(&a).await?);
            while print_page(&a, &mut cursor).await? {}
            if !a.follow || finished {
                return Ok(());
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_EVERY) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    })
}

async fn get_job(a: &LogsArgs) -> anyhow::Result<Value> {
    Ok(call(
        &a.api,
        reqwest::Method::GET,
        &format!("/v1/jobs/{}", a.id),
        None,
    )
    .await?
    .json()
    .await?)
}

fn is_final(job: &Value) -> bool {
    !matches!(
        job["status"].as_str(),
        Some("queued" | "assigned" | "running")
    )
}

/// Prints one page from the cursor; whether more pages follow now.
async fn print_page(a: &LogsArgs, cursor: &mut Cursor) -> anyhow::Result<bool> {
    let response = call(
        &a.api,
        reqwest::Method::GET,
        &format!(
            "/v1/jobs/{}/logs?offset={}&limit={PAGE}",
            a.id, cursor.offset
        ),
        None,
    )
    .await?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let next: Option<u64> = header("x-ebbtide-next-offset").and_then(|v| v.parse().ok());
    let starts = parse_starts(header("x-ebbtide-attempts").as_deref().unwrap_or(""));
    let bytes = response.bytes().await?;
    let mut out = std::io::stdout().lock();
    let page_start = cursor.offset;
    let mut at = 0usize;
    for (offset, attempt) in starts {
        let cut = usize::try_from(offset.saturating_sub(page_start))
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        out.write_all(&bytes[at..cut])?;
        at = cut;
        // Attempt 0 is the scheduler's own note inside an attempt's log.
        if attempt == 0 || cursor.attempt == Some(attempt) {
            continue;
        }
        if cursor.attempt.is_some() {
            cursor.label = true;
        }
        if cursor.label {
            if at > 0 && !bytes[..at].ends_with(b"\n") {
                out.write_all(b"\n")?;
            }
            writeln!(out, "── attempt {attempt} ──")?;
        }
        cursor.attempt = Some(attempt);
    }
    out.write_all(&bytes[at..])?;
    out.flush()?;
    cursor.offset = next.unwrap_or(page_start + bytes.len() as u64);
    Ok(next.is_some())
}

/// `OFFSET:ATTEMPT,…` as the API sends it.
fn parse_starts(text: &str) -> Vec<(u64, u32)> {
    text.split(',')
        .filter_map(|pair| {
            let (offset, attempt) = pair.split_once(':')?;
            Some((offset.parse().ok()?, attempt.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_starts_parse_and_nonsense_is_skipped() {
        assert_eq!(
            parse_starts("0:1,120:0,150:2"),
            vec![(0, 1), (120, 0), (150, 2)]
        );
        assert_eq!(parse_starts(""), vec![]);
        assert_eq!(parse_starts("x:1,5:2"), vec![(5, 2)]);
    }
}
