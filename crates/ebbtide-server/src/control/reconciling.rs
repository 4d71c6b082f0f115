//! The reconcile shell: each provider's list is fetched off the loop and
//! compared with the engine by `crate::reconcile` (lost instances become
//! lost workers, orphans are terminated after a grace).

use super::*;

impl Control {
    /// Asks every provider for its instances and its offerings; the
    /// answers come back as messages, so a slow API never blocks the loop.
    pub(super) fn start_reconcile(&self) {
        for (name, provider) in &self.providers {
            let (name, provider, tx) = (name.clone(), provider.clone(), self.tx.clone());
            tokio::spawn(async move {
                let listed_at = now();
                let listed = provider.list().await;
                let reclaimed = match provider.reclaimed().await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(provider = provider.name(), error = %e, "cannot read reclamations; a vanished worker counts as lost");
                        Vec::new()
                    }
                };
                let hosts = provider.hosts().await;
                let _ = tx
                    .send(LoopMsg::Reconciled {
                        provider: name,
                        listed_at,
                        listed,
                        reclaimed,
                        hosts,
                    })
                    .await;
                match provider.offerings().await {
                    Ok(offerings) => {
                        for o in offerings.into_iter().filter(|o| o.available) {
                            let _ = tx
                                .send(LoopMsg::Event(Event::PriceUpdate {
                                    shape: o.shape,
                                    market: o.market,
                                    zone: o.zone,
                                    price: o.price,
                                }))
                                .await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(provider = provider.name(), error = %e, "cannot read offerings")
                    }
                }
            });
        }
    }

    pub(super) fn finish_reconcile(
        &mut self,
        provider: &str,
        listed_at: Timestamp,
        listed: Result<Vec<ebbtide_provider::InstanceInfo>, ebbtide_provider::ProviderError>,
        reclaimed: &[ebbtide_core::InstanceId],
    ) {
        let instances = match listed {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(provider, error = %e, "reconcile skipped: cannot list instances");
                return;
            }
        };
        let engine = &self.engine;
        self.launched_at
            .retain(|w, _| engine.worker_state(*w).is_some());
        let verdict = self.reconciler.pass(
            &self.engine,
            &crate::reconcile::Listing {
                provider,
                listed_at,
                instances: &instances,
                reclaimed,
            },
            &self.launched_at,
            self.now,
            self.server.orphan_grace,
        );
        for worker in verdict.reclaimed {
            tracing::warn!(
                provider,
                worker = worker.0,
                "reconcile: the provider reclaimed this worker's instance (spot preemption); requeuing its jobs and replacing it"
            );
            self.apply(Event::ReclamationNotice {
                worker,
                deadline: self.now,
            });
            self.apply(Event::WorkerLost { worker });
        }
        for worker in verdict.lost {
            tracing::warn!(
                provider,
                worker = worker.0,
                "reconcile: the provider no longer runs this worker; declaring it lost"
            );
            self.apply(Event::WorkerLost { worker });
        }
        if !verdict.orphans.is_empty()
            && let Some(p) = self.providers.get(provider).cloned()
        {
            tracing::warn!(provider, count = verdict.orphans.len(), instances = ?verdict.orphans.iter().map(|i| i.0.as_str()).collect::<Vec<_>>(), "reconcile: terminating instances no worker owns");
            let orphans = verdict.orphans;
            tokio::spawn(async move {
                if let Err(e) = p.terminate(&orphans).await {
                    tracing::error!(error = %e, "could not terminate orphaned instances");
                }
            });
        }
    }
}
