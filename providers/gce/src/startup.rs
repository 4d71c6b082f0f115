//! The startup script a worker instance boots with: it writes the batch
//! file (scheduler address, first worker id, the batch's one-time tokens)
//! readable by root alone, installs the agent if the image lacks it, and
//! starts it. The agent finds its own token from its instance name.
//!
//! The tokens are in the instance's metadata, which every process on the
//! instance can read from the metadata server; that is why a GCE worker's
//! registration is also checked against its signed identity token when
//! the operator configures it (decision 0020).

pub use ebbtide_proto::bootstrap::BatchFile;
use ebbtide_provider::WorkerLaunch;

/// The script for a batch.
pub fn startup_script(
    scheduler_url: &str,
    workers: &[WorkerLaunch],
    agent_install: &str,
) -> String {
    let batch = BatchFile {
        scheduler: scheduler_url.to_string(),
        first_worker: workers.first().map_or(0, |w| w.worker.0),
        tokens: workers
            .iter()
            .map(|w| w.bootstrap_token.expose().to_string())
            .collect(),
    };
    batch.boot_script("GCE startup-script", agent_install, "--gce-batch")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebbtide_core::WorkerId;
    use ebbtide_provider::Secret;

    #[test]
    fn the_batch_round_trips_through_the_startup_script() {
        let workers: Vec<WorkerLaunch> = (40..42)
            .map(|w| WorkerLaunch {
                worker: WorkerId(w),
                bootstrap_token: Secret::new(format!("tok-{w}")),
            })
            .collect();
        let script = startup_script("https://sched:8081", &workers, "true");
        let batch = BatchFile::from_boot_script(&script).expect("batch");
        assert_eq!(batch.first_worker, 40);
        assert_eq!(batch.tokens, ["tok-40", "tok-41"]);
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains("--gce-batch"));
    }
}
