//! `trygg-gateway`, built inside the test package so the tests can run it
//! as a child process and kill it.

fn main() -> anyhow::Result<()> {
    trygg_gateway::cli::main()
}
