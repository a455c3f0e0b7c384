//! [`RedisStore`]: GCRA state in Redis (standalone or Cluster), shared by every authz replica.
//!
//! Each check is one `EVALSHA` of [`super::scripts::GCRA_CHECK`] (one round trip; after a Redis
//! restart the first call gets `NOSCRIPT`, loads the script and retries); each peek (the
//! catalog's `remaining`) one `EVALSHA` of the read-only [`super::scripts::GCRA_PEEK`].
//! Connections are created lazily, so authz starts even while Redis is down, and reconnect by
//! themselves: a [`ConnectionManager`] for a single server, the cluster client's own connection
//! handling for a cluster. Time-outs here only bound connection attempts; the per-call deadline
//! and the circuit breaker live in [`super::RateLimiter`].

use super::gcra::{Decision, Gcra, MAX_CLOCK_US};
use super::scripts::{GCRA_CHECK, GCRA_PEEK};
use super::store::{Store, StoreError};
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClientBuilder, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use futures::future::BoxFuture;
use std::time::Duration;

/// How long one connection attempt may take. Attempts run in the background of the reconnecting
/// connection, so this does not delay checks (they have their own short deadline); it bounds how
/// long a black-holed address keeps a reconnect pending, and with it how fast recovery starts.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

/// Reconnect attempts per reconnect round (each round is restarted by the next failing check).
const RECONNECT_RETRIES: usize = 2;
/// Backoff between reconnect attempts: short, because recovery within a second is the goal and a
/// round is restarted anyway.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(10);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(100);

/// GCRA state in Redis.
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    script: ::redis::Script,
    /// [`GCRA_PEEK`], for [`Store::peek`].
    peek_script: ::redis::Script,
    /// The client library's own response timeout (the same as the check deadline, so whichever
    /// fires first, the error says `Timeout`).
    response_timeout: Duration,
}

#[derive(Clone)]
enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisStore {
    // Connection details may carry credentials; only the kind is printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("kind", &self.name())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on one Redis server at `url` (`redis://[user:pass@]host:port[/db]`, or
    /// `rediss://` for TLS). With TLS the server certificate is verified against `ca_pem` (PEM
    /// CA certificates) when given, else against the system's trusted roots. Does no I/O: the
    /// connection is made by the first check, and remade after failures.
    ///
    /// # Errors
    /// [`StoreError::Config`] when the URL is not valid for this build, or when called outside a
    /// Tokio runtime (the connection's background tasks need one).
    pub fn standalone(
        url: &str,
        ca_pem: Option<&[u8]>,
        response_timeout: Duration,
    ) -> Result<Self, StoreError> {
        require_runtime()?;
        let client = match ca_pem {
            None => ::redis::Client::open(url),
            Some(ca) => ::redis::Client::build_with_tls(url, certificates(ca)),
        }
        .map_err(|e| StoreError::Config(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Self {
            connection: Connection::Standalone(manager),
            script: ::redis::Script::new(GCRA_CHECK),
            peek_script: ::redis::Script::new(GCRA_PEEK),
            response_timeout,
        })
    }

    /// A store on a Redis Cluster reached through any of `nodes` (`redis://host:port` or
    /// `rediss://host:port` each; `ca_pem` as for [`RedisStore::standalone`]). Does no I/O: the cluster topology is discovered by the first check and refreshed on `MOVED`.
    ///
    /// # Errors
    /// [`StoreError::Config`] when a node address is not valid for this build, or when called
    /// outside a Tokio runtime.
    pub fn cluster(
        nodes: &[String],
        ca_pem: Option<&[u8]>,
        response_timeout: Duration,
    ) -> Result<Self, StoreError> {
        require_runtime()?;
        let mut builder = ClusterClientBuilder::new(nodes.to_vec());
        if let Some(ca) = ca_pem {
            builder = builder.certs(certificates(ca));
        }
        let client = builder
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(response_timeout)
            .retries(2)
            .min_retry_wait(5)
            .max_retry_wait(50)
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let config = ClusterConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(response_timeout);
        Ok(Self {
            connection: Connection::Cluster(
                client.get_pending_async_connection_with_config(config),
            ),
            script: ::redis::Script::new(GCRA_CHECK),
            peek_script: ::redis::Script::new(GCRA_PEEK),
            response_timeout,
        })
    }

    /// Loads the script (on every primary of a cluster) so the first check is one round trip.
    /// Optional: checks load it themselves on `NOSCRIPT`.
    ///
    /// # Errors
    /// The classified error when Redis cannot be reached.
    pub async fn preload_script(&self) -> Result<(), StoreError> {
        let result = match self.connection.clone() {
            Connection::Standalone(mut c) => self.script.prepare_invoke().load_async(&mut c).await,
            Connection::Cluster(mut c) => self.script.prepare_invoke().load_async(&mut c).await,
        };
        result.map(|_| ()).map_err(StoreError::from_redis)
    }

    async fn run(&self, key: &str, limit: Gcra) -> Result<Decision, StoreError> {
        let mut invocation = self.script.key(key);
        invocation
            .arg(limit.interval_us())
            .arg(limit.capacity_us())
            .arg(MAX_CLOCK_US);
        let reply = self.invoke(invocation).await?;
        interpret(&reply, limit)
    }

    async fn peek_remaining(&self, key: &str, limit: Gcra) -> Result<u64, StoreError> {
        let reply = self.invoke(self.peek_script.key(key)).await?;
        interpret_peek(&reply, limit)
    }

    /// Runs one script invocation (loading the script on `NOSCRIPT`) on the store's connection.
    async fn invoke(
        &self,
        invocation: ::redis::ScriptInvocation<'_>,
    ) -> Result<Vec<i64>, StoreError> {
        match self.connection.clone() {
            Connection::Standalone(mut c) => invocation.invoke_async(&mut c).await,
            Connection::Cluster(mut c) => invocation.invoke_async(&mut c).await,
        }
        .map_err(|e| match e.is_timeout() {
            true => StoreError::Timeout(self.response_timeout),
            false => StoreError::from_redis(e),
        })
    }
}

fn certificates(ca_pem: &[u8]) -> ::redis::TlsCertificates {
    ::redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca_pem.to_vec()),
    }
}

/// The client library spawns its connection tasks on the current Tokio runtime and would panic
/// without one; say so as an error instead.
fn require_runtime() -> Result<(), StoreError> {
    tokio::runtime::Handle::try_current()
        .map(|_| ())
        .map_err(|_| {
            StoreError::Config("a Redis store must be created inside a Tokio runtime".into())
        })
}

/// Turns the script reply into a [`Decision`], insisting that Lua and Rust agree.
fn interpret(reply: &[i64], limit: Gcra) -> Result<Decision, StoreError> {
    let &[admitted, now, stored] = reply else {
        return Err(StoreError::Protocol(format!(
            "expected 3 integers, got {}",
            reply.len()
        )));
    };
    let now =
        u64::try_from(now).map_err(|_| StoreError::Protocol(format!("negative clock {now}")))?;
    let stored = u64::try_from(stored).ok();
    let decision = limit.decide(now, stored);
    if decision.allowed != (admitted == 1) {
        // Would mean the script and the arithmetic drifted apart: report rather than guess.
        return Err(StoreError::Protocol(format!(
            "script admitted={admitted} but arithmetic says {} (now={now}, stored={stored:?})",
            decision.allowed
        )));
    }
    Ok(decision)
}

/// Turns the [`GCRA_PEEK`] reply (`{now_us, stored_tat_us or -1}`) into the remaining quota.
fn interpret_peek(reply: &[i64], limit: Gcra) -> Result<u64, StoreError> {
    let &[now, stored] = reply else {
        return Err(StoreError::Protocol(format!(
            "expected 2 integers, got {}",
            reply.len()
        )));
    };
    let now =
        u64::try_from(now).map_err(|_| StoreError::Protocol(format!("negative clock {now}")))?;
    Ok(limit.remaining(now, u64::try_from(stored).ok()))
}

impl Store for RedisStore {
    fn check<'a>(
        &'a self,
        key: &'a str,
        limit: Gcra,
    ) -> BoxFuture<'a, Result<Decision, StoreError>> {
        Box::pin(self.run(key, limit))
    }

    fn peek<'a>(&'a self, key: &'a str, limit: Gcra) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.peek_remaining(key, limit))
    }

    fn name(&self) -> &'static str {
        match self.connection {
            Connection::Standalone(_) => "redis",
            Connection::Cluster(_) => "redis_cluster",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_that_disagree_with_the_arithmetic_are_errors() {
        let limit = Gcra::new(1, Duration::from_secs(1), 1).unwrap();
        assert!(interpret(&[1, 5_000_000, -1], limit).unwrap().allowed);
        assert!(matches!(
            interpret(&[0, 5_000_000, -1], limit),
            Err(StoreError::Protocol(_))
        ));
        assert!(matches!(
            interpret(&[1, 2], limit),
            Err(StoreError::Protocol(_))
        ));
        assert!(matches!(
            interpret(&[1, -2, -1], limit),
            Err(StoreError::Protocol(_))
        ));
    }

    #[test]
    fn peek_replies_read_as_the_arithmetic_and_malformed_ones_are_errors() {
        let limit = Gcra::new(1, Duration::from_secs(1), 3).unwrap();
        assert_eq!(interpret_peek(&[5_000_000, -1], limit).unwrap(), 3);
        assert_eq!(interpret_peek(&[5_000_000, 7_000_000], limit).unwrap(), 1);
        for bad in [&[5_000_000][..], &[1, 2, 3], &[-1, -1]] {
            assert!(
                matches!(interpret_peek(bad, limit), Err(StoreError::Protocol(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn creating_a_store_outside_a_runtime_is_an_error_not_a_panic() {
        assert!(matches!(
            RedisStore::standalone("redis://127.0.0.1:1", None, Duration::from_millis(50)),
            Err(StoreError::Config(_))
        ));
    }

    #[tokio::test]
    async fn bad_urls_are_config_errors_without_io() {
        assert!(matches!(
            RedisStore::standalone("http://x", None, Duration::from_millis(50)),
            Err(StoreError::Config(_))
        ));
        let store =
            RedisStore::standalone("redis://127.0.0.1:1", None, Duration::from_millis(50)).unwrap();
        assert_eq!(store.name(), "redis");
    }
}
