//! A token bucket per tenant, counted in events.
//!
//! Each gateway counts on its own: N gateways on one engine admit up to N
//! times the configured rate. The limit protects the engine from one noisy
//! tenant; it is not a quota.

use std::collections::HashMap;
use std::time::Instant;

use std::sync::Mutex;

use super::config::RateLimitConfig;
use super::error::ApiError;

/// The buckets of every tenant seen.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// Buckets with the configured rate and burst.
    pub(crate) fn new(config: &RateLimitConfig) -> RateLimiter {
        RateLimiter {
            rate: config.events_per_second,
            burst: config.burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `events` tokens from `tenant`'s bucket, or refuses with 429
    /// `rate_limited` and the seconds until they are there.
    pub(crate) fn take(&self, tenant: &str, events: usize) -> Result<(), ApiError> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let wanted = events as f64;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(tenant.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= wanted {
            bucket.tokens -= wanted;
            return Ok(());
        }
        let wait = ((wanted - bucket.tokens) / self.rate).ceil() as u64;
        let mut e = ApiError::new(
            "rate_limited",
            format!(
                "tenant {tenant} is over its rate of {} events/s; retry in {wait} s",
                self.rate
            ),
        );
        e.retry_after = Some(wait.max(1));
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_admits_its_burst_then_refuses_with_a_wait() {
        let limiter = RateLimiter::new(&RateLimitConfig {
            events_per_second: 1.0,
            burst: 3.0,
        });
        assert!(limiter.take("acme", 2).is_ok());
        assert!(limiter.take("acme", 1).is_ok());
        let e = limiter.take("acme", 1).unwrap_err();
        assert_eq!(e.code, "rate_limited");
        assert_eq!(e.retry_after, Some(1));
        // Another tenant has a bucket of its own.
        assert!(limiter.take("globex", 3).is_ok());
    }
}
