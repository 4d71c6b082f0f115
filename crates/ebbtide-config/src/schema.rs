//! The file format, as serde structures. Every table rejects unknown keys
//! so a typo is an error, not a silently ignored setting.

use std::time::Duration;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub engine: EngineSection,
    #[serde(default)]
    pub classes: Option<Vec<ClassSection>>,
    #[serde(default)]
    pub tenants: Vec<TenantSection>,
    #[serde(default)]
    pub operators: Vec<OperatorSection>,
    #[serde(default)]
    pub tenant_defaults: Option<TenantDefaults>,
    #[serde(default)]
    pub pools: Vec<PoolSection>,
    /// Each table is read by the provider that claims it
    /// ([`crate::providers`]); here only its shape (a table) is checked.
    #[expect(
        dead_code,
        reason = "crate::providers reads the tables again with their spans"
    )]
    #[serde(default)]
    pub providers: std::collections::BTreeMap<String, toml::Table>,
    #[serde(default)]
    pub cost_reports: crate::reports::CostReportsSection,
}

/// Rate limit and retries of a provider's API calls.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiSection {
    #[serde(default = "default_calls_per_second")]
    pub calls_per_second: u32,
    #[serde(default = "default_burst")]
    pub burst: u32,
    #[serde(default = "default_retries")]
    pub max_retries: u32,
}

impl ApiSection {
    /// The limits, each at least 1 (a zero is an issue at `path.KEY`).
    pub fn limits(&self, path: &str, issues: &mut Vec<crate::Issue>) -> crate::ApiLimits {
        for (key, value) in [
            ("calls_per_second", self.calls_per_second),
            ("burst", self.burst),
        ] {
            if value == 0 {
                issues.push(crate::Issue::at(
                    format!("{path}.{key}"),
                    "must be at least 1",
                ));
            }
        }
        crate::ApiLimits {
            calls_per_second: self.calls_per_second.max(1),
            burst: self.burst.max(1),
            max_retries: self.max_retries,
        }
    }
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            calls_per_second: default_calls_per_second(),
            burst: default_burst(),
            max_retries: default_retries(),
        }
    }
}

fn default_calls_per_second() -> u32 {
    5
}
fn default_burst() -> u32 {
    10
}
fn default_retries() -> u32 {
    5
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EngineSection {
    #[serde(with = "humantime_serde", default = "default_heartbeat")]
    pub heartbeat_timeout: Duration,
    #[serde(with = "humantime_serde", default = "default_assignment_timeout")]
    pub assignment_timeout: Duration,
    #[serde(with = "humantime_serde", default = "default_job_duration")]
    pub default_job_duration: Duration,
    /// Dollars per hour for the whole fleet.
    pub max_cost_per_hour: Option<f64>,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            heartbeat_timeout: default_heartbeat(),
            assignment_timeout: default_assignment_timeout(),
            default_job_duration: default_job_duration(),
            max_cost_per_hour: None,
        }
    }
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(30)
}
fn default_assignment_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_job_duration() -> Duration {
    Duration::from_secs(600)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClassSection {
    pub name: String,
    #[serde(with = "humantime_serde")]
    pub sla_target: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantSection {
    pub name: String,
    /// API key, given directly (prefer `api_key_env`).
    pub api_key: Option<String>,
    /// Name of the environment variable holding the API key.
    pub api_key_env: Option<String>,
    #[serde(flatten)]
    pub settings: TenantDefaults,
}

/// Someone who runs the fleet: reads every tenant's jobs and the fleet-wide
/// views, cancels and drains, but submits nothing (jobs belong to tenants).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OperatorSection {
    pub name: String,
    /// API key, given directly (prefer `api_key_env`).
    pub api_key: Option<String>,
    /// Name of the environment variable holding the API key.
    pub api_key_env: Option<String>,
}

/// Settings shared by named tenants and by tenants created on the fly
/// (the simulator's trace projects).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantDefaults {
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default)]
    pub quota: QuotaSection,
    pub burst: Option<BurstSection>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotaSection {
    pub max_running_jobs: Option<u32>,
    pub max_cpu_millis: Option<u64>,
    pub max_memory_mib: Option<u64>,
    pub max_queued_jobs: Option<u32>,
    /// Dollars per UTC day.
    pub max_daily_spend: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BurstSection {
    pub multiplier_percent: u32,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    #[serde(with = "humantime_serde")]
    pub refill: Duration,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PoolKindName {
    Static,
    Dynamic,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PoolSection {
    pub name: String,
    pub provider: String,
    pub kind: PoolKindName,
    /// Static pools: workers kept warm.
    pub warm: Option<u32>,
    /// Dynamic pools: floor.
    #[serde(default)]
    pub min: u32,
    /// Dynamic pools: spare idle instances.
    #[serde(default)]
    pub idle_count: u32,
    pub max: Option<u32>,
    pub shape: ShapeSection,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default = "one")]
    pub capacity_per_instance: u32,
    #[serde(default)]
    pub market: MarketSection,
    #[serde(with = "humantime_serde", default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    pub max_uses: Option<u32>,
    #[serde(with = "humantime_serde", default = "default_boot_timeout")]
    pub boot_timeout: Duration,
    #[serde(with = "humantime_serde", default = "default_boot_estimate")]
    pub boot_estimate: Duration,
    #[serde(default = "default_preference")]
    pub preference: u32,
    #[serde(default)]
    pub scaling: ScalingSection,
    #[serde(default)]
    pub billing: BillingSection,
    pub prewarm: Option<PrewarmSection>,
    #[serde(default)]
    pub headroom: HeadroomSection,
    /// Dollars per instance-hour.
    #[serde(default)]
    pub on_demand_price: f64,
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_boot_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_boot_estimate() -> Duration {
    Duration::from_secs(30)
}
fn default_preference() -> u32 {
    100
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShapeSection {
    pub name: String,
    pub cpu_millis: u32,
    pub memory_mib: u32,
    #[serde(default = "linux")]
    pub os: String,
    #[serde(default = "x86_64")]
    pub arch: String,
}

fn linux() -> String {
    "linux".into()
}
fn x86_64() -> String {
    "x86_64".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MarketSection {
    #[serde(default)]
    pub on_demand_base: u32,
    #[serde(default)]
    pub spot_percent: u8,
    #[serde(with = "humantime_serde", default = "default_spot_fallback")]
    pub spot_fallback_for: Duration,
}

impl Default for MarketSection {
    fn default() -> Self {
        MarketSection {
            on_demand_base: 0,
            spot_percent: 0,
            spot_fallback_for: default_spot_fallback(),
        }
    }
}

fn default_spot_fallback() -> Duration {
    Duration::from_secs(600)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScalingSection {
    #[serde(with = "humantime_serde", default = "default_up_cooldown")]
    pub scale_up_cooldown: Duration,
    #[serde(with = "humantime_serde", default = "default_down_cooldown")]
    pub scale_down_cooldown: Duration,
    #[serde(with = "humantime_serde", default = "default_down_cooldown")]
    pub down_stabilization: Duration,
}

impl Default for ScalingSection {
    fn default() -> Self {
        ScalingSection {
            scale_up_cooldown: default_up_cooldown(),
            scale_down_cooldown: default_down_cooldown(),
            down_stabilization: default_down_cooldown(),
        }
    }
}

fn default_up_cooldown() -> Duration {
    Duration::from_secs(15)
}
fn default_down_cooldown() -> Duration {
    Duration::from_secs(120)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BillingSection {
    #[serde(with = "humantime_serde", default)]
    pub period: Option<Duration>,
    #[serde(with = "humantime_serde", default)]
    pub retire_within: Option<Duration>,
    #[serde(with = "humantime_serde", default)]
    pub minimum: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrewarmSection {
    pub max_instances: u32,
    #[serde(default = "hundred")]
    pub factor_percent: u32,
}

fn hundred() -> u32 {
    100
}

/// `[pools.headroom]`: idle workers for SLA targets shorter than a boot.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeadroomSection {
    #[serde(default)]
    pub mode: HeadroomMode,
    /// Share of arriving jobs to start at once.
    #[serde(default = "default_coverage")]
    pub coverage: f64,
}

impl Default for HeadroomSection {
    fn default() -> Self {
        HeadroomSection {
            mode: HeadroomMode::Auto,
            coverage: default_coverage(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HeadroomMode {
    /// Kept when a class's target is shorter than the pool's lead time.
    #[default]
    Auto,
    /// Never kept.
    Off,
}

fn default_coverage() -> f64 {
    0.99
}

/// The scheduler service itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerSection {
    #[serde(default = "default_cluster")]
    pub cluster: String,
    #[serde(default = "default_http")]
    pub http_listen: String,
    #[serde(default = "default_grpc")]
    pub grpc_listen: String,
    /// Address agents use to reach the worker API (defaults to grpc_listen).
    pub public_grpc_url: Option<String>,
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    #[serde(with = "humantime_serde", default = "default_tick")]
    pub tick: Duration,
    #[serde(with = "humantime_serde", default = "default_token_ttl")]
    pub bootstrap_token_ttl: Duration,
    /// Program run as the local provider's agent (default: this binary).
    pub agent_program: Option<String>,
    #[serde(with = "humantime_serde", default = "default_reconcile")]
    pub reconcile_interval: Duration,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(with = "humantime_serde", default = "default_orphan_grace")]
    pub orphan_grace: Duration,
    #[serde(default = "default_max_job_output")]
    pub max_job_output_bytes: u64,
    #[serde(with = "humantime_serde", default = "default_agent_orphan_timeout")]
    pub agent_orphan_timeout: Duration,
    #[serde(with = "humantime_serde", default = "default_server_stop_grace")]
    pub stop_grace: Duration,
    #[serde(default)]
    pub on_stop: OnStop,
}

/// What a stopping scheduler does with its workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStop {
    /// Leave them running for the next scheduler to adopt (their jobs
    /// continue and are not re-run).
    #[default]
    Leave,
    /// Terminate every instance (jobs still running are requeued by the
    /// next scheduler as a visible re-run).
    Terminate,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

impl LogFormat {
    /// The name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}
fn default_reconcile() -> Duration {
    Duration::from_secs(30)
}
/// 16 MiB: far more than a CI log an operator reads, small enough that a
/// runaway job cannot fill the store.
fn default_max_job_output() -> u64 {
    16 << 20
}
/// Ten minutes without any scheduler: long enough for a restart or an
/// upgrade, short enough that an abandoned instance stops soon.
fn default_agent_orphan_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_server_stop_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_orphan_grace() -> Duration {
    Duration::from_secs(120)
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            cluster: default_cluster(),
            http_listen: default_http(),
            grpc_listen: default_grpc(),
            public_grpc_url: None,
            data_dir: default_data_dir(),
            tick: default_tick(),
            bootstrap_token_ttl: default_token_ttl(),
            agent_program: None,
            reconcile_interval: default_reconcile(),
            log_level: default_log_level(),
            log_format: LogFormat::Text,
            orphan_grace: default_orphan_grace(),
            max_job_output_bytes: default_max_job_output(),
            agent_orphan_timeout: default_agent_orphan_timeout(),
            stop_grace: default_server_stop_grace(),
            on_stop: OnStop::Leave,
        }
    }
}

fn default_cluster() -> String {
    "ebbtide".into()
}
fn default_http() -> String {
    "127.0.0.1:8080".into()
}
fn default_grpc() -> String {
    "127.0.0.1:8081".into()
}
fn default_data_dir() -> String {
    ".ebbtide".into()
}
fn default_tick() -> Duration {
    Duration::from_secs(1)
}
fn default_token_ttl() -> Duration {
    Duration::from_secs(600)
}
