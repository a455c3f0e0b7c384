//! Step 2: who is calling. One credential per request, checked by its own module:
//!
//! - `authorization: Bearer <JWT>` -> [`jwt`] (keys from [`jwks`]),
//! - `x-api-key` -> [`api_key`],
//! - Envoy's verified `source.principal` (SPIFFE id) -> [`mtls`], only when no header credential
//!   is present (a header credential is the caller speaking for itself; the peer identity may be a
//!   proxy in between).
//!
//! A bearer token *and* an API key together are `ambiguous_credentials`: never guess which one
//! counts. No credential at all is `unauthenticated`. Identity is never taken from a plain header.

pub mod api_key;
pub mod config;
pub mod crypto;
pub mod jwks;
pub mod jwt;
pub mod mtls;

use crate::decision::{Principal, ReasonCode};
use crate::request::Credentials;

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    /// No credentials.
    #[error("no credentials: send a bearer token or an API key")]
    NoCredentials,
    /// The bearer token is not valid.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The API key matches no configured key.
    #[error("invalid API key")]
    InvalidApiKey,
    /// The mTLS identity is not mapped to a principal.
    #[error("client certificate identity is not a known principal")]
    UnknownPeer,
    /// Both a bearer token and an API key.
    #[error("more than one credential (bearer token and API key)")]
    Ambiguous,
    /// The issuer's keys have never been loaded.
    #[error("signing keys for issuer '{0}' are not available")]
    KeysUnavailable(String),
}

impl AuthnError {
    /// The stable reason code.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            AuthnError::NoCredentials => ReasonCode::Unauthenticated,
            AuthnError::InvalidToken(_) => ReasonCode::InvalidToken,
            AuthnError::InvalidApiKey => ReasonCode::InvalidApiKey,
            AuthnError::UnknownPeer => ReasonCode::UnknownPrincipal,
            AuthnError::Ambiguous => ReasonCode::AmbiguousCredentials,
            AuthnError::KeysUnavailable(_) => ReasonCode::Unavailable,
        }
    }
}

/// All credential verifiers of one configuration.
#[derive(Debug)]
pub struct Authenticator {
    /// Bearer tokens.
    pub jwt: jwt::JwtVerifier,
    /// API keys.
    pub api_keys: api_key::ApiKeys,
    /// mTLS identities.
    pub mtls: mtls::MtlsMap,
}

impl Authenticator {
    /// Authenticates the request's credentials.
    ///
    /// # Errors
    /// [`AuthnError`] with the reason.
    pub async fn authenticate(&self, creds: &Credentials) -> Result<Principal, AuthnError> {
        match (&creds.authorization, &creds.api_key) {
            (Some(_), Some(_)) => Err(AuthnError::Ambiguous),
            (Some(auth), None) => {
                let token = bearer_token(auth)?;
                self.jwt.verify(token).await
            }
            (None, Some(key)) => self.api_keys.lookup(key).ok_or(AuthnError::InvalidApiKey),
            (None, None) => match &creds.peer_principal {
                Some(id) => self.mtls.lookup(id).ok_or(AuthnError::UnknownPeer),
                None => Err(AuthnError::NoCredentials),
            },
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive, RFC 7235).
fn bearer_token(header: &str) -> Result<&str, AuthnError> {
    let (scheme, token) = header.split_once(' ').ok_or_else(|| {
        AuthnError::InvalidToken("authorization header is not 'Bearer <token>'".into())
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthnError::InvalidToken(
            "only the Bearer scheme is accepted".into(),
        ));
    }
    let token = token.trim();
    if token.is_empty() || token.contains(' ') {
        return Err(AuthnError::InvalidToken(
            "authorization header is not 'Bearer <token>'".into(),
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer_token("Bearer abc"), Ok("abc"));
        assert_eq!(bearer_token("bearer abc"), Ok("abc"));
        assert!(bearer_token("Basic dXNlcjpwdw==").is_err());
        assert!(bearer_token("Bearer").is_err());
        assert!(bearer_token("Bearer a b").is_err());
        assert!(bearer_token("abc").is_err());
    }
}
