//! What the simulated world is like: boot times, prices, reclamations and
//! API failures, by default drawn from the real data in `shared/data/`.

use std::path::Path;
use std::time::Duration;

use ebbtide_core::{Micros, PricePerHour};

use crate::shortage::ShortageModel;

/// Parameters of the simulated providers and agents.
#[derive(Debug, Clone)]
pub struct SimParams {
    /// Seed of every random draw; the same seed gives the same run.
    pub seed: u64,
    /// Engine tick interval.
    pub tick: Duration,
    /// Latency of a provider API call (launch, terminate).
    pub api_latency: Duration,
    /// Launch→SSH-ready times to resample (seconds), from published
    /// measurements.
    pub boot_samples: Vec<Duration>,
    /// Uniform jitter added to a resampled boot time, ±.
    pub boot_jitter: Duration,
    /// Agent start and registration after the instance is reachable.
    pub agent_start: Duration,
    /// Zones and their spot prices per instance-hour.
    pub spot_zones: Vec<(String, PricePerHour)>,
    /// Share of spot capacity reclaimed per 30 days (Spot Advisor bucket).
    pub reclaim_fraction_per_month: f64,
    /// Fractions of the spot fleet taken by one reclamation burst (from
    /// real preemption traces).
    pub burst_fractions: Vec<f64>,
    /// Warning before a reclaimed instance disappears.
    pub reclaim_notice: Duration,
    /// Probability that a spot launch call fails for capacity on its own,
    /// whatever the zone's state (independent per call).
    pub spot_capacity_failure_rate: f64,
    /// Spot shortages that last, per zone and region-wide.
    pub shortages: ShortageModel,
    /// Every instance is billed at least this long (EC2 and Compute Engine:
    /// 60 s). The world charges it whatever the configuration says.
    pub min_billing: Duration,
    /// Probability that a launch call is throttled.
    pub throttle_rate: f64,
    /// Timeline sampling interval (for charts).
    pub sample_every: Duration,
    /// Check the engine's invariants after every N-th event (`None`: never):
    /// a violation ends the run with [`crate::SimError::Invariant`]. On in
    /// the simulator's tests and under `ebbtide simulate --check N`.
    pub check_every: Option<u64>,
}

/// Loading real data failed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DataError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

impl SimParams {
    /// A world with no randomness that matters: every boot takes `boot`, no
    /// failures, no reclamations. For tests whose answer is computed by hand.
    pub fn deterministic(boot: Duration) -> Self {
        SimParams {
            seed: 0,
            tick: Duration::from_secs(5),
            api_latency: Duration::ZERO,
            boot_samples: vec![boot],
            boot_jitter: Duration::ZERO,
            agent_start: Duration::ZERO,
            spot_zones: Vec::new(),
            reclaim_fraction_per_month: 0.0,
            burst_fractions: vec![1.0],
            reclaim_notice: Duration::from_secs(120),
            spot_capacity_failure_rate: 0.0,
            shortages: ShortageModel::NONE,
            min_billing: Duration::ZERO,
            throttle_rate: 0.0,
            sample_every: Duration::from_secs(60),
            check_every: None,
        }
    }

    /// Defaults from `shared/data`: boot times from the published
    /// RunInstances→SSH measurements, per-zone spot prices of `shape` in
    /// `region` from the SkyPilot snapshot, the reclamation rate of its Spot
    /// Advisor bucket, and burst sizes from the Bamboo preemption trace.
    pub fn from_shared_data(
        data: &Path,
        region: &str,
        shape: &str,
        seed: u64,
    ) -> Result<Self, DataError> {
        let mut p = SimParams::deterministic(Duration::from_secs(30));
        p.seed = seed;
        p.api_latency = Duration::from_secs(1);
        p.boot_jitter = Duration::from_secs(2);
        p.agent_start = Duration::from_secs(2);
        // No public data gives spot capacity errors over time; these are
        // assumptions (docs/simulator.md): each zone short 3 % of the time
        // in episodes of half an hour on average, the whole region 0.5 %
        // of the time for twenty minutes.
        p.shortages = ShortageModel {
            zone_share: 0.03,
            zone_mean: Duration::from_secs(1800),
            region_share: 0.005,
            region_mean: Duration::from_secs(1200),
        };
        p.min_billing = Duration::from_secs(60);
        p.throttle_rate = 0.01;
        p.boot_samples = boot_samples(&data.join("boot_times/boot_times_published.csv"))?;
        p.spot_zones = spot_zones(
            &data.join("prices/aws_ondemand_spot_snapshot_skypilot.csv"),
            region,
            shape,
        )?;
        p.reclaim_fraction_per_month = advisor_fraction(
            &data.join("prices/aws_spot_advisor_snapshot_2024.csv"),
            region,
            shape,
        )?;
        p.burst_fractions = burst_fractions(
            &data.join("spot_interruptions/bamboo_asg_traces_2021/full-64-node-trace__full-64-found-preemptions.csv"),
        )?;
        Ok(p)
    }

    /// The shortest boot the world can produce (for the oracle bound).
    pub fn min_boot(&self) -> Duration {
        let min = self.boot_samples.iter().min().copied().unwrap_or_default();
        min.saturating_sub(self.boot_jitter) + self.agent_start
    }

    /// The boot the world produces on average (for the clairvoyant
    /// schedule): the mean sample plus the agent's start, jitter being
    /// symmetric.
    pub fn mean_boot(&self) -> Duration {
        let n = self.boot_samples.len().max(1) as u32;
        self.boot_samples.iter().sum::<Duration>() / n + self.agent_start
    }

    /// The cheapest spot price, if any zone has one.
    pub fn min_spot_price(&self) -> Option<PricePerHour> {
        self.spot_zones.iter().map(|(_, p)| *p).min()
    }
}

fn open(path: &Path) -> Result<csv::Reader<std::fs::File>, DataError> {
    csv::Reader::from_path(path).map_err(|e| err(path, e.to_string()))
}

fn err(path: &Path, message: String) -> DataError {
    DataError {
        path: path.display().to_string(),
        message,
    }
}

fn column(headers: &csv::StringRecord, name: &str, path: &Path) -> Result<usize, DataError> {
    headers
        .iter()
        .position(|h| h == name)
        .ok_or_else(|| err(path, format!("no column {name:?}")))
}

fn boot_samples(path: &Path) -> Result<Vec<Duration>, DataError> {
    let mut r = open(path)?;
    let h = r.headers().map_err(|e| err(path, e.to_string()))?.clone();
    let (phase, value) = (column(&h, "phase", path)?, column(&h, "value_s", path)?);
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| err(path, e.to_string()))?;
        let value = rec.get(value).and_then(|v| v.parse::<f64>().ok());
        if let (true, Some(v)) = (
            rec.get(phase)
                .is_some_and(|p| p.starts_with("total RunInstances")),
            value,
        ) {
            out.push(Duration::from_millis((v * 1000.0) as u64));
        }
    }
    if out.is_empty() {
        return Err(err(path, "no 'total RunInstances->SSH' rows".into()));
    }
    Ok(out)
}

fn spot_zones(
    path: &Path,
    region: &str,
    shape: &str,
) -> Result<Vec<(String, PricePerHour)>, DataError> {
    let mut r = open(path)?;
    let h = r.headers().map_err(|e| err(path, e.to_string()))?.clone();
    let (ty, reg, zone, spot) = (
        column(&h, "InstanceType", path)?,
        column(&h, "Region", path)?,
        column(&h, "AvailabilityZone", path)?,
        column(&h, "SpotPrice", path)?,
    );
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| err(path, e.to_string()))?;
        let ours = rec.get(ty) == Some(shape) && rec.get(reg) == Some(region);
        if let (true, Some(z), Some(p)) = (
            ours,
            rec.get(zone),
            rec.get(spot).and_then(|p| p.parse::<f64>().ok()),
        ) {
            out.push((
                z.to_string(),
                PricePerHour(Micros::from_dollars_f64(p).unwrap_or(Micros::ZERO)),
            ));
        }
    }
    if out.is_empty() {
        return Err(err(path, format!("no spot prices for {shape} in {region}")));
    }
    Ok(out)
}

fn advisor_fraction(path: &Path, region: &str, shape: &str) -> Result<f64, DataError> {
    let mut r = open(path)?;
    let h = r.headers().map_err(|e| err(path, e.to_string()))?.clone();
    let (reg, os, ty, upper) = (
        column(&h, "region", path)?,
        column(&h, "os", path)?,
        column(&h, "instance_type", path)?,
        column(&h, "interruption_upper_pct", path)?,
    );
    for rec in r.records() {
        let rec = rec.map_err(|e| err(path, e.to_string()))?;
        if rec.get(reg) == Some(region)
            && rec.get(os) == Some("Linux")
            && rec.get(ty) == Some(shape)
        {
            let upper: f64 = rec
                .get(upper)
                .and_then(|u| u.parse().ok())
                .ok_or_else(|| err(path, "bad interruption_upper_pct".into()))?;
            // Buckets are 5-point wide (<5%, 5-10%, …): take the midpoint.
            return Ok(((upper - 2.5).max(2.5)) / 100.0);
        }
    }
    Err(err(
        path,
        format!("no Spot Advisor row for {shape} in {region}"),
    ))
}

fn burst_fractions(path: &Path) -> Result<Vec<f64>, DataError> {
    let mut r = open(path)?;
    let h = r.headers().map_err(|e| err(path, e.to_string()))?.clone();
    let count = column(&h, "count", path)?;
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| err(path, e.to_string()))?;
        if let Some(c) = rec.get(count).and_then(|c| c.parse::<f64>().ok()) {
            // The trace's group held 64 instances.
            out.push((c / 64.0).clamp(0.0, 1.0));
        }
    }
    if out.is_empty() {
        return Err(err(path, "no preemption events".into()));
    }
    Ok(out)
}
