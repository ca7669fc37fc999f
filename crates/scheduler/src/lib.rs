//! Open-AutoGLM scheduling core (placeholder; see issue 4).
