//! Running one job: `/bin/sh -c COMMAND`, output streamed in chunks, killed
//! at its timeout or on cancel.

use std::process::Stdio;
use std::time::Duration;

use ebbtide_proto::worker::v1::agent_message::Kind as Up;
use ebbtide_proto::worker::v1::{
    AgentMessage, Assignment, JobOutput, JobResult, JobStarted, Outcome,
};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

use crate::Running;

/// Largest output chunk sent in one message.
const CHUNK: usize = 16 * 1024;

pub(crate) async fn start(
    a: Assignment,
    reports: mpsc::UnboundedSender<AgentMessage>,
    running: Running,
) {
    let (kill_tx, kill_rx) = oneshot::channel();
    running.lock().await.insert(a.job_id, kill_tx);
    tokio::spawn(async move {
        let (outcome, code) = run(&a, &reports, kill_rx).await;
        running.lock().await.remove(&a.job_id);
        let result = JobResult {
            job_id: a.job_id,
            outcome: outcome as i32,
            exit_code: code,
        };
        let _ = reports.send(AgentMessage {
            kind: Some(Up::Result(result)),
        });
    });
}

async fn run(
    a: &Assignment,
    reports: &mpsc::UnboundedSender<AgentMessage>,
    kill: oneshot::Receiver<()>,
) -> (Outcome, Option<i32>) {
    let mut child = match tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&a.command)
        .envs(&a.env)
        .env("EBBTIDE_JOB_ID", a.job_id.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so a timeout or cancel stops everything the
        // command started, not just the shell.
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            send_output(
                reports,
                a.job_id,
                format!("ebbtide-agent: cannot start /bin/sh: {e}\n").into_bytes(),
            );
            return (Outcome::Failed, None);
        }
    };
    let _ = reports.send(AgentMessage {
        kind: Some(Up::Started(JobStarted { job_id: a.job_id })),
    });
    let pumps = [
        child
            .stdout
            .take()
            .map(|s| tokio::spawn(pump(s, reports.clone(), a.job_id))),
        child
            .stderr
            .take()
            .map(|s| tokio::spawn(pump(s, reports.clone(), a.job_id))),
    ];
    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    let result = tokio::select! {
        status = child.wait() => match status {
            Ok(s) if s.success() => (Outcome::Succeeded, s.code()),
            Ok(s) => (Outcome::Failed, s.code()),
            Err(_) => (Outcome::Failed, None),
        },
        _ = tokio::time::sleep(timeout) => {
            kill_group(&mut child).await;
            send_output(reports, a.job_id, format!("\nebbtide-agent: killed after timeout of {} ms\n", a.timeout_ms).into_bytes());
            (Outcome::TimedOut, None)
        }
        _ = kill => {
            kill_group(&mut child).await;
            (Outcome::Cancelled, None)
        }
    };
    // Output still buffered in the pipes is collected, but a stray process
    // holding a pipe open cannot delay the result.
    for p in pumps.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
    }
    result
}

async fn kill_group(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill().await;
}

async fn pump(
    mut from: impl AsyncRead + Unpin,
    reports: mpsc::UnboundedSender<AgentMessage>,
    job: u64,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => send_output(&reports, job, buf[..n].to_vec()),
        }
    }
}

fn send_output(reports: &mpsc::UnboundedSender<AgentMessage>, job: u64, chunk: Vec<u8>) {
    let _ = reports.send(AgentMessage {
        kind: Some(Up::Output(JobOutput { job_id: job, chunk })),
    });
}
