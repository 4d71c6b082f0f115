//! The fake's state: instances per zone, operations, faults, and call
//! counts. Time is read when a resource is read: an operation is `PENDING`,
//! then `RUNNING`, then `DONE` by how long ago it was accepted, an instance
//! `PROVISIONING`, `STAGING`, then `RUNNING`, and a deleted instance is
//! `STOPPING` until its delete operation is done and then gone.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How fast operations progress and how long `wait` blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// From accepted to `RUNNING`.
    pub running_after: Duration,
    /// From accepted to `DONE`.
    pub done_after: Duration,
    /// The longest a `wait` call blocks before it answers with the
    /// operation as it is (Google's is about two minutes, and it may
    /// answer sooner).
    pub wait_at_most: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            running_after: Duration::from_millis(50),
            done_after: Duration::from_millis(300),
            wait_at_most: Duration::from_millis(120),
        }
    }
}

/// Spot or standard, as the fake keeps capacity apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provisioning {
    /// `SPOT`.
    Spot,
    /// `STANDARD`.
    Standard,
}

/// A failure injected before the request is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFault {
    /// Only this method (`bulkInsert`, `aggregatedList`, `delete`, …), or
    /// any.
    pub method: Option<&'static str>,
    /// The HTTP status.
    pub status: u16,
    /// The `errors[].reason` (`rateLimitExceeded`, `backendError`).
    pub reason: String,
}

#[derive(Debug, Clone)]
pub(crate) struct FakeInstance {
    pub id: u64,
    pub name: String,
    pub zone: String,
    pub machine_type: String,
    pub labels: BTreeMap<String, String>,
    pub metadata: Vec<(String, String)>,
    pub scheduling: Value,
    pub created: Instant,
    /// Set when a delete (or a preemption) was accepted: gone at this time.
    pub deleting_at: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    Region(String),
    Zone(String),
}

#[derive(Debug, Clone)]
pub(crate) struct FakeOperation {
    pub id: u64,
    pub name: String,
    pub scope: Scope,
    pub operation_type: String,
    pub target_link: String,
    pub accepted: Instant,
    pub errors: Vec<Value>,
    pub per_location: Option<Value>,
}

/// Everything the fake holds.
#[derive(Debug)]
pub struct World {
    pub(crate) project: String,
    pub(crate) region: String,
    pub(crate) zones: Vec<String>,
    pub(crate) timing: Timing,
    pub(crate) instances: BTreeMap<(String, String), FakeInstance>,
    pub(crate) operations: HashMap<String, FakeOperation>,
    pub(crate) request_ids: HashMap<String, String>,
    /// Instances a zone can still take per market; absent: unlimited.
    pub(crate) capacity: HashMap<(String, Provisioning), u32>,
    /// Instances the region may hold at once; absent: unlimited.
    pub(crate) quota: Option<u32>,
    pub(crate) call_faults: Vec<CallFault>,
    /// Codes the next operations finish with, one each.
    pub(crate) operation_faults: Vec<String>,
    pub(crate) calls: BTreeMap<&'static str, u64>,
    /// Access tokens the token endpoint issued; once one is issued, every
    /// API call must carry one of them.
    pub(crate) access_tokens: Vec<String>,
    next_id: u64,
}

impl World {
    pub(crate) fn new(project: &str, region: &str, zones: &[&str]) -> World {
        World {
            project: project.into(),
            region: region.into(),
            zones: zones.iter().map(|z| z.to_string()).collect(),
            timing: Timing::default(),
            instances: BTreeMap::new(),
            operations: HashMap::new(),
            request_ids: HashMap::new(),
            capacity: HashMap::new(),
            quota: None,
            call_faults: Vec::new(),
            operation_faults: Vec::new(),
            calls: BTreeMap::new(),
            access_tokens: Vec::new(),
            // Compute Engine ids are large decimal numbers; start where
            // they no longer fit in 32 bits or an f64's exact range, so a
            // client that parses them as either is caught.
            next_id: 9_007_199_254_740_993,
        }
    }

    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) fn base(&self) -> String {
        format!(
            "https://www.googleapis.com/compute/v1/projects/{}",
            self.project
        )
    }

    /// Counts a call and hands out the first fault that applies to it.
    pub(crate) fn call(&mut self, method: &'static str) -> Option<CallFault> {
        *self.calls.entry(method).or_default() += 1;
        let at = self
            .call_faults
            .iter()
            .position(|f| f.method.is_none_or(|m| m == method))?;
        Some(self.call_faults.remove(at))
    }

    /// Drops instances whose deletion is done.
    pub(crate) fn purge(&mut self, now: Instant) {
        self.instances
            .retain(|_, i| i.deleting_at.is_none_or(|at| now < at));
    }

    pub(crate) fn alive(&self) -> usize {
        self.instances
            .values()
            .filter(|i| i.deleting_at.is_none())
            .count()
    }

    pub(crate) fn instance_status(&self, i: &FakeInstance, now: Instant) -> &'static str {
        if i.deleting_at.is_some() {
            return "STOPPING";
        }
        let age = now.saturating_duration_since(i.created);
        if age < self.timing.running_after {
            "PROVISIONING"
        } else if age < self.timing.done_after {
            "STAGING"
        } else {
            "RUNNING"
        }
    }

    pub(crate) fn instance_json(&self, i: &FakeInstance, now: Instant) -> Value {
        let zone_url = format!("{}/zones/{}", self.base(), i.zone);
        json!({
            "kind": "compute#instance",
            "id": i.id.to_string(),
            "name": i.name,
            "zone": zone_url,
            "machineType": format!("{zone_url}/machineTypes/{}", i.machine_type),
            "status": self.instance_status(i, now),
            "labels": i.labels,
            "metadata": {
                "kind": "compute#metadata",
                "items": i.metadata.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
            },
            "scheduling": i.scheduling,
            "selfLink": format!("{zone_url}/instances/{}", i.name),
        })
    }

    pub(crate) fn operation_json(&self, op: &FakeOperation, now: Instant) -> Value {
        let age = now.saturating_duration_since(op.accepted);
        let (status, progress) = if age >= self.timing.done_after {
            ("DONE", 100)
        } else if age >= self.timing.running_after {
            ("RUNNING", 50)
        } else {
            ("PENDING", 0)
        };
        let (scope_key, scope_url, kind_path) = match &op.scope {
            Scope::Region(r) => ("region", format!("{}/regions/{r}", self.base()), "regions"),
            Scope::Zone(z) => ("zone", format!("{}/zones/{z}", self.base()), "zones"),
        };
        let mut v = json!({
            "kind": "compute#operation",
            "id": op.id.to_string(),
            "name": op.name,
            "operationType": op.operation_type,
            "targetLink": op.target_link,
            "status": status,
            "progress": progress,
            scope_key: scope_url,
            "selfLink": format!("{}/{kind_path}/{}/operations/{}", self.base(), match &op.scope { Scope::Region(r) => r, Scope::Zone(z) => z }, op.name),
        });
        if status == "DONE" {
            if !op.errors.is_empty() {
                v["error"] = json!({"errors": op.errors});
                v["httpErrorStatusCode"] = json!(400);
            }
            if let Some(p) = &op.per_location {
                v["instancesBulkInsertOperationMetadata"] = json!({"perLocationStatus": p});
            }
        }
        v
    }

    pub(crate) fn new_operation(
        &mut self,
        scope: Scope,
        operation_type: &str,
        target_link: String,
        errors: Vec<Value>,
        per_location: Option<Value>,
        now: Instant,
    ) -> String {
        let id = self.next_id();
        let name = format!("operation-{id}");
        self.operations.insert(
            name.clone(),
            FakeOperation {
                id,
                name: name.clone(),
                scope,
                operation_type: operation_type.into(),
                target_link,
                accepted: now,
                errors,
                per_location,
            },
        );
        name
    }
}
