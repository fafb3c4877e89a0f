//! Trygg's simulator: simulated devices running the firmware logic, a
//! simulated home, the demo, the benchmark, and the chaos harness.

pub mod bench;
pub mod chaos;
pub mod cli;
pub mod config;
pub mod demo;
pub mod device;
pub mod enroll;
pub mod home;
pub mod keys;
