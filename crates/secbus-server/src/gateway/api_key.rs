//! API keys: their format, their stored hash, and the set configured.
//!
//! A key is `sbk_` + base64url (no padding) of 32 random bytes. The config keeps
//! `sha256:<hex>` of the whole key string. A fast hash is the right one here:
//! the key is 256 bits of randomness, so there is nothing to brute-force and a
//! slow password hash would only slow every request.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use secbus::TenantId;

/// The prefix of every key.
pub(crate) const KEY_PREFIX: &str = "sbk_";

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// `POST /v1/events`, `POST /v1/events/batch`.
    Publish,
    /// `GET /v1/events`, `/v1/correlations`, `/v1/stream`.
    Read,
    /// The dead-letter routes, and everything the others may do.
    Admin,
}

impl Role {
    /// The name used in the config and the API description.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Publish => "publish",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub(crate) fn parse(name: &str) -> Option<Role> {
        match name {
            "publish" => Some(Role::Publish),
            "read" => Some(Role::Read),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// One `[[keys]]` entry of the config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyEntry {
    /// Shown in logs; never the key.
    pub(crate) name: String,
    /// The one tenant the key acts for.
    pub(crate) tenant: String,
    /// What the key may do.
    pub(crate) roles: Vec<Role>,
    /// `sha256:<lowercase hex of SHA-256 of the key>`.
    pub(crate) hash: String,
}

/// Who a request authenticated as.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The key's name.
    pub(crate) name: String,
    /// The key's tenant: the only tenant the request can see or write.
    pub(crate) tenant: TenantId,
    /// The key's roles.
    pub(crate) roles: Vec<Role>,
}

impl Caller {
    /// Whether the key holds `role` (admin holds every role).
    pub(crate) fn has(&self, role: Role) -> bool {
        self.roles.iter().any(|r| *r == role || *r == Role::Admin)
    }
}

/// The configured keys.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyRing {
    keys: Vec<([u8; 32], Caller)>,
}

impl KeyRing {
    /// The ring of validated config entries.
    pub(crate) fn new(entries: &[KeyEntry]) -> Result<KeyRing, String> {
        let keys = entries
            .iter()
            .map(|e| {
                let hash = parse_hash(&e.hash).map_err(|why| format!("key {}: {why}", e.name))?;
                let tenant = TenantId::new(e.tenant.as_str())
                    .map_err(|err| format!("key {}: {err}", e.name))?;
                Ok((
                    hash,
                    Caller {
                        name: e.name.clone(),
                        tenant,
                        roles: e.roles.clone(),
                    },
                ))
            })
            .collect::<Result<_, String>>()?;
        Ok(KeyRing { keys })
    }

    /// The caller a presented key belongs to. Compares the hash against every
    /// configured one, in constant time each and without stopping at a match,
    /// so the time taken says nothing about which key (if any) matched.
    pub(crate) fn authenticate(&self, presented: &str) -> Option<&Caller> {
        let hash = digest(presented);
        let mut found = None;
        for (i, (stored, _)) in self.keys.iter().enumerate() {
            if bool::from(stored.ct_eq(&hash)) {
                found = Some(i);
            }
        }
        found.map(|i| &self.keys[i].1)
    }

    /// The tenants of the configured keys, each once.
    pub(crate) fn tenants(&self) -> Vec<TenantId> {
        let mut tenants: Vec<TenantId> = self.keys.iter().map(|(_, c)| c.tenant.clone()).collect();
        tenants.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        tenants.dedup();
        tenants
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new random key.
pub(crate) fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The config form of a key's hash.
pub(crate) fn hash_key(key: &str) -> String {
    format!("sha256:{}", hex::encode(digest(key)))
}

/// Checks a config hash and returns its bytes.
pub(crate) fn parse_hash(hash: &str) -> Result<[u8; 32], String> {
    let hex_part = hash
        .strip_prefix("sha256:")
        .ok_or("must start with sha256: (make one with `secbus keys new`)")?;
    if hex_part.len() != 64 || hex_part.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("must be sha256: and 64 lowercase hex digits".to_owned());
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out)
        .map_err(|_| "must be sha256: and 64 lowercase hex digits".to_owned())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_has_the_format_and_authenticates_only_itself() {
        let key = generate_key();
        let body = key.strip_prefix(KEY_PREFIX).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
        assert_ne!(key, generate_key());
        let entry = |name: &str, tenant: &str, key: &str| KeyEntry {
            name: name.into(),
            tenant: tenant.into(),
            roles: vec![Role::Read],
            hash: hash_key(key),
        };
        let other = generate_key();
        let ring = KeyRing::new(&[entry("a", "acme", &key), entry("g", "globex", &other)]).unwrap();
        assert_eq!(ring.authenticate(&key).unwrap().tenant.as_str(), "acme");
        assert_eq!(ring.authenticate(&other).unwrap().tenant.as_str(), "globex");
        assert!(ring.authenticate("sbk_nope").is_none());
        assert!(ring.authenticate(&key[..key.len() - 1]).is_none());
    }

    #[test]
    fn the_hash_is_sha256_of_the_whole_key_in_lowercase_hex() {
        // printf %s sbk_test | sha256sum
        assert_eq!(
            hash_key("sbk_test"),
            "sha256:d3af6ac414fd320a14b9163842dbbbf73abd9a82199c6ac033f183f7a4f0cb9c"
        );
        assert!(parse_hash(&hash_key("x")).is_ok());
        assert!(parse_hash("sha256:ABC").is_err());
    }
}
