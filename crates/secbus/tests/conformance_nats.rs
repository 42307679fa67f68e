//! The conformance suite on `nats://`: every case against a `nats-server -js`
//! of its own (a free loopback port, a temp store dir), each bus of a case on a
//! stream and subject prefix of its own. The outage case kills the server with
//! SIGKILL and restarts it on the same port and store dir.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use secbus::testkit::{Harness, Outage};
use secbus::{Bus, BusConfig, Error, ErrorKind, Result};
use secbus_test_servers::NatsServer;

struct NatsHarness {
    server: Arc<Mutex<NatsServer>>,
    url: String,
    buses: AtomicU32,
}

impl NatsHarness {
    fn new() -> NatsHarness {
        let server = NatsServer::start().unwrap_or_else(|e| panic!("{e}"));
        NatsHarness {
            url: server.url(),
            server: Arc::new(Mutex::new(server)),
            buses: AtomicU32::new(0),
        }
    }

    /// A URL with a stream and subject prefix no other bus of the case uses.
    fn fresh_url(&self) -> String {
        let n = self.buses.fetch_add(1, Ordering::Relaxed);
        format!("{}?stream=CONFORMANCE{n}&prefix=conformance{n}", self.url)
    }
}

#[async_trait]
impl Harness for NatsHarness {
    async fn open_with(&self, config: BusConfig) -> Result<Bus> {
        Bus::connect_with(&self.fresh_url(), config).await
    }

    async fn open_with_outage(&self, config: BusConfig) -> Result<(Bus, Box<dyn Outage>)> {
        let bus = Bus::connect_with(&self.fresh_url(), config).await?;
        Ok((bus, Box::new(ServerOutage(self.server.clone()))))
    }
}

/// Down is `kill -9` of the server; up is a restart on the same port and store dir.
struct ServerOutage(Arc<Mutex<NatsServer>>);

impl ServerOutage {
    async fn with_server(
        &self,
        f: fn(&mut NatsServer) -> std::result::Result<(), String>,
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
        self.with_server(NatsServer::restart).await
    }
}

secbus::conformance_suite!(NatsHarness::new(), {
    conformance_nats_round_trip: round_trip,
    conformance_nats_tenant_isolation: tenant_isolation,
    conformance_nats_type_filters: type_filters,
    conformance_nats_group_work_sharing: group_work_sharing,
    conformance_nats_group_keeps_position_without_members: group_keeps_position_without_members,
    conformance_nats_fan_out_across_groups: fan_out_across_groups,
    conformance_nats_nack_redelivery: nack_redelivery,
    conformance_nats_ack_wait_redelivery: ack_wait_redelivery,
    conformance_nats_dead_letter_after_max_deliveries: dead_letter_after_max_deliveries,
    conformance_nats_term_dead_letters_immediately: term_dead_letters_immediately,
    conformance_nats_redrive: redrive,
    conformance_nats_dedup_by_id: dedup_by_id,
    conformance_nats_content_dedup: content_dedup,
    conformance_nats_order_per_partition_key: order_per_partition_key,
    conformance_nats_backpressure: backpressure,
    conformance_nats_replay_from_beginning: replay_from_beginning,
    conformance_nats_replay_from_sequence: replay_from_sequence,
    conformance_nats_replay_from_time: replay_from_time,
    conformance_nats_persistence_across_restart: persistence_across_restart,
    conformance_nats_concurrent_publishers: concurrent_publishers,
    conformance_nats_graceful_shutdown: graceful_shutdown,
    conformance_nats_size_limit: size_limit,
    conformance_nats_fallback_spool_drains_in_order: fallback_spool_drains_in_order,
    conformance_nats_tail_lag: tail_lag,
    conformance_nats_batch_publish_all_or_nothing: batch_publish_all_or_nothing,
});
