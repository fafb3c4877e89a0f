//! `trygg-sim`: see `trygg-sim --help`.

fn main() -> anyhow::Result<()> {
    trygg_sim::cli::main()
}
