//! The gateway's decision, checked in one place for every model-scoped call of both protocols.
//!
//! authz decides on what it can see: the path, the headers and, for gRPC, only the first ~1 KiB of
//! the message. This server decodes everything, so the two readings could disagree: a protobuf
//! message may name `model_name` twice (the last value wins) with the second copy beyond the bytes
//! authz inspected, or end with an empty name. The rule that closes that gap:
//!
//! - authz states what it allowed in request headers: [`HEADER_MODEL`], [`HEADER_VERSION`],
//!   [`HEADER_ACTION`] and [`HEADER_DECISION_ID`]. Envoy removes every client-sent `x-authz-*`
//!   header and request trailer before authz runs.
//! - This server reads them from the request's **initial headers only** ([`GatewayDecision::from_headers`]):
//!   REST from the request head; gRPC from a tonic interceptor ([`intercept`]) that runs before the
//!   message is decoded, so request trailers, which tonic later merges into the metadata, are never
//!   consulted. A header given twice counts as not given. An absent [`HEADER_VERSION`] means
//!   "no version" like an empty one (an Envoy dynamic module cannot send an empty header).
//! - Every model-scoped call ([`ModelCall`]: the decoded name, version and action) is compared with
//!   that decision by [`ModelServer::model`](crate::server::ModelServer::model), the only way a
//!   front end obtains a model, before any model work. A missing decision, an empty or defaulted
//!   name, a different version or a different action is refused (403 / `PERMISSION_DENIED`),
//!   logged with the decision id and counted in `modelserver_gateway_refusals_total`.
//! - Calls that cannot be scoped to one model (statistics of every model, the repository API) are
//!   refused in [`AuthorizationMode::Gateway`]: authz never authorizes them.
//!
//! [`AuthorizationMode::None`] turns the check off, for a model server that is used directly (as a
//! plain Triton replacement, in tests) and that no untrusted client can reach.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use crate::error::ServerError;

/// The model authz authorized.
pub const HEADER_MODEL: &str = "x-authz-model";
/// The version authz authorized ("" or the header left out when the request named none).
pub const HEADER_VERSION: &str = "x-authz-model-version";
/// The action authz authorized: `infer`, `ready`, `metadata`, `config` or `statistics`.
pub const HEADER_ACTION: &str = "x-authz-action";
/// The decision's id, for logs that correlate with the audit record.
pub const HEADER_DECISION_ID: &str = "x-authz-decision-id";

/// Longest decision id carried into logs (a UUID is 36 bytes).
const MAX_DECISION_ID: usize = 64;

/// Whether model-scoped calls must carry the gateway's matching decision (`[authorization] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizationMode {
    /// Behind the gateway (the default): every model-scoped call must carry authz's decision for
    /// exactly that model, version and action.
    #[default]
    Gateway,
    /// No check: for direct use where no untrusted client can reach the server.
    None,
}

/// What a call does to a model: the same five actions authz's policy decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelAction {
    /// REST `/infer`, gRPC `ModelInfer`.
    Infer,
    /// REST `/ready`, gRPC `ModelReady`.
    Ready,
    /// REST `/v2/models/{m}`, gRPC `ModelMetadata`.
    Metadata,
    /// REST `/config`, gRPC `ModelConfig`.
    Config,
    /// REST `/stats`, gRPC `ModelStatistics`.
    Statistics,
}

impl ModelAction {
    const ALL: [ModelAction; 5] = [
        ModelAction::Infer,
        ModelAction::Ready,
        ModelAction::Metadata,
        ModelAction::Config,
        ModelAction::Statistics,
    ];

    /// The wire name, as authz writes it in [`HEADER_ACTION`].
    pub fn as_str(self) -> &'static str {
        match self {
            ModelAction::Infer => "infer",
            ModelAction::Ready => "ready",
            ModelAction::Metadata => "metadata",
            ModelAction::Config => "config",
            ModelAction::Statistics => "statistics",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One model-scoped call as this server decoded it.
#[derive(Debug, Clone, Copy)]
pub struct ModelCall<'a> {
    /// The decoded model name (may be empty: an empty name is refused, never read as "all").
    pub name: &'a str,
    /// The decoded version; `None` when the request named none.
    pub version: Option<&'a str>,
    /// What the call does.
    pub action: ModelAction,
}

/// One header of the decision as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Field {
    /// Not in the initial headers.
    #[default]
    Absent,
    /// Exactly once, visible ASCII.
    Value(String),
    /// More than once, or not visible ASCII: never matches.
    Invalid,
}

impl Field {
    fn read(headers: &http::HeaderMap, name: &str) -> Field {
        let mut values = headers.get_all(name).iter();
        let Some(first) = values.next() else {
            return Field::Absent;
        };
        if values.next().is_some() {
            return Field::Invalid;
        }
        match first.to_str() {
            Ok(v) => Field::Value(v.to_owned()),
            Err(_) => Field::Invalid,
        }
    }

    fn value(&self) -> Option<&str> {
        match self {
            Field::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// What the gateway authorized for this request, read from its initial headers.
#[derive(Debug, Clone, Default)]
pub struct GatewayDecision {
    model: Field,
    version: Field,
    action: Field,
    decision_id: Option<String>,
}

impl GatewayDecision {
    /// Reads the decision headers. Pass the request's **initial** headers, never a map that
    /// trailers were merged into.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        let decision_id = Field::read(headers, HEADER_DECISION_ID)
            .value()
            .filter(|id| {
                id.len() <= MAX_DECISION_ID
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
            .map(str::to_owned);
        GatewayDecision {
            model: Field::read(headers, HEADER_MODEL),
            version: Field::read(headers, HEADER_VERSION),
            action: Field::read(headers, HEADER_ACTION),
            decision_id,
        }
    }

    /// The decision id, when a well-formed one was sent.
    pub fn decision_id(&self) -> Option<&str> {
        self.decision_id.as_deref()
    }

    /// Why `call` is not what this decision allowed, or `None` when it is exactly that.
    fn mismatch(&self, call: &ModelCall<'_>) -> Option<Cause> {
        let (Some(model), Some(action)) = (self.model.value(), self.action.value()) else {
            return Some(Cause::Missing);
        };
        // An absent version header means "no version", exactly as an empty one does: an Envoy
        // dynamic module cannot set an empty header value (the 1.40 ABI removes the header
        // instead), so the embedded mode states "no version" by leaving it out. This never widens
        // access: either way the call must then name no version. A repeated or non-ASCII version
        // is still no decision.
        let version = match &self.version {
            Field::Absent => "",
            Field::Value(v) => v.as_str(),
            Field::Invalid => return Some(Cause::Missing),
        };
        if call.name.is_empty() || model != call.name {
            return Some(Cause::Model);
        }
        if version != call.version.unwrap_or("") {
            return Some(Cause::Version);
        }
        if action != call.action.as_str() {
            return Some(Cause::Action);
        }
        None
    }

    fn show_authorized(&self) -> String {
        let shown = |f: &Field| match f {
            Field::Absent => "(none)".to_owned(),
            Field::Invalid => "(invalid)".to_owned(),
            Field::Value(v) if v.is_empty() => "\"\"".to_owned(),
            Field::Value(v) => v.clone(),
        };
        format!(
            "model {} version {} action {}",
            shown(&self.model),
            shown(&self.version),
            shown(&self.action)
        )
    }
}

/// Why a call was refused: the `cause` label of the refusal metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// No usable decision (a header absent, repeated or not ASCII).
    Missing,
    /// The decoded name differs from the authorized one, or is empty.
    Model,
    /// The decoded version differs.
    Version,
    /// The call's action differs.
    Action,
    /// The call is not scoped to one model (all-model statistics, the repository API).
    Unscoped,
}

impl Cause {
    const ALL: [Cause; 5] = [
        Cause::Missing,
        Cause::Model,
        Cause::Version,
        Cause::Action,
        Cause::Unscoped,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Cause::Missing => "missing_decision",
            Cause::Model => "model_mismatch",
            Cause::Version => "version_mismatch",
            Cause::Action => "action_mismatch",
            Cause::Unscoped => "not_model_scoped",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The enforcement point: the mode and the refusal counters.
#[derive(Debug, Default)]
pub struct Enforcer {
    mode: AuthorizationMode,
    /// Refusals by (action or unscoped, cause); rendered as `modelserver_gateway_refusals_total`.
    refusals: [[AtomicU64; 5]; 6],
}

impl Enforcer {
    /// An enforcer in `mode`.
    pub fn new(mode: AuthorizationMode) -> Self {
        Enforcer {
            mode,
            refusals: Default::default(),
        }
    }

    /// The configured mode.
    pub fn mode(&self) -> AuthorizationMode {
        self.mode
    }

    /// Checks a model-scoped call against the decision.
    ///
    /// # Errors
    /// [`ServerError::NotAuthorized`] when the mode is `gateway` and the call is not exactly what
    /// the decision allowed.
    pub fn check(
        &self,
        decision: &GatewayDecision,
        call: &ModelCall<'_>,
    ) -> Result<(), ServerError> {
        if self.mode == AuthorizationMode::None {
            return Ok(());
        }
        let Some(cause) = decision.mismatch(call) else {
            return Ok(());
        };
        let requested = format!(
            "model {} version {} action {}",
            if call.name.is_empty() {
                "\"\""
            } else {
                call.name
            },
            call.version.unwrap_or("\"\""),
            call.action.as_str()
        );
        Err(self.refuse(decision, call.action.index(), cause, requested))
    }

    /// Checks a call that no single-model decision can cover (`what` names it).
    ///
    /// # Errors
    /// [`ServerError::NotAuthorized`] when the mode is `gateway`.
    pub fn check_unscoped(
        &self,
        decision: &GatewayDecision,
        what: &str,
    ) -> Result<(), ServerError> {
        if self.mode == AuthorizationMode::None {
            return Ok(());
        }
        Err(self.refuse(
            decision,
            ModelAction::ALL.len(),
            Cause::Unscoped,
            what.to_owned(),
        ))
    }

    fn refuse(
        &self,
        decision: &GatewayDecision,
        row: usize,
        cause: Cause,
        requested: String,
    ) -> ServerError {
        let col = Cause::ALL.iter().position(|c| *c == cause).unwrap_or(0);
        self.refusals[row][col].fetch_add(1, Ordering::Relaxed);
        let authorized = decision.show_authorized();
        tracing::warn!(
            decision.id = decision.decision_id().unwrap_or("-"),
            refusal.cause = cause.as_str(),
            request = %requested,
            authorized = %authorized,
            "refused: the call is not what the gateway authorized"
        );
        ServerError::NotAuthorized {
            cause: cause.as_str(),
            requested,
            authorized,
        }
    }

    /// Appends `modelserver_gateway_refusals_total` in the Prometheus text format.
    pub fn write_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        out.push_str(
            "# HELP modelserver_gateway_refusals_total Model calls refused because they were not \
             what the gateway's authz decision allowed (missing decision, other model, version or \
             action, or not scoped to one model).\n\
             # TYPE modelserver_gateway_refusals_total counter\n",
        );
        let actions = ModelAction::ALL
            .iter()
            .map(|a| a.as_str())
            .chain(std::iter::once("unscoped"));
        for (row, action) in actions.enumerate() {
            for (col, cause) in Cause::ALL.iter().enumerate() {
                let n = self.refusals[row][col].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "modelserver_gateway_refusals_total{{action=\"{action}\",cause=\"{cause}\"}} {n}"
                );
            }
        }
    }
}

/// The tonic interceptor that reads the decision from a gRPC request's initial headers, before
/// its message (and any trailers) are read, into the request's extensions.
///
/// # Errors
/// Never; the signature is tonic's.
#[allow(clippy::result_large_err)] // tonic's interceptor signature
pub fn intercept(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let decision = GatewayDecision::from_headers(request.metadata().as_ref());
    request.extensions_mut().insert(decision);
    Ok(request)
}

/// Takes the decision the interceptor stored (no copy: each request has one reader); a request
/// that did not pass through it has none (and is refused in gateway mode).
pub fn decision_of<T>(request: &mut tonic::Request<T>) -> GatewayDecision {
    request
        .extensions_mut()
        .remove::<GatewayDecision>()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    const ECHO_INFER: ModelCall<'static> = ModelCall {
        name: "benchmark-echo",
        version: None,
        action: ModelAction::Infer,
    };

    fn allowed() -> Vec<(&'static str, &'static str)> {
        vec![
            (HEADER_MODEL, "benchmark-echo"),
            (HEADER_VERSION, ""),
            (HEADER_ACTION, "infer"),
            (HEADER_DECISION_ID, "0190a0b0-0000-7000-8000-000000000001"),
        ]
    }

    fn cause(h: &[(&'static str, &str)], call: ModelCall<'_>) -> Option<&'static str> {
        let e = Enforcer::new(AuthorizationMode::Gateway);
        match e.check(&GatewayDecision::from_headers(&headers(h)), &call) {
            Ok(()) => None,
            Err(ServerError::NotAuthorized { cause, .. }) => Some(cause),
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn exactly_the_authorized_call_passes() {
        assert_eq!(cause(&allowed(), ECHO_INFER), None);
    }

    #[test]
    fn every_difference_is_refused() {
        let other_model = ModelCall {
            name: "threat-triage",
            ..ECHO_INFER
        };
        assert_eq!(cause(&allowed(), other_model), Some("model_mismatch"));
        let empty = ModelCall {
            name: "",
            ..ECHO_INFER
        };
        assert_eq!(cause(&allowed(), empty), Some("model_mismatch"));
        let versioned = ModelCall {
            version: Some("1"),
            ..ECHO_INFER
        };
        assert_eq!(cause(&allowed(), versioned), Some("version_mismatch"));
        let metadata = ModelCall {
            action: ModelAction::Statistics,
            ..ECHO_INFER
        };
        assert_eq!(cause(&allowed(), metadata), Some("action_mismatch"));
        assert_eq!(cause(&[], ECHO_INFER), Some("missing_decision"));
        for drop in [HEADER_MODEL, HEADER_ACTION] {
            let h: Vec<_> = allowed().into_iter().filter(|(k, _)| *k != drop).collect();
            assert_eq!(cause(&h, ECHO_INFER), Some("missing_decision"), "{drop}");
        }
        // A repeated header is no decision, even when one copy matches.
        let mut h = allowed();
        h.push((HEADER_MODEL, "threat-triage"));
        assert_eq!(cause(&h, ECHO_INFER), Some("missing_decision"));
        let mut h = allowed();
        h.push((HEADER_VERSION, ""));
        assert_eq!(cause(&h, ECHO_INFER), Some("missing_decision"));
    }

    /// The embedded mode's allows carry no `x-authz-model-version` for an unversioned request
    /// (an Envoy dynamic module cannot set an empty header): that is "no version", and it
    /// authorizes only calls that name none.
    #[test]
    fn an_absent_version_is_no_version() {
        let unversioned: Vec<_> = allowed()
            .into_iter()
            .filter(|(k, _)| *k != HEADER_VERSION)
            .collect();
        assert_eq!(cause(&unversioned, ECHO_INFER), None);
        let versioned = ModelCall {
            version: Some("1"),
            ..ECHO_INFER
        };
        assert_eq!(cause(&unversioned, versioned), Some("version_mismatch"));
        let empty_version = ModelCall {
            version: Some(""),
            ..ECHO_INFER
        };
        assert_eq!(cause(&unversioned, empty_version), None);
        // Only the version may be left out: the model and the action are the decision.
        let no_model: Vec<_> = unversioned
            .iter()
            .copied()
            .filter(|(k, _)| *k != HEADER_MODEL)
            .collect();
        assert_eq!(cause(&no_model, ECHO_INFER), Some("missing_decision"));
    }

    #[test]
    fn mode_none_checks_nothing_and_unscoped_calls_are_refused_in_gateway_mode() {
        let none = Enforcer::new(AuthorizationMode::None);
        assert!(none.check(&GatewayDecision::default(), &ECHO_INFER).is_ok());
        assert!(
            none.check_unscoped(&GatewayDecision::default(), "x")
                .is_ok()
        );
        let gw = Enforcer::new(AuthorizationMode::Gateway);
        let d = GatewayDecision::from_headers(&headers(&allowed()));
        assert!(gw.check_unscoped(&d, "statistics of every model").is_err());
        let mut text = String::new();
        gw.write_metrics(&mut text);
        assert!(
            text.contains(
                "modelserver_gateway_refusals_total{action=\"unscoped\",cause=\"not_model_scoped\"} 1"
            ),
            "{text}"
        );
    }
}
