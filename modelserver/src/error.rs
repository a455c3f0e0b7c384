//! The errors a client can see, and the one place they become HTTP statuses and gRPC codes.
//!
//! Envoy passes these statuses through unchanged. A 503 / `UNAVAILABLE` means "this replica cannot
//! serve this now" (model not ready, queue full, draining), which Envoy's retry policy and
//! least-request balancing may use to try another replica; 4xx are the client's fault and are never
//! retried.

use http::StatusCode;

/// An error answered to a client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServerError {
    /// The request is malformed or does not match the model (400 / `INVALID_ARGUMENT`).
    #[error("{0}")]
    InvalidInput(String),
    /// No such model in the repository (404 / `NOT_FOUND`).
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    /// The model exists but not this version (404 / `NOT_FOUND`).
    #[error("unknown version '{version}' of model '{model}'")]
    UnknownVersion {
        /// Model name.
        model: String,
        /// Requested version.
        version: String,
    },
    /// The model or version is not loaded or failed to load (503 / `UNAVAILABLE`).
    #[error("model '{model}' is not ready: {reason}")]
    NotReady {
        /// Model name.
        model: String,
        /// Why: unloaded, loading, or the load error.
        reason: String,
    },
    /// The request body exceeds the configured limit (413 / `RESOURCE_EXHAUSTED`).
    #[error("request body of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Size announced or read so far.
        size: u64,
        /// Configured limit.
        limit: u64,
    },
    /// The model's queue is full (503 / `UNAVAILABLE`).
    #[error("model '{0}' is overloaded: queue is full")]
    Overloaded(String),
    /// The request was still queued when its deadline (the `timeout` parameter or the model's
    /// `default_timeout_microseconds`) passed (503 / `UNAVAILABLE`, as Triton answers it).
    #[error("model '{0}': request timed out in the queue")]
    TimedOut(String),
    /// Loading a model failed on an explicit load request (400 / `INVALID_ARGUMENT`, as Triton).
    #[error("failed to load model '{model}': {reason}")]
    LoadFailed {
        /// Model name.
        model: String,
        /// The load error.
        reason: String,
    },
    /// The call is not what the gateway's authz decision allowed (403 / `PERMISSION_DENIED`): no
    /// decision, another model, version or action, or a call no single-model decision covers (see
    /// [`crate::access`]). Refused rather than corrected: retrying it cannot help.
    #[error(
        "not authorized by the gateway ({cause}): the request is for {requested}, the decision allowed {authorized}"
    )]
    NotAuthorized {
        /// Stable cause: `missing_decision`, `model_mismatch`, `version_mismatch`,
        /// `action_mismatch` or `not_model_scoped`.
        cause: &'static str,
        /// What the request asked for, as decoded.
        requested: String,
        /// What the decision headers allowed.
        authorized: String,
    },
    /// A server-side failure: ONNX Runtime failed while running a valid request (500 / `INTERNAL`).
    #[error("internal error: {0}")]
    Internal(String),
    /// No endpoint at this path and method (404 / `UNIMPLEMENTED`).
    #[error("no endpoint for {0}")]
    NoRoute(String),
    /// The operation exists in the protocol but not here (501 / `UNIMPLEMENTED`).
    #[error("{0} is not supported")]
    Unsupported(String),
}

impl ServerError {
    /// The HTTP status for this error.
    pub fn http_status(&self) -> StatusCode {
        match self {
            ServerError::InvalidInput(_) | ServerError::LoadFailed { .. } => {
                StatusCode::BAD_REQUEST
            }
            ServerError::UnknownModel(_)
            | ServerError::UnknownVersion { .. }
            | ServerError::NoRoute(_) => StatusCode::NOT_FOUND,
            ServerError::NotReady { .. }
            | ServerError::Overloaded(_)
            | ServerError::TimedOut(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServerError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ServerError::NotAuthorized { .. } => StatusCode::FORBIDDEN,
            ServerError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ServerError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// The gRPC status for this error.
    pub fn grpc_status(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            ServerError::InvalidInput(_) | ServerError::LoadFailed { .. } => {
                tonic::Status::invalid_argument(message)
            }
            ServerError::UnknownModel(_) | ServerError::UnknownVersion { .. } => {
                tonic::Status::not_found(message)
            }
            ServerError::NotReady { .. }
            | ServerError::Overloaded(_)
            | ServerError::TimedOut(_) => tonic::Status::unavailable(message),
            ServerError::PayloadTooLarge { .. } => tonic::Status::resource_exhausted(message),
            ServerError::NotAuthorized { .. } => tonic::Status::permission_denied(message),
            ServerError::Internal(_) => tonic::Status::internal(message),
            ServerError::Unsupported(_) | ServerError::NoRoute(_) => {
                tonic::Status::unimplemented(message)
            }
        }
    }

    /// Whether another attempt (here later, or on another replica) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ServerError::NotReady { .. } | ServerError::Overloaded(_) | ServerError::TimedOut(_)
        )
    }
}
