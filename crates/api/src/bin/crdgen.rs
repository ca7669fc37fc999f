//! Prints the CRD YAML (placeholder; see issue 3).
fn main() {}
