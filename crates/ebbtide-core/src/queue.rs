//! The job queue: FIFO inside a class, weighted fair between tenants.
//!
//! Jobs are kept in *cells*, one per (class, signature, tenant). Inside a
//! cell jobs are in submission order, which for one class is also deadline
//! order, so the planner counts jobs due before any instant with a binary
//! search instead of walking the queue. Between tenants, self-clocked fair
//! queuing (Golestani, 1994) orders jobs by a virtual finish tag fixed at
//! submission: a tenant of weight *w* advances its tags by `1/w` per job, so
//! under contention tenants are served in proportion to their weights, and a
//! tenant that was quiet cannot hoard credit (its tags start at the class's
//! current virtual time).

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use crate::ids::{ClassId, JobId, TenantId};
use crate::requirements::{DetHashMap, SignatureId};
use crate::time::Timestamp;

/// Tag units per job for a tenant of weight 1.
const TAG_SCALE: u64 = 1 << 20;

/// A queued job as the queue sees it: just what ordering needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueuedRef {
    pub submitted: Timestamp,
    pub seq: u64,
    pub tag: u64,
    pub job: JobId,
}

/// Index of a cell; stable for the life of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct CellId(pub u32);

#[derive(Debug, Clone)]
pub(crate) struct Cell {
    pub class: ClassId,
    pub sig: SignatureId,
    pub tenant: TenantId,
    pub jobs: VecDeque<QueuedRef>,
}

impl Cell {
    /// Jobs whose deadline (`submitted + target`) is at or before `cutoff`.
    pub fn due_by(&self, cutoff: Timestamp, target: Duration) -> usize {
        self.jobs
            .partition_point(|r| r.submitted + target <= cutoff)
    }
}

/// All queued jobs.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobQueue {
    cells: Vec<Cell>,
    index: DetHashMap<(ClassId, SignatureId, TenantId), CellId>,
    nonempty: BTreeSet<CellId>,
    /// Per class: the tag of the job most recently dispatched.
    virtual_time: Vec<u64>,
    /// Per (class, tenant): the last tag handed out.
    last_tag: DetHashMap<(ClassId, TenantId), u64>,
    len: usize,
}

impl JobQueue {
    pub fn new(classes: usize) -> Self {
        JobQueue {
            virtual_time: vec![0; classes],
            ..Default::default()
        }
    }

    /// Makes room for classes appended by a configuration reload.
    pub fn ensure_classes(&mut self, classes: usize) {
        if self.virtual_time.len() < classes {
            self.virtual_time.resize(classes, 0);
        }
    }

    /// Total queued jobs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The finish tag for a new job of `tenant` in `class`.
    pub fn next_tag(&mut self, class: ClassId, tenant: TenantId, weight: u32) -> u64 {
        let v = self.virtual_time[usize::from(class.0)];
        let last = self.last_tag.entry((class, tenant)).or_insert(0);
        let tag = (*last).max(v) + TAG_SCALE / u64::from(weight.max(1));
        *last = tag;
        tag
    }

    /// Records that a job with `tag` left the queue to run: the class's
    /// virtual clock follows the work actually served.
    pub fn served(&mut self, class: ClassId, tag: u64) {
        let v = &mut self.virtual_time[usize::from(class.0)];
        *v = (*v).max(tag);
    }

    fn cell_id(&mut self, class: ClassId, sig: SignatureId, tenant: TenantId) -> CellId {
        let cells = &mut self.cells;
        *self.index.entry((class, sig, tenant)).or_insert_with(|| {
            cells.push(Cell {
                class,
                sig,
                tenant,
                jobs: VecDeque::new(),
            });
            CellId(u32::try_from(cells.len() - 1).unwrap_or(u32::MAX))
        })
    }

    /// Enqueues in submission order (a requeued job goes back to its place).
    pub fn push(&mut self, class: ClassId, sig: SignatureId, tenant: TenantId, r: QueuedRef) {
        let id = self.cell_id(class, sig, tenant);
        let jobs = &mut self.cells[id.0 as usize].jobs;
        let key = (r.submitted, r.seq);
        if jobs.back().is_none_or(|b| (b.submitted, b.seq) <= key) {
            jobs.push_back(r);
        } else {
            let at = jobs.partition_point(|q| (q.submitted, q.seq) < key);
            jobs.insert(at, r);
        }
        self.nonempty.insert(id);
        self.len += 1;
    }

    /// Removes a specific job (cancellation); false if it was not queued.
    pub fn remove(
        &mut self,
        class: ClassId,
        sig: SignatureId,
        tenant: TenantId,
        submitted: Timestamp,
        seq: u64,
    ) -> bool {
        let Some(&id) = self.index.get(&(class, sig, tenant)) else {
            return false;
        };
        let jobs = &mut self.cells[id.0 as usize].jobs;
        let at = jobs.partition_point(|q| (q.submitted, q.seq) < (submitted, seq));
        if jobs.get(at).is_some_and(|q| q.seq == seq) {
            jobs.remove(at);
            self.after_removal(id);
            true
        } else {
            false
        }
    }

    /// Takes the head of a cell.
    pub fn pop_head(&mut self, id: CellId) -> Option<QueuedRef> {
        let r = self.cells[id.0 as usize].jobs.pop_front()?;
        self.after_removal(id);
        Some(r)
    }

    fn after_removal(&mut self, id: CellId) {
        self.len -= 1;
        if self.cells[id.0 as usize].jobs.is_empty() {
            self.nonempty.remove(&id);
        }
    }

    pub fn cell(&self, id: CellId) -> &Cell {
        &self.cells[id.0 as usize]
    }

    /// Cells that hold jobs, in a deterministic order.
    pub fn nonempty_cells(&self) -> impl Iterator<Item = CellId> + '_ {
        self.nonempty.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(job: u64, at: u64, tag: u64) -> QueuedRef {
        QueuedRef {
            submitted: Timestamp::from_secs(at),
            seq: job,
            tag,
            job: JobId(job),
        }
    }

    #[test]
    fn a_heavier_tenant_gets_proportionally_smaller_tags() {
        let mut q = JobQueue::new(1);
        let (c, heavy, light) = (ClassId(0), TenantId(0), TenantId(1));
        let heavy_tags: Vec<u64> = (0..4).map(|_| q.next_tag(c, heavy, 2)).collect();
        let light_tags: Vec<u64> = (0..2).map(|_| q.next_tag(c, light, 1)).collect();
        assert_eq!(
            heavy_tags[3], light_tags[1],
            "4 jobs at weight 2 cost what 2 jobs at weight 1 do"
        );
    }

    #[test]
    fn a_quiet_tenant_does_not_bank_credit() {
        let mut q = JobQueue::new(1);
        let c = ClassId(0);
        for _ in 0..10 {
            let t = q.next_tag(c, TenantId(0), 1);
            q.served(c, t);
        }
        let newcomer = q.next_tag(c, TenantId(1), 1);
        assert_eq!(
            newcomer,
            11 * TAG_SCALE,
            "starts from the virtual time, not from zero"
        );
    }

    #[test]
    fn a_requeued_job_returns_to_its_submission_place() {
        let mut q = JobQueue::new(1);
        let (c, s, t) = (ClassId(0), SignatureId(0), TenantId(0));
        q.push(c, s, t, r(2, 20, 2));
        q.push(c, s, t, r(3, 30, 3));
        q.push(c, s, t, r(1, 10, 1));
        let cell = q.nonempty_cells().next().expect("one cell");
        let order: Vec<u64> = q.cell(cell).jobs.iter().map(|x| x.job.0).collect();
        assert_eq!(order, vec![1, 2, 3]);
    }

    #[test]
    fn jobs_due_by_a_cutoff_are_counted_by_deadline() {
        let mut q = JobQueue::new(1);
        let (c, s, t) = (ClassId(0), SignatureId(0), TenantId(0));
        for (i, at) in [0u64, 10, 20, 30].into_iter().enumerate() {
            q.push(c, s, t, r(i as u64, at, 0));
        }
        let cell = q.cell(q.nonempty_cells().next().expect("one cell"));
        assert_eq!(
            cell.due_by(Timestamp::from_secs(75), Duration::from_secs(60)),
            2
        );
    }

    #[test]
    fn removing_the_last_job_empties_the_cell() {
        let mut q = JobQueue::new(1);
        let (c, s, t) = (ClassId(0), SignatureId(0), TenantId(0));
        q.push(c, s, t, r(7, 5, 0));
        assert!(q.remove(c, s, t, Timestamp::from_secs(5), 7));
        assert!(!q.remove(c, s, t, Timestamp::from_secs(5), 7));
        assert_eq!(q.len(), 0);
        assert_eq!(q.nonempty_cells().count(), 0);
    }
}
