//! The cases, grouped by the part of the contract they check.

pub(super) mod backpressure;
pub(super) mod dead_letters;
pub(super) mod durability;
pub(super) mod fallback;
pub(super) mod groups;
pub(super) mod isolation;
pub(super) mod publishing;
pub(super) mod redelivery;
pub(super) mod replay;
