//! The subcommands that move events: publish and tail.

pub(crate) mod asyncapi;
mod duration;
mod events_file;
mod exit;
mod pretty;
pub(crate) mod publish;
pub(crate) mod schema;
mod shutdown;
pub(crate) mod tail;
