//! Trygg's simulator: simulated devices running the firmware logic, a
//! simulated home, the demo, and the benchmark.

pub mod bench;
pub mod cli;
pub mod config;
pub mod demo;
pub mod device;
pub mod home;
