//! Lua scripts run inside Redis, kept together with their contracts.

/// One GCRA check for one key: read the TAT, decide, and store the new TAT when admitted.
///
/// Why a script: the read-decide-write must be atomic across every authz replica (a `GET` then
/// `SET` from the client would let concurrent checks admit more than the burst), it must cost one
/// round trip, and it must use the *Redis server's* clock (`TIME`) so replicas with skewed clocks
/// agree. Redis ≥ 5 replicates scripts by effects, so calling `TIME` before a write is allowed.
///
/// The arithmetic is [`super::gcra::Gcra::decide`] line for line; all values stay below 2^53 so
/// Lua's doubles compute exactly what Rust computes, and numbers are written with `%d` because
/// Lua's default number formatting would round 16-digit values.
///
/// - `KEYS[1]`: the rate-limit key ([`super::keys::rate_limit_key`]).
/// - `ARGV[1]`: the emission interval in µs. `ARGV[2]`: the capacity (burst × interval) in µs.
///   `ARGV[3]`: the clock clamp [`super::gcra::MAX_CLOCK_US`].
///
/// Returns `{admitted (0|1), now_us, stored_tat_us or -1 when the key was absent}`; the caller
/// recomputes remaining/reset/retry-after from `now_us` and the stored TAT with the same
/// arithmetic. When admitted the key is set to the new TAT with a `PX` expiry at the moment it
/// stops carrying information, so idle keys cost no memory.
pub const GCRA_CHECK: &str = r#"
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local max_clock = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if now > max_clock then now = max_clock end
local stored = redis.call('GET', KEYS[1])
local stored_num = -1
local tat = now
if stored then
  stored_num = tonumber(stored)
  if stored_num == nil then
    return redis.error_reply('ERR authz rate-limit key does not hold a number')
  end
  tat = stored_num
  if tat > now + capacity then tat = now + capacity end
  if tat < now then tat = now end
end
local new_tat = tat + interval
if now < new_tat - capacity then
  return {0, now, stored_num}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat),
  'PX', string.format('%d', math.ceil((new_tat - now) / 1000)))
return {1, now, stored_num}
"#;

/// One read of a key's GCRA state for the catalog's `remaining`: the server clock and the stored
/// TAT, nothing written.
///
/// Why a script rather than a client-side `GET`: the clock must be the *Redis server's*, read
/// at the same instant as the TAT, exactly as [`GCRA_CHECK`] reads both, and in a cluster a
/// keyless `TIME` would go to an arbitrary node; a one-key script goes to the key's node in one
/// round trip. The script only calls `TIME` and `GET`: it creates no key and leaves an existing
/// key's expiry alone (a `GET` does not touch it). It has no `no-writes` shebang so that it runs
/// on the same Redis versions as [`GCRA_CHECK`] (flags need Redis 7).
///
/// - `KEYS[1]`: the rate-limit key ([`super::keys::rate_limit_key`]).
///
/// Returns `{now_us, stored_tat_us or -1 when the key is absent}`, the last two values of a
/// [`GCRA_CHECK`] reply; the caller computes [`super::gcra::Gcra::remaining`] from them (clamps
/// included). A value that is not a number is an error, as in [`GCRA_CHECK`].
pub const GCRA_PEEK: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local stored = redis.call('GET', KEYS[1])
if not stored then
  return {now, -1}
end
local stored_num = tonumber(stored)
if stored_num == nil then
  return redis.error_reply('ERR authz rate-limit key does not hold a number')
end
return {now, stored_num}
"#;
