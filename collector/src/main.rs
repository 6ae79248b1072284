//! The `querypulse` binary; everything lives in the library.

fn main() -> anyhow::Result<()> {
    querypulse_collector::main()
}
