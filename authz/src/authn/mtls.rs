//! mTLS identities: Envoy verifies the client certificate and reports its URI SAN (a SPIFFE id)
//! as `source.principal`; this maps known SPIFFE ids to principals. authz never sees the
//! certificate itself, so the mapping is only as good as Envoy's TLS validation context.

use std::collections::HashMap;

use super::config::MtlsEntry;
use crate::decision::{AuthMethod, Principal};

/// Longest SPIFFE id accepted (the SPIFFE spec's limit for the URI).
const MAX_SPIFFE_ID: usize = 2048;

/// Exact-match SPIFFE id -> principal table.
#[derive(Debug, Default)]
pub struct MtlsMap {
    by_id: HashMap<String, (String, Vec<String>)>,
}

impl MtlsMap {
    /// Builds the table from validated config entries.
    pub fn new(entries: &[MtlsEntry]) -> Self {
        MtlsMap {
            by_id: entries
                .iter()
                .map(|e| (e.spiffe_id.clone(), (e.principal.clone(), e.roles.clone())))
                .collect(),
        }
    }

    /// The principal mapped to this SPIFFE id, if any.
    pub fn lookup(&self, spiffe_id: &str) -> Option<Principal> {
        self.by_id.get(spiffe_id).map(|(id, roles)| Principal {
            id: id.clone(),
            auth_method: AuthMethod::Mtls,
            roles: roles.clone(),
        })
    }

    /// Whether any mapping is configured.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Checks the shape of a SPIFFE id: `spiffe://<trust domain>/<path>`, lower-case trust domain,
/// no query, fragment, port, user info, empty or dot segments.
///
/// # Errors
/// A message saying what is wrong.
pub fn check_spiffe_id(id: &str) -> Result<(), String> {
    let rest = id
        .strip_prefix("spiffe://")
        .ok_or_else(|| format!("'{id}' must start with spiffe://"))?;
    if id.len() > MAX_SPIFFE_ID {
        return Err("SPIFFE id too long".into());
    }
    let (domain, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("'{id}' has no path after the trust domain"))?;
    if domain.is_empty()
        || !domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
    {
        return Err(format!("'{id}': trust domain must be [a-z0-9-._]+"));
    }
    for seg in path.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(format!("'{id}': empty or dot path segment"));
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err(format!("'{id}': path segments must be [A-Za-z0-9-._]+"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_are_checked() {
        assert!(check_spiffe_id("spiffe://gateway.local/ns/batch/sa/reporter").is_ok());
        for bad in [
            "http://x/y",
            "spiffe://",
            "spiffe://Domain/x",
            "spiffe://d",
            "spiffe://d/a//b",
            "spiffe://d/a/../b",
            "spiffe://d/a?x",
            "spiffe://u@d/x",
        ] {
            assert!(check_spiffe_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lookup_is_exact() {
        let m = MtlsMap::new(&[MtlsEntry {
            spiffe_id: "spiffe://d/ns/a".into(),
            principal: "svc-a".into(),
            roles: vec!["analyst".into()],
        }]);
        assert_eq!(m.lookup("spiffe://d/ns/a").unwrap().id, "svc-a");
        assert!(m.lookup("spiffe://d/ns/A").is_none());
        assert!(m.lookup("spiffe://d/ns/a/").is_none());
    }
}
