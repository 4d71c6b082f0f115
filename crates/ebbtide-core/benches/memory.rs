//! Heap bytes per queued job and per worker at fleet scale, measured with a
//! counting global allocator (live bytes = allocated − freed).
//!
//! `cargo bench -p ebbtide-core --bench memory`. Targets: < 2 KiB per queued
//! job, < 4 KiB per worker.

#![allow(unsafe_code)] // a global allocator must be `unsafe impl`

#[path = "support/fixture.rs"]
mod fixture;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only
// counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn main() {
    let base = live();
    let empty = ebbtide_core::Engine::new(fixture::config(), fixture::now()).expect("valid");
    let empty_bytes = live() - base;
    drop(empty);

    let before = live();
    let mut engine = fixture::busy_fleet();
    let finished = fixture::finish_running(&mut engine, 20_000);
    let workers = engine.live_workers().count() as isize;
    let fleet_bytes = live() - before - empty_bytes;
    println!(
        "workers: {workers} (after finishing {finished} jobs), {} bytes each",
        fleet_bytes / workers
    );

    drop(engine);

    let before = live();
    let mut engine = fixture::busy_fleet();
    fixture::block_tenants(&mut engine);
    let before_jobs = live();
    fixture::queue_jobs(&mut engine, fixture::QUEUED);
    let queued = engine.queued_jobs() as isize;
    let job_bytes = live() - before_jobs;
    println!(
        "queued jobs: {queued} (all still queued), {} bytes each",
        job_bytes / queued
    );
    println!(
        "total engine heap, 10,000 busy workers + 100,000 queued: {:.1} MiB",
        (live() - before) as f64 / 1_048_576.0
    );
    let ok = fleet_bytes / workers < 4096 && job_bytes / queued < 2048;
    println!(
        "targets (< 4096 B/worker, < 2048 B/job): {}",
        if ok { "met" } else { "MISSED" }
    );
}
