//! The `performchat` binary: reads the command line (and `--config`), sets up logging, and
//! hands over to the library.

use std::io::IsTerminal as _;

use performchat::config::{Cli, LogFormat};
use performchat::logs::LineFormat;

// mimalloc: the request path allocates many small, short-lived buffers; with glibc's malloc
// they cost a tenth of the CPU and its per-thread arenas inflated resident memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = match Cli::load() {
        Ok(cli) => cli,
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(clap_error) => clap_error.exit(),
            Err(e) => {
                eprintln!("error: {e:#}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    // Logs go to stderr, so that stdout carries only command output (and `--json`). They
    // are written by a background thread (`performchat::logs`): a write(2) per request line
    // on the request path cost a sixth of the server's throughput. The guard writes what is
    // buffered at exit.
    let filter = tracing_subscriber::EnvFilter::try_from_env("PERFORMCHAT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let (writer, _flush_on_exit) = performchat::logs::spawn(std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match cli.log_format {
        LogFormat::Json => logs.event_format(LineFormat::Json).init(),
        // Colours for a person at a terminal, by the subscriber's own formatter.
        LogFormat::Text if std::io::stderr().is_terminal() => {
            logs.with_timer(performchat::clock::LogTime).init()
        }
        LogFormat::Text => logs.event_format(LineFormat::Text).init(),
    }
    match performchat::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::debug!("command failed");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
