//! `trygg-bridge`, built inside the test package so the tests can run it
//! as a child process and kill it.

fn main() -> anyhow::Result<()> {
    trygg_bridge::cli::main()
}
