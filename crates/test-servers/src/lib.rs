//! Real servers for secbus tests: each fixture starts its own `nats-server -js`
//! or `redis-server` on a free loopback port with a temp dir, can kill and
//! restart it, and stops it on drop.

mod binary;
mod nats;
mod port;
mod process;
mod redis;

pub use binary::find_binary;
pub use nats::{NatsCluster, NatsServer};
pub use port::free_port;
pub use redis::RedisServer;
