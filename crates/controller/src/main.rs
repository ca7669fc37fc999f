//! `autoglm-controller`: see the library docs (`autoglm_controller`).

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = autoglm_controller::app::Args::parse();
    autoglm_controller::app::init_tracing(args.log_format);
    autoglm_controller::app::run(args).await
}
