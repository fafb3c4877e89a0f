//! `trygg-bridge`: the municipal backend of Trygg. See `--help`.

fn main() -> anyhow::Result<()> {
    trygg_bridge::cli::main()
}
