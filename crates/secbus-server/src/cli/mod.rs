//! The subcommands that move events: publish and tail.

pub(crate) mod asyncapi;
pub(crate) mod audit;
mod bus_url;
pub(crate) mod demo;
pub(crate) mod detect;
pub(crate) mod dlq;
mod duration;
mod events_file;
mod exit;
pub(crate) mod gateway_client;
pub(crate) mod keys;
mod pretty;
pub(crate) mod publish;
pub(crate) mod replay;
pub(crate) mod schema;
pub(crate) mod serve;
pub(crate) mod serve_workers;
mod shutdown;
pub(crate) mod tail;
