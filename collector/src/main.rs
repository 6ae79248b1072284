//! The `querypulse` binary; everything lives in the library.

/// mimalloc instead of the system allocator: the collector allocates and
/// frees millions of small histograms a second on several threads, where
/// glibc's allocator costs a sizeable share of the CPU and keeps freed
/// memory (see BENCHMARKS.md, "Store v2").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    querypulse_collector::main()
}
