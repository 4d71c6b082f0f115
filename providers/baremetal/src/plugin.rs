//! `[providers.baremetal]`: the inventory, and the constructor the binary
//! lists.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ebbtide_config::{Issue, ProviderSchema, ProviderSection, ProviderSettings};
use ebbtide_provider::{BuildContext, BuildError, Provider, ProviderPlugin, settings_of};
use serde::Deserialize;

use crate::power::config::PowerSection;
use crate::ssh::{PinnedKey, SshTarget, load_private_key};
use crate::{BaremetalConfig, BaremetalProvider, Host};

/// `[providers.baremetal]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    /// Login user for hosts that name none.
    user: Option<String>,
    /// Private key for hosts that name none.
    private_key: Option<PathBuf>,
    #[serde(default = "default_agent_path")]
    agent_path: String,
    /// Run jobs as this unprivileged user (the hosts' login must be root):
    /// the agent, as root, can then wipe whatever a job left.
    job_user: Option<String>,
    #[serde(default = "default_work_root")]
    work_root: String,
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    connect_timeout: Duration,
    #[serde(with = "humantime_serde", default = "default_command_timeout")]
    command_timeout: Duration,
    /// Free disk under a host's work root below which it is quarantined.
    #[serde(default = "default_min_free_disk_gb")]
    min_free_disk_gb: u64,
    /// A power-controlled host idle this long is switched off.
    #[serde(with = "humantime_serde", default = "default_power_off_after")]
    power_off_after: Duration,
    /// How long a host switched on may take to answer over SSH.
    #[serde(with = "humantime_serde", default = "default_boot_wait")]
    boot_wait: Duration,
    #[serde(default)]
    hosts: Vec<HostSection>,
    #[serde(default)]
    pools: BTreeMap<String, PoolSection>,
}

fn default_agent_path() -> String {
    "/usr/local/bin/ebbtide".into()
}
fn default_work_root() -> String {
    "/var/lib/ebbtide-workers".into()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_command_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_min_free_disk_gb() -> u64 {
    10
}
fn default_power_off_after() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_boot_wait() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_port() -> u16 {
    22
}

/// `[[providers.baremetal.hosts]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostSection {
    name: String,
    address: String,
    #[serde(default = "default_port")]
    port: u16,
    user: Option<String>,
    private_key: Option<PathBuf>,
    host_key: String,
    #[serde(default)]
    labels: Vec<String>,
    cpu_millis: u32,
    memory_mib: u32,
    slots: u32,
    price_per_hour: f64,
    work_root: Option<String>,
    power: Option<PowerSection>,
}

/// `[providers.baremetal.pools.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolSection {
    /// Host names; absent: every host carrying all of the pool's labels.
    hosts: Option<Vec<String>>,
}

/// `[providers.baremetal]`, checked.
#[derive(Debug, Clone)]
pub struct BaremetalSettings {
    /// The inventory, keys loaded.
    pub hosts: Vec<Host>,
    /// Host names per pool.
    pub pools: BTreeMap<String, Vec<String>>,
    /// The agent binary on the hosts.
    pub agent_path: String,
    /// The user jobs run as, if not the login user.
    pub job_user: Option<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Command timeout.
    pub command_timeout: Duration,
    /// Quarantine threshold, MiB.
    pub min_free_disk_mib: u64,
    /// Idle time before a power-controlled host is switched off.
    pub power_off_after: Duration,
    /// How long a host switched on may take to answer.
    pub boot_wait: Duration,
}

/// Characters a name or path may have to go into a host's shell quoted
/// and into its file names unchanged.
fn plain(value: &str, extra: &[char]) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(&c))
}

/// The bare-metal provider's plugin.
pub struct BaremetalPlugin;

impl ProviderSchema for BaremetalPlugin {
    fn name(&self) -> &'static str {
        "baremetal"
    }

    fn check(
        &self,
        section: &ProviderSection<'_>,
        issues: &mut Vec<Issue>,
    ) -> Option<ProviderSettings> {
        let s: Section = section.deserialize_required(
            "its hosts ([[providers.baremetal.hosts]] with address, host_key, slots and price_per_hour) and [providers.baremetal.pools.NAME]",
            issues,
        )?;
        let before = issues.len();
        if !plain(section.cluster(), &[]) {
            issues.push(Issue::at(
                "server.cluster",
                "names worker directories on owned hosts: use letters, digits, '.', '_' and '-'",
            ));
        }
        for (key, path) in [("agent_path", &s.agent_path), ("work_root", &s.work_root)] {
            if !path.starts_with('/') || !plain(path, &['/']) {
                issues.push(Issue::at(
                    section.key(key),
                    format!("{path:?}: an absolute path of letters, digits, '.', '_', '-' and '/'"),
                ));
            }
        }
        if let Some(u) = &s.job_user
            && (!plain(u, &[]) || u == "root")
        {
            issues.push(Issue::at(
                section.key("job_user"),
                format!(
                    "{u:?}: an unprivileged user's name (letters, digits, '.', '_', '-'), not root"
                ),
            ));
        }
        let mut hosts: Vec<Host> = Vec::new();
        for (i, h) in s.hosts.iter().enumerate() {
            let at = |k: &str| section.key(&format!("hosts[{i}].{k}"));
            if !plain(&h.name, &[]) {
                issues.push(Issue::at(
                    at("name"),
                    format!("{:?}: letters, digits, '.', '_' and '-'", h.name),
                ));
            }
            if s.hosts[..i].iter().any(|o| o.name == h.name) {
                issues.push(Issue::at(
                    at("name"),
                    format!("host {:?} is listed twice", h.name),
                ));
            }
            if h.slots == 0 {
                issues.push(Issue::at(
                    at("slots"),
                    "at least 1 (how many workers the host runs at once)",
                ));
            }
            let price =
                ebbtide_config::price_per_hour(h.price_per_hour, &at("price_per_hour"), issues);
            let host_key = PinnedKey::parse(&h.host_key, &at("host_key"));
            if let Err(e) = &host_key {
                issues.push(Issue::at(at("host_key"), e.to_string()));
            }
            let key_path = h.private_key.clone().or_else(|| s.private_key.clone());
            let key = match &key_path {
                None => {
                    issues.push(Issue::at(
                        at("private_key"),
                        "give the SSH private key here or in [providers.baremetal] private_key",
                    ));
                    None
                }
                Some(path) => match load_private_key(path, "the key file") {
                    Ok(k) => Some(k),
                    Err(e) => {
                        issues.push(Issue::at(at("private_key"), e.to_string()));
                        None
                    }
                },
            };
            let user = h
                .user
                .clone()
                .or_else(|| s.user.clone())
                .unwrap_or_else(|| "ebbtide".into());
            if s.job_user.is_some() && user != "root" {
                issues.push(Issue::at(
                    at("user"),
                    format!("{user:?}: with [providers.baremetal] job_user the agent runs as root, so the login must be root"),
                ));
            }
            let work_root = h.work_root.clone().unwrap_or_else(|| s.work_root.clone());
            if !work_root.starts_with('/') || !plain(&work_root, &['/']) {
                issues.push(Issue::at(
                    at("work_root"),
                    format!(
                        "{work_root:?}: an absolute path of letters, digits, '.', '_', '-' and '/'"
                    ),
                ));
            }
            let power = h.power.as_ref().and_then(|p| p.check(&at("power"), issues));
            if let (Ok(host_key), Some(key)) = (host_key, key) {
                hosts.push(Host {
                    target: SshTarget {
                        name: h.name.clone(),
                        address: h.address.clone(),
                        port: h.port,
                        user,
                        key,
                        host_key,
                    },
                    work_root,
                    slots: h.slots,
                    cpu_millis: h.cpu_millis,
                    memory_mib: h.memory_mib,
                    labels: h.labels.clone(),
                    price,
                    power,
                });
            }
        }
        let mut pools = BTreeMap::new();
        for (index, pool) in section.pools() {
            let Some(p) = s.pools.get(&pool.name) else {
                issues.push(Issue::at(
                    format!("pools[{index}].provider"),
                    format!("pool {:?} uses baremetal but has no [providers.baremetal.pools.{}] launch settings", pool.name, pool.name),
                ));
                continue;
            };
            let at = section.key(&format!("pools.{}.hosts", pool.name));
            let chosen: Vec<&HostSection> = match &p.hosts {
                Some(names) => names
                    .iter()
                    .filter_map(|n| {
                        let found = s.hosts.iter().find(|h| &h.name == n);
                        if found.is_none() {
                            issues.push(Issue::at(
                                &at,
                                format!("no host named {n:?} in [[providers.baremetal.hosts]]"),
                            ));
                        }
                        found
                    })
                    .collect(),
                None => s
                    .hosts
                    .iter()
                    .filter(|h| pool.labels.iter().all(|l| h.labels.contains(l)))
                    .collect(),
            };
            if chosen.is_empty() && p.hosts.as_ref().is_none_or(|n| n.is_empty()) {
                issues.push(Issue::at(
                    &at,
                    format!(
                        "pool {:?} has no host: list them, or label hosts with all of {:?}",
                        pool.name, pool.labels
                    ),
                ));
            }
            for h in &chosen {
                let (cpu, mem) = (
                    u64::from(pool.shape.cpu_millis) * u64::from(h.slots),
                    u64::from(pool.shape.memory_mib) * u64::from(h.slots),
                );
                if cpu > u64::from(h.cpu_millis) || mem > u64::from(h.memory_mib) {
                    issues.push(Issue::at(
                        &at,
                        format!(
                            "host {:?} has {} slots of pool {:?}'s shape ({} millicores, {} MiB each) but only {} millicores and {} MiB",
                            h.name, h.slots, pool.name, pool.shape.cpu_millis, pool.shape.memory_mib, h.cpu_millis, h.memory_mib
                        ),
                    ));
                }
            }
            pools.insert(
                pool.name.clone(),
                chosen.iter().map(|h| h.name.clone()).collect(),
            );
        }
        (issues.len() == before).then(|| {
            ProviderSettings::new(BaremetalSettings {
                hosts,
                pools,
                agent_path: s.agent_path,
                job_user: s.job_user,
                connect_timeout: s.connect_timeout,
                command_timeout: s.command_timeout,
                min_free_disk_mib: s.min_free_disk_gb.saturating_mul(1024),
                power_off_after: s.power_off_after,
                boot_wait: s.boot_wait,
            })
        })
    }
}

impl BaremetalSettings {
    /// The provider's runtime configuration for `cluster`.
    pub fn config(&self, cluster: &str) -> BaremetalConfig {
        BaremetalConfig {
            cluster: cluster.to_string(),
            hosts: self.hosts.clone(),
            pools: self.pools.clone().into_iter().collect(),
            agent_path: self.agent_path.clone(),
            job_user: self.job_user.clone(),
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
            min_free_disk_mib: self.min_free_disk_mib,
            power_off_after: self.power_off_after,
            boot_wait: self.boot_wait,
        }
    }
}

#[async_trait::async_trait]
impl ProviderPlugin for BaremetalPlugin {
    async fn build(
        &self,
        settings: &ProviderSettings,
        context: &BuildContext,
    ) -> Result<Arc<dyn Provider>, BuildError> {
        let s: &BaremetalSettings = settings_of(self, settings)?;
        Ok(Arc::new(BaremetalProvider::new(s.config(&context.cluster))))
    }
}
