//! authz: an Envoy external-authorization (ext_authz v3, gRPC) service for model inference.
//!
//! For every request Envoy forwards, authz decides who is calling, whether they may use the model
//! the request is about, and answers with a `CheckResponse` that either lets Envoy forward the
//! request (with identity headers set and credentials stripped) or makes Envoy answer the client
//! with a status and a JSON error naming a stable reason code and the decision id.
//!
//! # How the modules fit together
//!
//! A check flows top to bottom through [`service::AuthzService::decide`]:
//!
//! 1. [`request`]: `CheckRequest` -> [`request::Facts`]; strict OIP path parsing, the gRPC frame
//!    peek for the model name, headers, access reason, correlation ids.
//! 2. [`authn`]: credentials -> [`decision::Principal`] (JWT via [`authn::jwt`] and
//!    [`authn::jwks`], API keys via [`authn::api_key`], mTLS SPIFFE ids via [`authn::mtls`]).
//! 3. [`policy`]: Cedar decides, naming the deciding policies and a reason code.
//! 4. rate limit and 5. audit: slots in `decide`, filled by the `ratelimit` and `audit` modules.
//! 6. [`response`]: the one place a [`decision::Decision`] becomes a `CheckResponse`.
//!
//! Around it: [`config`] (the typed, validated TOML file; each section's types live with their
//! step, e.g. [`authn::config`]), [`runtime`] (the loaded configuration, swapped atomically on
//! reload), [`server`] (the listeners, the reload watcher and the bounded drain: what `authz serve`
//! and the tests run), [`readiness`] (the one rule behind `/readyz` and `grpc.health.v1`),
//! [`admin`] (`/healthz`, `/readyz`, `/metrics`), [`metrics`], [`policy::cases`] (`authz policy
//! test`),
//! [`devkeys`] (the dev issuer key used by `authz dev-init` and `authz token`), and [`trace`]
//! (each check's spans in the trace Envoy started, exported over OTLP when configured).
//!
//! # What it does not guarantee
//!
//! - The decision is about the request Envoy describes. Path normalisation in Envoy must be on
//!   (`normalize_path`, `merge_slashes`, escaped-slash rejection); authz additionally rejects any
//!   ambiguous path rather than trusting that.
//! - For OIP gRPC only the first bytes of the body are inspected. authz rejects duplicated or cut
//!   `model_name`/`model_version` fields within those bytes, and on allow sets `x-authz-model`, so
//!   the model server can refuse a message whose decoded model differs.
//! - Verified tokens are cached until `exp`: a key removed from a JWKS keeps its already-verified
//!   tokens valid until they expire (or until the next configuration reload).

pub mod admin;
pub mod audit;
pub mod authn;
pub mod catalog;
pub mod config;
pub mod decision;
pub mod devkeys;
pub mod metrics;
pub mod policy;
pub mod ratelimit;
pub mod readiness;
pub mod request;
pub mod response;
pub mod runtime;
pub mod server;
pub mod service;
pub mod trace;

pub use decision::{AuthMethod, Decision, Principal, ReasonCode};
