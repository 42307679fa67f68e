//! The subcommands that move events: publish and tail.

mod duration;
mod events_file;
mod exit;
mod pretty;
pub(crate) mod publish;
mod shutdown;
pub(crate) mod tail;
