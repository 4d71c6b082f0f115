//! # ebbtide-sim
//!
//! Replays a CI job trace through the real `ebbtide-core` engine in virtual
//! time, with simulated providers (boot times, spot prices and
//! reclamations, launch failures and throttling drawn from real data) and
//! simulated agents, and measures queue waits, SLA attainment, cost and
//! waste for Ebbtide's planner and for baseline policies modelled on the
//! autoscalers operators use today, against a clairvoyant lower bound.
//!
//! Seeded: the same trace, configuration, parameters and seed give a
//! byte-identical report. It must never read a clock or touch the network;
//! the only I/O is reading the trace and data files it is pointed at.

pub mod chart;
pub mod oracle;
pub mod params;
pub mod policy;
pub mod report;
pub mod run;
pub mod shortage;
pub mod sweep;
pub mod trace;
pub mod world;

pub use oracle::{ClairvoyantReport, OracleReport, clairvoyant, lower_bound};
pub use params::SimParams;
pub use policy::Policy;
pub use report::{RunReport, table};
pub use run::{SimError, simulate};
pub use trace::{Trace, TraceJob, TravisClasses, read_native, read_travis};
