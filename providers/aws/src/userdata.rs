//! The user-data an instance boots with: cloud-init runs it as a shell
//! script that writes the batch file (scheduler address, first worker id,
//! the batch's one-time tokens), installs the agent if the AMI lacks it,
//! and starts it. The agent picks its own token by its launch index.

use base64::Engine;
pub use ebbtide_proto::bootstrap::BatchFile;

/// Base64 user-data (a cloud-init shell script) for a batch.
pub fn render_user_data(batch: &BatchFile, agent_install: &str) -> String {
    let script = batch.boot_script("cloud-init user-data", agent_install, "--ec2-batch");
    base64::engine::general_purpose::STANDARD.encode(script)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_file_round_trips_through_user_data() {
        let batch = BatchFile {
            scheduler: "https://sched.example:8081".into(),
            first_worker: 40,
            tokens: vec!["a1".into(), "b2".into()],
        };
        let data = render_user_data(
            &batch,
            "curl -fsSL https://x/ebbtide -o /usr/local/bin/ebbtide",
        );
        let script = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .expect("base64"),
        )
        .expect("utf-8");
        assert!(script.starts_with("#!/bin/sh\n"));
        assert_eq!(BatchFile::from_boot_script(&script), Some(batch));
        assert!(script.contains("exec /usr/local/bin/ebbtide agent --ec2-batch"));
    }
}
