//! Running one attempt of a job: `/bin/sh -c COMMAND` in its sandbox,
//! output streamed in chunks up to the assignment's cap, killed with its
//! whole process group at its timeout, on cancel, or when the agent stops.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ebbtide_proto::worker::v1::agent_message::Kind as Up;
use ebbtide_proto::worker::v1::{
    AgentMessage, Assignment, JobOutput, JobResult, JobStarted, Outcome,
};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::oneshot;

use crate::outbox::{self, Reports, SharedLedger};
use crate::sandbox::Sandbox;
use crate::{Running, RunningJob};

/// Largest output chunk sent in one message.
const CHUNK: usize = 16 * 1024;

/// Starts an attempt in the background; its result goes to `reports`.
pub(crate) async fn start(
    a: Assignment,
    reports: Reports,
    running: Running,
    ledger: SharedLedger,
    sandbox: Arc<Sandbox>,
) {
    let (kill_tx, kill_rx) = oneshot::channel();
    let group = Arc::new(AtomicU64::new(0));
    running.lock().await.insert(
        a.job_id,
        RunningJob {
            kill: Some(kill_tx),
            group: group.clone(),
        },
    );
    tokio::spawn(async move {
        let (outcome, code) = run(&a, &reports, kill_rx, &sandbox, &group).await;
        sandbox.clean(a.job_id, a.attempt);
        let result = JobResult {
            job_id: a.job_id,
            outcome: outcome as i32,
            exit_code: code,
            attempt: a.attempt,
        };
        // Into the ledger before out of the running set: a Hello taken at
        // any instant lists the job one way or the other, so the scheduler
        // never mistakes it for one that never arrived.
        if let Ok(mut l) = ledger.lock() {
            l.finished(&result);
        }
        running.lock().await.remove(&a.job_id);
        outbox::send(&reports, Up::Result(result)).await;
    });
}

/// Output accounting of one attempt: what was sent, what the cap or a full
/// queue kept back.
struct OutputBudget {
    max: u64,
    sent: AtomicU64,
    over_cap: AtomicU64,
    queue_full: AtomicU64,
}

async fn run(
    a: &Assignment,
    reports: &Reports,
    kill: oneshot::Receiver<()>,
    sandbox: &Sandbox,
    group: &AtomicU64,
) -> (Outcome, Option<i32>) {
    let dir = match sandbox.prepare(a.job_id, a.attempt) {
        Ok(d) => d,
        Err(e) => {
            notice(
                reports,
                a,
                format!("ebbtide-agent: cannot prepare the job's directory: {e}\n"),
            )
            .await;
            return (Outcome::Failed, None);
        }
    };
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(&a.command)
        .env_clear()
        .envs(sandbox.environment(&dir, a.job_id, a.attempt, &a.env))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so a timeout or cancel stops everything the
        // command started, not just the shell.
        .process_group(0);
    if let Some(u) = &sandbox.user {
        command.uid(u.uid).gid(u.gid);
    }
    die_with_agent(&mut command);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            notice(
                reports,
                a,
                format!("ebbtide-agent: cannot start /bin/sh: {e}\n"),
            )
            .await;
            return (Outcome::Failed, None);
        }
    };
    if let Some(pid) = child.id() {
        group.store(u64::from(pid), Ordering::SeqCst);
    }
    outbox::send(
        reports,
        Up::Started(JobStarted {
            job_id: a.job_id,
            attempt: a.attempt,
        }),
    )
    .await;
    let budget = Arc::new(OutputBudget {
        max: if a.max_output_bytes == 0 {
            u64::MAX
        } else {
            a.max_output_bytes
        },
        sent: AtomicU64::new(0),
        over_cap: AtomicU64::new(0),
        queue_full: AtomicU64::new(0),
    });
    let pumps = [
        child
            .stdout
            .take()
            .map(|s| tokio::spawn(pump(s, reports.clone(), output_of(a), budget.clone()))),
        child
            .stderr
            .take()
            .map(|s| tokio::spawn(pump(s, reports.clone(), output_of(a), budget.clone()))),
    ];
    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    let mut ended_by = None;
    let result = tokio::select! {
        status = child.wait() => match status {
            Ok(s) if s.success() => (Outcome::Succeeded, s.code()),
            Ok(s) => (Outcome::Failed, s.code()),
            Err(_) => (Outcome::Failed, None),
        },
        _ = tokio::time::sleep(timeout) => {
            kill_group(&mut child).await;
            ended_by = Some(format!("\nebbtide-agent: killed after timeout of {} ms\n", a.timeout_ms));
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
    let over_cap = budget.over_cap.load(Ordering::SeqCst);
    if over_cap > 0 {
        notice(
            reports,
            a,
            format!(
                "\nebbtide-agent: {over_cap} bytes of output not sent: the job's output limit is {} bytes\n",
                budget.max
            ),
        )
        .await;
    }
    let dropped = budget.queue_full.load(Ordering::SeqCst);
    if dropped > 0 {
        notice(
            reports,
            a,
            format!(
                "\nebbtide-agent: {dropped} bytes of output dropped: the agent's report queue was full (scheduler unreachable or slow)\n"
            ),
        )
        .await;
    }
    if let Some(text) = ended_by {
        notice(reports, a, text).await;
    }
    result
}

/// If the agent dies (even by SIGKILL), the job's shell is killed with it;
/// the rest of its process group is stopped by the provider with the
/// instance. The one `unsafe` of the agent: a hook between fork and exec.
#[expect(
    unsafe_code,
    reason = "pre_exec is the only way to set the parent-death signal of a child"
)]
fn die_with_agent(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and makes a
    // single async-signal-safe system call (prctl); it allocates nothing.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

/// Kills an attempt's whole process group.
pub(crate) fn kill_group_of(pid: u64) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 0
    {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

async fn kill_group(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        kill_group_of(u64::from(pid));
    }
    let _ = child.kill().await;
}

/// A chunk of an attempt's output as it enters the report queue: numbered
/// with its offset only when a session takes it (`outbox::Ledger::stamp`),
/// so the offsets follow the order the scheduler receives.
fn output_of(a: &Assignment) -> impl Fn(Vec<u8>) -> AgentMessage + Send + 'static {
    let (job_id, attempt) = (a.job_id, a.attempt);
    move |chunk| AgentMessage {
        kind: Some(Up::Output(JobOutput {
            job_id,
            chunk,
            offset: None,
            attempt,
        })),
    }
}

async fn pump(
    mut from: impl AsyncRead + Unpin,
    reports: Reports,
    output: impl Fn(Vec<u8>) -> AgentMessage,
    budget: Arc<OutputBudget>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let n64 = n as u64;
                let before = budget.sent.fetch_add(n64, Ordering::SeqCst);
                let room = budget.max.saturating_sub(before);
                let take = usize::try_from(room.min(n64)).unwrap_or(n);
                if take < n {
                    budget
                        .over_cap
                        .fetch_add((n - take) as u64, Ordering::SeqCst);
                }
                if take == 0 {
                    // Keep draining the pipe so the job never blocks on it.
                    continue;
                }
                if reports.try_send(output(buf[..take].to_vec())).is_err() {
                    budget.queue_full.fetch_add(take as u64, Ordering::SeqCst);
                }
            }
        }
    }
}

/// A line of the agent's own in the job's log; waits for room.
async fn notice(reports: &Reports, a: &Assignment, text: String) {
    if let Some(kind) = output_of(a)(text.into_bytes()).kind {
        outbox::send(reports, kind).await;
    }
}
