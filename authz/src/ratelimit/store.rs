//! The storage seam: a [`Store`] applies one GCRA decision atomically for one key, reads a key's
//! quota without deciding anything, and reports failures as a classified [`StoreError`].

use super::gcra::{Decision, Gcra};
use futures::future::BoxFuture;
use std::time::Duration;

/// Somewhere GCRA state lives. Implementations must apply [`Gcra::decide`] and the write of its
/// new TAT as one atomic step per key, so concurrent checks (from any number of replicas sharing
/// the store) never admit more than the arithmetic allows.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Decides one request for `key` under `limit` and records it when admitted.
    ///
    /// # Errors
    /// A [`StoreError`] when the backend could not be asked or answered nonsense. The caller
    /// applies the model's `on_store_error` policy; a store never decides fail-open on its own.
    fn check<'a>(
        &'a self,
        key: &'a str,
        limit: Gcra,
    ) -> BoxFuture<'a, Result<Decision, StoreError>>;

    /// The requests `key` would be admitted under `limit` right now ([`Gcra::remaining`]),
    /// without deciding or recording anything: never consumes, never creates the key, never
    /// moves its expiry. A key the store does not hold has the full burst.
    ///
    /// # Errors
    /// A [`StoreError`] as for [`Store::check`]; the caller shows the quota as unknown.
    fn peek<'a>(&'a self, key: &'a str, limit: Gcra) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// A short fixed name for logs: `memory`, `redis` or `redis_cluster`.
    fn name(&self) -> &'static str;
}

/// A failed store call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No answer within the configured timeout (the call was abandoned).
    #[error("rate-limit store did not answer within {0:?}")]
    Timeout(Duration),
    /// The circuit breaker is open: the store was not called at all.
    #[error("rate-limit store circuit breaker is open after repeated failures")]
    CircuitOpen,
    /// Could not reach the store: refused, reset, dropped or not yet (re)connected.
    #[error("rate-limit store connection failed: {0}")]
    Connection(#[source] redis::RedisError),
    /// The store answered with an error (e.g. `CLUSTERDOWN`, `LOADING`, a script error).
    #[error("rate-limit store returned an error: {0}")]
    Server(#[source] redis::RedisError),
    /// The reply did not have the shape the script promises, or disagreed with the arithmetic.
    #[error("rate-limit store reply is malformed: {0}")]
    Protocol(String),
    /// The store configuration was rejected by the client library (bad URL, missing TLS support).
    #[error("rate-limit store configuration rejected: {0}")]
    Config(String),
}

/// The bounded set of [`StoreError`] kinds, used as a metric label and in audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreErrorKind {
    /// [`StoreError::Timeout`].
    Timeout,
    /// [`StoreError::CircuitOpen`].
    CircuitOpen,
    /// [`StoreError::Connection`].
    Connection,
    /// [`StoreError::Server`].
    Server,
    /// [`StoreError::Protocol`].
    Protocol,
    /// [`StoreError::Config`].
    Config,
}

impl StoreErrorKind {
    /// The label value: `timeout`, `circuit_open`, `connection`, `server`, `protocol`, `config`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::CircuitOpen => "circuit_open",
            Self::Connection => "connection",
            Self::Server => "server",
            Self::Protocol => "protocol",
            Self::Config => "config",
        }
    }
}

impl StoreError {
    /// Classifies a client-library error: anything about the transport is a
    /// [`StoreError::Connection`], anything the server said is a [`StoreError::Server`].
    pub fn from_redis(err: redis::RedisError) -> Self {
        if err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout()
            || err.kind() == redis::ErrorKind::ClusterConnectionNotFound
        {
            Self::Connection(err)
        } else {
            Self::Server(err)
        }
    }

    /// The metric label kind of this error.
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            Self::Timeout(_) => StoreErrorKind::Timeout,
            Self::CircuitOpen => StoreErrorKind::CircuitOpen,
            Self::Connection(_) => StoreErrorKind::Connection,
            Self::Server(_) => StoreErrorKind::Server,
            Self::Protocol(_) => StoreErrorKind::Protocol,
            Self::Config(_) => StoreErrorKind::Config,
        }
    }

    /// Whether retrying later may succeed without anyone changing anything: timeouts, an open
    /// breaker, connection trouble and server states that pass (`LOADING`, `TRYAGAIN`,
    /// `CLUSTERDOWN`, `MOVED`, `BUSY`, ...). Script errors, malformed replies and configuration
    /// errors are not transient: they need a fix.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::CircuitOpen | Self::Connection(_) => true,
            Self::Server(e) => !matches!(e.retry_method(), redis::RetryMethod::NoRetry),
            Self::Protocol(_) | Self::Config(_) => false,
        }
    }
}
