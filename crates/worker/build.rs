//! With the `libtorch` feature, embed an rpath to libtorch and the CUDA runtime libraries so
//! the binary (and test binaries) run without `LD_LIBRARY_PATH`. The folders come from
//! `AUTOGLM_TORCH_LIB` and `AUTOGLM_CUDA_LIBS` (colon-separated), which
//! `eval "$(hack/torch-env.sh env)"` exports. Without them nothing is added and the binary
//! needs `LD_LIBRARY_PATH` (torch-env.sh sets that too).

fn main() {
    println!("cargo:rerun-if-env-changed=AUTOGLM_TORCH_LIB");
    println!("cargo:rerun-if-env-changed=AUTOGLM_CUDA_LIBS");
    if std::env::var_os("CARGO_FEATURE_LIBTORCH").is_none() {
        return;
    }
    for var in ["AUTOGLM_TORCH_LIB", "AUTOGLM_CUDA_LIBS"] {
        if let Ok(dirs) = std::env::var(var) {
            for dir in dirs.split(':').filter(|d| !d.is_empty()) {
                println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
            }
        }
    }
}
