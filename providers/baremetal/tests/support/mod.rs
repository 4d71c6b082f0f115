//! The test kit of this crate's tests: the test hosts (the crate's
//! `testkit`) and the power controllers' emulators.

#![allow(dead_code, reason = "each test binary uses part of the kit")]

pub mod emulators;

pub use ebbtide_provider_baremetal::testhosts::*;
