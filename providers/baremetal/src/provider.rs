//! The bare-metal provider: workers are agent processes on owned hosts,
//! started, listed and stopped over SSH.
//!
//! A host has a number of slots (workers it runs at once). A launch fills
//! free slots, least-loaded host first, one SSH connection per host per
//! launch; a host that cannot be reached is skipped and the batch goes to
//! the others (what does not fit is left unlaunched: the engine sees it as
//! failed and plans again). The provider's instance id is `HOST/wID`.
//! `list` asks every host; a host that does not answer contributes
//! nothing, so the reconciler declares its workers lost and their jobs
//! requeue, and when it answers again its leftover agents are unknown
//! instances the reconciler stops. If no host answers, `list` fails
//! rather than declare the whole fleet lost on a blip of the scheduler's
//! own network.
//!
//! Health is judged on every `list` (each reconcile pass) and every
//! launch: a host that does not answer, whose work root has less free disk
//! than `min_free_disk_mib`, or on which an agent did not start is
//! quarantined — it gets no new workers — and is re-admitted by the first
//! `list` it passes.
//!
//! A host with power control that has run none of our workers for
//! `power_off_after` is switched off by the `list` that notices, and is
//! not asked again while off. A launch that finds no free slot on a host
//! that is on switches sleeping ones on, waits until they answer over SSH
//! (up to `boot_wait`) and starts its workers there; the launch returns
//! after that boot, so the pool's boot estimate (launch request to
//! registration) learns what a cold host costs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebbtide_core::{InstanceId, Market, PricePerHour, WorkerId};
use ebbtide_provider::{
    HostReport, HostState, InstanceInfo, LaunchRequest, LaunchedInstance, Provider, ProviderError,
};
use tokio::sync::Mutex;

use crate::power::{PowerControl, PowerError, PowerState};
use crate::power_book::{Power, PowerBook};
use crate::remote::{self, Start};
use crate::slots::SlotBook;
use crate::ssh::{SshSession, SshTarget};

/// A host's power control and how it is used.
#[derive(Clone)]
pub struct HostPower {
    /// The driver.
    pub control: Arc<dyn PowerControl>,
    /// Run over SSH to shut the host down where the driver cannot switch
    /// it off (Wake-on-LAN).
    pub off_command: String,
}

impl std::fmt::Debug for HostPower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostPower")
            .field("driver", &self.control.driver())
            .field("off_command", &self.off_command)
            .finish()
    }
}

/// One owned host.
#[derive(Debug, Clone)]
pub struct Host {
    /// How to reach it (its name is the inventory name).
    pub target: SshTarget,
    /// Where workers' directories go on it.
    pub work_root: String,
    /// Workers it runs at once.
    pub slots: u32,
    /// What it has, for matching pools' shapes.
    pub cpu_millis: u32,
    /// Memory, MiB.
    pub memory_mib: u32,
    /// Labels (a pool's hosts are chosen by name in its launch settings).
    pub labels: Vec<String>,
    /// Its amortized price per hour: owned capacity is not free.
    pub price: PricePerHour,
    /// Its power control, if it has one.
    pub power: Option<HostPower>,
}

/// Settings of the bare-metal provider.
#[derive(Debug, Clone)]
pub struct BaremetalConfig {
    /// Cluster id (in every worker's directory name).
    pub cluster: String,
    /// The inventory.
    pub hosts: Vec<Host>,
    /// The hosts each pool may use, by name.
    pub pools: HashMap<String, Vec<String>>,
    /// The agent binary on the hosts.
    pub agent_path: String,
    /// The unprivileged user jobs run as (the agent then runs as root and
    /// can wipe whatever a job left), if any.
    pub job_user: Option<String>,
    /// Connecting to a host, handshake and authentication included.
    pub connect_timeout: Duration,
    /// One command on a host.
    pub command_timeout: Duration,
    /// Free disk under a host's work root below which it is quarantined.
    pub min_free_disk_mib: u64,
    /// A power-controlled host idle this long is switched off.
    pub power_off_after: Duration,
    /// How long a host switched on may take to answer over SSH.
    pub boot_wait: Duration,
}

/// Workers on owned hosts.
pub struct BaremetalProvider {
    config: BaremetalConfig,
    /// Which workers hold (or are being started into) each host's slots.
    slots: Mutex<SlotBook>,
    /// Hosts taking no new workers, and why.
    quarantined: Mutex<HashMap<String, String>>,
    /// Power of the power-controlled hosts.
    power: Mutex<PowerBook>,
}

/// `HOST/wID`.
pub fn instance_id(host: &str, worker: WorkerId) -> InstanceId {
    InstanceId(format!("{host}/w{}", worker.0))
}

/// The host and worker of an instance id.
pub fn split_instance_id(id: &InstanceId) -> Option<(&str, WorkerId)> {
    let (host, w) = id.0.rsplit_once("/w")?;
    Some((host, WorkerId(w.parse().ok()?)))
}

fn transient(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Transient(e.to_string())
}

impl BaremetalProvider {
    /// A provider over `config`'s inventory.
    pub fn new(config: BaremetalConfig) -> BaremetalProvider {
        BaremetalProvider {
            config,
            slots: Mutex::new(SlotBook::default()),
            quarantined: Mutex::new(HashMap::new()),
            power: Mutex::new(PowerBook::default()),
        }
    }

    /// The hosts in quarantine and why, in inventory order (what
    /// [`Provider::hosts`] reports, narrowed).
    pub async fn quarantined(&self) -> Vec<(String, String)> {
        self.hosts()
            .await
            .into_iter()
            .filter(|h| h.state == HostState::Quarantined)
            .map(|h| (h.name, h.reason.unwrap_or_default()))
            .collect()
    }

    async fn quarantine(&self, host: &str, why: String) {
        let mut q = self.quarantined.lock().await;
        if q.get(host) != Some(&why) {
            tracing::warn!(host, reason = %why, "host quarantined: it gets no new workers until it passes a check");
        }
        q.insert(host.to_string(), why);
    }

    async fn readmit(&self, host: &str) {
        if let Some(why) = self.quarantined.lock().await.remove(host) {
            tracing::info!(host, was = %why, "host passed its check; re-admitted");
        }
    }

    fn host(&self, name: &str) -> Option<&Host> {
        self.config.hosts.iter().find(|h| h.target.name == name)
    }

    async fn session(&self, host: &Host) -> Result<SshSession, ProviderError> {
        SshSession::connect(&host.target, self.config.connect_timeout)
            .await
            .map_err(transient)
    }

    /// Switches a sleeping host on (unless a launch already did) and waits
    /// until it answers over SSH, up to `boot_wait`.
    async fn wake(&self, host: &Host, power: &HostPower) -> Result<(), ProviderError> {
        let name = &host.target.name;
        let first = self.power.lock().await.wake(name, Instant::now());
        if first {
            tracing::info!(host = %name, driver = power.control.driver(), "switching host on: a launch needs its slots");
            if let Err(e) = power.control.power_on().await {
                self.power.lock().await.wake_failed(name);
                self.quarantine(name, format!("power on failed: {e}")).await;
                return Err(transient(format!("host {name}: power on failed: {e}")));
            }
        }
        let start = Instant::now();
        loop {
            let attempt = self.config.connect_timeout.min(Duration::from_secs(5));
            if let Ok(session) = SshSession::connect(&host.target, attempt).await {
                session.close().await;
                break;
            }
            if start.elapsed() >= self.config.boot_wait {
                self.power.lock().await.wake_failed(name);
                let why = format!(
                    "switched on but not answering over SSH after {:?}",
                    self.config.boot_wait
                );
                self.quarantine(name, why.clone()).await;
                return Err(transient(format!("host {name}: {why}")));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if let Some(boot) = self.power.lock().await.woke(name, Instant::now()) {
            tracing::info!(host = %name, boot_s = boot.as_secs_f64(), "host is up");
        }
        Ok(())
    }

    /// Switches an idle host off: through its driver, or over SSH with its
    /// `off_command` where the driver cannot.
    async fn switch_off(&self, host: &Host, power: &HostPower) {
        let name = &host.target.name;
        let result = match power.control.power_off().await {
            Err(PowerError::Unsupported(_)) => match self.session(host).await {
                Ok(session) => {
                    // The host may go before it answers: the command's
                    // outcome is only that it is no longer reachable.
                    let _ = session
                        .exec(&power.off_command, None, self.config.command_timeout)
                        .await;
                    session.close().await;
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            },
            other => other.map_err(|e| e.to_string()),
        };
        match result {
            Ok(()) => {
                let why = format!("idle for {:?}", self.config.power_off_after);
                tracing::info!(host = %name, driver = power.control.driver(), reason = %why, "host switched off");
                self.power.lock().await.switched_off(name, why);
            }
            Err(e) => {
                tracing::warn!(host = %name, error = %e, "cannot switch the idle host off; it stays on");
            }
        }
    }

    /// Whether `list` should reach the host: not while it is off or
    /// booting; on the first pass, only if its driver does not say off.
    async fn awake_for_list(&self, host: &Host, power: &HostPower) -> bool {
        let name = &host.target.name;
        let state = self.power.lock().await.state(name).clone();
        match state {
            Power::Off { .. } | Power::Waking { .. } => false,
            Power::On { .. } => true,
            Power::Unknown => match power.control.state().await {
                Ok(Some(PowerState::Off)) => {
                    tracing::info!(host = %name, driver = power.control.driver(), "host is switched off; it is woken when a launch needs it");
                    self.power
                        .lock()
                        .await
                        .switched_off(name, "found switched off".into());
                    false
                }
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(host = %name, error = %e, "cannot read the host's power state; asking it over SSH");
                    true
                }
            },
        }
    }

    /// Where each of `workers` goes: free slots, least-loaded host first,
    /// reserved until their start succeeds or fails.
    async fn place(&self, hosts: &[&Host], workers: &[WorkerId]) -> Vec<(String, Vec<WorkerId>)> {
        let hosts: Vec<(String, u32)> = hosts
            .iter()
            .map(|h| (h.target.name.clone(), h.slots))
            .collect();
        self.slots.lock().await.reserve(&hosts, workers)
    }

    /// Places `workers` on sleeping hosts, wakes those chosen (in
    /// parallel) and starts the workers on each that came up.
    async fn launch_on_sleeping(
        &self,
        sleeping: &[&Host],
        request: &LaunchRequest,
        workers: &[WorkerId],
    ) -> Result<Vec<LaunchedInstance>, ProviderError> {
        // Reserved now, so a launch beside this one does not count these
        // slots free while the hosts boot.
        let plan = self.place(sleeping, workers).await;
        let started = futures_util::future::join_all(plan.iter().map(|(name, ws)| async move {
            let host = self.host(name)?;
            let power = host.power.as_ref()?;
            Some(match self.wake(host, power).await {
                Ok(()) => self.start_on(host, request, ws).await,
                Err(e) => {
                    let mut slots = self.slots.lock().await;
                    for w in ws {
                        slots.release(name, *w);
                    }
                    Err(e)
                }
            })
        }))
        .await;
        let mut launched = Vec::new();
        let mut last_error = None;
        for r in started.into_iter().flatten() {
            match r {
                Ok(l) => launched.extend(l),
                Err(e) => last_error = Some(e),
            }
        }
        match (launched.is_empty(), last_error) {
            (true, Some(e)) => Err(e),
            _ => Ok(launched),
        }
    }

    /// Starts the reserved `workers` on `host`; every reservation not
    /// started is released, whatever happened.
    async fn start_on(
        &self,
        host: &Host,
        request: &LaunchRequest,
        workers: &[WorkerId],
    ) -> Result<Vec<LaunchedInstance>, ProviderError> {
        let result = self.start_each(host, request, workers).await;
        let mut slots = self.slots.lock().await;
        for w in workers {
            if !result
                .as_ref()
                .is_ok_and(|l| l.iter().any(|l| l.worker == *w))
            {
                slots.release(&host.target.name, *w);
            }
        }
        result
    }

    async fn start_each(
        &self,
        host: &Host,
        request: &LaunchRequest,
        workers: &[WorkerId],
    ) -> Result<Vec<LaunchedInstance>, ProviderError> {
        self.power.lock().await.busy(&host.target.name);
        let session = self.session(host).await?;
        let mut launched = Vec::new();
        for w in workers {
            let Some(launch) = request.workers.iter().find(|l| l.worker == *w) else {
                continue;
            };
            let script = Start {
                work_root: &host.work_root,
                cluster: &self.config.cluster,
                pool: &request.pool,
                worker: *w,
                agent: &self.config.agent_path,
                job_user: self.config.job_user.as_deref(),
                scheduler: &request.scheduler_url,
            }
            .script();
            let out = session
                .exec(
                    &script,
                    Some(launch.bootstrap_token.expose().as_bytes()),
                    self.config.command_timeout,
                )
                .await
                .map_err(transient)?;
            if !out.success() {
                let why = format!(
                    "the agent did not start (exit {:?}): {}",
                    out.exit_status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                self.quarantine(&host.target.name, why).await;
                break;
            }
            self.slots.lock().await.started(&host.target.name, *w);
            launched.push(LaunchedInstance {
                worker: *w,
                instance: instance_id(&host.target.name, *w),
                zone: None,
            });
        }
        session.close().await;
        Ok(launched)
    }
}

#[async_trait::async_trait]
impl Provider for BaremetalProvider {
    fn name(&self) -> &str {
        "baremetal"
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Vec<LaunchedInstance>, ProviderError> {
        let names = self.config.pools.get(&request.pool).ok_or_else(|| {
            ProviderError::Permanent(format!(
                "pool {:?} has no [providers.baremetal.pools.{}] launch settings",
                request.pool, request.pool
            ))
        })?;
        let all: Vec<&Host> = names.iter().filter_map(|n| self.host(n)).collect();
        let quarantined = self.quarantined.lock().await.clone();
        let healthy: Vec<&Host> = all
            .iter()
            .copied()
            .filter(|h| !quarantined.contains_key(&h.target.name))
            .collect();
        let (hosts, sleeping): (Vec<&Host>, Vec<&Host>) = {
            let book = self.power.lock().await;
            healthy
                .iter()
                .copied()
                .partition(|h| !book.asleep(&h.target.name))
        };
        let workers: Vec<WorkerId> = request.workers.iter().map(|w| w.worker).collect();
        let mut launched = Vec::new();
        let mut last_error = None;
        let mut skip: Vec<String> = Vec::new();
        // A host that fails is left out and its share placed again on the others.
        for _ in 0..=hosts.len() {
            let remaining: Vec<WorkerId> = workers
                .iter()
                .copied()
                .filter(|w| !launched.iter().any(|l: &LaunchedInstance| l.worker == *w))
                .collect();
            // A host quarantined during this launch (an agent that did not
            // start) gets none of the rest.
            let resting = self.quarantined.lock().await.clone();
            let usable: Vec<&Host> = hosts
                .iter()
                .copied()
                .filter(|h| !skip.contains(&h.target.name) && !resting.contains_key(&h.target.name))
                .collect();
            if remaining.is_empty() || usable.is_empty() {
                break;
            }
            let plan = self.place(&usable, &remaining).await;
            if plan.is_empty() {
                break;
            }
            for (name, ws) in plan {
                let Some(host) = self.host(&name) else {
                    continue;
                };
                match self.start_on(host, &request, &ws).await {
                    Ok(more) => launched.extend(more),
                    Err(e) => {
                        tracing::warn!(host = %name, error = %e, "cannot start workers on this host; trying the others");
                        skip.push(name);
                        last_error = Some(e);
                    }
                }
            }
        }
        let remaining: Vec<WorkerId> = workers
            .iter()
            .copied()
            .filter(|w| !launched.iter().any(|l: &LaunchedInstance| l.worker == *w))
            .collect();
        if !remaining.is_empty() && !sleeping.is_empty() {
            match self
                .launch_on_sleeping(&sleeping, &request, &remaining)
                .await
            {
                Ok(more) => launched.extend(more),
                Err(e) => last_error = Some(e),
            }
        }
        if launched.is_empty() {
            return Err(last_error.unwrap_or_else(|| {
                let slots: u32 = hosts.iter().map(|h| h.slots).sum();
                let resting = all.len() - healthy.len();
                ProviderError::Capacity(format!(
                    "every slot of pool {}'s {} healthy host(s) is taken ({slots} slots){}",
                    request.pool,
                    hosts.len(),
                    if resting > 0 {
                        format!("; {resting} host(s) quarantined")
                    } else {
                        String::new()
                    }
                ))
            }));
        }
        Ok(launched)
    }

    async fn terminate(&self, instances: &[InstanceId]) -> Result<(), ProviderError> {
        let mut by_host: HashMap<&str, Vec<WorkerId>> = HashMap::new();
        for id in instances {
            if let Some((host, w)) = split_instance_id(id)
                && self.host(host).is_some()
            {
                by_host.entry(host).or_default().push(w);
            }
        }
        for (name, workers) in by_host {
            let Some(host) = self.host(name) else {
                continue;
            };
            let session = self.session(host).await?;
            for w in &workers {
                let out = session
                    .exec(
                        &remote::stop_script(&host.work_root, &self.config.cluster, *w),
                        None,
                        self.config.command_timeout,
                    )
                    .await
                    .map_err(transient)?;
                if !out.success() {
                    return Err(transient(format!(
                        "host {name}: stopping worker {} failed: {}",
                        w.0,
                        String::from_utf8_lossy(&out.stderr)
                    )));
                }
                self.slots.lock().await.stopped(name, *w);
            }
            session.close().await;
        }
        Ok(())
    }

    async fn hosts(&self) -> Vec<HostReport> {
        let quarantined = self.quarantined.lock().await.clone();
        let book = self.power.lock().await;
        let slots = self.slots.lock().await;
        self.config
            .hosts
            .iter()
            .map(|h| {
                let name = &h.target.name;
                let (state, reason) = match (quarantined.get(name), book.state(name)) {
                    (Some(why), _) => (HostState::Quarantined, Some(why.clone())),
                    (None, Power::Off { why }) => (HostState::PoweredOff, Some(why.clone())),
                    (None, Power::Waking { .. }) => (HostState::PoweringOn, None),
                    (None, _) => (HostState::Ready, None),
                };
                HostReport {
                    name: name.clone(),
                    state,
                    reason,
                    workers: slots.used(name),
                    slots: h.slots,
                    last_boot: book.last_boot(name),
                }
            })
            .collect()
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, ProviderError> {
        let mut out = Vec::new();
        let mut answered = 0;
        let mut last_error = None;
        for host in &self.config.hosts {
            if let Some(power) = &host.power
                && !self.awake_for_list(host, power).await
            {
                continue;
            }
            let listed = async {
                let session = self.session(host).await?;
                let o = session
                    .exec(
                        &remote::list_script(&host.work_root, &self.config.cluster),
                        None,
                        self.config.command_timeout,
                    )
                    .await
                    .map_err(transient)?;
                session.close().await;
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                Ok::<_, ProviderError>((remote::parse_list(&text), remote::parse_free_kib(&text)))
            }
            .await;
            match listed {
                Ok((workers, free_kib)) => {
                    answered += 1;
                    let free_mib = free_kib.map(|k| k / 1024);
                    match free_mib {
                        Some(free) if free >= self.config.min_free_disk_mib => {
                            self.readmit(&host.target.name).await
                        }
                        Some(free) => {
                            self.quarantine(
                                &host.target.name,
                                format!(
                                    "disk: {free} MiB free under {}, below {} MiB",
                                    host.work_root, self.config.min_free_disk_mib
                                ),
                            )
                            .await
                        }
                        None => {
                            self.quarantine(
                                &host.target.name,
                                format!(
                                    "disk: cannot read the free space under {}",
                                    host.work_root
                                ),
                            )
                            .await
                        }
                    }
                    self.slots.lock().await.listed(
                        &host.target.name,
                        workers.iter().map(|l| l.worker).collect(),
                    );
                    if let Some(power) = &host.power {
                        let idle_long = self.power.lock().await.observe_on(
                            &host.target.name,
                            workers.len(),
                            Instant::now(),
                            self.config.power_off_after,
                        );
                        let healthy = !self
                            .quarantined
                            .lock()
                            .await
                            .contains_key(&host.target.name);
                        if idle_long && healthy {
                            self.switch_off(host, power).await;
                        }
                    }
                    out.extend(workers.into_iter().map(|l| InstanceInfo {
                        instance: instance_id(&host.target.name, l.worker),
                        worker: l.worker,
                        pool: l.pool,
                        market: Market::OnDemand,
                        zone: None,
                        running: l.running,
                    }));
                }
                Err(e)
                    if host.power.is_some()
                        && self.power.lock().await.state(&host.target.name) == &Power::Unknown =>
                {
                    // Wake-on-LAN cannot say whether a host is on; one
                    // that never answered since we started is taken as off.
                    tracing::info!(host = %host.target.name, error = %e, "host with power control does not answer; taking it as switched off");
                    self.power
                        .lock()
                        .await
                        .switched_off(&host.target.name, format!("found not answering: {e}"));
                    answered += 1;
                }
                Err(e) => {
                    tracing::warn!(host = %host.target.name, error = %e, "host did not answer; its workers are not listed");
                    self.quarantine(&host.target.name, format!("unreachable: {e}"))
                        .await;
                    last_error = Some(e);
                }
            }
        }
        match last_error {
            Some(e) if answered == 0 && !self.config.hosts.is_empty() => Err(e),
            _ => Ok(out),
        }
    }
}
