//! Test support for integration tests against a real control plane (placeholder; see issue 2).
