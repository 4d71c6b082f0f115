//! Rules of what the scheduler service can actually run, beyond the
//! engine's: a setting that would panic a timer, make a loop spin, collide
//! two listeners or let one tenant's key shadow another's is refused here,
//! so `config check` refuses everything `serve` would refuse or would
//! misbehave with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::ClusterConfig;

/// Largest pool anyone runs; beyond it a value is a typo, not a plan.
const MAX_POOL_SIZE: u32 = 100_000;

/// A duration that must lie in `[min, max]`, with its key.
fn within(
    issue: &mut impl FnMut(String, String),
    path: &str,
    value: Duration,
    min: Duration,
    max: Duration,
) {
    if value < min || value > max {
        issue(
            path.to_string(),
            format!(
                "must be between {} and {}, got {}",
                humantime::format_duration(min),
                humantime::format_duration(max),
                humantime::format_duration(value)
            ),
        );
    }
}

/// How often agents send heartbeats for a given timeout: four beats fit in
/// the timeout, so one or two lost beats never declare a worker lost.
pub fn heartbeat_interval(heartbeat_timeout: Duration) -> Duration {
    (heartbeat_timeout / 4).max(Duration::from_millis(250))
}

pub(crate) fn check(
    config: &ClusterConfig,
    providers: &[&str],
    issue: &mut impl FnMut(String, String),
) {
    let s = &config.server;
    let ms = Duration::from_millis;
    let secs = Duration::from_secs;
    within(issue, "server.tick", s.tick, ms(10), secs(60));
    within(
        issue,
        "server.reconcile_interval",
        s.reconcile_interval,
        secs(1),
        secs(3600),
    );
    within(
        issue,
        "server.bootstrap_token_ttl",
        s.bootstrap_token_ttl,
        ms(100),
        secs(7 * 86_400),
    );
    within(
        issue,
        "server.orphan_grace",
        s.orphan_grace,
        secs(1),
        secs(86_400),
    );
    within(
        issue,
        "server.agent_orphan_timeout",
        s.agent_orphan_timeout,
        secs(1),
        secs(7 * 86_400),
    );
    within(
        issue,
        "server.stop_grace",
        s.stop_grace,
        Duration::ZERO,
        secs(86_400),
    );
    within(
        issue,
        "engine.assignment_timeout",
        config.engine.assignment_timeout,
        secs(1),
        secs(3600),
    );
    within(
        issue,
        "engine.heartbeat_timeout",
        config.engine.heartbeat_timeout,
        secs(1),
        secs(3600),
    );
    if !(1024..=1 << 30).contains(&s.max_job_output) {
        issue(
            "server.max_job_output_bytes".into(),
            format!(
                "must be between 1024 and 1073741824 bytes, got {}",
                s.max_job_output
            ),
        );
    }
    let http = listen_address(issue, "server.http_listen", &s.http_listen);
    let grpc = listen_address(issue, "server.grpc_listen", &s.grpc_listen);
    if let (Some(h), Some(g)) = (http, grpc)
        && h.port() != 0
        && h.port() == g.port()
        && (h.ip() == g.ip() || h.ip().is_unspecified() || g.ip().is_unspecified())
    {
        issue(
            "server.grpc_listen".into(),
            format!("the worker API cannot share the job API's address {h}"),
        );
    }
    // Every key names one holder: a key shared by two tenants, or by a
    // tenant and an operator, would let one act as the other.
    let mut owners: BTreeMap<&str, String> = BTreeMap::new();
    let tenant_keys = config.api_keys.iter().map(|key| {
        let index = config
            .engine
            .tenants
            .iter()
            .position(|t| t.name == key.tenant)
            .unwrap_or(0);
        (
            key.key.as_str(),
            format!("tenant {:?}", key.tenant),
            format!("tenants[{index}].api_key"),
        )
    });
    let operator_keys = config.operator_keys.iter().enumerate().map(|(i, key)| {
        (
            key.key.as_str(),
            format!("operator {:?}", key.operator),
            format!("operators[{i}].api_key"),
        )
    });
    for (key, holder, path) in tenant_keys.chain(operator_keys) {
        if let Some(first) = owners.get(key) {
            issue(
                path,
                format!(
                    "{holder} has the same API key as {first}; every tenant and operator needs its own"
                ),
            );
        } else {
            owners.insert(key, holder);
        }
    }
    for (i, p) in config.engine.pools.iter().enumerate() {
        if !providers.contains(&p.provider.as_str()) {
            issue(
                format!("pools[{i}].provider"),
                format!(
                    "unknown provider {:?}; this build has {}",
                    p.provider,
                    providers.join(", ")
                ),
            );
        }
        if p.max > MAX_POOL_SIZE {
            issue(
                format!("pools[{i}].max"),
                format!("must be at most {MAX_POOL_SIZE}, got {}", p.max),
            );
        }
    }
}

fn listen_address(
    issue: &mut impl FnMut(String, String),
    path: &str,
    value: &str,
) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            issue(
                path.to_string(),
                format!("expected IP:PORT (e.g. 127.0.0.1:8080 or [::]:8080), got {value:?}"),
            );
            None
        }
    }
}

/// What is valid but probably not what the operator meant.
pub fn warnings(config: &ClusterConfig) -> Vec<String> {
    let mut out = Vec::new();
    if config.engine.pools.is_empty() {
        out.push("no [[pools]]: no job can run".to_string());
    }
    if config.api_keys.is_empty() {
        out.push("no tenant has an api_key or api_key_env: nobody can submit jobs".to_string());
    }
    out
}
