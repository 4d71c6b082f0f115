#!/usr/bin/env python3
"""Writes the Grafana dashboards in dashboards/ from the panel lists below.

Why generated: panels stay uniform (datasource variable, units, layout) and
a reviewer reads PromQL here rather than in 2,000 lines of JSON. Run it
after editing; CI checks every expression with promtool and against the
metric names Ebbtide exports.
"""
import json
import pathlib

DS = {"type": "prometheus", "uid": "${datasource}"}


def panel(i, title, exprs, unit="short", kind="timeseries", desc=""):
    return {
        "id": i,
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": (i - 1) % 2 * 12, "y": (i - 1) // 2 * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + n), "datasource": DS, "expr": e, "legendFormat": l}
            for n, (e, l) in enumerate(exprs)
        ],
    }


def dashboard(uid, title, panels, extra_vars=()):
    templating = [
        {
            "name": "datasource",
            "type": "datasource",
            "query": "prometheus",
            "label": "Prometheus",
        }
    ] + list(extra_vars)
    return {
        "uid": uid,
        "title": title,
        "tags": ["ebbtide"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": templating},
        "panels": [panel(i + 1, *p) for i, p in enumerate(panels)],
    }


POOL_VAR = {
    "name": "pool",
    "type": "query",
    "datasource": DS,
    "query": "label_values(ebbtide_pool_desired_instances, pool)",
    "refresh": 2,
    "includeAll": True,
    "multi": True,
}

OVERVIEW = [
    ("Queue depth by class", [("sum by (class) (ebbtide_queue_depth_jobs)", "{{class}}")]),
    ("Oldest wait vs SLA target", [
        ("max by (class) (ebbtide_queue_oldest_wait_seconds)", "oldest {{class}}"),
        ("max by (class) (ebbtide_sla_target_seconds)", "target {{class}}"),
    ], "s"),
    ("SLA attainment (30 min)", [(
        "sum by (class) (rate(ebbtide_sla_started_within_target_total[30m])) / sum by (class) (rate(ebbtide_jobs_started_total[30m]))",
        "{{class}}",
    )], "percentunit"),
    ("Queue wait p95 by class", [(
        "histogram_quantile(0.95, sum by (class, le) (rate(ebbtide_queue_wait_seconds_bucket[5m])))",
        "{{class}}",
    )], "s"),
    ("Fleet by state", [("sum by (state) (ebbtide_workers)", "{{state}}")]),
    ("Desired vs actual instances", [
        ("sum by (pool) (ebbtide_pool_desired_instances)", "desired {{pool}}"),
        ("sum by (pool) (ebbtide_pool_actual_instances)", "actual {{pool}}"),
    ]),
    ("Jobs per second", [
        ("sum(rate(ebbtide_jobs_submitted_total[5m]))", "submitted"),
        ("sum(rate(ebbtide_jobs_started_total[5m]))", "started"),
        ("sum by (outcome) (rate(ebbtide_jobs_finished_total[5m]))", "{{outcome}}"),
    ], "ops"),
    ("Cost rate ($/h)", [("sum(ebbtide_cost_rate_micro_dollars_per_hour) / 1e6", "fleet")], "currencyUSD"),
]

POOL = [
    ("Scale decisions by reason", [(
        "sum by (pool, direction, reason) (increase(ebbtide_scale_decisions_total{pool=~\"$pool\"}[$__rate_interval]))",
        "{{pool}} {{direction}}: {{reason}}",
    )], "short", "timeseries", "Every change of desired capacity, with the engine's reason."),
    ("Desired vs actual", [
        ("ebbtide_pool_desired_instances{pool=~\"$pool\"}", "desired {{pool}}"),
        ("ebbtide_pool_actual_instances{pool=~\"$pool\"}", "actual {{pool}}"),
        ("ebbtide_pool_max_instances{pool=~\"$pool\"}", "max {{pool}}"),
    ]),
    ("Workers by state", [("sum by (pool, state) (ebbtide_workers{pool=~\"$pool\"})", "{{pool}} {{state}}")]),
    ("Boot time (launch → registered) p50 / p95", [
        ("histogram_quantile(0.5, sum by (pool, le) (rate(ebbtide_registration_seconds_bucket{pool=~\"$pool\"}[15m])))", "p50 {{pool}}"),
        ("histogram_quantile(0.95, sum by (pool, le) (rate(ebbtide_registration_seconds_bucket{pool=~\"$pool\"}[15m])))", "p95 {{pool}}"),
    ], "s"),
    ("Jobs per worker (median)", [(
        "histogram_quantile(0.5, sum by (pool, le) (rate(ebbtide_worker_jobs_served_bucket{pool=~\"$pool\"}[1h])))",
        "{{pool}}",
    )]),
    ("Worker reuse (jobs on already-used workers / s)", [(
        "sum by (pool) (rate(ebbtide_worker_reuses_total{pool=~\"$pool\"}[15m]))", "{{pool}}",
    )], "ops"),
    ("Launches and failures", [
        ("sum by (pool, market) (rate(ebbtide_launches_total{pool=~\"$pool\"}[15m]))", "launched {{pool}} {{market}}"),
        ("sum by (pool, kind) (rate(ebbtide_launch_failures_total{pool=~\"$pool\"}[15m]))", "failed {{pool}} {{kind}}"),
    ], "ops"),
    ("Reclamations and lost workers", [
        ("sum by (pool) (increase(ebbtide_reclamations_total{pool=~\"$pool\"}[1h]))", "reclaimed {{pool}}"),
        ("sum by (pool) (increase(ebbtide_workers_lost_total{pool=~\"$pool\"}[1h]))", "lost {{pool}}"),
    ]),
    ("Provider API latency p95", [(
        "histogram_quantile(0.95, sum by (provider, operation, le) (rate(ebbtide_provider_call_seconds_bucket[15m])))",
        "{{provider}} {{operation}}",
    )], "s"),
    ("Provider errors and throttles", [
        ("sum by (provider, kind) (rate(ebbtide_provider_errors_total[15m]))", "{{provider}} {{kind}}"),
        ("sum by (provider) (rate(ebbtide_provider_throttles_total[15m]))", "{{provider}} throttled"),
    ], "ops"),
]

COST = [
    ("Cost rate by pool and market ($/h)", [(
        "sum by (pool, market) (ebbtide_cost_rate_micro_dollars_per_hour) / 1e6", "{{pool}} {{market}}",
    )], "currencyUSD"),
    ("Budget vs cost rate ($/h)", [
        ("sum(ebbtide_cost_rate_micro_dollars_per_hour) / 1e6", "cost rate"),
        ("max(ebbtide_budget_micro_dollars_per_hour) / 1e6", "budget"),
    ], "currencyUSD"),
    ("Spend by tenant (last 24 h, $)", [(
        "sum by (tenant) (increase(ebbtide_cost_tenant_micro_dollars_total[24h])) / 1e6", "{{tenant}}",
    )], "currencyUSD", "bargauge"),
    ("Spend by pool (last 24 h, $)", [(
        "sum by (pool) (increase(ebbtide_cost_pool_micro_dollars_total[24h])) / 1e6", "{{pool}}",
    )], "currencyUSD", "bargauge"),
    ("Spend by market (last 24 h, $)", [(
        "sum by (market) (increase(ebbtide_cost_market_micro_dollars_total[24h])) / 1e6", "{{market}}",
    )], "currencyUSD", "piechart"),
    ("Savings vs on-demand (last 24 h, $)", [(
        "sum(increase(ebbtide_savings_micro_dollars_total[24h])) / 1e6", "saved",
    )], "currencyUSD", "stat"),
    ("Tenant quota use", [("max by (tenant) (ebbtide_tenant_quota_used_ratio)", "{{tenant}}")], "percentunit"),
    ("Cost reports: finished days not yet published", [
        ("max(ebbtide_cost_reports_pending)", "pending days"),
        ("sum(increase(ebbtide_cost_report_failures_total[1h]))", "failures (1 h)"),
    ], "short"),
]

if __name__ == "__main__":
    out = pathlib.Path(__file__).parent / "dashboards"
    for name, d in {
        "ebbtide-overview.json": dashboard("ebbtide-overview", "Ebbtide — overview", OVERVIEW),
        "ebbtide-pools.json": dashboard("ebbtide-pools", "Ebbtide — pools", POOL, [POOL_VAR]),
        "ebbtide-cost.json": dashboard("ebbtide-cost", "Ebbtide — cost", COST),
    }.items():
        (out / name).write_text(json.dumps(d, indent=2) + "\n")
