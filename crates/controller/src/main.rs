//! autoglm-controller (placeholder).
fn main() {}
