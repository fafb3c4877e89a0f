//! `trygg-gateway`: see `trygg-gateway --help`.

fn main() -> anyhow::Result<()> {
    trygg_gateway::cli::main()
}
