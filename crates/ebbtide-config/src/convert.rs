//! From the file's shape to the engine's types, with the rules serde
//! cannot express (static pools need `warm`, prices are not negative, …).

use ebbtide_core::{
    Billing, BurstConfig, ClassConfig, EngineConfig, HeadroomPolicy, MarketPolicy, Micros,
    PoolConfig, PoolKind, PrewarmConfig, PricePerHour, ScalingMode, ScalingPolicy, Shape,
    TenantConfig, TenantQuota,
};

use crate::schema::{File, PoolKindName, PoolSection, TenantDefaults};
use crate::{ClusterConfig, Issue};

/// An API key given directly or through an environment variable (not
/// both), at least 16 characters; `None` (with the issue at `path`) when
/// it is missing or unusable.
fn read_key(
    direct: Option<String>,
    env: Option<String>,
    path: &str,
    issue: &mut impl FnMut(String, String),
) -> Option<String> {
    let key = match (direct, env) {
        (Some(k), None) => k,
        (None, Some(var)) => match std::env::var(&var) {
            Ok(k) if !k.is_empty() => k,
            _ => {
                issue(
                    format!("{path}.api_key_env"),
                    format!("environment variable {var} is not set"),
                );
                return None;
            }
        },
        (Some(_), Some(_)) => {
            issue(
                format!("{path}.api_key"),
                "give `api_key` or `api_key_env`, not both".into(),
            );
            return None;
        }
        (None, None) => return None,
    };
    if key.len() < 16 {
        issue(
            format!("{path}.api_key"),
            "must be at least 16 characters".into(),
        );
    }
    Some(key)
}

pub(crate) fn to_cluster(
    file: File,
    text: &str,
    schemas: &[&dyn crate::ProviderSchema],
    issues: &mut Vec<Issue>,
) -> ClusterConfig {
    let mut issue = |path: String, message: String| {
        issues.push(Issue {
            line: None,
            path,
            message,
        })
    };
    let classes = match file.classes {
        Some(c) => c
            .into_iter()
            .map(|c| ClassConfig {
                name: c.name,
                sla_target: c.sla_target,
            })
            .collect(),
        None => ClassConfig::defaults(),
    };
    let mut api_keys = Vec::new();
    let mut tenants = Vec::new();
    for (i, t) in file.tenants.into_iter().enumerate() {
        if let Some(key) = read_key(
            t.api_key,
            t.api_key_env,
            &format!("tenants[{i}]"),
            &mut issue,
        ) {
            api_keys.push(crate::ApiKey {
                tenant: t.name.clone(),
                key,
            });
        }
        tenants.push(tenant(
            t.name,
            t.settings,
            &format!("tenants[{i}]"),
            &mut issue,
        ));
    }
    let mut operator_keys = Vec::new();
    let mut operator_names = std::collections::BTreeSet::new();
    for (i, o) in file.operators.into_iter().enumerate() {
        let path = format!("operators[{i}]");
        if o.name.trim().is_empty() {
            issue(format!("{path}.name"), "must not be empty".into());
        } else if !operator_names.insert(o.name.clone()) {
            issue(
                format!("{path}.name"),
                format!("operator {:?} is listed twice", o.name),
            );
        }
        if o.api_key.is_none() && o.api_key_env.is_none() {
            issue(
                format!("{path}.api_key"),
                "an operator needs `api_key` or `api_key_env`".into(),
            );
        }
        if let Some(key) = read_key(o.api_key, o.api_key_env, &path, &mut issue) {
            operator_keys.push(crate::OperatorKey {
                operator: o.name,
                key,
            });
        }
    }
    let tenant_defaults = file
        .tenant_defaults
        .map(|d| tenant(String::new(), d, "tenant_defaults", &mut issue));
    let pools = file
        .pools
        .into_iter()
        .enumerate()
        .map(|(i, p)| pool(p, i, &mut issue))
        .collect();
    let engine = EngineConfig {
        classes,
        tenants,
        pools,
        heartbeat_timeout: file.engine.heartbeat_timeout,
        assignment_timeout: file.engine.assignment_timeout,
        max_cost_per_hour: file
            .engine
            .max_cost_per_hour
            .map(|d| PricePerHour(dollars(d, "engine.max_cost_per_hour", &mut issue))),
        default_job_duration: file.engine.default_job_duration,
        scaling_mode: ScalingMode::Planner,
    };
    let srv = file.server;
    if let Some(problem) = log_level_problem(&srv.log_level) {
        issue("server.log_level".into(), problem);
    }
    let server = crate::ServerConfig {
        public_grpc_url: srv
            .public_grpc_url
            .unwrap_or_else(|| format!("http://{}", srv.grpc_listen)),
        cluster: srv.cluster,
        http_listen: srv.http_listen,
        grpc_listen: srv.grpc_listen,
        data_dir: srv.data_dir.into(),
        tick: srv.tick,
        bootstrap_token_ttl: srv.bootstrap_token_ttl,
        agent_program: srv.agent_program.map(Into::into),
        reconcile_interval: srv.reconcile_interval,
        log_level: srv.log_level,
        log_format: srv.log_format,
        orphan_grace: srv.orphan_grace,
        max_job_output: srv.max_job_output_bytes,
        agent_orphan_timeout: srv.agent_orphan_timeout,
        stop_grace: srv.stop_grace,
        on_stop: srv.on_stop,
    };
    let mut provider_issues = Vec::new();
    let providers = crate::providers::read(
        text,
        &server.cluster,
        &engine,
        schemas,
        &mut provider_issues,
    );
    let cost_reports =
        crate::reports::to_config(file.cost_reports, &server.data_dir, &providers, &mut issue);
    let cluster = ClusterConfig {
        server,
        api_keys,
        operator_keys,
        engine,
        tenant_defaults,
        providers,
        cost_reports,
    };
    let names: Vec<&str> = schemas.iter().map(|s| s.name()).collect();
    crate::service::check(&cluster, &names, &mut issue);
    // Last: these carry the lines serde found, which `issue` would drop.
    issues.extend(provider_issues);
    cluster
}

/// Dollars as written in the file to exact micro-dollars.
pub(crate) fn dollars(d: f64, path: &str, issue: &mut impl FnMut(String, String)) -> Micros {
    let micros = Micros::from_dollars_f64(d).filter(|m| m.0 >= 0);
    let Some(micros) = micros else {
        issue(
            path.to_string(),
            format!("must be a dollar amount between 0 and 1e9, got {d}"),
        );
        return Micros::ZERO;
    };
    micros
}

fn tenant(
    name: String,
    s: TenantDefaults,
    at: &str,
    issue: &mut impl FnMut(String, String),
) -> TenantConfig {
    let q = s.quota;
    TenantConfig {
        name,
        weight: s.weight,
        quota: TenantQuota {
            max_running_jobs: q.max_running_jobs,
            max_cpu_millis: q.max_cpu_millis,
            max_memory_mib: q.max_memory_mib,
            max_queued_jobs: q.max_queued_jobs,
            max_daily_spend: q
                .max_daily_spend
                .map(|d| dollars(d, &format!("{at}.quota.max_daily_spend"), issue)),
        },
        burst: s.burst.map(|b| BurstConfig {
            multiplier_percent: b.multiplier_percent,
            duration: b.duration,
            refill: b.refill,
        }),
    }
}

fn pool(p: PoolSection, i: usize, issue: &mut impl FnMut(String, String)) -> PoolConfig {
    let at = |k: &str| format!("pools[{i}].{k}");
    let kind = match p.kind {
        PoolKindName::Static => {
            if p.min != 0 || p.idle_count != 0 {
                issue(
                    at("kind"),
                    "a static pool takes `warm`, not `min`/`idle_count`".into(),
                );
            }
            match p.warm {
                Some(warm) => PoolKind::Static { warm },
                None => {
                    issue(
                        at("warm"),
                        "a static pool needs `warm`, the number of workers kept ready".into(),
                    );
                    PoolKind::Static { warm: 0 }
                }
            }
        }
        PoolKindName::Dynamic => {
            if p.warm.is_some() {
                issue(
                    at("warm"),
                    "only static pools take `warm`; use `min` or `idle_count`".into(),
                );
            }
            PoolKind::Dynamic {
                min: p.min,
                idle_count: p.idle_count,
            }
        }
    };
    let max = match (p.max, kind) {
        (Some(m), _) => m,
        (None, PoolKind::Static { warm }) => warm,
        (None, PoolKind::Dynamic { .. }) => {
            issue(
                at("max"),
                "a dynamic pool needs `max`, its hard ceiling".into(),
            );
            0
        }
    };
    let per_second = Billing::PerSecond {
        minimum: p.billing.minimum.unwrap_or_default(),
    };
    let billing = match (p.billing.period, p.billing.retire_within) {
        (Some(_), _) if p.billing.minimum.is_some() => {
            issue(
                at("billing.minimum"),
                "a billed `period` is its own minimum: set `minimum` only for per-second billing"
                    .into(),
            );
            per_second
        }
        (None, None) => per_second,
        (Some(period), within) => Billing::Period {
            period,
            retire_within: within.unwrap_or(std::time::Duration::from_secs(300)),
        },
        (None, Some(_)) => {
            issue(at("billing.retire_within"), "needs `billing.period`".into());
            per_second
        }
    };
    PoolConfig {
        on_demand_price: PricePerHour(dollars(p.on_demand_price, &at("on_demand_price"), issue)),
        name: p.name,
        provider: p.provider,
        kind,
        max,
        shape: Shape {
            name: p.shape.name,
            cpu_millis: p.shape.cpu_millis,
            memory_mib: p.shape.memory_mib,
            os: p.shape.os,
            arch: p.shape.arch,
        },
        labels: p.labels,
        capacity_per_instance: p.capacity_per_instance,
        market: MarketPolicy {
            on_demand_base: p.market.on_demand_base,
            spot_percent: p.market.spot_percent,
            spot_fallback_for: p.market.spot_fallback_for,
        },
        idle_timeout: p.idle_timeout,
        max_uses: p.max_uses,
        boot_timeout: p.boot_timeout,
        boot_estimate: p.boot_estimate,
        preference: p.preference,
        scaling: ScalingPolicy {
            scale_up_cooldown: p.scaling.scale_up_cooldown,
            scale_down_cooldown: p.scaling.scale_down_cooldown,
            down_stabilization: p.scaling.down_stabilization,
        },
        billing,
        prewarm: p.prewarm.map(|w| PrewarmConfig {
            max_instances: w.max_instances,
            factor_percent: w.factor_percent,
        }),
        headroom: match p.headroom.mode {
            crate::schema::HeadroomMode::Off => HeadroomPolicy::Off,
            crate::schema::HeadroomMode::Auto => HeadroomPolicy::Auto {
                // Out-of-range values stay out of range, for the engine's
                // validation to name (NaN included, as 0).
                coverage_milli: (p.headroom.coverage * 1000.0)
                    .round()
                    .clamp(0.0, 1_000_000.0) as u32,
            },
        },
    }
}

/// Levels a log directive may name.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks `server.log_level`: comma-separated `LEVEL` or `target=LEVEL`
/// directives. (The log filter would read a misspelt level as a target
/// name and silently log nothing of interest.)
fn log_level_problem(directives: &str) -> Option<String> {
    for d in directives.split(',').map(str::trim) {
        let level = d.rsplit_once('=').map_or(d, |(_, l)| l);
        if !LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Some(format!(
                "{d:?} is not a log directive: expected one of {} or target=LEVEL, comma-separated",
                LOG_LEVELS.join(", ")
            ));
        }
    }
    None
}
