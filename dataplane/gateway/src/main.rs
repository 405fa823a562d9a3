//! `smsgw`: the SMS gateway binary. Thin: parses the command line and hands
//! over to [`runtime`].
#![forbid(unsafe_code)]

mod bench;
mod cli;
mod client;
mod config_watch;
mod contact;
mod journal;
mod link_metrics;
mod links;
mod rate;
mod runtime;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // A client command's failure is its output: printed once, not logged.
    let client = matches!(cli.command, cli::Command::Client(_));
    runtime::init_logging(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("smsgw: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(runtime::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if !client {
                tracing::error!("{e:#}");
            }
            eprintln!("smsgw: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
