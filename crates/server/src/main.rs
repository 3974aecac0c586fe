//! `aether` — see `aether --help`.

use clap::Parser as _;

// The request path allocates per request from many threads; mimalloc's per-thread heaps keep
// that cheap where glibc malloc contends and fragments.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = aether_server::Cli::parse();
    match aether_server::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
