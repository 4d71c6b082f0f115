//! The composition root: the providers and report sinks this build has.
//! Adding a provider is one crate and one line in [`PROVIDERS`]; nothing
//! else in Ebbtide names one.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ebbtide_config::{ClusterConfig, LoadError};
use ebbtide_cost_report::ReportSink;
use ebbtide_provider::Plugins;
use ebbtide_server::Infrastructure;

/// Every provider this binary can drive.
pub const PROVIDERS: Plugins = Plugins(&[
    &ebbtide_provider_local::LocalPlugin,
    &ebbtide_provider_docker::DockerPlugin,
    &ebbtide_provider_aws::AwsPlugin,
    &ebbtide_provider_gce::GcePlugin,
    &ebbtide_provider_baremetal::BaremetalPlugin,
]);

/// Reads and validates a configuration file with this build's providers.
pub fn load(path: &Path) -> Result<ClusterConfig, LoadError> {
    ebbtide_config::load(path, &PROVIDERS.schemas())
}

/// Parses configuration text with this build's providers.
pub fn parse(text: &str) -> Result<ClusterConfig, ebbtide_config::ConfigErrors> {
    ebbtide_config::parse(text, &PROVIDERS.schemas())
}

/// The providers the pools use and the S3 sink `[cost_reports.s3]` names.
pub async fn infrastructure(config: &ClusterConfig) -> anyhow::Result<Infrastructure> {
    let providers = ebbtide_provider::build_providers(
        config,
        PROVIDERS,
        Some(ebbtide_server::provider_call_metrics()),
    )
    .await
    .context("setting up providers")?;
    Ok(Infrastructure {
        providers,
        report_sink: report_sink(config).await,
    })
}

/// The S3 sink `[cost_reports.s3]` describes, if it is set.
pub async fn report_sink(config: &ClusterConfig) -> Option<Arc<dyn ReportSink>> {
    let s3 = config.cost_reports.s3.as_ref()?;
    let sink =
        ebbtide_report_s3::S3Sink::new(&ebbtide_report_s3::S3SinkConfig::from_settings(s3)).await;
    Some(Arc::new(sink))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RSA certificate in PEM, standing in for AWS's (the examples name
    /// a file only a deployment has).
    fn certificate(dir: &Path) -> std::path::PathBuf {
        let cert = dir.join("aws.pem");
        let status = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=test", "-days", "1",
            ])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (Debian's openssl package; scripts/test installs it)");
        assert!(status.success(), "openssl req failed");
        cert
    }

    /// An SSH login key, as the bare-metal example's `private_key` names.
    fn ssh_key(dir: &Path) -> std::path::PathBuf {
        let key = dir.join("id_ed25519");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen (Debian's openssh-client; scripts/test installs it)");
        assert!(status.success(), "ssh-keygen failed");
        key
    }

    #[test]
    fn every_example_configuration_is_valid_with_this_builds_providers() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = certificate(dir.path());
        let login_key = ssh_key(dir.path());
        let mut checked = Vec::new();
        for entry in std::fs::read_dir(&root).expect("examples/") {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            // Keys read from the environment are stood in for by literal
            // ones (each its own: keys must not repeat), BMC passwords by a
            // variable that is set, the deployment's certificate and SSH
            // key by test ones.
            let text: String = std::fs::read_to_string(&path)
                .expect("read")
                .lines()
                .enumerate()
                .map(|(n, l)| {
                    if l.starts_with("api_key_env") {
                        format!("api_key = \"example-key-{n:04}-0123456789abcdef\"")
                    } else if l.starts_with("identity_certificate") {
                        format!("identity_certificate = {:?}", cert.display().to_string())
                    } else if l.starts_with("password_env") {
                        // A variable every process has stands for the BMC's.
                        "password_env = \"PATH\"".to_string()
                    } else if l.starts_with("private_key") {
                        format!("private_key = {:?}", login_key.display().to_string())
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            // The simulator's scenarios take their providers as names only.
            let simulated = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("travis-sim"));
            let parsed = if simulated {
                ebbtide_sim::world::parse(&text, &PROVIDERS.names()).map(|_| ())
            } else {
                parse(&text).map(|_| ())
            };
            if let Err(e) = parsed {
                panic!("{}: {e}", path.display());
            }
            checked.push(path.file_name().map(|n| n.to_string_lossy().into_owned()));
        }
        checked.sort();
        assert_eq!(
            checked.len(),
            8,
            "local, docker, aws, gce, baremetal and the three simulator scenarios: {checked:?}"
        );
    }
}
