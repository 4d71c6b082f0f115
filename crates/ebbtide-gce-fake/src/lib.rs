//! # ebbtide-gce-fake
//!
//! A local fake of the Compute Engine REST API, for the GCE provider's
//! tests: the real client library talks to it over HTTP (custom endpoint,
//! anonymous credentials) as it would to `compute.googleapis.com`.
//!
//! Written from Google's published v1 reference for the calls the
//! provider makes — `regionInstances.bulkInsert`, `instances.insert`,
//! `get`, `delete` and `aggregatedList` (with a label filter and paging),
//! `regionOperations` and `zoneOperations` `get`, `wait` and `list` — with
//! decimal-string ids and operations that go `PENDING` → `RUNNING` →
//! `DONE`. Faults are injected per zone and market (stockouts), per
//! region (quota), per call (429, 403 `rateLimitExceeded`, 5xx) and per
//! operation (`DONE` with errors), and a running spot instance can be
//! preempted. It is not Compute Engine: it keeps no disks or networks and
//! refuses, with a 400, any filter syntax it does not understand rather
//! than guess.

mod filter;
mod routes;
mod world;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

pub use filter::Filter;
pub use world::{CallFault, Provisioning, Timing};

use crate::world::{Scope, World};

/// The fake could not start.
#[derive(Debug, thiserror::Error)]
#[error("the fake Compute Engine API could not listen on loopback: {0}")]
pub struct StartError(#[from] std::io::Error);

/// A running fake; stops when dropped.
pub struct FakeCompute {
    addr: SocketAddr,
    world: Arc<Mutex<World>>,
    server: JoinHandle<()>,
}

impl Drop for FakeCompute {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeCompute {
    /// A fake of `project` with one region and its zones, on a loopback
    /// port of its own.
    pub async fn start(
        project: &str,
        region: &str,
        zones: &[&str],
    ) -> Result<FakeCompute, StartError> {
        let world = Arc::new(Mutex::new(World::new(project, region, zones)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = routes::router(world.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake Compute Engine API stopped: {e}");
            }
        });
        Ok(FakeCompute {
            addr,
            world,
            server,
        })
    }

    /// The endpoint to give the client (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How fast operations progress and how long `wait` blocks.
    pub async fn set_timing(&self, timing: Timing) {
        self.world.lock().await.timing = timing;
    }

    /// How many more instances `zone` takes on `market` (`None`:
    /// unlimited; `Some(0)`: a stockout).
    pub async fn set_capacity(&self, zone: &str, market: Provisioning, instances: Option<u32>) {
        let mut w = self.world.lock().await;
        match instances {
            Some(n) => w.capacity.insert((zone.to_string(), market), n),
            None => w.capacity.remove(&(zone.to_string(), market)),
        };
    }

    /// How many instances the region may hold at once (`None`: no quota).
    pub async fn set_quota(&self, instances: Option<u32>) {
        self.world.lock().await.quota = instances;
    }

    /// Makes the next call to `method` (`bulkInsert`, `aggregatedList`,
    /// `delete`, `insert`, `get`, `regionOperations.wait`, …; `None`: any)
    /// fail with `status` and `reason`, `times` times.
    pub async fn fail_calls(
        &self,
        method: Option<&'static str>,
        status: u16,
        reason: &str,
        times: usize,
    ) {
        let mut w = self.world.lock().await;
        for _ in 0..times {
            w.call_faults.push(CallFault {
                method,
                status,
                reason: reason.to_string(),
            });
        }
    }

    /// Makes the next bulk insert's operation finish `DONE` with this
    /// error code (and create nothing).
    pub async fn fail_next_operation(&self, code: &str) {
        self.world
            .lock()
            .await
            .operation_faults
            .push(code.to_string());
    }

    /// Preempts a spot instance as Compute Engine does with
    /// `instanceTerminationAction = DELETE`: it stops, then is deleted, and
    /// a `compute.instances.preempted` operation records it. `false` if no
    /// such live spot instance.
    pub async fn preempt(&self, zone: &str, name: &str) -> bool {
        let mut w = self.world.lock().await;
        let now = Instant::now();
        let done_after = w.timing.done_after;
        let link = format!("{}/zones/{zone}/instances/{name}", w.base());
        let Some(i) = w.instances.get_mut(&(zone.to_string(), name.to_string())) else {
            return false;
        };
        let spot = i
            .scheduling
            .get("provisioningModel")
            .and_then(Value::as_str)
            == Some("SPOT");
        if !spot || i.deleting_at.is_some() {
            return false;
        }
        i.deleting_at = Some(now + done_after);
        let op = w.new_operation(
            Scope::Zone(zone.to_string()),
            "compute.instances.preempted",
            link,
            Vec::new(),
            None,
            now,
        );
        // The preemption happened before anyone asked: it is done already.
        if let Some(op) = w.operations.get_mut(&op) {
            op.accepted = now.checked_sub(done_after).unwrap_or(now);
        }
        true
    }

    /// Every instance the fake holds (deleted ones until their deletion is
    /// done), as the API would show them.
    pub async fn instances(&self) -> Vec<Value> {
        let mut w = self.world.lock().await;
        let now = Instant::now();
        w.purge(now);
        w.instances
            .values()
            .map(|i| w.instance_json(i, now))
            .collect()
    }

    /// One instance's metadata value (the startup script a booting
    /// stand-in reads).
    pub async fn metadata(&self, zone: &str, name: &str, key: &str) -> Option<String> {
        let w = self.world.lock().await;
        let i = w.instances.get(&(zone.to_string(), name.to_string()))?;
        i.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// The `authorized_user` credentials file (for
    /// `GOOGLE_APPLICATION_CREDENTIALS`) whose `token_uri` is this fake's
    /// token endpoint: a process given it authenticates as on Google.
    pub fn authorized_user_credentials(&self) -> String {
        json!({
            "type": "authorized_user",
            "client_id": "ebbtide-test.apps.googleusercontent.com",
            "client_secret": "fake-client-secret",
            "refresh_token": "fake-refresh-token",
            "token_uri": format!("{}/token", self.endpoint()),
        })
        .to_string()
    }

    /// How many calls each method got (faulted ones included).
    pub async fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.world.lock().await.calls.clone()
    }

    /// The numeric id of an instance (what its identity token carries).
    pub async fn instance_numeric_id(&self, zone: &str, name: &str) -> Option<u64> {
        let w = self.world.lock().await;
        w.instances
            .get(&(zone.to_string(), name.to_string()))
            .map(|i| i.id)
    }

    /// A summary for test failure messages.
    pub async fn describe(&self) -> Value {
        let w = self.world.lock().await;
        json!({
            "instances": w.instances.keys().map(|(z, n)| format!("{z}/{n}")).collect::<Vec<_>>(),
            "calls": w.calls,
        })
    }
}
