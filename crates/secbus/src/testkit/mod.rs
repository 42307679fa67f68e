//! The conformance suite every engine runs.
