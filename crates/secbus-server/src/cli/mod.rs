//! The subcommands that move events: publish and tail.

pub(crate) mod publish;
pub(crate) mod tail;
