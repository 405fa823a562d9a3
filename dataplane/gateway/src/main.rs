//! `smsgw`: the SMS gateway binary. Thin: parses the command line and hands
//! each command to its module ([`runtime`] for the gateway's wiring).
#![forbid(unsafe_code)]

mod bench;
mod bench_webhook;
mod bind_slots;
mod cli;
mod client;
mod config_watch;
mod contact;
mod dispatch;
mod journal;
mod link_metrics;
mod links;
mod rate;
mod runtime;
mod soak;
mod telemetry;
mod tls_client;
mod users_import;
mod validate;

use clap::Parser;

/// mimalloc instead of glibc's malloc: under the send path's allocation
/// pattern (many short-lived buffers across tokio workers) glibc's heap
/// kept growing and trimming (page clearing, `malloc_consolidate`), which
/// cost about a third of the gateway's CPU (BENCHMARKS.md, issue 5).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // A client command's failure is its output: printed once, not logged.
    let client = matches!(cli.command, cli::Command::Client(_));
    runtime::init_logging(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(usize::from(cli.max_blocking_threads))
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("smsgw: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
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

/// Runs the chosen subcommand to completion.
async fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Standalone(args) => runtime::standalone(*args).await,
        cli::Command::Serve(args) => config_watch::serve(*args).await,
        cli::Command::SmscSim(args) => runtime::smsc_sim(args).await,
        cli::Command::Bench(args) => bench::run(*args).await,
        cli::Command::Openapi => {
            println!("{}", smsgw_api::openapi_json());
            Ok(())
        }
        cli::Command::Client(cmd) => client::run(cmd).await,
        cli::Command::CheckConfig { config } => {
            let snap = runtime::load_config(&config)?;
            println!(
                "{}: valid, version {}: {} link(s), {} pool(s), {} user(s), {} contact polic(y/ies)",
                config.display(),
                snap.version,
                snap.links.len(),
                snap.pools.len(),
                snap.users.len(),
                snap.policies.len()
            );
            Ok(())
        }
    }
}
