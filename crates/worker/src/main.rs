//! autoglm-worker (placeholder).
fn main() {}
