//! What the tests of the real binary share.
#![allow(dead_code, unreachable_pub)]

pub mod serve;
