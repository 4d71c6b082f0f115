//! The user-data an instance boots with: cloud-init runs it as a shell
//! script that writes the batch file (scheduler address, first worker id,
//! the batch's one-time tokens), installs the agent if the AMI lacks it,
//! and starts it. The agent picks its own token by its launch index.

use base64::Engine;
pub use ebbtide_proto::bootstrap::BatchFile;

/// Base64 user-data (a cloud-init shell script) for a batch.
pub fn render_user_data(batch: &BatchFile, agent_install: &str) -> String {
    let script = format!(
        "#!/bin/sh\n\
         # Ebbtide worker bootstrap (cloud-init user-data).\n\
         set -eu\n\
         umask 077\n\
         mkdir -p /etc/ebbtide\n\
         cat > /etc/ebbtide/batch <<'EBBTIDE_BATCH'\n\
         {batch}EBBTIDE_BATCH\n\
         {agent_install}\n\
         exec /usr/local/bin/ebbtide agent --ec2-batch /etc/ebbtide/batch\n",
        batch = batch.render(),
    );
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
        let body = script
            .split("<<'EBBTIDE_BATCH'\n")
            .nth(1)
            .and_then(|s| s.split("EBBTIDE_BATCH").next())
            .expect("heredoc");
        assert_eq!(BatchFile::parse(body), Ok(batch));
        assert!(script.contains("exec /usr/local/bin/ebbtide agent --ec2-batch"));
    }
}
