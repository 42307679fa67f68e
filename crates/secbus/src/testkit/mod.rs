//! The conformance suite every engine runs, written once.
//!
//! Each case states one promise of the [`crate::Publisher`] / [`crate::Subscriber`]
//! contract and checks it through the public API only. An engine takes part by
//! giving the suite a [`Harness`] (how to open a fresh bus, reopen one, and make
//! its engine unreachable) and invoking [`conformance_suite!`](crate::conformance_suite)
//! in one integration test file, which makes one test per case, named
//! `conformance_<engine>_<case>`:
//!
//! ```ignore
//! // crates/secbus/tests/conformance_memory.rs
//! secbus::conformance_suite!(secbus::testkit::MemoryHarness::new(), {
//!     conformance_memory_round_trip: round_trip,
//!     conformance_memory_tenant_isolation: tenant_isolation,
//!     // ... every case of `Case`; a missing one is a compile error
//! });
//! ```
//!
//! What an engine cannot do is declared in its [`crate::Capabilities`], never
//! skipped silently: a case whose promise needs a capability the engine says it
//! lacks prints `not supported: <capability>` and passes; every other case must
//! pass as written. Every wait is bounded, so a bug fails a case instead of
//! hanging it.

mod case;
mod cases;
mod context;
mod harness;
pub mod outage;
mod wait;

pub use case::{Case, Verdict, run, run_case};
#[cfg(feature = "embedded")]
pub use harness::EmbeddedHarness;
#[cfg(feature = "memory")]
pub use harness::MemoryHarness;
pub use harness::{Harness, Outage};

/// Makes one `#[test]` per conformance case for an engine.
///
/// The first argument is an expression giving the [`Harness`](crate::testkit::Harness)
/// (evaluated inside the case's runtime, so it may `.await`, e.g. to start a
/// server); then, in braces, `test_name: case` for every [`Case`](crate::testkit::Case).
/// Leaving a case out does not compile, so an engine cannot drop a case quietly.
/// Each test runs on its own multi-threaded Tokio runtime with two workers.
#[macro_export]
macro_rules! conformance_suite {
    ($harness:expr, { $($test:ident : $case:ident),+ $(,)? }) => {
        // A case added to the suite and not listed here is a non-exhaustive
        // match, and so a compile error in the engine's test file.
        const _: () = {
            #[allow(dead_code)]
            fn every_case_is_listed(case: $crate::testkit::Case) {
                match case {
                    $($crate::testkit::Case::$case => {})+
                }
            }
        };
        $(
            #[test]
            fn $test() {
                $crate::testkit::run(
                    stringify!($test),
                    $crate::testkit::Case::$case,
                    async { $harness },
                );
            }
        )+
    };
}
