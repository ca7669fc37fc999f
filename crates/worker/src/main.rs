//! `autoglm-worker`: see the library docs for the command line.

use clap::Parser;

use autoglm_worker::cli::{Cli, Command, cmd_run};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // reqwest (object_store) and kube share rustls; use ring, no aws-lc-rs C build.
    #[cfg(any(feature = "cloud", feature = "kube"))]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(a) => {
            let report = cmd_run(&a)?;
            if report.already_finished {
                tracing::info!(
                    items = report.items_total,
                    "replica already complete (manifest present)"
                );
            }
            Ok(())
        }
        Command::Bench(a) => autoglm_worker::bench::cmd_bench(&a),
    }
}
