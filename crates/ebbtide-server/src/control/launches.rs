//! Launches and terminations: provider calls run as tasks and report back
//! as events; bootstrap tokens are issued and stored before a launch.

use super::*;

impl Control {
    /// Terminates every instance of every worker, provider by provider,
    /// and answers once the providers are done.
    pub(super) fn terminate_all(&mut self, reply: oneshot::Sender<usize>) {
        let mut by_provider: HashMap<String, Vec<ebbtide_core::InstanceId>> = HashMap::new();
        for w in self.engine.live_workers() {
            if let Some((pool, Some(instance))) = self.engine.worker_placement(w)
                && let Some(p) = self.engine.config().pools.get(pool.0 as usize)
            {
                by_provider
                    .entry(p.provider.clone())
                    .or_default()
                    .push(instance.clone());
            }
        }
        let calls: Vec<_> = by_provider
            .into_iter()
            .filter_map(|(name, instances)| Some((self.providers.get(&name)?.clone(), instances)))
            .collect();
        tokio::spawn(async move {
            let mut n = 0;
            for (provider, instances) in calls {
                match provider.terminate(&instances).await {
                    Ok(()) => n += instances.len(),
                    Err(e) => {
                        tracing::error!(provider = provider.name(), error = %e, "could not terminate workers at stop")
                    }
                }
            }
            let _ = reply.send(n);
        });
    }

    pub(super) fn provider_of(&self, pool: PoolId) -> Option<Arc<dyn Provider>> {
        let name = &self.engine.config().pools.get(pool.0 as usize)?.provider;
        self.providers.get(name).cloned()
    }

    pub(super) fn launch(
        &mut self,
        pool: PoolId,
        market: ebbtide_core::Market,
        workers: Vec<WorkerId>,
        zones: Vec<String>,
        why: ebbtide_core::MarketReason,
    ) {
        let Some(provider) = self.provider_of(pool) else {
            return;
        };
        let summary = format!(
            "launching {} {} instance(s){}: {why}",
            workers.len(),
            market.name(),
            if zones.is_empty() {
                String::new()
            } else {
                format!(" in {}", zones.join(", "))
            }
        );
        self.remember(pool, "launch", summary);
        let cfg = &self.engine.config().pools[pool.0 as usize];
        crate::telemetry::launched(
            &cfg.provider,
            &cfg.name,
            market.name(),
            why.kind(),
            workers.len() as u64,
        );
        tracing::info!(
            pool = %cfg.name,
            market = market.name(),
            count = workers.len(),
            zones = ?zones,
            why = why.kind(),
            reason = %why,
            "launching"
        );
        let requested = self.now;
        for w in &workers {
            self.launch_requested.insert(*w, requested);
        }
        let launches: Vec<WorkerLaunch> = workers
            .iter()
            .map(|w| WorkerLaunch {
                worker: *w,
                bootstrap_token: Secret::new(random_token()),
            })
            .collect();
        let request = LaunchRequest {
            cluster: self.server.cluster.clone(),
            pool: cfg.name.clone(),
            shape: cfg.shape.name.clone(),
            cpu_millis: cfg.shape.cpu_millis,
            memory_mib: cfg.shape.memory_mib,
            market,
            zones,
            scheduler_url: self.server.public_grpc_url.clone(),
            workers: launches,
        };
        let issued = self.now.as_millis();
        let expires = issued + self.server.bootstrap_token_ttl.as_millis() as u64;
        let (store, tx) = (self.store.clone(), self.tx.clone());
        let in_flight = InFlight::start(&self.launches_in_flight);
        tokio::spawn(async move {
            // Dropped last, once every outcome of the call is on its way to
            // the loop.
            let _in_flight = in_flight;
            for w in &request.workers {
                if let Err(e) = store
                    .issue_token(
                        w.bootstrap_token.expose(),
                        w.worker,
                        &request.pool,
                        issued,
                        expires,
                    )
                    .await
                {
                    tracing::error!(error = %e, "cannot record bootstrap token");
                    let _ = tx
                        .send(LoopMsg::Event(Event::LaunchFailed {
                            workers,
                            reason: LaunchFailure::NotIssued,
                        }))
                        .await;
                    return;
                }
            }
            match provider.launch(request).await {
                Ok(launched) => {
                    let done: Vec<WorkerId> = launched.iter().map(|l| l.worker).collect();
                    for l in launched {
                        let _ = tx
                            .send(LoopMsg::Event(Event::InstanceLaunched {
                                worker: l.worker,
                                instance: l.instance,
                                zone: l.zone,
                            }))
                            .await;
                    }
                    let missing: Vec<WorkerId> =
                        workers.into_iter().filter(|w| !done.contains(w)).collect();
                    if !missing.is_empty() {
                        let _ = tx
                            .send(LoopMsg::Event(Event::LaunchFailed {
                                workers: missing,
                                reason: LaunchFailure::Incomplete,
                            }))
                            .await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "launch failed");
                    let _ = tx
                        .send(LoopMsg::Event(Event::LaunchFailed {
                            workers,
                            reason: e.as_launch_failure(),
                        }))
                        .await;
                }
            }
        });
    }
}

/// One launch call out with a provider, counted while it lasts.
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    fn start(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}
