//! authz as an Envoy HTTP filter: a dynamic module (`libauthz_module.so`) that runs the authz
//! decision pipeline inside Envoy instead of behind an ext_authz gRPC call.
//!
//! The module is a thin adapter. It turns the stream into the `CheckRequest` Envoy's ext_authz
//! filter would send, runs [`authz::service::AuthzService::decide`] (the same pipeline, from the
//! same `authz.toml`, as `authz serve`) on its own Tokio threads, and applies the answer of
//! [`authz::response::to_check_response`] as ext_authz would. Nothing of the pipeline is here.
//!
//! # How the modules fit together
//!
//! - [`abi`]: the hand-written declarations of the Envoy 1.40 dynamic-module ABI symbols used.
//! - `hooks` (not in test builds): the exported `envoy_dynamic_module_on_*` functions, each
//!   catching panics and failing closed (503).
//! - [`host`]: what a stream needs from Envoy, as a trait; `EnvoyHost` calls the ABI.
//! - [`filter`]: one stream: pause, decide, resume or answer; the ownership that makes a
//!   request cancelled while paused safe.
//! - [`engine`]: one pipeline per `authz.toml` (with its reload watcher and admin server),
//!   shared by the filter configurations naming it; runs checks on the module's runtime.
//!
//! # What it does not guarantee (yet)
//!
//! - Reloads poll the files (`[server] reload_poll_interval`); SIGHUP is Envoy's, not ours.
//! - The admin server (`/metrics`, `/readyz`) binds `[server] admin_addr` inside Envoy: two
//!   Envoys on one host (a hot restart) need distinct addresses, or the second one's filter
//!   configuration fails to load.
//! - A gRPC call's first message is read whole up to `max_grpc_message_bytes` (4 MiB by
//!   default); a larger one is refused, and the stream buffers it meanwhile.
//! - A failure of the module itself (panic, a decision task lost) answers 503 with reason
//!   `unavailable`; such a 503 has no audit record, since no decision was made.
//!
//! See `docs/embedded.md` for the supported Envoy versions and how to run it.

pub mod abi;
pub mod engine;
pub mod filter;
#[cfg(not(test))]
mod hooks;
pub mod host;
