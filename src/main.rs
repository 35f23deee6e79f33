//! The `performchat` binary: parses the command line and hands it to the library.

use clap::Parser as _;

// mimalloc: the request path allocates many small, short-lived buffers; with glibc's malloc
// they cost a tenth of the CPU and its per-thread arenas inflated resident memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = performchat::config::Cli::parse();
    // Logs go to stderr, so that stdout carries only command output (and `--json`). They
    // are written by a background thread: a write(2) per request line on the request path
    // cost a third of the server's throughput. The guard flushes what is queued at exit.
    let filter = tracing_subscriber::EnvFilter::try_from_env("PERFORMCHAT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let (writer, _flush_on_exit) = tracing_appender::non_blocking(std::io::stderr());
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer)
        .init();
    match performchat::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
