//! Trace-driven simulator (placeholder; see issue 4).
fn main() {}
