//! Handlers and the worker that runs them.
