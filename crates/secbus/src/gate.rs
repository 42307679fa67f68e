//! What stands in front of the log: a [`Gate`] every published event passes
//! (the contracts crate provides the schema and secret checks), and the
//! [`Scope`] a publisher is bound to (the tenant it is authenticated as).

use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, TenantId};

/// A check every event passes before it is stored, on every publish path
/// (publish, batches, the fallback spool). It may refuse the event with a stable
/// code, or amend it (set `dataschema`, redact a value); it must not panic.
pub trait Gate: Send + Sync + 'static {
    /// Checks, and maybe amends, one event.
    fn check(&self, event: &mut Event) -> Result<()>;
}

/// Who a publisher publishes as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Bound to one tenant: an event of any other tenant is refused with
    /// [`ErrorKind::TenantMismatch`]. The tenant comes from how the publisher
    /// authenticated (an API key at the gateway), never from the event.
    Tenant(TenantId),
    /// May publish for any tenant (operators, the platform's own services).
    Admin,
}

impl Scope {
    /// Refuses an event outside this scope.
    pub fn admit(&self, event: &Event) -> Result<()> {
        match self {
            Scope::Admin => Ok(()),
            Scope::Tenant(tenant) if *tenant == event.tenant => Ok(()),
            Scope::Tenant(tenant) => Err(Error::new(
                ErrorKind::TenantMismatch,
                format!(
                    "this publisher is bound to tenant {tenant}; the event names tenant {}",
                    event.tenant
                ),
            )
            .with_field("tenantid")),
        }
    }
}
