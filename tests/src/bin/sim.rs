//! `trygg-sim`, built inside the test package so the tests can run the demo
//! and `press` as child processes.

fn main() -> anyhow::Result<()> {
    trygg_sim::cli::main()
}
