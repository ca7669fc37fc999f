//! autoglm-node-agent (placeholder).
fn main() {}
