//! The subcommands that move events: publish and tail.

pub(crate) mod asyncapi;
pub(crate) mod audit;
mod duration;
mod events_file;
mod exit;
pub(crate) mod keys;
mod pretty;
pub(crate) mod publish;
pub(crate) mod schema;
pub(crate) mod serve;
mod shutdown;
pub(crate) mod tail;
