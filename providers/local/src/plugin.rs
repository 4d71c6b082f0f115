//! `[providers.local]` and the constructor the binary lists.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ebbtide_config::{Issue, ProviderSchema, ProviderSection, ProviderSettings};
use ebbtide_provider::{BuildContext, BuildError, Provider, ProviderPlugin, settings_of};
use serde::Deserialize;

use crate::{LocalConfig, LocalProvider};

/// `[providers.local]`: optional; every key has a default.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LocalSection {
    /// The user jobs run as when the scheduler runs as root (default
    /// `nobody`); ignored otherwise, with a warning in the log.
    pub job_user: Option<String>,
}

/// The local provider's plugin.
pub struct LocalPlugin;

impl ProviderSchema for LocalPlugin {
    fn name(&self) -> &'static str {
        "local"
    }

    fn check(
        &self,
        section: &ProviderSection<'_>,
        issues: &mut Vec<Issue>,
    ) -> Option<ProviderSettings> {
        let local: LocalSection = section.deserialize(issues)?;
        if let Some(user) = &local.job_user
            && (user.is_empty() || user.contains(|c: char| c.is_whitespace() || c == ':'))
        {
            issues.push(Issue::at(
                section.key("job_user"),
                format!("{user:?} is not a user name"),
            ));
            return None;
        }
        Some(ProviderSettings::new(local))
    }
}

#[async_trait::async_trait]
impl ProviderPlugin for LocalPlugin {
    async fn build(
        &self,
        settings: &ProviderSettings,
        context: &BuildContext,
    ) -> Result<Arc<dyn Provider>, BuildError> {
        let local: &LocalSection = settings_of(self, settings)?;
        let provider = LocalProvider::new(LocalConfig {
            cluster: context.cluster.clone(),
            program: context.agent_program.clone(),
            args: vec!["agent".into()],
            state_dir: context.data_dir.join("local-instances"),
            work_root: work_root_for(&context.data_dir),
            job_user: local.job_user.clone(),
            orphan_timeout: context.agent_orphan_timeout,
        })
        .map_err(|source| BuildError::Io {
            path: context.data_dir.display().to_string(),
            source,
        })?;
        Ok(Arc::new(provider))
    }
}

/// Where local workers' jobs get their directories: outside the data
/// directory (which the job user must not enter), one per data directory
/// so two schedulers on one machine never share it.
pub fn work_root_for(data_dir: &Path) -> PathBuf {
    use sha2::Digest;
    let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = sha2::Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    let tag: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    std::env::temp_dir().join(format!("ebbtide-work-{tag}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: &str = "[[pools]]\nname = \"p\"\nprovider = \"local\"\nkind = \"dynamic\"\nmax = 2\n[pools.shape]\nname = \"s\"\ncpu_millis = 1000\nmemory_mib = 256\n";

    #[test]
    fn the_table_is_optional_and_a_bad_job_user_is_refused_with_its_line() {
        let c = ebbtide_config::parse(POOL, &[&LocalPlugin]).expect("no table needed");
        let local: &LocalSection = c
            .providers
            .get("local")
            .and_then(|p| p.settings.get())
            .expect("settings");
        assert_eq!(local.job_user, None);

        let text = format!("{POOL}\n[providers.local]\njob_user = \"ci runner\"\n");
        let err = ebbtide_config::parse(&text, &[&LocalPlugin]).expect_err("space in a user");
        assert_eq!(err.issues[0].path, "providers.local.job_user");
        assert_eq!(err.issues[0].line, Some(12), "{}", err.issues[0]);
    }
}
