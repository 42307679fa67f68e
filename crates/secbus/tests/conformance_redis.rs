//! The conformance suite on `redis://`: every case against a `redis-server` of
//! its own (started on a free loopback port, append-only file on), each bus of
//! a case under a key prefix of its own. The outage case kills the server with
//! SIGKILL and restarts it on the same port and data dir.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use secbus::testkit::{Harness, Outage};
use secbus::{Bus, BusConfig, Error, ErrorKind, Result};
use secbus_test_servers::RedisServer;

struct RedisHarness {
    server: Arc<Mutex<RedisServer>>,
    url: String,
    buses: AtomicU32,
}

impl RedisHarness {
    fn new() -> RedisHarness {
        let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
        RedisHarness {
            url: server.url(),
            server: Arc::new(Mutex::new(server)),
            buses: AtomicU32::new(0),
        }
    }

    /// A URL with a key prefix no other bus of the case uses.
    fn fresh_url(&self) -> String {
        let n = self.buses.fetch_add(1, Ordering::Relaxed);
        format!("{}?prefix=conformance-{n}", self.url)
    }
}

#[async_trait]
impl Harness for RedisHarness {
    async fn open_with(&self, config: BusConfig) -> Result<Bus> {
        Bus::connect_with(&self.fresh_url(), config).await
    }

    async fn open_with_outage(&self, config: BusConfig) -> Result<(Bus, Box<dyn Outage>)> {
        let bus = Bus::connect_with(&self.fresh_url(), config).await?;
        Ok((bus, Box::new(ServerOutage(self.server.clone()))))
    }
}

/// Down is `kill -9` of the server; up is a restart on the same port and dir.
struct ServerOutage(Arc<Mutex<RedisServer>>);

impl ServerOutage {
    async fn with_server(
        &self,
        f: fn(&mut RedisServer) -> std::result::Result<(), String>,
    ) -> Result<()> {
        let server = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut server = server.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut server)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("the fixture task failed: {e}")))?
        .map_err(|e| Error::new(ErrorKind::EngineUnavailable, e))
    }
}

#[async_trait]
impl Outage for ServerOutage {
    async fn down(&self) -> Result<()> {
        self.with_server(|s| {
            s.kill();
            Ok(())
        })
        .await
    }

    async fn up(&self) -> Result<()> {
        self.with_server(RedisServer::restart).await
    }
}

secbus::conformance_suite!(RedisHarness::new(), {
    conformance_redis_round_trip: round_trip,
    conformance_redis_tenant_isolation: tenant_isolation,
    conformance_redis_type_filters: type_filters,
    conformance_redis_group_work_sharing: group_work_sharing,
    conformance_redis_fan_out_across_groups: fan_out_across_groups,
    conformance_redis_group_keeps_position_without_members: group_keeps_position_without_members,
    conformance_redis_nack_redelivery: nack_redelivery,
    conformance_redis_ack_wait_redelivery: ack_wait_redelivery,
    conformance_redis_dead_letter_after_max_deliveries: dead_letter_after_max_deliveries,
    conformance_redis_term_dead_letters_immediately: term_dead_letters_immediately,
    conformance_redis_redrive: redrive,
    conformance_redis_dedup_by_id: dedup_by_id,
    conformance_redis_content_dedup: content_dedup,
    conformance_redis_order_per_partition_key: order_per_partition_key,
    conformance_redis_backpressure: backpressure,
    conformance_redis_replay_from_beginning: replay_from_beginning,
    conformance_redis_replay_from_sequence: replay_from_sequence,
    conformance_redis_replay_from_time: replay_from_time,
    conformance_redis_persistence_across_restart: persistence_across_restart,
    conformance_redis_concurrent_publishers: concurrent_publishers,
    conformance_redis_graceful_shutdown: graceful_shutdown,
    conformance_redis_size_limit: size_limit,
    conformance_redis_fallback_spool_drains_in_order: fallback_spool_drains_in_order,
    conformance_redis_tail_lag: tail_lag,
    conformance_redis_batch_publish_all_or_nothing: batch_publish_all_or_nothing,
});
