//! The events the scenarios publish: a typical identity-provider event of about
//! 423 bytes on the wire, and the small event a signature check emits.

use chrono::{DateTime, SubsecRound, Utc};
use secbus::{Event, EventType, TenantId};
use serde::Serialize;

/// The tenant every scenario publishes as.
pub(crate) const TENANT: &str = "bench";

/// What an identity provider says about a failed login (the catalog's
/// `auth.login.failed`).
#[derive(Serialize)]
struct LoginFailed<'a> {
    user: &'a str,
    src_ip: &'a str,
    user_agent: &'static str,
    reason: &'static str,
    mfa: bool,
}

/// What a signature check says about itself (the catalog's `auth.signature.verified`).
#[derive(Serialize)]
struct SignatureVerified<'a> {
    algorithm: &'static str,
    key_fingerprint: &'static str,
    key_id: &'a str,
    result: &'static str,
    duration_us: u64,
    message_bytes: usize,
}

/// The OpenSSH-style fingerprint of the bench's verifying key.
const KEY_FINGERPRINT: &str = "SHA256:n4V7dEsfbN3nhQ63hYFr358YdNo8GFsz8ENmi2IzS8M";

fn tenant() -> TenantId {
    TenantId::new(TENANT).expect("a valid tenant literal")
}

/// `n` distinct `auth.login.failed` events (each with its own UUIDv7 id, so the
/// dedup window drops none), stamped with `time` (to the millisecond, as
/// identity providers send it) so every copy encodes the same way.
pub(crate) fn login_failures(n: usize, time: DateTime<Utc>) -> Vec<Event> {
    let time = time.trunc_subsecs(3);
    let ty = EventType::new("auth.login.failed").expect("a valid type literal");
    let tenant = tenant();
    (0..n)
        .map(|i| {
            let user = format!("u{:07}@acme.example", i % 10_000_000);
            let ip = format!("203.0.{}.{}", (i / 250) % 250, i % 250 + 1);
            let mut event = Event::builder(ty.clone(), tenant.clone())
                .source("idp/okta")
                .time(time)
                .data(LoginFailed {
                    user: &user,
                    src_ip: &ip,
                    user_agent: "Mozilla/5.0 (X11)",
                    reason: "bad_password",
                    mfa: false,
                })
                .build()
                .expect("the bench event is valid");
            // Structured mode implies JSON; identity-provider hooks send no content type.
            event.datacontenttype = None;
            event
        })
        .collect()
}

/// Builds the event a signature check emits, as application code would on every check.
pub(crate) fn signature_verified(ty: &EventType, tenant: &TenantId, key_id: &str) -> Event {
    Event::builder(ty.clone(), tenant.clone())
        .source("authn/verifier")
        .data(SignatureVerified {
            algorithm: "ed25519",
            key_fingerprint: KEY_FINGERPRINT,
            key_id,
            result: "valid",
            duration_us: 43,
            message_bytes: 200,
        })
        .build()
        .expect("the bench event is valid")
}

/// The type and tenant of [`signature_verified`].
pub(crate) fn signature_verified_kind() -> (EventType, TenantId) {
    (
        EventType::new("auth.signature.verified").expect("a valid type literal"),
        tenant(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_failure_is_about_423_bytes_and_ids_are_unique() {
        let events = login_failures(1000, Utc::now());
        let len = events[0].to_json().len();
        assert!((415..=435).contains(&len), "{len} bytes");
        let ids: std::collections::HashSet<_> = events.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn bench_events_pass_the_contracts_gate() {
        use secbus::Gate;
        let registry = secbus_contracts::Registry::builtin().unwrap();
        let gate = secbus_contracts::ContractsGate::new(std::sync::Arc::new(registry));
        let (ty, tenant) = signature_verified_kind();
        let mut events = login_failures(3, Utc::now());
        events.push(signature_verified(&ty, &tenant, "kid-2026-11-a"));
        for mut event in events {
            if let Err(e) = gate.check(&mut event) {
                panic!("{} is refused: {e} {:?}", event.ty, e.details());
            }
        }
    }
}
