//! Open-AutoGLM API types (placeholder; see issue 3).
