//! The conformance suite every engine runs.

pub mod outage;
