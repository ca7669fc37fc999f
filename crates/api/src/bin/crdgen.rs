//! Writes the CRD YAML of every Open-AutoGLM kind into one or more directories
//! (`make crds` passes `crds` and the Helm chart's `crds` folder), or prints it to stdout.

use std::path::PathBuf;

use clap::Parser;

/// Generate the Open-AutoGLM CustomResourceDefinitions from the Rust types.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Directory to write `<crd-name>.yaml` files into (repeatable). Without any, the CRDs
    /// are printed to stdout as one multi-document YAML stream.
    #[arg(long = "out")]
    out: Vec<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.out.is_empty() {
        for crd in autoglm_api::crd::all() {
            print!("---\n{}", autoglm_api::crd::to_yaml(&crd)?);
        }
        return Ok(());
    }
    for dir in &args.out {
        for path in autoglm_api::crd::write_all(dir)? {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
